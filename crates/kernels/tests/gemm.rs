//! The tiled products against an f64 reference, bit for bit against one plain `gemm` call over
//! the whole product (single- and multi-threaded), the same bits for 1 and 2 threads, outputs
//! written in full without a zero-fill, and the blocked column sums.

use fp8_kernels::gemm::{self, ColumnSums, Operand, Product, SUM_BLOCK};
use std::mem::MaybeUninit;

/// SplitMix64, as in the kernel tests.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0)
            .collect()
    }
}

fn pool(n: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build()
        .unwrap()
}

/// A matrix stored row-major (`transposed == false`) or as the transpose of a row-major buffer.
struct Mat {
    data: Vec<f32>,
    rows: usize,
    cols: usize,
    transposed: bool,
}

impl Mat {
    fn random(rng: &mut Rng, rows: usize, cols: usize, transposed: bool) -> Mat {
        Mat {
            data: rng.vec(rows * cols),
            rows,
            cols,
            transposed,
        }
    }
    fn strides(&self) -> (isize, isize) {
        if self.transposed {
            (1, self.rows as isize)
        } else {
            (self.cols as isize, 1)
        }
    }
    fn at(&self, i: usize, j: usize) -> f32 {
        let (rs, cs) = self.strides();
        self.data[i * rs as usize + j * cs as usize]
    }
    fn operand<'a>(&'a self, offsets: &'a [usize]) -> Operand<'a> {
        let (row_stride, col_stride) = self.strides();
        Operand {
            data: &self.data,
            offsets,
            row_stride,
            col_stride,
        }
    }
}

fn product<'a>(a: &'a Mat, b: &'a Mat, bias: Option<&'a [f32]>) -> Product<'a> {
    Product {
        m: a.rows,
        n: b.cols,
        k: a.cols,
        lhs: a.operand(&[0]),
        rhs: b.operand(&[0]),
        bias,
    }
}

