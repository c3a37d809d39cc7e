//! The stability diagnostics a run records, with the early-warning threshold of each.
//!
//! The trainer measures these on logging steps and stores one series per name in the run's
//! `curves.json` ([`crate::results::Curves::diagnostics`]) and each series' worst value in
//! `summary.json`. The report asks of each one: did it cross its threshold before a run diverged
//! (lead time, hit rate), and how often did it cross in runs that never failed (false alarms)?
//! See [`crate::early_warning`].
//!
//! The thresholds were fixed from the definitions and the literature before any sweep was run,
//! and are not to be tuned on a sweep's outcome (a threshold fitted to the failures it is then
//! scored on would report a hit rate that means nothing). Each comes with its reason.

use crate::early_warning::{Direction, Threshold};

/// One diagnostic: its series name, what it measures, its alarm threshold and why there.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Diagnostic {
    pub name: &'static str,
    pub what: &'static str,
    pub threshold: Threshold,
    pub why: &'static str,
}

const fn above(value: f64) -> Threshold {
    Threshold {
        value,
        direction: Direction::Above,
    }
}

const fn below(value: f64) -> Threshold {
    Threshold {
        value,
        direction: Direction::Below,
    }
}

/// Largest attention logit `q·kᵀ/√d` over layers, heads and the causal (query, key) pairs.
pub const ATTN_LOGIT_MAX: &str = "attn_logit_max";
/// Largest output log-partition `log Z = logsumexp(logits)` over the tokens of the batch.
pub const LOG_Z_MAX: &str = "log_z_max";
/// Largest update-to-weight RMS ratio `rms(Δθ)/rms(θ)` over parameter groups.
pub const UPDATE_RATIO_MAX: &str = "update_ratio_max";
/// Fraction of parameter elements the optimizer step left bit-for-bit unchanged.
pub const STAGNATION: &str = "stagnation";
/// `‖g‖ / ‖g_q − g‖`: the unquantized gradient's norm over the norm of the error the recipe's
/// casts add to it (same weights, same batch).
pub const GRAD_NOISE_RATIO: &str = "grad_noise_ratio";
/// Logit sharpness φ over its value at the first evaluation.
pub const SHARPNESS_GROWTH: &str = "sharpness_growth";
/// Largest underflow fraction (non-zero inputs cast to zero) over sites and roles.
pub const UNDERFLOW_MAX: &str = "underflow_max";
/// Largest saturation fraction (inputs clamped to the format's largest value) over sites and
/// roles.
pub const SATURATION_MAX: &str = "saturation_max";

/// Every diagnostic, in the order reports list them.
pub const DIAGNOSTICS: [Diagnostic; 8] = [
    Diagnostic {
        name: ATTN_LOGIT_MAX,
        what: "largest attention logit",
        threshold: above(30.0),
        why: "past 30 every other weight of that softmax row can be e^-30 ≈ 1e-13 of the top \
              one, far below bf16's resolution: the attention is numerically one-hot, the \
              attention-logit growth Wortsman et al. (2023) tie to instability",
    },
    Diagnostic {
        name: LOG_Z_MAX,
        what: "largest output log-partition log Z",
        threshold: above(30.0),
        why: "log Z starts near ln V (≈ 5 here); logits 30 nats above that are the output-logit \
              divergence z-loss exists to prevent",
    },
    Diagnostic {
        name: UPDATE_RATIO_MAX,
        what: "largest update-to-weight RMS ratio of a group of weight matrices",
        threshold: above(0.1),
        why: "an Adam step moves a group by about the learning rate relative to its size; one \
              step changing a group by 10 % of its RMS is a jump, not a descent",
    },
    Diagnostic {
        name: STAGNATION,
        what: "fraction of weights the step left unchanged",
        threshold: above(0.5),
        why: "when most updates are smaller than half a unit in the last place of the weight, \
              the model stops learning whatever the gradient says",
    },
    Diagnostic {
        name: GRAD_NOISE_RATIO,
        what: "gradient norm over the norm of the recipe's gradient error",
        threshold: below(1.732_050_807_568_877_2),
        why: "Chmiel et al. (2025, FP4 All the Way): below √3 times the quantization noise, \
              quantized training stops being effective",
    },
    Diagnostic {
        name: SHARPNESS_GROWTH,
        what: "logit sharpness relative to the first evaluation",
        threshold: above(10.0),
        why: "a tenfold rise of Lee et al.'s sharpness φ is the loss landscape steepening by an \
              order of magnitude",
    },
    Diagnostic {
        name: UNDERFLOW_MAX,
        what: "largest underflow fraction of a cast",
        threshold: above(0.5),
        why: "half of a tensor's non-zero elements flushed to zero: the cast no longer \
              represents the tensor",
    },
    Diagnostic {
        name: SATURATION_MAX,
        what: "largest saturation fraction of a cast",
        threshold: above(0.01),
        why: "one element in a hundred clamped at the format's maximum: the scale no longer \
              covers the tensor's range",
    },
];

/// The definition of `name`, if it is one of [`DIAGNOSTICS`].
pub fn find(name: &str) -> Option<&'static Diagnostic> {
    DIAGNOSTICS.iter().find(|d| d.name == name)
}

/// The worst value of a series on the alarm side of its direction: the maximum for
/// [`Direction::Above`], the minimum for [`Direction::Below`]; a non-finite value is worst of
/// all (NaN stays NaN). `None` for an empty series.
pub fn worst(series: &[(u64, f64)], direction: Direction) -> Option<f64> {
    let mut it = series.iter().map(|&(_, v)| v);
    let first = it.next()?;
    Some(it.fold(first, |w, v| {
        if w.is_nan() || v.is_nan() {
            f64::NAN
        } else {
            match direction {
                Direction::Above => w.max(v),
                Direction::Below => w.min(v),
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_distinct_and_found() {
        for d in &DIAGNOSTICS {
            assert_eq!(find(d.name), Some(d));
            assert_eq!(DIAGNOSTICS.iter().filter(|e| e.name == d.name).count(), 1);
        }
        assert_eq!(find("nope"), None);
        assert_eq!(find(GRAD_NOISE_RATIO).unwrap().threshold.value, 3f64.sqrt());
    }

    #[test]
    fn worst_is_the_alarm_side_extreme() {
        let s = [(0, 2.0), (10, 5.0), (20, 1.0)];
        assert_eq!(worst(&s, Direction::Above), Some(5.0));
        assert_eq!(worst(&s, Direction::Below), Some(1.0));
        assert_eq!(worst(&[], Direction::Above), None);
        assert!(worst(&[(0, 1.0), (1, f64::NAN)], Direction::Below)
            .unwrap()
            .is_nan());
        assert_eq!(
            worst(&[(0, 1.0), (1, f64::INFINITY)], Direction::Above),
            Some(f64::INFINITY)
        );
    }
}
