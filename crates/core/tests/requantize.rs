//! Recipes that requantize the backward GEMM operands (MXFP8, NVFP4, TE block scaling, torchao
//! rowwise): each backward GEMM quantizes its own copy of `x`, `w` and `dy` from high precision,
//! and NVFP4's random Hadamard transform leaves the wgrad GEMM exact.
//!
//! Expectations are computed here on the host: every operand quantized with
//! `fp8_formats::quantize` (tested bit for bit against ml_dtypes in fp8-formats) and multiplied
//! with plain f64 loops.

use burn::backend::{Autodiff, Flex, NdArray};
use burn::tensor::backend::Backend;
use burn::tensor::module::linear;
use burn::tensor::{Tensor, TensorData};
use fp8_core::context::{activate, PrecisionContext};
use fp8_core::{sites, Precision, QuantizeBackend, Recipe, Role};
use fp8_formats::{quantize, CastSpec, Format, QuantSpec, RandomHadamard, Scaling, TensorScale};
use std::sync::{Arc, Mutex};

/// Fixed specs per role; backward operands requantized; optional wgrad transform.
struct Requant {
    specs: Vec<(Role, QuantSpec)>,
    rht: Option<RandomHadamard>,
}

impl Recipe for Requant {
    fn spec(&self, _site: &str, role: Role, _step: u64) -> Option<QuantSpec> {
        self.specs.iter().find(|(r, _)| *r == role).map(|(_, s)| *s)
    }
    fn requantizes_backward(&self) -> bool {
        true
    }
    fn wgrad_hadamard(&self, _site: &str, _step: u64) -> Option<RandomHadamard> {
        self.rht
    }
}

fn q(format: &str, scaling: Scaling) -> QuantSpec {
    QuantSpec {
        cast: CastSpec::new(format.parse::<Format>().unwrap()).with_saturate(true),
        scaling,
    }
}

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed ^ 0x2545_f491_4f6c_dd1d;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let u = (s >> 40) as f32 / (1u64 << 24) as f32;
            (u - 0.5) * 4.0 * (1.0 + 3.0 * ((s >> 8) & 1) as f32)
        })
        .collect()
}

fn quantized(v: &[f32], shape: &[usize], spec: QuantSpec) -> Vec<f32> {
    let mut v = v.to_vec();
    quantize(&mut v, shape, &spec);
    v
}

/// `a [n×k]ᵀ?` helpers in f64: `a·b`, `a·bᵀ`, `aᵀ·b`.
fn mm(a: &[f32], b: &[f32], n: usize, k: usize, m: usize, ta: bool, tb: bool) -> Vec<f32> {
    let at = |i: usize, p: usize| if ta { a[p * n + i] } else { a[i * k + p] };
    let bt = |p: usize, j: usize| if tb { b[j * k + p] } else { b[p * m + j] };
    let mut c = vec![0.0f32; n * m];
    for i in 0..n {
        for j in 0..m {
            c[i * m + j] = (0..k)
                .map(|p| at(i, p) as f64 * bt(p, j) as f64)
                .sum::<f64>() as f32;
        }
    }
    c
}

fn close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}");
    let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 2e-5 * scale, "{what}[{i}]: {g} vs {w}");
    }
}

fn tensor<B: Backend, const D: usize>(v: &[f32], shape: [usize; D]) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(v.to_vec(), shape), &Default::default())
}

fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().unwrap()
}

const M: usize = 48; // tokens: 2 × 24, a multiple of 16 for the Hadamard chunks
const K: usize = 8;
const N: usize = 6;

/// `(y, dx, dw, db, roles seen)` of one linear step.
type LinearRun = (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>, Vec<Role>);

/// One linear site `y = x·w + b` with loss `Σ y∘c` (so `dy = c`): returns y, dx, dw, db and the
/// roles the step's telemetry saw.
fn run_linear<B: Backend + QuantizeBackend>(
    recipe: Requant,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    c: &[f32],
) -> LinearRun
where
    Precision<Autodiff<B>>: burn::tensor::backend::AutodiffBackend,
    Autodiff<B>: QuantizeBackend,
{
    type D<B> = Precision<Autodiff<B>>;
    let ctx: Arc<Mutex<PrecisionContext>> = PrecisionContext::new(Box::new(recipe)).shared();
    let _active = activate(ctx.clone());
    let xt = tensor::<D<B>, 3>(x, [2, M / 2, K]).require_grad();
    let wt = tensor::<D<B>, 2>(w, [K, N]).require_grad();
    let bt = tensor::<D<B>, 1>(b, [N]).require_grad();
    let y = {
        let _s = sites::scope("h.0.mlp.fc");
        linear(xt.clone(), wt.clone(), Some(bt.clone()))
    };
    let loss = (y.clone() * tensor::<D<B>, 3>(c, [2, M / 2, N])).sum();
    let grads = loss.backward();
    let g = |t: &Tensor<D<B>, 3>| host(t.grad(&grads).unwrap());
    let dx = g(&xt);
    let dw = host(wt.grad(&grads).unwrap());
    let db = host(bt.grad(&grads).unwrap());
    let roles = ctx
        .lock()
        .unwrap()
        .end_step()
        .into_keys()
        .map(|(_, r)| r)
        .collect();
    (host(y), dx, dw, db, roles)
}

