//! Which (site, role) pairs a recipe touches: default roles, attention products, glob overrides.

use fp8_core::Role;
use fp8_formats::Format;
use globset::{Glob, GlobMatcher};
use serde::Deserialize;

/// A per-site override, matched by glob on the site name (`lm_head`, `h.0.*`, `*.attn.scores`)
/// and/or by layer range (`first: 2` — blocks 0 and 1; `last: 8` — the model's last eight
/// blocks, as NVIDIA's NVFP4 recipe keeps in BF16). A site's block is the first numeric
/// component of its name (`h.3.mlp.fc` is in block 3; `lm_head` is in none). A glob and a layer
/// range must both match; `first` and `last` together cover both ends of the model. The first
/// matching override wins.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Override {
    /// Glob on site names (default: every site).
    #[serde(default)]
    pub sites: Option<String>,
    /// Only the first N blocks.
    #[serde(default)]
    pub first: Option<usize>,
    /// Only the last M blocks (needs the model's sites: `Recipe::bind_sites`).
    #[serde(default)]
    pub last: Option<usize>,
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
    matcher: Option<GlobMatcher>,
    first: Option<usize>,
    last: Option<usize>,
    pub keep: bool,
    pub format: Option<Format>,
    pub roles: Option<Vec<Role>>,
}

impl CompiledOverride {
    /// Does the override cover `site`, in a model of `layers` blocks (unknown: `None`)?
    fn covers(&self, site: &str, layers: Option<usize>) -> bool {
        if self.matcher.as_ref().is_some_and(|m| !m.is_match(site)) {
            return false;
        }
        if self.first.is_none() && self.last.is_none() {
            return true;
        }
        let Some(block) = block_index(site) else {
            return false;
        };
        let in_first = self.first.map(|n| block < n);
        let in_last = match (self.last, layers) {
            (Some(m), Some(n)) => Some(block + m >= n),
            (Some(_), None) => Some(false),
            (None, _) => None,
        };
        // Both given: the site is in either range (`first: 2, last: 8` keeps both ends).
        in_first.unwrap_or(false) || in_last.unwrap_or(false)
    }
}

/// The block a site belongs to: the first dot-separated component that is a number.
pub fn block_index(site: &str) -> Option<usize> {
    site.split('.').find_map(|p| p.parse().ok())
}

/// The targeting part of a recipe.
#[derive(Clone, Debug)]
pub struct Targeting {
    pub(crate) attention: bool,
    pub(crate) overrides: Vec<CompiledOverride>,
    /// Blocks of the model, once told its sites ([`Targeting::bind_sites`]).
    pub(crate) layers: Option<usize>,
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
                let matcher = o
                    .sites
                    .as_deref()
                    .map(|g| {
                        Glob::new(g)
                            .map(|g| g.compile_matcher())
                            .map_err(|e| format!("field `overrides`: bad glob `{g}`: {e}"))
                    })
                    .transpose()?;
                let what = describe(o);
                if o.sites.is_none() && o.first.is_none() && o.last.is_none() {
                    return Err(
                        "field `overrides`: each override needs `sites`, `first` or `last`".into(),
                    );
                }
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
                        "field `overrides`: {what} sets both `keep` and `format`; choose one"
                    ));
                }
                Ok(CompiledOverride {
                    matcher,
                    first: o.first,
                    last: o.last,
                    keep: o.keep,
                    format,
                    roles: o.roles.clone(),
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Targeting {
            attention,
            overrides,
            layers: None,
        })
    }

    /// Learn the number of blocks from the model's site names (largest block index + 1).
    /// Errors when an override names `last` and no site has a block index.
    pub fn bind_sites(&mut self, sites: &[String]) -> Result<(), String> {
        self.layers = sites
            .iter()
            .filter_map(|s| block_index(s))
            .max()
            .map(|b| b + 1);
        if self.layers.is_none() && self.overrides.iter().any(|o| o.last.is_some()) {
            return Err(
                "field `overrides`: `last` needs numbered blocks (`h.0.…`), \
                 but no site of this model has a block number"
                    .into(),
            );
        }
        Ok(())
    }

    /// Whether an override needs [`bind_sites`](Self::bind_sites) before it can match.
    pub fn needs_sites(&self) -> bool {
        self.overrides.iter().any(|o| o.last.is_some())
    }

    /// Decide for one (site, role); `in_recipe` says whether the recipe quantizes `role` at all.
    pub(crate) fn target(&self, site: &str, role: Role, in_recipe: bool) -> Target {
        if let Some(o) = self.overrides.iter().find(|o| o.covers(site, self.layers)) {
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

/// How an override reads in an error message.
fn describe(o: &Override) -> String {
    let mut parts = Vec::new();
    if let Some(g) = &o.sites {
        parts.push(format!("sites `{g}`"));
    }
    if let Some(n) = o.first {
        parts.push(format!("first {n}"));
    }
    if let Some(m) = o.last {
        parts.push(format!("last {m}"));
    }
    format!("the override for {}", parts.join(", "))
}
