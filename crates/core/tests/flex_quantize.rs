//! The Flex quantize hook (`quantize_flex`): shared and strided tensors are quantized straight
//! into a fresh buffer, in their own memory order when the cast allows, and steps without
//! telemetry skip the statistics. None of that may change a quantized value or a logged
//! statistic:
//!
//! - on every kind of view (contiguous, shared, transposed, narrowed, a head of a fused QKV
//!   buffer, a transposed head, flipped), for every measure, the values equal `quantize` of the
//!   C-order copy bit for bit, and with `Measure::Full` so do the statistics;
//! - an attention-shaped network (heads as views of a fused buffer, both attention products
//!   quantized) gives the same outputs and gradients on Flex with telemetry on and off, and the
//!   same as on NdArray (whose hook copies to C order first), with the same telemetry;
//! - a recipe that observes the amax sees the same amaxes with telemetry off, so its state and
//!   the training run are unchanged; a recipe that asks for everything still gets it.

use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex, NdArray};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use fp8_core::context::{activate, PrecisionContext};
use fp8_core::precision::quantize_flex;
use fp8_core::{sites, Precision, Recipe, Role};
use fp8_formats::{
    quantize, CastSpec, Format, Measure, QuantSpec, Rounding, Scaling, Stats, TensorScale,
};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Values with every kind of magnitude: normals over a wide range, subnormals, zeros.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|i| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            match i % 53 {
                0 => 0.0,
                1 => f32::from_bits((s as u32) & 0x007f_ffff),
                _ => {
                    ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2f32.powi((s % 24) as i32 - 12)
                }
            }
        })
        .collect()
}

fn flex<const D: usize>(v: &[f32], shape: [usize; D]) -> Tensor<Flex, D> {
    Tensor::from_data(TensorData::new(v.to_vec(), shape), &Default::default())
}

