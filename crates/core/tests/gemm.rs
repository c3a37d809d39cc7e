//! `GemmOps` on Flex against burn's own ops: forward products and input gradients bit for bit,
//! the weight and bias gradients (one product over all rows, blocked sums) within rounding, the
//! same bits for 1 and 2 threads, and the autodiff nodes against burn's `Autodiff<NdArray>`.

use burn::backend::{Autodiff, Flex, NdArray};
use burn::tensor::{Distribution, Tensor, TensorPrimitive};
use burn_backend::tensor::FloatTensor;
use fp8_core::GemmOps;

type F = Flex;

fn prim<B: burn::tensor::backend::Backend, const D: usize>(t: Tensor<B, D>) -> FloatTensor<B> {
    t.into_primitive().tensor()
}

fn tensor<B: burn::tensor::backend::Backend, const D: usize>(t: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

fn random<const D: usize>(dims: [usize; D], seed: u64) -> Tensor<F, D> {
    <F as burn::tensor::backend::Backend>::seed(&Default::default(), seed);
    Tensor::random(dims, Distribution::Uniform(-1.0, 1.0), &Default::default())
}

fn bits<const D: usize>(t: Tensor<F, D>) -> Vec<u32> {
    t.into_data()
        .to_vec::<f32>()
        .unwrap()
        .iter()
        .map(|x| x.to_bits())
        .collect()
}

fn close<const D: usize>(name: &str, got: Tensor<F, D>, want: Tensor<F, D>, tol: f32) {
    assert_eq!(got.dims(), want.dims(), "{name}: shape");
    let (g, w) = (
        got.into_data().to_vec::<f32>().unwrap(),
        want.into_data().to_vec::<f32>().unwrap(),
    );
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        assert!(
            (a - b).abs() <= tol * (1.0 + b.abs()),
            "{name}[{i}]: {a} vs {b}"
        );
    }
}

fn pool(n: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build()
        .unwrap()
}

#[test]
fn matmul_equals_flex_bit_for_bit() {
    // Attention-like: q [2, 3, 40, 16] · kᵀ (a transposed view), then a broadcast rhs.
    let q = random([2, 3, 40, 16], 1);
    let k = random([2, 3, 40, 16], 2);
    let kt = k.swap_dims(2, 3);
    let want = q.clone().matmul(kt.clone());
    let got = tensor::<F, 4>(F::gemm_matmul(prim(q.clone()), prim(kt)));
    assert_eq!(bits(got), bits(want));
    let w = random([1, 1, 16, 24], 3);
    let want = q.clone().matmul(w.clone());
    let got = tensor::<F, 4>(F::gemm_matmul(prim(q), prim(w)));
    assert_eq!(bits(got), bits(want));
}

#[test]
fn linear_equals_burn_linear_bit_for_bit() {
    let x = random([4, 64, 32], 4);
    let b = random([48], 6);
    // A plain weight, and a transposed view (a tied output head).
    for w in [random([32, 48], 5), random([48, 32], 7).transpose()] {
        let want = burn::tensor::module::linear(x.clone(), w.clone(), Some(b.clone()));
        let got = tensor::<F, 3>(F::gemm_linear(
            prim(x.clone()),
            prim(w),
            Some(prim(b.clone())),
        ));
        assert_eq!(bits(got), bits(want));
    }
}

