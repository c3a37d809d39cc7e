//! Which burn backend runs training. On CPU: burn's Flex backend under Autodiff, wrapped in the
//! [`Precision`] decorator (outside Autodiff, so it sees exact GEMM roles).

use burn::backend::{Autodiff, Flex};
use fp8_core::Precision;

/// The CPU compute backend.
pub type Cpu = Flex;
/// What `fp8 train` runs on the CPU.
pub type CpuTrain = Precision<Autodiff<Cpu>>;

/// A parsed `--device`.
pub enum Device {
    Cpu(<Cpu as burn::tensor::backend::BackendTypes>::Device),
}

/// Parse `--device` and run `f` with it.
pub fn with_device<R>(
    spec: &str,
    f: impl FnOnce(Device) -> anyhow::Result<R>,
) -> anyhow::Result<R> {
    match spec {
        "cpu" => f(Device::Cpu(Default::default())),
        s if s.starts_with("cuda") => anyhow::bail!(
            "--device {s}: this fp8 was built without the `cuda` feature; rebuild with `cargo build --release --features cuda`"
        ),
        s => anyhow::bail!("unknown --device `{s}`; valid: cpu, cuda:N (with the `cuda` feature)"),
    }
}