fn host<B: Backend, const D: usize>(t: &Tensor<B, D>) -> Vec<f32> {
    t.to_data().to_vec::<f32>().unwrap()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn primitive<const D: usize>(t: Tensor<Flex, D>) -> FlexTensor {
    t.into_primitive().tensor()
}

fn from_primitive<const D: usize>(t: FlexTensor) -> Tensor<Flex, D> {
    Tensor::from_primitive(burn::tensor::TensorPrimitive::Float(t))
}

fn specs() -> Vec<QuantSpec> {
    let e8m3: Format = "e8m3".parse().unwrap();
    vec![
        // The paper's bit reduction (order-free: memory-order path).
        QuantSpec::cast(
            CastSpec::new(e8m3)
                .with_rounding(Rounding::TowardZero)
                .with_saturate(true),
        ),
        // Delayed scaling's given scale (order-free).
        QuantSpec {
            cast: CastSpec::new(Format::FLOAT8_E4M3FN),
            scaling: Scaling::Tensor(TensorScale::Given(8.0)),
        },
        // Stochastic rounding (indices are C-order positions: C-order path).
        QuantSpec::cast(
            CastSpec::new(Format::FLOAT8_E5M2)
                .with_rounding(Rounding::Stochastic)
                .with_seed(9),
        ),
        // Tiles along the last logical dimension (C-order path).
        QuantSpec {
            cast: CastSpec::new(Format::FLOAT8_E4M3FN),
            scaling: Scaling::Mx {
                block: 4,
                rule: fp8_formats::MxRule::Floor,
                axis: fp8_formats::BlockAxis::Cols,
            },
        },
    ]
}

/// `quantize_flex` of the view `t` against `quantize` of its C-order copy, for every spec and
/// measure; `shared` keeps another handle on the buffer, which must not change.
fn check_view<const D: usize>(what: &str, t: Tensor<Flex, D>, shared: bool) {
    let shape: Vec<usize> = t.dims().to_vec();
    let input = host(&t);
    for spec in specs() {
        let mut want = input.clone();
        let want_stats = quantize(&mut want, &shape, &spec);
        for measure in [Measure::Nothing, Measure::Amax, Measure::Full] {
            // A fresh tensor each time: the in-place path consumes its buffer.
            let fresh = from_primitive::<D>(primitive(t.clone()).to_contiguous()).reshape(t.dims());
            let view = if shared { t.clone() } else { fresh };
            let keep = shared.then(|| view.clone());
            let (q, stats) = quantize_flex(primitive(view), &spec, measure);
            let q = from_primitive::<D>(q);
            assert_eq!(q.dims().to_vec(), shape, "{what}: shape");
            assert_eq!(
                bits(&host(&q)),
                bits(&want),
                "{what}: values, {spec:?}, {measure:?}"
            );
            if let Some(keep) = keep {
                assert_eq!(bits(&host(&keep)), bits(&input), "{what}: source changed");
            }
            assert_eq!(stats.count, want_stats.count);
            match measure {
                Measure::Full => {
                    assert_eq!(format!("{stats:?}"), format!("{want_stats:?}"), "{what}")
                }
                Measure::Amax => assert_eq!(stats.amax, want_stats.amax, "{what}"),
                Measure::Nothing => {}
            }
        }
    }
}

#[test]
fn every_view_quantizes_like_its_contiguous_copy() {
    let (b, t, h, hd) = (2, 6, 3, 8);
    let c = h * hd;
    let qkv = flex(&values(b * t * 3 * c, 1), [b, t, 3 * c]);
    let heads = qkv.clone().reshape([b, t, 3 * h, hd]).swap_dims(1, 2);
    let q = heads.clone().narrow(1, 0, h);
    let k = heads.clone().narrow(1, h, h);
    check_view("q head", q.clone(), true);
    check_view("k head transposed", k.clone().swap_dims(2, 3), true);
    check_view("v head", heads.narrow(1, 2 * h, h), true);

    let x = flex(&values(12 * 20, 2), [12, 20]);
    check_view("contiguous, owned", x.clone(), false);
    check_view("contiguous, shared", x.clone(), true);
    check_view("transposed", x.clone().transpose(), true);
    check_view("narrowed rows", x.clone().narrow(0, 3, 5), true);
    check_view("narrowed cols", x.clone().narrow(1, 4, 9), true);
    check_view("flipped", x.clone().flip([1]), true);
    check_view("permuted 3-d", qkv.permute([2, 0, 1]), true);
}

// ---------------------------------------------------------------------------------------------
// End to end: an attention-shaped network.

/// Fixed specs per role, the same for every site and step.
struct ByRole {
    specs: Vec<(Role, QuantSpec)>,
    needs: Measure,
}

impl Recipe for ByRole {
    fn spec(&self, _site: &str, role: Role, _step: u64) -> Option<QuantSpec> {
        self.specs.iter().find(|(r, _)| *r == role).map(|(_, s)| *s)
    }

    fn observe_needs(&self) -> Measure {
        self.needs
    }
}

fn e8m3_recipe() -> ByRole {
    let e8m3: Format = "e8m3".parse().unwrap();
    let s = QuantSpec::cast(
        CastSpec::new(e8m3)
            .with_rounding(Rounding::TowardZero)
            .with_saturate(true),
    );
    ByRole {
        specs: vec![(Role::X, s), (Role::W, s), (Role::Dy, s)],
        needs: Measure::Nothing,
    }
}

/// Values with few significant bits and a narrow range (|v| in [0.25, 2), four bits after
/// E8M3 truncation), so that every product and sum of quantized values below is exact in f32
/// and GEMMs give the same bits in any summation order.
fn short_values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005) | 1;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let mag = 0.25 * 8f32.powf((s >> 40) as f32 / (1u64 << 24) as f32);
            if (s >> 20) & 1 == 0 {
                mag
            } else {
                -mag
            }
        })
        .collect()
}

const B: usize = 2;
const T: usize = 4;
const H: usize = 2;
const HD: usize = 4;

struct Out {
    y: Vec<f32>,
    dqkv: Vec<f32>,
}

