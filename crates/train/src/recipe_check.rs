//! Checks of a recipe file that only make sense next to the model it will run on, or that the
//! recipe kinds accept although the result means nothing: an empty `roles` list, an override
//! glob that matches no GEMM site of the model, two progressive phases starting at the same step.
//!
//! The recipe kinds parse their own files; this reads only the few common fields it checks
//! (unknown fields are ignored), so it works for third-party kinds that use the same names.

use fp8_core::Role;
use globset::Glob;
use serde::Deserialize;

#[derive(Deserialize)]
struct Shape {
    kind: String,
    #[serde(default)]
    roles: Option<Vec<Role>>,
    #[serde(default)]
    overrides: Vec<OverrideShape>,
    #[serde(default)]
    phases: Vec<PhaseShape>,
}

#[derive(Deserialize)]
struct OverrideShape {
    sites: String,
}

#[derive(Deserialize)]
struct PhaseShape {
    from_step: u64,
}

/// Check recipe `text` (from file `origin`) against the GEMM `sites` of the model it runs on.
/// A file that does not have the common shape is left to its kind's own parser.
pub fn check(text: &str, origin: &str, sites: &[String]) -> anyhow::Result<()> {
    let Ok(shape) = fp8_core::recipe::ron_options().from_str::<Shape>(text) else {
        return Ok(());
    };
    if shape.roles.as_ref().is_some_and(|r| r.is_empty()) && shape.kind != "fp32" {
        anyhow::bail!(
            "{origin}: `roles: []` quantizes no tensor, so this `{}` recipe would train exactly \
             as fp32; list at least one of x, w, y, dy, dx, dw (or use recipes/fp32.ron)",
            shape.kind
        );
    }
    for o in &shape.overrides {
        let Ok(glob) = Glob::new(&o.sites) else {
            continue; // the kind's parser reports a bad glob with its own message
        };
        let m = glob.compile_matcher();
        if !sites.iter().any(|s| m.is_match(s)) {
            anyhow::bail!(
                "{origin}: the override `sites: {:?}` matches no GEMM site of this model; its \
                 sites are {}",
                o.sites,
                sites.join(", ")
            );
        }
    }
    let mut starts: Vec<u64> = shape.phases.iter().map(|p| p.from_step).collect();
    starts.sort_unstable();
    if let Some(w) = starts.windows(2).find(|w| w[0] == w[1]) {
        anyhow::bail!(
            "{origin}: two `phases` start at `from_step: {}`; each phase needs its own step",
            w[0]
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sites() -> Vec<String> {
        ["h.0.attn.qkv", "h.0.mlp.fc", "lm_head"]
            .map(String::from)
            .to_vec()
    }

    #[test]
    fn meaningless_recipes_are_refused() {
        let ok = r#"(kind: "bit_reduction", format: "e8m4", roles: [x, w],
            overrides: [(sites: "lm_head", keep: true), (sites: "h.*.mlp.*", keep: true)])"#;
        check(ok, "r.ron", &sites()).unwrap();
        let e = check(
            r#"(kind: "cast", format: "e4m3", roles: [])"#,
            "r.ron",
            &sites(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("`roles: []`"), "{e}");
        let e = check(
            r#"(kind: "cast", overrides: [(sites: "h.9.*", keep: true)])"#,
            "r.ron",
            &sites(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains(r#""h.9.*""#) && e.contains("lm_head"), "{e}");
        let e = check(
            r#"(kind: "progressive", phases: [(from_step: 0, format: "bfloat16"),
                (from_step: 0, format: "e8m5")])"#,
            "r.ron",
            &sites(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("from_step: 0"), "{e}");
    }
}
