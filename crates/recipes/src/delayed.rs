//! TransformerEngine's delayed scaling (docs/DESIGN.md §4): the scale a cast uses at step t comes from
//! the amax history recorded up to step t−1.
//!
//! Per (site, role): `history[0]` collects this step's amax (the largest over every cast of the
//! step, so gradient accumulation and repeated calls agree with TE's reduction). At the end of
//! the step: `amax = max(history)` (`max`) or `history[0]` (`most_recent`);
//! `scale = (fmt_max / amax) / 2^margin`, keeping the previous scale when amax is 0 or not finite
//! and using `f32::MAX` when the scale overflows; then the history rolls by one as
//! `torch.roll(h, -1)` does and `history[0]` is zeroed.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How the amax history is reduced to one amax.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AmaxAlgo {
    #[default]
    Max,
    MostRecent,
}

/// One tensor's history and current scale.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Slot {
    history: Vec<f32>,
    scale: f32,
}

/// The amax histories and scales of every (site, role) a recipe has seen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DelayedScaling {
    pub history_len: usize,
    pub algo: AmaxAlgo,
    pub margin: i32,
    slots: BTreeMap<String, Slot>,
}

impl DelayedScaling {
    pub fn new(history_len: usize, algo: AmaxAlgo, margin: i32) -> Self {
        DelayedScaling {
            history_len: history_len.max(1),
            algo,
            margin,
            slots: BTreeMap::new(),
        }
    }

    /// The scale the next cast of `key` uses (1 before any history exists, as in TE).
    pub fn scale(&self, key: &str) -> f32 {
        self.slots.get(key).map_or(1.0, |s| s.scale)
    }

    /// Record the amax of a cast made this step.
    pub fn record(&mut self, key: &str, amax: f32) {
        let len = self.history_len;
        let slot = self.slots.entry(key.to_string()).or_insert_with(|| Slot {
            history: vec![0.0; len],
            scale: 1.0,
        });
        // NaN/inf amaxes are recorded as they are; the update below ignores them.
        let h0 = &mut slot.history[0];
        *h0 = if amax.is_nan() || h0.is_nan() {
            f32::NAN
        } else {
            h0.max(amax)
        };
    }

    /// End of step: new scales from the histories (`fmt_max` per key), then roll.
    pub fn update(&mut self, fmt_max: impl Fn(&str) -> f32) {
        let (algo, margin) = (self.algo, self.margin);
        for (key, slot) in &mut self.slots {
            let amax = match algo {
                AmaxAlgo::Max => slot.history.iter().fold(0.0f32, |m, &a| {
                    if m.is_nan() || a.is_nan() {
                        f32::NAN
                    } else {
                        m.max(a)
                    }
                }),
                AmaxAlgo::MostRecent => slot.history[0],
            };
            slot.scale = next_scale(slot.scale, amax, fmt_max(key), margin);
            slot.history.rotate_left(1);
            slot.history[0] = 0.0;
        }
    }
}

/// `(fmt_max / amax) / 2^margin` with TE's guards.
pub(crate) fn next_scale(prev: f32, amax: f32, fmt_max: f32, margin: i32) -> f32 {
    if amax == 0.0 || !amax.is_finite() {
        return prev;
    }
    let scale = (fmt_max / amax) / 2f32.powi(margin);
    if scale.is_infinite() {
        f32::MAX
    } else {
        scale
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scripted amax sequence, history length 3, `max`, margin 0, fmt_max 448.
    #[test]
    fn scripted_history_max() {
        let mut d = DelayedScaling::new(3, AmaxAlgo::Max, 0);
        let fm = |_: &str| 448.0;
        // (amax recorded this step, scale the NEXT step uses). TE's roll keeps the last L amaxes.
        let steps: [(f32, f32); 5] = [
            (2.0, 224.0),  // window {2}
            (4.0, 112.0),  // {2, 4}
            (1.0, 112.0),  // {2, 4, 1}
            (0.5, 112.0),  // {4, 1, 0.5}: 2 left the window
            (0.25, 448.0), // {1, 0.5, 0.25}
        ];
        for (i, (amax, expect)) in steps.iter().enumerate() {
            let used = if i == 0 { 1.0 } else { steps[i - 1].1 };
            assert_eq!(d.scale("s"), used);
            d.record("s", *amax);
            d.update(fm);
            assert_eq!(d.scale("s"), *expect, "after step {i}");
        }
        assert_eq!(d.scale("s"), 448.0);
        d.record("s", 0.0);
        d.update(fm);
        // window {0.5, 0.25, 0}: max 0.5 → 448/0.5 = 896.
        assert_eq!(d.scale("s"), 896.0);
    }

    #[test]
    fn most_recent_margin_and_guards() {
        let mut d = DelayedScaling::new(4, AmaxAlgo::MostRecent, 2);
        let fm = |_: &str| 57344.0;
        d.record("g", 7.0);
        d.record("g", 14.0); // two casts in one step: the larger counts
        d.update(fm);
        assert_eq!(d.scale("g"), 57344.0 / 14.0 / 4.0);
        let before = d.scale("g");
        d.record("g", 0.0); // zero amax keeps the scale
        d.update(fm);
        assert_eq!(d.scale("g"), before);
        d.record("g", f32::INFINITY); // non-finite keeps the scale
        d.update(fm);
        assert_eq!(d.scale("g"), before);
        d.record("g", f32::NAN);
        d.update(fm);
        assert_eq!(d.scale("g"), before);
        d.record("g", 1e-45); // tiny amax: scale overflows → f32::MAX
        d.update(fm);
        assert_eq!(d.scale("g"), f32::MAX);
    }

    #[test]
    fn nan_poisons_max_window_until_it_leaves() {
        let mut d = DelayedScaling::new(2, AmaxAlgo::Max, 0);
        let fm = |_: &str| 448.0;
        d.record("x", 1.0);
        d.update(fm);
        assert_eq!(d.scale("x"), 448.0);
        d.record("x", f32::NAN);
        d.update(fm); // window {1, NaN}: keep
        assert_eq!(d.scale("x"), 448.0);
        d.record("x", 2.0);
        d.update(fm); // window {NaN, 2}: keep
        assert_eq!(d.scale("x"), 448.0);
        d.record("x", 4.0);
        d.update(fm); // window {2, 4}
        assert_eq!(d.scale("x"), 112.0);
    }
}
