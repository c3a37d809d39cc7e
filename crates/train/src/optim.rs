//! AdamW whose moments and master weights live in reduced precision: the recipe's `optimizer:`
//! section ([`OptimizerPrecision`]).
//!
//! Each step is fp8's fused AdamW step ([`fp8_core::fused::adamw`]: one pass per parameter, the
//! same f32 operations as burn's `AdamW`, so with nothing to quantize the run is bit-identical to
//! burn's `AdamWConfig::init`), computed in f32 from the *stored* moments, followed by:
//!
//! 1. the new moments are stored quantized, `m̂ = cast(m·s)·(1/s)` with the moment's spec (by
//!    default one current scale per tensor, `s = fmt_max / amax`: Fishman et al., "Scaling FP8
//!    training to trillion-token LLMs", arXiv 2409.12517, first moment E4M3, second E5M2);
//! 2. the updated weights are rounded to the master-weight format (bf16, nearest or stochastic).
//!
//! The update itself uses the f32 moments of this step and only the stored copies are quantized,
//! as torchao's low-bit AdamW does (torchao/optim/adam.py:178-209, `single_param_adam`: "keep
//! high precision copy for param update", `exp_avg.copy_(exp_avg_f32)`; bf16 stochastic rounding
//! of the weights in `_fp32_to_bf16_sr`, torchao/optim/quant_utils.py:121-146). The next step
//! starts from the dequantized stored moments.
//!
//! The state is burn's [`AdamWState`] holding the dequantized moments (exactly the values a
//! format-and-scale store decodes to), so checkpoints keep burn's layout and a resumed run
//! continues bit for bit.
//!
//! Stochastic rounding of the weights draws its bits from fp8's counter-based generator, keyed
//! by the section's seed, the tensor's step count and a hash of the tensor's f32 bits before
//! rounding: burn's [`SimpleOptimizer`] is not told which parameter it steps, and this key is a
//! pure function of the run's state (so resuming reproduces it) that differs between tensors.

use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamWState, LearningRate, SimpleOptimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use fp8_core::fused::adamw::{AdamW, AdamWConfig};
use fp8_core::fused::FusedOps;
use fp8_core::OptimizerPrecision;
use fp8_formats::{cast_slice, quantize, CastSpec, QuantSpec, Rounding};

/// AdamW with quantized state; see the module docs.
#[derive(Clone)]
pub struct QuantAdamW {
    adamw: AdamW,
    precision: OptimizerPrecision,
}

impl QuantAdamW {
    /// `config`'s AdamW with state and master weights kept as `precision` says.
    pub fn new(config: &AdamWConfig, precision: OptimizerPrecision) -> QuantAdamW {
        QuantAdamW {
            adamw: config.build(),
            precision,
        }
    }

    /// The optimizer for a module, as `AdamWConfig::init` builds burn's.
    pub fn init<B: AutodiffBackend<InnerBackend: FusedOps>, M: AutodiffModule<B>>(
        config: &AdamWConfig,
        precision: OptimizerPrecision,
    ) -> OptimizerAdaptor<QuantAdamW, M, B> {
        OptimizerAdaptor::from(QuantAdamW::new(config, precision))
    }
}

impl<B: FusedOps> SimpleOptimizer<B> for QuantAdamW {
    type State<const D: usize> = AdamWState<B, D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<B, D>, Option<Self::State<D>>) {
        let (tensor, state) = SimpleOptimizer::<B>::step(&self.adamw, lr, tensor, grad, state);
        let Some(mut state) = state else {
            return (tensor, None);
        };
        let p = &self.precision;
        if let Some(spec) = &p.first_moment {
            state.momentum.moment_1 = stored(state.momentum.moment_1, spec, p.expansion_group);
        }
        if let Some(spec) = &p.second_moment {
            state.momentum.moment_2 = stored(state.momentum.moment_2, spec, p.expansion_group);
        }
        let tensor = match &p.master {
            Some(cast) => rounded(tensor, cast, state.momentum.time as u64),
            None => tensor,
        };
        (tensor, Some(state))
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &B::Device) -> Self::State<D> {
        <AdamW as SimpleOptimizer<B>>::to_device(state, device)
    }
}

fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("a float tensor converts to f32")
}

