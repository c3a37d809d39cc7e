//! Tests of the `Precision` backend decorator (docs/DESIGN.md §3).
//!
//! The GEMM operands cannot be intercepted below `Autodiff` without a second full backend, so
//! the tests check them algebraically instead: inputs are chosen so that every product and sum
//! of *quantized* values is exact in f32 (few significant bits, narrow exponent range). Then the
//! decorated network's outputs and gradients must equal, bit for bit, a plain-loop reference
//! built from the quantized operands of §3 — and would not if any operand that reached a GEMM
//! were not the quantized one. The reference operands are also checked to be representable in
//! the target format, and the raw inputs to not be (so the check is not vacuous).

use burn::backend::{Autodiff, Flex, NdArray};
use burn::module::{AutodiffModule, Module, Param};
use burn::nn::Linear;
use burn::optim::{GradientsParams, Optimizer, SgdConfig};
use burn::tensor::activation::relu;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::module::linear;
use burn::tensor::{Tensor, TensorData};
use fp8_core::context::{activate, PrecisionContext};
use fp8_core::{sites, Precision, Recipe, RecipeError, Role};
use fp8_formats::TensorScale;
use fp8_formats::{cast_scalar, CastSpec, Family, Format, QuantSpec, Rounding, Scaling, Stats};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

type Inner = NdArray<f32>;
type Plain = Autodiff<Inner>;
type Decorated = Precision<Autodiff<Inner>>;

// ---------------------------------------------------------------------------------------------
// Test recipes

/// Fixed specs per role, the same for every site and step; roles not listed stay f32.
struct ByRole(Vec<(Role, QuantSpec)>);

impl Recipe for ByRole {
    fn spec(&self, _site: &str, role: Role, _step: u64) -> Option<QuantSpec> {
        self.0.iter().find(|(r, _)| *r == role).map(|(_, s)| *s)
    }
}

/// Keeps everything in f32 but remembers which (site, role) it was asked about.
#[derive(Clone, Default)]
struct Asked(Arc<Mutex<Vec<(String, Role)>>>);

impl Recipe for Asked {
    fn spec(&self, site: &str, role: Role, _step: u64) -> Option<QuantSpec> {
        self.0.lock().unwrap().push((site.to_string(), role));
        None
    }
}

/// Delayed scaling in miniature: each (site, role) casts with the scale derived from the amax it
/// observed up to the previous step (`fmt_max / amax`, deliberately not a power of two so that
/// the state changes the numerics), 1.0 before any observation.
#[derive(Default)]
struct Delayed {
    scales: BTreeMap<String, f32>,
    amax: BTreeMap<String, f32>,
    steps: u64,
}

impl Recipe for Delayed {
    fn spec(&self, site: &str, role: Role, _step: u64) -> Option<QuantSpec> {
        let fmt = match role {
            Role::X | Role::W => E4M3FN,
            Role::Dy => E5M2,
            _ => return None,
        };
        let scale = *self.scales.get(&format!("{site}/{role}")).unwrap_or(&1.0);
        Some(QuantSpec {
            cast: cast(fmt, Rounding::NearestEven),
            scaling: Scaling::Tensor(TensorScale::Given(scale)),
        })
    }

    fn observe(&mut self, site: &str, role: Role, stats: &Stats) {
        let a = self.amax.entry(format!("{site}/{role}")).or_insert(0.0);
        *a = a.max(stats.amax);
    }

    fn end_step(&mut self) {
        for (k, amax) in std::mem::take(&mut self.amax) {
            let max = if k.ends_with("/dy") { 57344.0 } else { 448.0 };
            if amax > 0.0 && amax.is_finite() {
                self.scales.insert(k, max / amax);
            }
        }
        self.steps += 1;
    }

    fn state(&self) -> serde_json::Value {
        serde_json::json!({ "scales": self.scales, "amax": self.amax, "steps": self.steps })
    }

    fn restore(&mut self, state: serde_json::Value) -> Result<(), RecipeError> {
        let bad = |e: serde_json::Error| RecipeError::State(e.to_string());
        self.scales = serde_json::from_value(state["scales"].clone()).map_err(bad)?;
        self.amax = serde_json::from_value(state["amax"].clone()).map_err(bad)?;
        self.steps = serde_json::from_value(state["steps"].clone()).map_err(bad)?;
        Ok(())
    }
}