/// `y = (q·kᵀ)·v` per head, with the heads as views of one `[b, t, 3c]` buffer (as the
/// models write attention), both products in their own sites; the loss is `sum(y ⊙ g)`.
fn attention<B2: AutodiffBackend>(qkv: &[f32], g: &[f32]) -> Out {
    let dev = Default::default();
    let c = H * HD;
    let qkv = Tensor::<B2, 3>::from_data(TensorData::new(qkv.to_vec(), [B, T, 3 * c]), &dev)
        .require_grad();
    let heads = qkv.clone().reshape([B, T, 3 * H, HD]).swap_dims(1, 2);
    let q = heads.clone().narrow(1, 0, H);
    let k = heads.clone().narrow(1, H, H);
    let v = heads.narrow(1, 2 * H, H);
    let scores = sites::with("attn.scores", || q.matmul(k.swap_dims(2, 3)));
    let y = sites::with("attn.values", || scores.matmul(v));
    let g = Tensor::<B2, 4>::from_data(TensorData::new(g.to_vec(), [B, H, T, HD]), &dev);
    let grads = (y.clone() * g).sum().backward();
    Out {
        y: host(&y),
        dqkv: host(&qkv.grad(&grads).unwrap()),
    }
}

fn run<B2: AutodiffBackend>(telemetry: bool) -> (Out, BTreeMap<(String, Role), Stats>) {
    let qkv = short_values(B * T * 3 * H * HD, 3);
    let g = short_values(B * H * T * HD, 4);
    let ctx = PrecisionContext::new(Box::new(e8m3_recipe())).shared();
    ctx.lock().unwrap().set_telemetry(telemetry);
    let _active = activate(ctx.clone());
    let out = attention::<B2>(&qkv, &g);
    let tel = ctx.lock().unwrap().end_step();
    (out, tel)
}

#[test]
fn attention_heads_quantize_alike_with_and_without_telemetry() {
    let (flex_on, tel_on) = run::<Precision<Autodiff<Flex>>>(true);
    let (flex_off, tel_off) = run::<Precision<Autodiff<Flex>>>(false);
    let (nd, tel_nd) = run::<Precision<Autodiff<NdArray<f32>>>>(true);
    for (what, a, b) in [
        ("y on/off", &flex_on.y, &flex_off.y),
        ("dqkv on/off", &flex_on.dqkv, &flex_off.dqkv),
        ("y flex/ndarray", &flex_on.y, &nd.y),
        ("dqkv flex/ndarray", &flex_on.dqkv, &nd.dqkv),
    ] {
        assert_eq!(bits(a), bits(b), "{what}");
    }
    // Quantization did something.
    let (plain, _) = {
        let qkv = short_values(B * T * 3 * H * HD, 3);
        let g = short_values(B * H * T * HD, 4);
        (attention::<Autodiff<Flex>>(&qkv, &g), ())
    };
    assert_ne!(bits(&plain.dqkv), bits(&flex_on.dqkv));

    assert!(
        tel_off.is_empty(),
        "telemetry gathered on a step without it"
    );
    let keys: Vec<String> = tel_on.keys().map(|(s, r)| format!("{s}/{r}")).collect();
    assert_eq!(
        keys,
        [
            "attn.scores/x",
            "attn.scores/w",
            "attn.scores/dy",
            "attn.values/x",
            "attn.values/w",
            "attn.values/dy"
        ]
    );
    assert_eq!(format!("{tel_on:?}"), format!("{tel_nd:?}"));
}

// ---------------------------------------------------------------------------------------------
// Recipes that observe.

/// Delayed scaling in miniature: scale `448 / amax` of the previous step per (site, role).
struct Delayed {
    scales: BTreeMap<String, f32>,
    amax: BTreeMap<String, f32>,
    needs: Measure,
    /// Every `Stats` it was shown.
    seen: Arc<Mutex<Vec<Stats>>>,
}

impl Recipe for Delayed {
    fn spec(&self, site: &str, role: Role, _step: u64) -> Option<QuantSpec> {
        let scale = *self.scales.get(&format!("{site}/{role}")).unwrap_or(&1.0);
        matches!(role, Role::X | Role::W | Role::Dy).then_some(QuantSpec {
            cast: CastSpec::new(Format::FLOAT8_E4M3FN),
            scaling: Scaling::Tensor(TensorScale::Given(scale)),
        })
    }