fn data() -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    (
        values(M * K, 1),
        values(K * N, 2),
        values(N, 3),
        values(M * N, 4),
    )
}

#[test]
fn each_backward_gemm_quantizes_its_own_operand_copies() {
    let cur = Scaling::Tensor(TensorScale::Current { pow2: false });
    let specs = vec![
        (Role::X, q("float8_e4m3fn", Scaling::Row { pow2: true })),
        (Role::W, q("float8_e4m3fn", Scaling::Col { pow2: true })),
        (Role::Dy, q("float8_e5m2", Scaling::Row { pow2: false })),
        (
            Role::WDgrad,
            q("float8_e4m3fn", Scaling::Row { pow2: true }),
        ),
        (
            Role::XWgrad,
            q("float8_e4m3fn", Scaling::Col { pow2: true }),
        ),
        (Role::DyWgrad, q("float6_e3m2fn", cur)),
    ];
    let (x, w, b, c) = data();
    let s = |r: Role| specs.iter().find(|(x, _)| *x == r).unwrap().1;
    let mut y_want = mm(
        &quantized(&x, &[M, K], s(Role::X)),
        &quantized(&w, &[K, N], s(Role::W)),
        M,
        K,
        N,
        false,
        false,
    );
    for (i, v) in y_want.iter_mut().enumerate() {
        *v += b[i % N];
    }
    let dx_want = mm(
        &quantized(&c, &[M, N], s(Role::Dy)),
        &quantized(&w, &[K, N], s(Role::WDgrad)),
        M,
        N,
        K,
        false,
        true,
    );
    let dw_want = mm(
        &quantized(&x, &[M, K], s(Role::XWgrad)),
        &quantized(&c, &[M, N], s(Role::DyWgrad)),
        K,
        M,
        N,
        true,
        false,
    );
    let db_want: Vec<f32> = (0..N)
        .map(|j| (0..M).map(|i| c[i * N + j] as f64).sum::<f64>() as f32)
        .collect();
    // The saved-operand path would use Q_x(x) and Q_dy(c) in wgrad: make sure that differs.
    let dw_saved = mm(
        &quantized(&x, &[M, K], s(Role::X)),
        &quantized(&c, &[M, N], s(Role::Dy)),
        K,
        M,
        N,
        true,
        false,
    );
    assert!(dw_saved
        .iter()
        .zip(&dw_want)
        .any(|(a, b)| (a - b).abs() > 1e-3));

    for backend in ["ndarray", "flex"] {
        let recipe = Requant {
            specs: specs.clone(),
            rht: None,
        };
        let (y, dx, dw, db, roles) = match backend {
            "ndarray" => run_linear::<NdArray>(recipe, &x, &w, &b, &c),
            _ => run_linear::<Flex>(recipe, &x, &w, &b, &c),
        };
        close(&format!("{backend} y"), &y, &y_want);
        close(&format!("{backend} dx"), &dx, &dx_want);
        close(&format!("{backend} dw"), &dw, &dw_want);
        close(&format!("{backend} db"), &db, &db_want);
        for r in [
            Role::X,
            Role::W,
            Role::Dy,
            Role::WDgrad,
            Role::XWgrad,
            Role::DyWgrad,
        ] {
            assert!(
                roles.contains(&r),
                "{backend}: telemetry for {r}: {roles:?}"
            );
        }
    }
}

#[test]
fn hadamard_keeps_the_wgrad_gemm_exact_without_quantization() {
    let (x, w, b, c) = data();
    let recipe = |rht| Requant {
        specs: Vec::new(),
        rht,
    };
    let (_, dx0, dw0, _, _) = run_linear::<NdArray>(recipe(None), &x, &w, &b, &c);
    let plain = mm(&x, &c, K, M, N, true, false);
    close("dw without transform", &dw0, &plain);
    for h in [RandomHadamard::te(), RandomHadamard::from_seed(11)] {
        let (_, dx, dw, _, _) = run_linear::<NdArray>(recipe(Some(h)), &x, &w, &b, &c);
        // (Tᵀx)ᵀ(Tᵀdy) = xᵀdy up to f32 rounding of the butterflies.
        close("dw with transform", &dw, &plain);
        assert_eq!(dx, dx0, "dgrad is not transformed");
        // The transform did change the operands: quantizing them would differ.
        let mut tx = x.clone();
        h.apply(&mut tx, M, K);
        assert!(tx.iter().zip(&x).any(|(a, b)| a != b));
    }
}