const E8M3: Format = Format {
    exp_bits: 8,
    man_bits: 3,
    family: Family::Ieee,
};
const E4M3FN: Format = Format {
    exp_bits: 4,
    man_bits: 3,
    family: Family::Fn,
};
const E5M2: Format = Format {
    exp_bits: 5,
    man_bits: 2,
    family: Family::Ieee,
};

fn cast(format: Format, rounding: Rounding) -> CastSpec {
    CastSpec {
        format,
        rounding,
        seed: 0,
        saturate: true,
        subnormals: true,
    }
}

fn spec(format: Format, rounding: Rounding, scaling: Scaling) -> QuantSpec {
    QuantSpec {
        cast: cast(format, rounding),
        scaling,
    }
}

/// The paper's bit reduction to E8M3: truncate, no scaling, on X, W and Dy.
fn e8m3_recipe() -> ByRole {
    let s = spec(E8M3, Rounding::TowardZero, Scaling::None);
    ByRole(vec![(Role::X, s), (Role::W, s), (Role::Dy, s)])
}

fn context(recipe: impl Recipe + 'static) -> Arc<Mutex<PrecisionContext>> {
    PrecisionContext::new(Box::new(recipe)).shared()
}

// ---------------------------------------------------------------------------------------------
// Data helpers

/// Deterministic values with |v| in [0.25, 2) and random signs, generally not representable in
/// any 8-bit format.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = ((s >> 40) as f32) / (1u64 << 24) as f32; // [0, 1)
            let mag = 0.25 * 8f32.powf(u); // [0.25, 2)
            if (s >> 20) & 1 == 0 {
                mag
            } else {
                -mag
            }
        })
        .collect()
}

fn tensor<B: Backend, const D: usize>(v: &[f32], shape: [usize; D]) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(v.to_vec(), shape), &Default::default())
}

fn host<B: Backend, const D: usize>(t: &Tensor<B, D>) -> Vec<f32> {
    t.to_data().to_vec::<f32>().unwrap()
}

fn assert_bits_eq(what: &str, a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len(), "{what}: lengths differ");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert_eq!(x.to_bits(), y.to_bits(), "{what}[{i}]: {x} != {y}");
    }
}

/// `a [n×k] · b [k×m]` in plain loops.
fn matmul(a: &[f32], b: &[f32], n: usize, k: usize, m: usize) -> Vec<f32> {
    let mut c = vec![0.0f32; n * m];
    for i in 0..n {
        for j in 0..m {
            let mut acc = 0.0f32;
            for p in 0..k {
                acc += a[i * k + p] * b[p * m + j];
            }
            c[i * m + j] = acc;
        }
    }
    c
}

fn transpose(a: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0f32; a.len()];
    for i in 0..rows {
        for j in 0..cols {
            t[j * rows + i] = a[i * cols + j];
        }
    }
    t
}

/// E8M3 by truncation, written out: clear the 20 low mantissa bits of an f32 (the values used
/// here are normal and far from E8M3's range limits).
fn trunc_e8m3(v: &[f32]) -> Vec<f32> {
    v.iter()
        .map(|x| f32::from_bits(x.to_bits() & !((1 << 20) - 1)))
        .collect()
}

fn representable_e8m3(v: &[f32]) -> bool {
    v.iter().all(|x| x.to_bits() & ((1 << 20) - 1) == 0)
}

// ---------------------------------------------------------------------------------------------
// A two-layer network: fc1 through `linear` (burn's ModuleOps), fc2 through `matmul`.

const N: usize = 4; // batch
const K: usize = 8; // input features
const H: usize = 6; // hidden
const M: usize = 5; // outputs

struct Net {
    x: Vec<f32>,
    w1: Vec<f32>,
    w2: Vec<f32>,
    /// Upstream gradient: the loss is `sum(y2 * g)`, so `dy2 = g`.
    g: Vec<f32>,
}

impl Net {
    fn new(seed: u64) -> Net {
        Net {
            x: values(N * K, seed),
            w1: values(K * H, seed + 1),
            w2: values(H * M, seed + 2),
            g: values(N * M, seed + 3),
        }
    }
}

