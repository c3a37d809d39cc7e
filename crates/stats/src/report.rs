//! stub
use serde::{Deserialize, Serialize};
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CurveKind {
    Loss,
    Sharpness,
}
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Curve {
    pub recipe: String,
    pub lr: f64,
    pub seed: u64,
    pub kind: CurveKind,
    pub points: Vec<(u64, f64)>,
}
#[derive(Debug, Clone, Default)]
pub struct ReportOptions {}
pub fn write_report(
    _d: &std::path::Path,
    _r: &[crate::RunResult],
    _c: &[Curve],
) -> std::io::Result<()> {
    Ok(())
}
pub fn write_report_with(
    _d: &std::path::Path,
    _r: &[crate::RunResult],
    _c: &[Curve],
    _o: &ReportOptions,
) -> std::io::Result<()> {
    Ok(())
}
