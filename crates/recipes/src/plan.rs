//! The one engine behind every recipe kind: per-role rules plus targeting, a format schedule and
//! delayed-scaling state.

use crate::delayed::DelayedScaling;
use crate::targeting::{Target, Targeting};
use fp8_core::{OptimizerPrecision, Recipe, RecipeError, Role};
use fp8_formats::{
    CastSpec, Format, Measure, QuantSpec, RandomHadamard, Rounding, Scaling, Stats, TensorScale,
};
use std::collections::BTreeMap;

/// How a role's scale is chosen.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ScaleRule {
    /// Straight cast.
    None,
    /// TE delayed scaling from the amax history.
    Delayed,
    /// A scheme computed from the tensor itself (current, row, block, MX, NVFP4 …).
    Fixed(Scaling),
}

/// The cast and scaling of one role.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RoleRule {
    pub cast: CastSpec,
    pub scale: ScaleRule,
}

/// A compiled recipe.
#[derive(Clone, Debug)]
pub struct Plan {
    pub rules: BTreeMap<Role, RoleRule>,
    pub targeting: Targeting,
    /// `(from_step, format)` phases, sorted by step: from `from_step` on, every rule casts to
    /// `format` (`float32` leaves tensors alone).
    pub schedule: Vec<(u64, Format)>,
    pub delayed: Option<DelayedScaling>,
    /// Quantize each backward GEMM operand afresh ([`Recipe::requantizes_backward`]).
    pub requantize: bool,
    /// The random Hadamard transform of the wgrad GEMM's inputs, if any.
    pub rht: Option<RhtRule>,
    /// The `optimizer:` section: precision of AdamW's moments and the master weights.
    pub optimizer: Option<OptimizerPrecision>,
}

/// Which sign vector the wgrad Hadamard transform uses at a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RhtRule {
    /// TransformerEngine's fixed signs (`reference_nvfp4.py`, `get_wgrad_sign_vector`).
    Te,
    /// Signs drawn from `seed`, redrawn every `every` steps (0: never): a pure function of
    /// (seed, step), shared by every layer.
    Seeded { seed: u64, every: u64 },
}

impl RhtRule {
    pub fn at(self, step: u64) -> RandomHadamard {
        match self {
            RhtRule::Te => RandomHadamard::te(),
            RhtRule::Seeded { seed, every } => {
                let epoch = step.checked_div(every).unwrap_or(0);
                RandomHadamard::from_seed(seed ^ epoch.wrapping_mul(0xd1b5_4a32_d192_ed03))
            }
        }
    }
}

impl Plan {
    /// The format `rule` uses at `step` after the schedule.
    fn format_at(&self, rule: &RoleRule, step: u64) -> Format {
        self.schedule
            .iter()
            .rev()
            .find(|(from, _)| *from <= step)
            .map_or(rule.cast.format, |(_, f)| *f)
    }

    fn key(site: &str, role: Role) -> String {
        format!("{site}/{role}")
    }
}

/// Stochastic rounding seeds differ per step, site and role so that no two casts share noise.
fn mix_seed(seed: u64, step: u64, site: &str, role: Role) -> u64 {
    let mut h = seed ^ 0x9e37_79b9_7f4a_7c15;
    let mut eat = |v: u64| {
        h = (h ^ v).wrapping_mul(0x100_0000_01b3);
        h ^= h >> 29;
    };
    eat(step);
    site.bytes().for_each(|b| eat(b as u64));
    eat(role as u64 + 1);
    h
}