/// One `gemm::gemm` call over the whole product (+ bias afterwards, as the tiles do).
fn plain(p: &Product<'_>, parallelism: ::gemm::Parallelism) -> Vec<f32> {
    let mut out = vec![0.0f32; p.m * p.n];
    unsafe {
        ::gemm::gemm(
            p.m,
            p.n,
            p.k,
            out.as_mut_ptr(),
            1,
            p.n as isize,
            false,
            p.lhs.data.as_ptr(),
            p.lhs.col_stride,
            p.lhs.row_stride,
            p.rhs.data.as_ptr(),
            p.rhs.col_stride,
            p.rhs.row_stride,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
    if let Some(b) = p.bias {
        for row in out.chunks_mut(p.n) {
            for (y, &v) in row.iter_mut().zip(b) {
                *y += v;
            }
        }
    }
    out
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// |got − Σ a·b| ≤ 4·k·ε·Σ|a·b| (+ the bias's rounding), elementwise, in f64.
fn assert_matches_reference(name: &str, got: &[f32], a: &Mat, b: &Mat, bias: Option<&[f32]>) {
    let (m, n, k) = (a.rows, b.cols, a.cols);
    assert_eq!(got.len(), m * n, "{name}: length");
    for i in 0..m {
        for j in 0..n {
            let (mut s, mut mag) = (0.0f64, 0.0f64);
            for l in 0..k {
                let t = a.at(i, l) as f64 * b.at(l, j) as f64;
                s += t;
                mag += t.abs();
            }
            let bv = bias.map_or(0.0, |b| b[j] as f64);
            let want = s + bv;
            let tol = 4.0 * (k as f64 + 1.0) * f32::EPSILON as f64 * (mag + bv.abs()) + 1e-30;
            let g = got[i * n + j] as f64;
            assert!(
                (g - want).abs() <= tol,
                "{name}[{i},{j}]: got {g}, want {want} (tolerance {tol})"
            );
        }
    }
}

/// The model's shapes (gpt2-mini, b·t = 2048 rows) and some edge cases:
/// (m, k, n, lhs transposed, rhs transposed).
const SHAPES: &[(usize, usize, usize, bool, bool)] = &[
    (2048, 128, 384, false, false), // qkv forward
    (2048, 512, 128, false, false), // mlp proj forward
    (2048, 384, 128, false, true),  // dx = dy · wᵀ
    (128, 2048, 384, true, false),  // dw = xᵀ · dy
    (512, 2048, 128, true, false),  // mlp proj dw
    (2048, 128, 256, false, true),  // tied lm_head (wteᵀ)
    (2048, 64, 40, false, false),   // n ≤ 64: cut into rows, none under 128
    (300, 70, 50, false, false),    // too small to cut
    (37, 5, 1, false, false),       // gemv
    (1, 9, 33, false, false),       // gemv
    (5, 2, 7, false, false),        // k ≤ 2
    (8, 8, 8, false, true),         // small
];

#[test]
fn products_match_an_f64_reference() {
    let mut rng = Rng(1);
    for &(m, k, n, lt, rt) in SHAPES {
        if m * k * n > 40_000_000 {
            continue; // the f64 reference is slow; the bit-for-bit test covers these
        }
        let a = Mat::random(&mut rng, m, k, lt);
        let b = Mat::random(&mut rng, k, n, rt);
        let bias = rng.vec(n);
        for bias in [None, Some(&bias[..])] {
            let got = gemm::matmul(&product(&a, &b, bias));
            assert_matches_reference(&format!("{m}x{k}x{n}"), &got, &a, &b, bias);
        }
    }
}

#[test]
fn tiles_give_the_bits_of_one_gemm_call_for_any_thread_count() {
    let mut rng = Rng(2);
    for &(m, k, n, lt, rt) in SHAPES {
        let a = Mat::random(&mut rng, m, k, lt);
        let b = Mat::random(&mut rng, k, n, rt);
        let bias = rng.vec(n);
        let p = product(&a, &b, Some(&bias));
        let want = bits(&plain(&p, ::gemm::Parallelism::None));
        // gemm's own threading splits the output, not the reduction: same bits too.
        let rayon2 = pool(2).install(|| bits(&plain(&p, ::gemm::Parallelism::Rayon(2))));
        assert_eq!(rayon2, want, "{m}x{k}x{n}: gemm with 2 rayon threads");
        for threads in [1, 2, 3] {
            let got = pool(threads).install(|| bits(&gemm::matmul(&p)));
            assert_eq!(got, want, "{m}x{k}x{n}: tiled, {threads} threads");
        }
    }
}

#[test]
fn outputs_need_no_zero_fill() {
    let mut rng = Rng(3);
    for &(m, k, n, lt, rt) in &[(256, 64, 192, false, false), (7, 0, 5, false, false)] {
        let a = Mat::random(&mut rng, m, k, lt);
        let b = Mat::random(&mut rng, k, n, rt);
        let p = product(&a, &b, None);
        let mut out = vec![MaybeUninit::new(f32::NAN); m * n];
        gemm::run(&[p], &mut [&mut out], None);
        let got: Vec<f32> = out.iter().map(|x| unsafe { x.assume_init() }).collect();
        assert!(
            got.iter().all(|x| x.is_finite()),
            "every element written ({m}x{k}x{n})"
        );
        if k == 0 {
            assert!(got.iter().all(|&x| x == 0.0), "k = 0 gives zeros");
        } else {
            assert_eq!(bits(&got), bits(&plain(&p, ::gemm::Parallelism::None)));
        }
    }
}

#[test]
fn batched_products_with_broadcast_offsets() {
    // lhs: 3 matrices 40×24; rhs: one 24×56 matrix used by all three (offset repeated), as a
    // broadcast batch dimension gives.
    let mut rng = Rng(4);
    let (batch, m, k, n) = (3, 40, 24, 56);
    let a = rng.vec(batch * m * k);
    let b = Mat::random(&mut rng, k, n, true);
    let lhs_offsets: Vec<usize> = (0..batch).map(|i| i * m * k).collect();
    let rhs_offsets = vec![0; batch];
    let p = Product {
        m,
        n,
        k,
        lhs: Operand {
            data: &a,
            offsets: &lhs_offsets,
            row_stride: k as isize,
            col_stride: 1,
        },
        rhs: b.operand(&rhs_offsets),
        bias: None,
    };
    let got = gemm::matmul(&p);
    for i in 0..batch {
        let ai = Mat {
            data: a[i * m * k..(i + 1) * m * k].to_vec(),
            rows: m,
            cols: k,
            transposed: false,
        };
        assert_matches_reference(
            &format!("batch {i}"),
            &got[i * m * n..(i + 1) * m * n],
            &ai,
            &b,
            None,
        );
    }
}

#[test]
fn several_products_and_column_sums_in_one_loop() {
    let mut rng = Rng(5);
    let (rows, d_in, d_out) = (1000, 48, 80);
    let x = Mat::random(&mut rng, rows, d_in, false);
    let dy = Mat::random(&mut rng, rows, d_out, false);
    let w = Mat::random(&mut rng, d_in, d_out, false);
    // dx = dy · wᵀ, dw = xᵀ · dy, db = Σ_rows dy.
    let wt = Mat {
        data: w.data.clone(),
        rows: d_out,
        cols: d_in,
        transposed: true,
    };
    let xt = Mat {
        data: x.data.clone(),
        rows: d_in,
        cols: rows,
        transposed: true,
    };
    let products = [product(&dy, &wt, None), product(&xt, &dy, None)];
    let mut dx = vec![MaybeUninit::uninit(); rows * d_in];
    let mut dw = vec![MaybeUninit::uninit(); d_in * d_out];
    let mut db = vec![f32::NAN; d_out];
    for threads in [1, 2] {
        pool(threads).install(|| {
            gemm::run(
                &products,
                &mut [&mut dx, &mut dw],
                Some(ColumnSums {
                    x: &dy.data,
                    cols: d_out,
                    out: &mut db,
                }),
            )
        });
        let dx: Vec<f32> = dx.iter().map(|v| unsafe { v.assume_init() }).collect();
        let dw: Vec<f32> = dw.iter().map(|v| unsafe { v.assume_init() }).collect();
        assert_eq!(
            bits(&dx),
            bits(&gemm::matmul(&products[0])),
            "dx, {threads} threads"
        );
        assert_eq!(
            bits(&dw),
            bits(&gemm::matmul(&products[1])),
            "dw, {threads} threads"
        );
        // The column sums: per block of SUM_BLOCK rows in row order, then the blocks in order.
        let mut want = vec![0.0f32; d_out];
        for block in dy.data.chunks(SUM_BLOCK * d_out) {
            let mut part = vec![0.0f32; d_out];
            for row in block.chunks(d_out) {
                for (p, &v) in part.iter_mut().zip(row) {
                    *p += v;
                }
            }
            for (w, p) in want.iter_mut().zip(part) {
                *w += p;
            }
        }
        assert_eq!(bits(&db), bits(&want), "db, {threads} threads");
    }
}

#[test]
fn column_sums_of_hand_values() {
    // 130 rows (3 blocks) of [1, 2, -0.5]: sums 130, 260, -65 exactly.
    let x: Vec<f32> = (0..130).flat_map(|_| [1.0, 2.0, -0.5]).collect();
    let mut out = vec![0.0; 3];
    gemm::run(
        &[],
        &mut [],
        Some(ColumnSums {
            x: &x,
            cols: 3,
            out: &mut out,
        }),
    );
    assert_eq!(out, vec![130.0, 260.0, -65.0]);
}

#[test]
#[should_panic(expected = "outside its buffer")]
fn an_operand_outside_its_buffer_is_refused() {
    let a = vec![0.0f32; 10];
    let b = vec![0.0f32; 10];
    let p = Product {
        m: 4,
        n: 2,
        k: 3,
        lhs: Operand {
            data: &a,
            offsets: &[0],
            row_stride: 3,
            col_stride: 1,
        },
        rhs: Operand {
            data: &b,
            offsets: &[0],
            row_stride: 2,
            col_stride: 1,
        },
        bias: None,
    };
    gemm::matmul(&p);
}