#[derive(Debug)]
struct Run {
    y2: Vec<f32>,
    dx: Vec<f32>,
    dw1: Vec<f32>,
    dw2: Vec<f32>,
}

fn run<B: AutodiffBackend>(net: &Net, with_relu: bool) -> Run {
    let x = tensor::<B, 2>(&net.x, [N, K]).require_grad();
    let w1 = tensor::<B, 2>(&net.w1, [K, H]).require_grad();
    let w2 = tensor::<B, 2>(&net.w2, [H, M]).require_grad();
    let g = tensor::<B, 2>(&net.g, [N, M]);
    let y1 = sites::with("fc1", || linear(x.clone(), w1.clone(), None));
    let h = if with_relu { relu(y1) } else { y1 };
    let y2 = sites::with("fc2", || h.matmul(w2.clone()));
    let grads = (y2.clone() * g).sum().backward();
    Run {
        y2: host(&y2),
        dx: host(&x.grad(&grads).unwrap()),
        dw1: host(&w1.grad(&grads).unwrap()),
        dw2: host(&w2.grad(&grads).unwrap()),
    }
}

/// The §3 reference for `run`, with `qx`, `qw`, `qdy` the quantizers of the X, W, Dy roles
/// (per tensor); Y, Dx, Dw stay f32.
fn reference(
    net: &Net,
    with_relu: bool,
    qx: &dyn Fn(&[f32]) -> Vec<f32>,
    qw: &dyn Fn(&[f32]) -> Vec<f32>,
    qdy: &dyn Fn(&[f32]) -> Vec<f32>,
    operands: &mut Vec<Vec<f32>>,
) -> Run {
    let (x1, w1, w2) = (qx(&net.x), qw(&net.w1), qw(&net.w2));
    let y1 = matmul(&x1, &w1, N, K, H);
    let h: Vec<f32> = if with_relu {
        y1.iter().map(|v| v.max(0.0)).collect()
    } else {
        y1.clone()
    };
    let x2 = qx(&h);
    let y2 = matmul(&x2, &w2, N, H, M);
    let dy2 = qdy(&net.g);
    let dw2 = matmul(&transpose(&x2, N, H), &dy2, H, N, M);
    let dh = matmul(&dy2, &transpose(&w2, H, M), N, M, H);
    let dy1: Vec<f32> = dh
        .iter()
        .zip(&y1)
        .map(|(d, y)| if !with_relu || *y > 0.0 { *d } else { 0.0 })
        .collect();
    let dy1 = qdy(&dy1);
    let dw1 = matmul(&transpose(&x1, N, K), &dy1, K, N, H);
    let dx = matmul(&dy1, &transpose(&w1, K, H), N, H, K);
    operands.extend([x1, w1, x2, w2, dy2, dy1]);
    Run { y2, dx, dw1, dw2 }
}

fn assert_run_eq(a: &Run, b: &Run) {
    assert_bits_eq("y2", &a.y2, &b.y2);
    assert_bits_eq("dx", &a.dx, &b.dx);
    assert_bits_eq("dw1", &a.dw1, &b.dw1);
    assert_bits_eq("dw2", &a.dw2, &b.dw2);
}

// ---------------------------------------------------------------------------------------------
// 1. An all-f32 recipe changes nothing: training with burn's own Linear and SGD.

#[derive(Module, Debug)]
struct Mlp<B: Backend> {
    fc1: Linear<B>,
    fc2: Linear<B>,
}

impl<B: Backend> Mlp<B> {
    fn new(seed: u64) -> Self {
        let layer = |d_in: usize, d_out: usize, s: u64| Linear {
            weight: Param::from_tensor(tensor(&values(d_in * d_out, s), [d_in, d_out])),
            bias: Some(Param::from_tensor(tensor(&values(d_out, s + 100), [d_out]))),
        };
        Mlp {
            fc1: layer(K, H, seed),
            fc2: layer(H, M, seed + 1),
        }
    }

    fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let h = sites::with("fc1", || self.fc1.forward(x));
        let h = relu(h);
        // A matmul in its own site too, and one outside any site.
        let mix = sites::with("mix", || h.clone().matmul(h.transpose()));
        let h = mix
            .div_scalar(64.0)
            .matmul(tensor::<B, 2>(&values(N * H, 7), [N, H]));
        sites::with("fc2", || self.fc2.forward(h))
    }
}