impl Recipe for Plan {
    fn spec(&self, site: &str, role: Role, step: u64) -> Option<QuantSpec> {
        let rule = self.rules.get(&role);
        match self.targeting.target(site, role, rule.is_some()) {
            Target::Skip => None,
            Target::Cast(format) => Some(QuantSpec {
                cast: CastSpec {
                    format,
                    rounding: Rounding::NearestEven,
                    seed: 0,
                    saturate: false,
                    subnormals: true,
                },
                scaling: Scaling::None,
            }),
            Target::Rule => {
                let rule = rule?;
                let format = self.format_at(rule, step);
                if format == Format::FLOAT32 {
                    return None;
                }
                let mut cast = CastSpec {
                    format,
                    ..rule.cast
                };
                if cast.rounding == Rounding::Stochastic {
                    cast.seed = mix_seed(rule.cast.seed, step, site, role);
                }
                let scaling = match rule.scale {
                    ScaleRule::None => Scaling::None,
                    ScaleRule::Fixed(s) => s,
                    ScaleRule::Delayed => {
                        let d = self.delayed.as_ref()?;
                        Scaling::Tensor(TensorScale::Given(d.scale(&Plan::key(site, role))))
                    }
                };
                Some(QuantSpec { cast, scaling })
            }
        }
    }

    fn observe(&mut self, site: &str, role: Role, stats: &Stats) {
        let delayed_rule = self
            .rules
            .get(&role)
            .is_some_and(|r| r.scale == ScaleRule::Delayed);
        if !delayed_rule || !matches!(self.targeting.target(site, role, true), Target::Rule) {
            return;
        }
        if let Some(d) = &mut self.delayed {
            d.record(&Plan::key(site, role), stats.amax);
        }
    }

    /// Delayed scaling records the amax of every cast of its roles; nothing else looks.
    fn observe_needs(&self) -> Measure {
        let delayed_rule = self.rules.values().any(|r| r.scale == ScaleRule::Delayed);
        if self.delayed.is_some() && delayed_rule {
            Measure::Amax
        } else {
            Measure::Nothing
        }
    }

    fn requantizes_backward(&self) -> bool {
        self.requantize
    }

    fn optimizer(&self) -> Option<OptimizerPrecision> {
        self.optimizer
    }

    /// Only where the recipe's own rules quantize both wgrad operands: the transform belongs to
    /// the NVFP4 quantizer of those tensors (TE sets `random_hadamard_transform` on the
    /// quantizer parameters, transformer_engine/common/recipe/__init__.py:593-609), so a layer an
    /// override keeps in BF16 (or leaves alone) runs its wgrad GEMM untransformed, as in TE.
    fn wgrad_hadamard(&self, site: &str, step: u64) -> Option<RandomHadamard> {
        let by_rule = |role: Role| {
            let rule = self.rules.get(&role);
            matches!(
                self.targeting.target(site, role, rule.is_some()),
                Target::Rule
            ) && rule.is_some_and(|r| self.format_at(r, step) != Format::FLOAT32)
        };
        let rht = self.rht?;
        (by_rule(Role::XWgrad) && by_rule(Role::DyWgrad)).then(|| rht.at(step))
    }

    fn bind_sites(&mut self, sites: &[String]) -> Result<(), RecipeError> {
        self.targeting
            .bind_sites(sites)
            .map_err(|msg| RecipeError::Invalid {
                origin: "recipe".into(),
                msg,
            })
    }

    fn end_step(&mut self) {
        let rules = &self.rules;
        if let Some(d) = &mut self.delayed {
            d.update(|key| {
                let role: Role = key
                    .rsplit('/')
                    .next()
                    .and_then(|r| r.parse().ok())
                    .unwrap_or(Role::X);
                rules.get(&role).map_or(f32::MAX, |r| r.cast.format.max())
            });
        }
    }

    fn state(&self) -> serde_json::Value {
        match &self.delayed {
            Some(d) => serde_json::to_value(d).unwrap_or(serde_json::Value::Null),
            None => serde_json::Value::Null,
        }
    }

    fn restore(&mut self, state: serde_json::Value) -> Result<(), RecipeError> {
        match (&mut self.delayed, state) {
            (_, serde_json::Value::Null) => Ok(()),
            (Some(d), v) => {
                *d = serde_json::from_value(v).map_err(|e| RecipeError::State(e.to_string()))?;
                Ok(())
            }
            (None, _) => Err(RecipeError::State(
                "this recipe keeps no state, but the checkpoint has some".into(),
            )),
        }
    }
}
