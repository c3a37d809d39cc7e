//! Which (site, role) pairs a recipe touches: default roles, attention products, glob overrides.

use fp8_core::Role;
use fp8_formats::Format;
use globset::{Glob, GlobMatcher};
use serde::Deserialize;

/// A per-site override, matched by glob on the site name (`lm_head`, `h.0.*`, `*.attn.scores`).
/// The first matching override wins.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Override {
    /// Glob on site names.
    pub sites: String,
    /// Keep these sites in f32 (no quantization at all).
    #[serde(default)]
    pub keep: bool,
    /// Cast these sites to this format instead (nearest-even, no scaling), e.g. `"bfloat16"`.
    #[serde(default)]
    pub format: Option<String>,
    /// Restrict the override to these roles (default: the recipe's roles).
    #[serde(default)]
    pub roles: Option<Vec<Role>>,
}

/// An override with its glob compiled and format parsed.
#[derive(Clone, Debug)]
pub(crate) struct CompiledOverride {
    matcher: GlobMatcher,
    pub keep: bool,
    pub format: Option<Format>,
    pub roles: Option<Vec<Role>>,
}

/// The targeting part of a recipe.
#[derive(Clone, Debug)]
pub struct Targeting {
    pub(crate) attention: bool,
    pub(crate) overrides: Vec<CompiledOverride>,
}

/// What the targeting says about one (site, role).
pub(crate) enum Target {
    /// Leave in f32.
    Skip,
    /// Use the recipe's own rule.
    Rule,
    /// Plain cast to this format.
    Cast(Format),
}

impl Targeting {
    pub fn new(attention: bool, overrides: &[Override]) -> Result<Self, String> {
        let overrides = overrides
            .iter()
            .map(|o| {
                let matcher = Glob::new(&o.sites)
                    .map_err(|e| format!("field `overrides`: bad glob `{}`: {e}", o.sites))?
                    .compile_matcher();
                let format = o
                    .format
                    .as_deref()
                    .map(|f| {
                        f.parse::<Format>()
                            .map_err(|e| format!("field `overrides.format`: {e}"))
                    })
                    .transpose()?;
                if o.keep && format.is_some() {
                    return Err(format!(
                        "field `overrides`: `{}` sets both `keep` and `format`; choose one",
                        o.sites
                    ));
                }
                Ok(CompiledOverride {
                    matcher,
                    keep: o.keep,
                    format,
                    roles: o.roles.clone(),
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Targeting {
            attention,
            overrides,
        })
    }

    /// Decide for one (site, role); `in_recipe` says whether the recipe quantizes `role` at all.
    pub(crate) fn target(&self, site: &str, role: Role, in_recipe: bool) -> Target {
        if let Some(o) = self.overrides.iter().find(|o| o.matcher.is_match(site)) {
            let applies = match &o.roles {
                Some(roles) => roles.contains(&role),
                None => in_recipe,
            };
            if applies {
                return match (o.keep, o.format) {
                    (true, _) => Target::Skip,
                    (false, Some(f)) => Target::Cast(f),
                    (false, None) => Target::Rule,
                };
            }
        }
        if !in_recipe || (!self.attention && is_attention_product(site)) {
            return Target::Skip;
        }
        Target::Rule
    }
}

/// The attention score (`q·kᵀ`) and value (`p·v`) products, which many recipes keep in high
/// precision.
pub fn is_attention_product(site: &str) -> bool {
    site.ends_with("attn.scores") || site.ends_with("attn.values")
}