/// Losses and final parameters after `steps` SGD steps.
fn train<B: AutodiffBackend>(
    steps: usize,
    mut after_step: impl FnMut(usize),
) -> (Vec<f32>, Vec<f32>) {
    let mut model = Mlp::<B>::new(11);
    let mut optim = SgdConfig::new().init();
    let x = tensor::<B, 2>(&values(N * K, 3), [N, K]);
    let target = tensor::<B, 2>(&values(N * M, 4), [N, M]);
    let mut losses = Vec::new();
    for step in 0..steps {
        let loss = (model.forward(x.clone()) - target.clone())
            .powi_scalar(2)
            .mean();
        losses.push(host(&loss)[0]);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(0.002, model, grads);
        after_step(step);
    }
    let mut params = host(&model.fc1.weight.val());
    params.extend(host(&model.fc2.weight.val()));
    params.extend(host(&model.fc1.bias.as_ref().unwrap().val()));
    (losses, params)
}

#[test]
fn fp32_recipe_is_bit_identical_to_the_plain_backend() {
    let (plain_losses, plain_params) = train::<Plain>(3, |_| {});
    let ctx = context(ByRole(vec![]));
    let _active = activate(ctx.clone());
    let (losses, params) = train::<Decorated>(3, |_| {
        ctx.lock().unwrap().end_step();
    });
    assert_bits_eq("loss", &plain_losses, &losses);
    assert_bits_eq("params", &plain_params, &params);
    assert!(
        plain_losses[2] < plain_losses[0],
        "training did not train: {plain_losses:?}"
    );
    assert!(ctx.lock().unwrap().telemetry().is_empty());

    // The same bit-identity for the gradients of the two-layer network.
    let net = Net::new(20);
    assert_run_eq(&run::<Plain>(&net, true), &run::<Decorated>(&net, true));
}

// ---------------------------------------------------------------------------------------------
// 5. Quantization happens only inside site scopes (and only with an active context).

#[test]
fn only_gemms_inside_site_scopes_consult_the_recipe() {
    let asked = Asked::default();
    let _active = activate(context(asked.clone()));
    let a = tensor::<Decorated, 2>(&values(6, 1), [2, 3]).require_grad();
    let b = tensor::<Decorated, 2>(&values(6, 2), [3, 2]).require_grad();

    let _ = a.clone().matmul(b.clone()).sum().backward();
    let _ = linear(a.clone(), b.clone(), None).sum().backward();
    assert!(
        asked.0.lock().unwrap().is_empty(),
        "a GEMM outside any scope asked the recipe"
    );

    let _ = sites::with("blk", || {
        let _g = sites::scope("proj");
        a.clone().matmul(b.clone())
    })
    .sum()
    .backward();
    let mut roles: Vec<_> = asked.0.lock().unwrap().clone();
    roles.sort();
    roles.dedup();
    let expected: Vec<_> = Role::SAVED
        .iter()
        .map(|r| ("blk.proj".to_string(), *r))
        .collect();
    let mut expected = expected;
    expected.sort();
    assert_eq!(roles, expected);
}