#[test]
fn linear_backward_against_burn_and_across_threads() {
    let (x, w, dy) = (
        random([4, 96, 32], 8),
        random([32, 48], 9),
        random([4, 96, 48], 10),
    );
    let run = || {
        let (dx, dw, db) = F::gemm_linear_backward(
            Some(prim(x.clone())),
            Some(prim(w.clone())),
            prim(dy.clone()),
            true,
        );
        (
            tensor::<F, 3>(dx.unwrap()),
            tensor::<F, 2>(dw.unwrap()),
            tensor::<F, 1>(db.unwrap()),
        )
    };
    let (dx, dw, db) = pool(1).install(run);
    let (dx2, dw2, db2) = pool(2).install(run);
    assert_eq!(bits(dx.clone()), bits(dx2), "dx, 1 vs 2 threads");
    assert_eq!(bits(dw.clone()), bits(dw2), "dw, 1 vs 2 threads");
    assert_eq!(bits(db.clone()), bits(db2), "db, 1 vs 2 threads");
    use burn_backend::ops::ModuleOps;
    let want_dx = tensor::<F, 3>(F::linear_x_backward(prim(w.clone()), prim(dy.clone())));
    assert_eq!(bits(dx), bits(want_dx), "dx equals burn's bit for bit");
    let want_dw = tensor::<F, 2>(F::linear_weight_backward(prim(x), prim(dy.clone())));
    close("dw", dw, want_dw, 1e-5);
    let want_db = tensor::<F, 1>(F::linear_bias_backward(prim(dy)));
    close("db", db, want_db, 1e-5);
}

#[test]
fn autodiff_gradients_match_burn_on_ndarray() {
    type A = Autodiff<F>;
    type N = Autodiff<NdArray>;
    let (xv, wv, bv, rv) = (
        random([3, 20, 8], 11),
        random([8, 12], 12),
        random([12], 13),
        random([3, 12, 5], 14),
    );
    let data = |t: &Tensor<F, 3>| t.to_data();
    // loss = sum(matmul(linear(x, w, b), r))
    let x = Tensor::<A, 3>::from_data(data(&xv), &Default::default()).require_grad();
    let w = Tensor::<A, 2>::from_data(wv.to_data(), &Default::default()).require_grad();
    let b = Tensor::<A, 1>::from_data(bv.to_data(), &Default::default()).require_grad();
    let r = Tensor::<A, 3>::from_data(data(&rv), &Default::default()).require_grad();
    let h = tensor::<A, 3>(A::gemm_linear(
        prim(x.clone()),
        prim(w.clone()),
        Some(prim(b.clone())),
    ));
    let y = tensor::<A, 3>(A::gemm_matmul(prim(h), prim(r.clone())));
    let g = y.sum().backward();

    let xn = Tensor::<N, 3>::from_data(data(&xv), &Default::default()).require_grad();
    let wn = Tensor::<N, 2>::from_data(wv.to_data(), &Default::default()).require_grad();
    let bn = Tensor::<N, 1>::from_data(bv.to_data(), &Default::default()).require_grad();
    let rn = Tensor::<N, 3>::from_data(data(&rv), &Default::default()).require_grad();
    let yn =
        burn::tensor::module::linear(xn.clone(), wn.clone(), Some(bn.clone())).matmul(rn.clone());
    let gn = yn.sum().backward();

    let cmp = |name: &str, a: Vec<f32>, b: Vec<f32>| {
        assert_eq!(a.len(), b.len(), "{name}");
        for (i, (p, q)) in a.iter().zip(&b).enumerate() {
            assert!(
                (p - q).abs() <= 1e-4 * (1.0 + q.abs()),
                "{name}[{i}]: {p} vs {q}"
            );
        }
    };
    let v = |d: burn::tensor::TensorData| d.to_vec::<f32>().unwrap();
    cmp(
        "dx",
        v(x.grad(&g).unwrap().into_data()),
        v(xn.grad(&gn).unwrap().into_data()),
    );
    cmp(
        "dw",
        v(w.grad(&g).unwrap().into_data()),
        v(wn.grad(&gn).unwrap().into_data()),
    );
    cmp(
        "db",
        v(b.grad(&g).unwrap().into_data()),
        v(bn.grad(&gn).unwrap().into_data()),
    );
    cmp(
        "dr",
        v(r.grad(&g).unwrap().into_data()),
        v(rn.grad(&gn).unwrap().into_data()),
    );
}