/// `t` as its quantized store decodes it: with `spec`'s scaling, or with COAT's dynamic range
/// expansion over groups of `expansion_group` elements.
fn stored<B: Backend, const D: usize>(
    t: Tensor<B, D>,
    spec: &QuantSpec,
    expansion_group: Option<usize>,
) -> Tensor<B, D> {
    let (dims, device) = (t.dims(), t.device());
    let mut v = host(t);
    match expansion_group {
        Some(group) => expanded_store(&mut v, &spec.cast, group),
        None => {
            quantize(&mut v, &dims, spec);
        }
    }
    Tensor::from_data(TensorData::new(v, dims), &device)
}

/// COAT's dynamic range expansion (Xi et al., "COAT: Compressing Optimizer states and
/// Activation for memory-efficient FP8 Training", arXiv 2410.19313, §4.2; the expand function
/// `f(x) = sign(x)·|x|^k` as the project page states it), applied to `v` in place: what a store
/// of the moments decodes to.
///
/// For each group of `group` consecutive elements (the last one may be shorter), with `hi` and
/// `lo` the largest and smallest non-zero finite magnitudes:
/// - `k = ln(R_fmt) / ln(hi / lo)`, where `R_fmt = max / smallest positive` of the format (E4M3:
///   448 / 2⁻⁹ ≈ 2.3·10⁵, the "about 2e5" of the paper), so `f` maps the group's range onto the
///   format's; `k = 1` for a group with one magnitude;
/// - `y = sign(x)·|x|^k`, stored as `cast(y·s)` with one scale per group, `s = max / hi^k`;
/// - decoded as `sign(q)·(|q|/s)^(1/k)`.
///
/// `hi` and `lo` therefore come back exactly (up to the f32 rounding of the powers), where a
/// plain per-group scale flushes to zero every element below `hi / R_fmt`. Zeros stay zero, and
/// non-finite elements go through the cast unchanged (a NaN moment stays NaN). The powers are
/// computed in f64.
pub(crate) fn expanded_store(v: &mut [f32], cast: &CastSpec, group: usize) {
    let f = cast.format;
    let smallest = if cast.subnormals {
        f.min_subnormal()
    } else {
        f.min_normal()
    };
    let (max, min_pos) = (f64::from(f.max()), f64::from(smallest));
    let range_fmt = (max / min_pos).ln();
    for g in v.chunks_mut(group.max(1)) {
        let (hi, lo) = g.iter().filter(|x| x.is_finite() && **x != 0.0).fold(
            (0.0f64, f64::INFINITY),
            |(hi, lo), x| {
                let a = f64::from(x.abs());
                (hi.max(a), lo.min(a))
            },
        );
        if hi == 0.0 {
            cast_slice(g, cast, 0); // zeros and non-finite values only
            continue;
        }
        let k = if hi > lo {
            range_fmt / (hi / lo).ln()
        } else {
            1.0
        };
        let s = max / hi.powf(k);
        for x in g.iter_mut() {
            if x.is_finite() && *x != 0.0 {
                let a = f64::from(x.abs());
                *x = (a.powf(k) * s).copysign(f64::from(*x)) as f32;
            }
        }
        cast_slice(g, cast, 0);
        for x in g.iter_mut() {
            if x.is_finite() && *x != 0.0 {
                let q = f64::from(x.abs());
                *x = (q / s).powf(1.0 / k).copysign(f64::from(*x)) as f32;
            }
        }
    }
}

/// The weights `t` rounded to the master format; `time` is the tensor's AdamW step count.
fn rounded<B: Backend, const D: usize>(
    t: Tensor<B, D>,
    cast: &CastSpec,
    time: u64,
) -> Tensor<B, D> {
    let (dims, device) = (t.dims(), t.device());
    let mut v = host(t);
    let mut spec = *cast;
    if spec.rounding == Rounding::Stochastic {
        spec.seed = stream_key(cast.seed, time, &v);
    }
    cast_slice(&mut v, &spec, 0);
    Tensor::from_data(TensorData::new(v, dims), &device)
}