#[test]
fn gemm_outside_a_scope_is_untouched_under_a_quantizing_recipe() {
    let ctx = context(e8m3_recipe());
    let _active = activate(ctx.clone());
    let (va, vb) = (values(12, 5), values(12, 6));
    let plain = host(&tensor::<Inner, 2>(&va, [3, 4]).matmul(tensor(&vb, [4, 3])));

    let a = tensor::<Decorated, 2>(&va, [3, 4]);
    let b = tensor::<Decorated, 2>(&vb, [4, 3]);
    assert_bits_eq("outside", &plain, &host(&a.clone().matmul(b.clone())));
    assert!(ctx.lock().unwrap().telemetry().is_empty());

    let inside = host(&sites::with("s", || a.clone().matmul(b.clone())));
    // The in-place fast path must not write through to tensors that share the buffer.
    assert_bits_eq("a after", &va, &host(&a));
    assert_bits_eq("b after", &vb, &host(&b));
    let expected = matmul(&trunc_e8m3(&va), &trunc_e8m3(&vb), 3, 4, 3);
    assert_bits_eq("inside", &expected, &inside);
    let keys: Vec<_> = ctx.lock().unwrap().telemetry().keys().cloned().collect();
    assert_eq!(
        keys,
        vec![("s".to_string(), Role::X), ("s".to_string(), Role::W)]
    );

    // Without an active context, a scope alone does nothing either.
    drop(_active);
    let a = tensor::<Decorated, 2>(&va, [3, 4]);
    let b = tensor::<Decorated, 2>(&vb, [4, 3]);
    assert_bits_eq(
        "no context",
        &plain,
        &host(&sites::with("s", || a.matmul(b))),
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Bit reduction to E8M3: every GEMM operand, forward and backward, is E8M3.

#[test]
fn e8m3_bit_reduction_quantizes_every_gemm_operand() {
    let net = Net::new(30);
    let ctx = context(e8m3_recipe());
    let _active = activate(ctx.clone());
    let got = run::<Decorated>(&net, true);

    let mut operands = Vec::new();
    let q = |v: &[f32]| trunc_e8m3(v);
    let want = reference(&net, true, &q, &q, &q, &mut operands);
    for (i, op) in operands.iter().enumerate() {
        assert!(representable_e8m3(op), "reference operand {i} is not E8M3");
    }
    assert!(!representable_e8m3(&net.x) && !representable_e8m3(&net.g));
    assert_run_eq(&want, &got);
    // And the unquantized computation really is different.
    let plain = run::<Plain>(&net, true);
    assert_ne!(plain.dw1, got.dw1);

    let tel = ctx.lock().unwrap().telemetry().clone();
    let keys: Vec<_> = tel.keys().map(|(s, r)| format!("{s}/{r}")).collect();
    assert_eq!(
        keys,
        ["fc1/x", "fc1/w", "fc1/dy", "fc2/x", "fc2/w", "fc2/dy"]
    );
    assert_eq!(tel[&("fc1".to_string(), Role::Dy)].count, (N * H) as u64);
}

#[test]
fn flex_backend_quantizes_in_host_memory() {
    // Flex's own hook (`quantize_flex`: in place, or one pass into a fresh buffer), end to end.
    let net = Net::new(31);
    let ctx = context(e8m3_recipe());
    let _active = activate(ctx.clone());
    let got = run::<Precision<Autodiff<Flex>>>(&net, true);
    let q = |v: &[f32]| trunc_e8m3(v);
    let want = reference(&net, true, &q, &q, &q, &mut Vec::new());
    assert_run_eq(&want, &got);
    assert_eq!(ctx.lock().unwrap().telemetry().len(), 6);
}

#[test]
fn balanced_checkpointing_gives_the_same_gradients() {
    use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
    let net = Net::new(32);
    let ctx = context(e8m3_recipe());
    let _active = activate(ctx.clone());
    let got = run::<Precision<Autodiff<Inner, BalancedCheckpointing>>>(&net, true);
    let q = |v: &[f32]| trunc_e8m3(v);
    let want = reference(&net, true, &q, &q, &q, &mut Vec::new());
    assert_run_eq(&want, &got);
    // Each tensor was cast once: no recomputation re-ran a quantizer.
    let tel = ctx.lock().unwrap().telemetry().clone();
    assert_eq!(tel[&("fc1".to_string(), Role::X)].count, (N * K) as u64);
    assert_eq!(tel[&("fc2".to_string(), Role::X)].count, (N * H) as u64);
}

#[test]
fn inference_backend_quantizes_the_forward_pass_only() {
    // `model.valid()` of a `Precision<Autodiff<B>>` model lives on `Precision<B>`.
    let model = Mlp::<Decorated>::new(11).valid();
    let plain = Mlp::<Inner>::new(11);
    let x = values(N * K, 3);
    let ctx = context(e8m3_recipe());
    let _active = activate(ctx.clone());
    let y = host(&model.forward(tensor(&x, [N, K])));
    let y_plain = host(&plain.forward(tensor(&x, [N, K])));
    assert_ne!(y, y_plain);
    let tel = ctx.lock().unwrap().telemetry().clone();
    assert!(tel.keys().all(|(_, r)| r.is_forward()));
    assert!(tel.contains_key(&("fc2".to_string(), Role::W)));
}

// ---------------------------------------------------------------------------------------------
// 3. HYBRID: E4M3 (fn) for x and w, E5M2 for dy, dw unquantized.

fn hybrid(scaling: Scaling) -> ByRole {
    ByRole(vec![
        (Role::X, spec(E4M3FN, Rounding::NearestEven, scaling)),
        (Role::W, spec(E4M3FN, Rounding::NearestEven, scaling)),
        (Role::Dy, spec(E5M2, Rounding::NearestEven, scaling)),
    ])
}

/// Per-tensor quantizer for the reference: `cast(v·s)/s` with `s` a power of two when
/// `current` (`fmt_max/amax` rounded down), else 1.
fn quantizer(format: Format, fmt_max: f32, current: bool) -> impl Fn(&[f32]) -> Vec<f32> {
    move |v: &[f32]| {
        let amax = v.iter().fold(0.0f32, |a, x| a.max(x.abs()));
        let scale = if current {
            2f32.powi((fmt_max / amax).log2().floor() as i32)
        } else {
            1.0
        };
        let c = cast(format, Rounding::NearestEven);
        v.iter()
            .enumerate()
            .map(|(i, x)| cast_scalar(x * scale, &c, i as u64) / scale)
            .collect()
    }
}

#[test]
fn hybrid_gradients_match_the_reference() {
    for (scaling, current) in [
        (Scaling::Tensor(TensorScale::Given(1.0)), false),
        (Scaling::Tensor(TensorScale::Current { pow2: true }), true),
    ] {
        let net = Net::new(40);
        let ctx = context(hybrid(scaling));
        let _active = activate(ctx.clone());
        let got = run::<Decorated>(&net, false);

        let q43 = quantizer(E4M3FN, 448.0, current);
        let q52 = quantizer(E5M2, 57344.0, current);
        let mut operands = Vec::new();
        let want = reference(&net, false, &q43, &q43, &q52, &mut operands);
        assert_run_eq(&want, &got);
        // The x and dy formats differ, so the two quantizers must have done different things.
        assert_ne!(q43(&net.g), q52(&net.g));
        let tel = ctx.lock().unwrap().telemetry().clone();
        assert!(!tel
            .keys()
            .any(|(_, r)| matches!(r, Role::Dw | Role::Dx | Role::Y)));
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Recipe state survives a checkpoint: restore midway, continue identically.

#[test]
fn recipe_state_round_trips_and_training_continues_identically() {
    const STEPS: usize = 4;
    const CUT: usize = 2;

    // Uninterrupted.
    let ctx = context(Delayed::default());
    let active = activate(ctx.clone());
    let (losses, params) = train::<Decorated>(STEPS, |_| {
        ctx.lock().unwrap().end_step();
    });
    drop(active);

    // The same run, with the context rebuilt from a checkpoint after step CUT.
    let mut current = context(Delayed::default());
    let mut active = Some(activate(current.clone()));
    let (losses2, params2) = train::<Decorated>(STEPS, |step| {
        let mut c = current.lock().unwrap();
        c.end_step();
        if step + 1 == CUT {
            let json = serde_json::to_string(&c.recipe().state()).unwrap();
            let at = c.step();
            drop(c);
            let mut fresh = PrecisionContext::new(Box::new(Delayed::default()));
            fresh
                .recipe_mut()
                .restore(serde_json::from_str(&json).unwrap())
                .unwrap();
            fresh.set_step(at);
            active = None; // deactivate the old context before activating the new one
            current = fresh.shared();
            active = Some(activate(current.clone()));
        }
    });
    drop(active);
    assert_bits_eq("loss", &losses, &losses2);
    assert_bits_eq("params", &params, &params2);

    // Without the restore the scales start over and the numerics differ.
    let ctx = context(Delayed::default());
    let _active = activate(ctx.clone());
    let (losses3, _) = train::<Decorated>(STEPS, |step| {
        let mut c = ctx.lock().unwrap();
        c.end_step();
        if step + 1 == CUT {
            let reset = Delayed::default().state();
            c.recipe_mut().restore(reset).unwrap();
        }
    });
    assert_ne!(losses[CUT..], losses3[CUT..]);
}