#[test]
fn flex_transforms_on_its_own_buffer_as_the_host_path_does() {
    use fp8_core::precision::hadamard_via_host;
    let h = RandomHadamard::from_seed(5);
    let v = values(M * 2 * K, 3);
    let base = tensor::<Flex, 3>(&v, [2, M / 2, 2 * K]);
    let cases: Vec<(&str, Tensor<Flex, 3>)> = vec![
        (
            "contiguous, its own buffer",
            tensor::<Flex, 3>(&v, [2, M / 2, 2 * K]),
        ),
        ("sharing a buffer", base.clone()),
        (
            "a transposed view",
            tensor::<Flex, 3>(&v, [2, 2 * K, M / 2]).swap_dims(1, 2),
        ),
        ("a narrowed view", base.clone().narrow(2, 3, K)),
    ];
    for (what, t) in cases {
        let want = host(Tensor::<Flex, 3>::from_primitive(
            burn::tensor::TensorPrimitive::Float(hadamard_via_host::<Flex>(
                t.clone().into_primitive().tensor(),
                &h,
            )),
        ));
        let got = host(Tensor::<Flex, 3>::from_primitive(
            burn::tensor::TensorPrimitive::Float(<Flex as QuantizeBackend>::hadamard_tokens(
                t.clone().into_primitive().tensor(),
                &h,
            )),
        ));
        assert_eq!(got, want, "{what}");
        // The independent expectation: the butterflies on the C-order values.
        let mut c_order = host(t);
        let cols = c_order.len() / M;
        h.apply(&mut c_order, M, cols);
        assert_eq!(got, c_order, "{what}");
    }
    assert_eq!(
        host(base),
        v,
        "a tensor sharing the buffer keeps its values"
    );
}

#[test]
fn hadamard_then_quantization_feeds_the_wgrad_gemm() {
    let (x, w, b, c) = data();
    let e2m1 = q(
        "float4_e2m1fn",
        Scaling::Nvfp4 {
            axis: fp8_formats::BlockAxis::Rows,
        },
    );
    let h = RandomHadamard::te();
    let recipe = Requant {
        specs: vec![(Role::XWgrad, e2m1), (Role::DyWgrad, e2m1)],
        rht: Some(h),
    };
    let (_, _, dw, _, _) = run_linear::<Flex>(recipe, &x, &w, &b, &c);
    let (mut tx, mut tc) = (x.clone(), c.clone());
    h.apply(&mut tx, M, K);
    h.apply(&mut tc, M, N);
    let want = mm(
        &quantized(&tx, &[M, K], e2m1),
        &quantized(&tc, &[M, N], e2m1),
        K,
        M,
        N,
        true,
        false,
    );
    close("dw", &dw, &want);
}

#[test]
fn batched_matmul_requantizes_too_and_eval_quantizes_the_forward_only() {
    type D = Precision<Autodiff<NdArray>>;
    let (a, bv, c) = (
        values(2 * 3 * 5, 7),
        values(2 * 5 * 4, 8),
        values(2 * 3 * 4, 9),
    );
    let sx = q("float8_e4m3fn", Scaling::Row { pow2: false });
    let sxw = q("float8_e5m2", Scaling::Col { pow2: false });
    let ctx = PrecisionContext::new(Box::new(Requant {
        specs: vec![(Role::X, sx), (Role::XWgrad, sxw)],
        rht: None,
    }))
    .shared();
    let _active = activate(ctx);
    let at = tensor::<D, 3>(&a, [2, 3, 5]).require_grad();
    let bt = tensor::<D, 3>(&bv, [2, 5, 4]).require_grad();
    let y = {
        let _s = sites::scope("h.0.attn.scores");
        at.clone().matmul(bt.clone())
    };
    let grads = (y.clone() * tensor::<D, 3>(&c, [2, 3, 4])).sum().backward();
    let (ya, db) = (host(y), host(bt.grad(&grads).unwrap()));
    // Scales are chosen on the `[rows, cols]` view with the batch folded into the rows, as for
    // every cast: the wgrad copy's column scales span both batch entries.
    let aw = quantized(&a, &[6, 5], sxw);
    for h in 0..2 {
        let (ah, bh, ch) = (&a[h * 15..][..15], &bv[h * 20..][..20], &c[h * 12..][..12]);
        let y_want = mm(&quantized(ah, &[3, 5], sx), bh, 3, 5, 4, false, false);
        close("y", &ya[h * 12..][..12], &y_want);
        let db_want = mm(&aw[h * 15..][..15], ch, 5, 3, 4, true, false);
        close("db", &db[h * 20..][..20], &db_want);
    }
    // Evaluation (no autodiff): the forward casts only.
    type E = Precision<NdArray>;
    let y = {
        let _s = sites::scope("h.0.attn.scores");
        tensor::<E, 3>(&a, [2, 3, 5]).matmul(tensor::<E, 3>(&bv, [2, 5, 4]))
    };
    let y = host(y);
    close(
        "eval y",
        &y[..12],
        &mm(
            &quantized(&a[..15], &[3, 5], sx),
            &bv[..20],
            3,
            5,
            4,
            false,
            false,
        ),
    );
}