/// The stochastic-rounding key of one tensor's update: FNV-1a over (seed, step count, length,
/// every element's bits).
fn stream_key(seed: u64, time: u64, v: &[f32]) -> u64 {
    const PRIME: u64 = 0x100_0000_01b3;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |x: u64| {
        h = (h ^ x).wrapping_mul(PRIME);
    };
    eat(seed);
    eat(time);
    eat(v.len() as u64);
    for x in v {
        eat(u64::from(x.to_bits()));
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use fp8_formats::{Format, Scaling, TensorScale};

    type B = NdArray<f32>;

    fn t(v: &[f32]) -> Tensor<B, 1> {
        Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), &Default::default())
    }

    fn fp8_moments() -> OptimizerPrecision {
        let per_tensor = |f: Format| QuantSpec {
            cast: CastSpec::new(f).with_saturate(true),
            scaling: Scaling::Tensor(TensorScale::Current { pow2: false }),
        };
        OptimizerPrecision {
            first_moment: Some(per_tensor(Format::FLOAT8_E4M3FN)),
            second_moment: Some(per_tensor(Format::FLOAT8_E5M2)),
            master: None,
            expansion_group: None,
        }
    }

    fn config() -> AdamWConfig {
        AdamWConfig::new()
            .with_beta_1(0.9)
            .with_beta_2(0.999)
            .with_epsilon(1e-8)
            .with_weight_decay(0.0)
    }

    /// Two AdamW steps with E4M3 / E5M2 moments under per-tensor scaling, against values worked
    /// by hand from the definitions.
    #[test]
    fn fp8_moments_match_a_hand_computed_adamw_step() {
        let opt = QuantAdamW::new(&config(), fp8_moments());
        let lr = 0.1;
        // Step 1, g = [1, 0.3, −0.01]. burn forms m = g·(1 − β₁) and v = g²·(1 − β₂) with the
        // factors in f32 (f₁ = 0.100000024, f₂ = 0.0010000467). The update uses these f32
        // moments: bias-corrected m/(√v + ε) ≈ g/|g|, so p ≈ [1, 1, 1] − 0.1·[1, 1, −1].
        let p0 = t(&[1.0, 1.0, 1.0]);
        let (p1, s1) = opt.step(lr, p0, t(&[1.0, 0.3, -0.01]), None);
        let p1 = host(p1);
        for (got, want) in p1.iter().zip([0.9f32, 0.9, 1.1]) {
            assert!((got - want).abs() < 1e-5, "{p1:?}");
        }
        let s1 = s1.unwrap();
        let (f1, f2) = (1.0f32 - 0.9, 1.0f32 - 0.999);
        // Stored first moment, E4M3 with the tensor scale s = 448 / amax, amax = f₁:
        // m₀·s = 448 → 448; 0.3·448 = 134.4 → 128 (E4M3 spacing 16 in [128, 256));
        // −0.01·448 = −4.48 → −4.5 (spacing 0.5 in [4, 8)); dequantized by 1/s.
        let m = host(s1.momentum.moment_1.clone());
        let inv = 1.0 / (448.0 / f1);
        assert_eq!(m, [448.0 * inv, 128.0 * inv, -4.5 * inv]);
        // Stored second moment, E5M2 with s = 57344 / amax, amax = f₂: v₀ → 57344;
        // 0.09·57344 = 5160.96 → 5120 (spacing 1024 in [4096, 8192)); 1e-4·57344 = 5.7344 → 6
        // (spacing 1 in [4, 8)).
        let v = host(s1.momentum.moment_2.clone());
        let inv = 1.0 / (57344.0 / f2);
        assert_eq!(v, [57344.0 * inv, 5120.0 * inv, 6.0 * inv]);
        // Step 2, g = 0: m = 0.9·m̂, v = 0.999·v̂ from the *stored* values; the update is
        // (m/(1−0.9²)) / (√(v/(1−0.999²)) + ε), checked in f64 against the f32 result.
        let (p2, s2) = opt.step(lr, t(&p1), t(&[0.0, 0.0, 0.0]), Some(s1));
        let p2 = host(p2);
        for (i, ((&p2, &p1), (&m, &v))) in p2.iter().zip(&p1).zip(m.iter().zip(&v)).enumerate() {
            let m2 = 0.9 * f64::from(m);
            let v2 = 0.999 * f64::from(v);
            let upd = (m2 / (1.0 - 0.81)) / ((v2 / (1.0 - 0.999f64.powi(2))).sqrt() + 1e-8);
            let want = f64::from(p1) - 0.1 * upd;
            assert!((f64::from(p2) - want).abs() < 1e-5, "{i}: {p2} vs {want}");
        }
        assert_eq!(s2.unwrap().momentum.time, 2);
    }

    /// With no `optimizer:` section the steps are burn's AdamW's, bit for bit.
    #[test]
    fn without_precision_it_is_burns_adamw() {
        let cfg = config().with_weight_decay(0.1);
        let ours = QuantAdamW::new(&cfg, OptimizerPrecision::default());
        let burns = burn::optim::AdamWConfig::new()
            .with_beta_1(0.9)
            .with_beta_2(0.999)
            .with_epsilon(1e-8)
            .with_weight_decay(0.1)
            .build();
        let g = [0.5f32, -1e-3, 7.0, 1e-20];
        let (mut a, mut sa) = (t(&[1.0, -2.0, 0.25, 3.0]), None);
        let (mut b, mut sb) = (a.clone(), None);
        for step in 0..5 {
            let grad = t(&g.map(|x| x * (step as f32 + 1.0)));
            (a, sa) = ours.step(1e-2, a, grad.clone(), sa);
            (b, sb) = SimpleOptimizer::<B>::step(&burns, 1e-2, b, grad, sb);
        }
        assert_eq!(host(a), host(b));
        let (sa, sb) = (sa.unwrap().momentum, sb.unwrap().momentum);
        assert_eq!(host(sa.moment_1), host(sb.moment_1));
        assert_eq!(host(sa.moment_2), host(sb.moment_2));
    }

    /// bf16 master weights: nearest rounds the updated weight to bf16; stochastic lands on one of
    /// the two bf16 neighbours, the upper one about as often as the fraction says.
    #[test]
    fn bf16_master_weights_round_nearest_or_stochastically() {
        let bf16 = |rounding| OptimizerPrecision {
            master: Some(CastSpec {
                format: Format::BFLOAT16,
                rounding,
                seed: 7,
                saturate: false,
                subnormals: true,
            }),
            ..OptimizerPrecision::default()
        };
        // lr 0 and no decay leave the weights as they are: only the rounding acts.
        // 1 + 2^-9 lies a quarter of the way from 1 to the next bf16 value 1 + 2^-7.
        let x = 1.0f32 + 2f32.powi(-9);
        let n = 4096;
        let p = Tensor::<B, 1>::from_data(TensorData::new(vec![x; n], [n]), &Default::default());
        let g = Tensor::<B, 1>::zeros([n], &Default::default());
        let near = QuantAdamW::new(&config(), bf16(Rounding::NearestEven));
        let (q, _) = near.step(0.0, p.clone(), g.clone(), None);
        assert!(host(q).iter().all(|&v| v == 1.0));
        let sr = QuantAdamW::new(&config(), bf16(Rounding::Stochastic));
        let (q, _) = sr.step(0.0, p.clone(), g.clone(), None);
        let q = host(q);
        let up = q.iter().filter(|&&v| v == 1.0 + 2f32.powi(-7)).count();
        assert_eq!(up + q.iter().filter(|&&v| v == 1.0).count(), n);
        // Binomial(4096, 1/4): mean 1024, sd 27.7; 6 sd either side.
        assert!((858..=1190).contains(&up), "{up} of {n} rounded up");
        // A pure function of the state: the same step gives the same bits.
        let (again, _) = sr.step(0.0, p, g, None);
        assert_eq!(host(again), q);
    }
    fn e4m3() -> CastSpec {
        CastSpec::new(Format::FLOAT8_E4M3FN).with_saturate(true)
    }

    /// One current scale for the whole slice: the plain per-group store.
    fn plain(v: &[f32]) -> Vec<f32> {
        let mut v = v.to_vec();
        let spec = QuantSpec {
            cast: e4m3(),
            scaling: Scaling::Tensor(TensorScale::Current { pow2: false }),
        };
        let n = v.len();
        quantize(&mut v, &[n], &spec);
        v
    }

    /// Worked by hand for the group [1, 0.5, 0.125] in E4M3: R_fmt = 448 / 2⁻⁹ = 7·2¹⁵, so
    /// k = ln(7·2¹⁵) / ln 8 = 12.343118 / 2.0794415 = 5.935785. 0.5 becomes
    /// 448·0.5^k = 7.3191, which E4M3 (spacing 0.5 in [4, 8)) rounds to 7.5, decoded as
    /// (7.5 / 448)^(1/k) = 0.502067. The ends map to 448 and 2⁻⁹, both representable, and come
    /// back exactly; zeros stay zero.
    #[test]
    fn dynamic_range_expansion_matches_a_hand_worked_group() {
        let mut v = [1.0f32, 0.5, 0.125, 0.0];
        expanded_store(&mut v, &e4m3(), 4);
        assert!((v[0] - 1.0).abs() < 1e-6, "{v:?}");
        assert!((v[1] - 0.502_067).abs() < 1e-5, "{v:?}");
        assert!((v[2] - 0.125).abs() < 1e-6, "{v:?}");
        assert_eq!(v[3].to_bits(), 0);
        // Groups are independent: a second group of one magnitude (k = 1) is a plain scaled
        // cast, exact for a power of two, and a negative sign survives.
        let mut w = [1.0f32, 0.5, 0.125, 0.0, -3.0, -3.0];
        expanded_store(&mut w, &e4m3(), 4);
        assert_eq!(&w[..4], &v[..]);
        assert_eq!(&w[4..], &[-3.0, -3.0]);
    }

    /// A moment 10⁻⁶ of its group's largest: one plain scale puts it at 4.5·10⁻⁴, below half
    /// of E4M3's smallest subnormal 2⁻⁹ ≈ 1.95·10⁻³, so it is flushed to zero; the expansion
    /// (k = ln(7·2¹⁵) / ln 10⁶ ≈ 0.893) maps it onto 2⁻⁹ and it survives.
    #[test]
    fn dynamic_range_expansion_keeps_what_a_plain_scale_flushes() {
        let x = [1.0f32, 1e-6, 0.5];
        assert_eq!(plain(&x)[1], 0.0);
        let mut v = x;
        expanded_store(&mut v, &e4m3(), 3);
        assert!((v[1] / 1e-6 - 1.0).abs() < 1e-4, "{v:?}");
        assert!((v[0] - 1.0).abs() < 1e-6, "{v:?}");
    }

    /// COAT's point: a group whose range (10, like Adam's second moment in the paper) leaves
    /// most of E4M3's range unused. Expanded by k = ln(7·2¹⁵) / ln 10 ≈ 5.36, a relative error ε
    /// of the stored value becomes ε / k after the inverse power, so the mean relative error
    /// over 128 log-uniform values must drop well below the plain store's (by about 3×).
    #[test]
    fn dynamic_range_expansion_cuts_the_error_of_a_narrow_group() {
        let mut rng = fp8_formats::rng::SplitMix64::new(11);
        let mut x: Vec<f32> = (0..128)
            .map(|_| {
                let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                (10f64.ln() * (u - 1.0)).exp() as f32
            })
            .collect();
        x[0] = 1.0;
        x[1] = 0.1;
        let err = |q: &[f32]| -> f64 {
            q.iter()
                .zip(&x)
                .map(|(q, x)| f64::from((q - x).abs() / x))
                .sum::<f64>()
                / x.len() as f64
        };
        let mut expanded = x.clone();
        expanded_store(&mut expanded, &e4m3(), 128);
        let (e, p) = (err(&expanded), err(&plain(&x)));
        assert!(e < 0.5 * p, "expanded {e}, plain {p}");
    }

    /// `moment_scaling: expand(G)` in a recipe's optimizer section reaches the optimizer.
    #[test]
    fn the_recipe_section_turns_the_expansion_on() {
        let r = fp8_core::recipe::from_ron_str(
            r#"(kind: "fp32", optimizer: (first_moment: "float8_e4m3fn",
                second_moment: "float8_e4m3fn", moment_scaling: expand(128)))"#,
            "test",
        )
        .unwrap();
        let p = r.optimizer().unwrap();
        assert_eq!(p.expansion_group, Some(128));
        assert_eq!(p.first_moment.unwrap().scaling, Scaling::None);
        let bad = fp8_core::recipe::from_ron_str(
            r#"(kind: "fp32", optimizer: (first_moment: "float8_e4m3fn",
                moment_scaling: expand(0)))"#,
            "test",
        );
        assert!(format!("{}", bad.err().unwrap()).contains("expand(0)"));
    }
}