    fn observe(&mut self, site: &str, role: Role, stats: &Stats) {
        self.seen.lock().unwrap().push(*stats);
        let a = self.amax.entry(format!("{site}/{role}")).or_insert(0.0);
        *a = a.max(stats.amax);
    }

    fn end_step(&mut self) {
        for (k, amax) in std::mem::take(&mut self.amax) {
            if amax > 0.0 && amax.is_finite() {
                self.scales.insert(k, 448.0 / amax);
            }
        }
    }

    fn observe_needs(&self) -> Measure {
        self.needs
    }
}

/// Three steps of SGD on the attention network's input; the final input and the scales.
fn train_delayed(telemetry: bool, needs: Measure) -> (Vec<f32>, String, Vec<Stats>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recipe = Delayed {
        scales: BTreeMap::new(),
        amax: BTreeMap::new(),
        needs,
        seen: seen.clone(),
    };
    let ctx = PrecisionContext::new(Box::new(recipe)).shared();
    let _active = activate(ctx.clone());
    let mut qkv = values(B * T * 3 * H * HD, 7);
    let g = values(B * H * T * HD, 8);
    for step in 0..3 {
        ctx.lock().unwrap().set_step(step);
        // Telemetry on the first step only when asked, as a trainer logging every 10 steps.
        ctx.lock().unwrap().set_telemetry(telemetry || step == 0);
        let out = attention::<Precision<Autodiff<Flex>>>(&qkv, &g);
        for (p, d) in qkv.iter_mut().zip(&out.dqkv) {
            *p -= 0.01 * d;
        }
        let tel = ctx.lock().unwrap().end_step();
        assert_eq!(tel.is_empty(), !(telemetry || step == 0));
    }
    let state = format!("{:?}", ctx.lock().unwrap().recipe().state());
    let seen = seen.lock().unwrap().clone();
    (qkv, state, seen)
}

#[test]
fn amax_observers_see_the_same_amax_without_telemetry() {
    let (p_on, _, seen_on) = train_delayed(true, Measure::Amax);
    let (p_off, _, seen_off) = train_delayed(false, Measure::Amax);
    assert_eq!(bits(&p_on), bits(&p_off));
    assert_eq!(seen_on.len(), seen_off.len());
    for (a, b) in seen_on.iter().zip(&seen_off) {
        assert_eq!(a.amax.to_bits(), b.amax.to_bits());
        assert_eq!(a.scale.to_bits(), b.scale.to_bits());
        assert_eq!(a.count, b.count);
    }
    // The scales moved away from 1, so the amaxes did feed the numerics.
    assert!(seen_on.iter().any(|s| s.scale != 1.0));
    // Steps without telemetry measured only the amax.
    assert!(seen_off.iter().skip(6).all(|s| s.snr_db.is_nan()));

    // A recipe that asks for everything gets everything on every step.
    let (p_full, _, seen_full) = train_delayed(false, Measure::Full);
    assert_eq!(bits(&p_on), bits(&p_full));
    for (a, b) in seen_on.iter().zip(&seen_full) {
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
    }
}

#[test]
fn measure_follows_recording_telemetry_and_the_recipe() {
    let mut c = PrecisionContext::new(Box::new(e8m3_recipe()));
    assert_eq!(c.measure(), Measure::Full);
    c.set_telemetry(false);
    assert_eq!(c.measure(), Measure::Nothing);
    c.set_recording(false);
    c.set_telemetry(true);
    assert_eq!(c.measure(), Measure::Nothing);
    let mut c = PrecisionContext::new(Box::new(Delayed {
        scales: BTreeMap::new(),
        amax: BTreeMap::new(),
        needs: Measure::Amax,
        seen: Default::default(),
    }));
    c.set_telemetry(false);
    assert_eq!(c.measure(), Measure::Amax);
}
