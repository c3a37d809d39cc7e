//! The 16×16 random Hadamard transform (RHT) of NVIDIA's NVFP4 recipe.
//!
//! NVFP4 training ("Pretraining Large Language Models with NVFP4", arXiv 2509.25149, §4.2;
//! TransformerEngine `NVFP4BlockScaling`) multiplies both inputs of the weight-gradient GEMM
//! `dw = xᵀ·dy` by the same orthogonal matrix along the reduction axis (the tokens) before
//! quantizing them, which spreads outliers over 16 elements. Because the matrix `T` is
//! orthogonal, `(Tᵀx)ᵀ(Tᵀdy) = xᵀ·T·Tᵀ·dy = xᵀ·dy`: in exact arithmetic the GEMM is unchanged.
//!
//! `T = diag(s)·H₁₆ / 4`, with `H₁₆` the Sylvester Hadamard matrix (entries ±1) and `s` a sign
//! vector shared by every layer. This is TransformerEngine's reference
//! (`transformer_engine/pytorch/custom_recipes/reference_nvfp4.py`, `_build_hadamard_matrix`
//! lines 395–419: `h = sign_mat @ h`, and `_apply_rht` lines 421–447: `x_mat @ (H · 1/√16)`
//! on 16-element chunks of the transposed tensor, i.e. along the tokens). Each chunk `v` maps to
//! `vᵀ·T = H₁₆·(s∘v) / 4`, which is what [`RandomHadamard::apply`] computes: sign flips (exact),
//! the fast Walsh–Hadamard butterfly (four rounded stages of additions, in a fixed order), then
//! the exact multiplication by 1/4.
//!
//! TE's default sign vector is hard-coded (`get_wgrad_sign_vector`, lines 335–340);
//! [`RandomHadamard::from_seed`] draws one from a seed instead, as the paper describes.

use crate::par::{self, Chunks};
use crate::simd::{dispatch, Job, PAR_MIN};
use std::mem::MaybeUninit;

/// Size of the transform (NVFP4's block length).
pub const RHT_SIZE: usize = 16;

/// A 16×16 random Hadamard transform: the sign vector `s` of `T = diag(s)·H₁₆ / 4`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RandomHadamard {
    /// `true` flips the sign of that input element before the Hadamard butterfly.
    pub negate: [bool; RHT_SIZE],
}

/// TransformerEngine's signs, `reference_nvfp4.py` line 338:
/// `[1, 1, 1, -1, 1, -1, -1, -1, -1, -1, -1, 1, -1, 1, -1, -1]`.
const TE_SIGNS: [i8; RHT_SIZE] = [1, 1, 1, -1, 1, -1, -1, -1, -1, -1, -1, 1, -1, 1, -1, -1];

impl RandomHadamard {
    /// TransformerEngine's fixed sign vector.
    pub fn te() -> RandomHadamard {
        RandomHadamard {
            negate: TE_SIGNS.map(|s| s < 0),
        }
    }

    /// Signs drawn from `seed` (bit `i` of the first [`SplitMix64`](crate::rng::SplitMix64)
    /// output negates element `i`): a pure function of the seed, so every layer and every
    /// resumed run sees the same transform.
    pub fn from_seed(seed: u64) -> RandomHadamard {
        let z = crate::rng::SplitMix64::new(seed).next_u64();
        let mut negate = [false; RHT_SIZE];
        for (i, n) in negate.iter_mut().enumerate() {
            *n = (z >> i) & 1 == 1;
        }
        RandomHadamard { negate }
    }

    /// The matrix `T = diag(s)·H₁₆ / 4`, row-major: `T[i][j] = s_i · H[i][j] / 4` with the
    /// Sylvester `H[i][j] = (−1)^popcount(i & j)`.
    pub fn matrix(&self) -> [[f32; RHT_SIZE]; RHT_SIZE] {
        let mut t = [[0.0f32; RHT_SIZE]; RHT_SIZE];
        for (i, row) in t.iter_mut().enumerate() {
            let s = if self.negate[i] { -1.0 } else { 1.0 };
            for (j, v) in row.iter_mut().enumerate() {
                let h = if (i & j).count_ones() % 2 == 0 {
                    1.0
                } else {
                    -1.0
                };
                *v = s * h * 0.25;
            }
        }
        t
    }

    /// One chunk: `v ← vᵀ·T = H₁₆·(s∘v) / 4` (the reference that [`apply`](Self::apply)'s
    /// 16-column form is tested against).
    #[cfg(test)]
    fn chunk(&self, v: &mut [f32; RHT_SIZE]) {
        for (x, &n) in v.iter_mut().zip(&self.negate) {
            if n {
                *x = -*x;
            }
        }
        let mut h = 1;
        while h < RHT_SIZE {
            for i in (0..RHT_SIZE).step_by(2 * h) {
                for j in i..i + h {
                    let (a, b) = (v[j], v[j + h]);
                    v[j] = a + b;
                    v[j + h] = a - b;
                }
            }
            h *= 2;
        }
        for x in v.iter_mut() {
            *x *= 0.25;
        }
    }

    /// Transform the `[rows, cols]` C-order matrix `data` along its rows axis (down each
    /// column), in chunks of 16 consecutive rows: the wgrad GEMM's reduction axis for `x` and
    /// `dy` viewed as `[tokens, features]`. Trailing rows that do not fill a chunk are left as
    /// they are (the identity is orthogonal too, so the GEMM stays exact; TransformerEngine
    /// requires the token count to be a multiple of 16 instead).
    ///
    /// # Panics
    /// If `data.len() != rows * cols`.
    pub fn apply(&self, data: &mut [f32], rows: usize, cols: usize) {
        assert_eq!(data.len(), rows * cols, "hadamard: data is not rows × cols");
        // SAFETY: same layout; every element stays initialized (written with `f32`s only).
        let dst = unsafe { &mut *(data as *mut [f32] as *mut [MaybeUninit<f32>]) };
        self.run(None, dst, cols);
    }

    /// [`apply`](Self::apply) from `src` into `dst` (which may start uninitialized; every
    /// element is written): one pass over memory for a source that must keep its values,
    /// instead of a copy and then the transform.
    ///
    /// # Panics
    /// If `src` or `dst` is not `rows * cols` long.
    pub fn apply_into(&self, src: &[f32], dst: &mut [MaybeUninit<f32>], rows: usize, cols: usize) {
        assert_eq!(
            src.len(),
            rows * cols,
            "hadamard: source is not rows × cols"
        );
        assert_eq!(
            dst.len(),
            rows * cols,
            "hadamard: destination is not rows × cols"
        );
        self.run(Some(src), dst, cols);
    }

    fn run(&self, src: Option<&[f32]>, dst: &mut [MaybeUninit<f32>], cols: usize) {
        if cols == 0 {
            return;
        }
        let whole = dst.len() / (RHT_SIZE * cols) * RHT_SIZE * cols;
        let (body, tail) = dst.split_at_mut(whole);
        if let Some(src) = src {
            for (d, &x) in tail.iter_mut().zip(&src[whole..]) {
                d.write(x);
            }
        }
        let blocks = Chunks::new(body, RHT_SIZE * cols);
        let block = |i: usize| {
            let len = RHT_SIZE * cols;
            dispatch(Rows16 {
                signs: &self.negate,
                // SAFETY: task `i` is the only one that takes block `i`.
                dst: unsafe { blocks.get(i) },
                src: src.map(|s| &s[i * len..(i + 1) * len]),
                cols,
            })
        };
        if whole >= PAR_MIN {
            par::for_each(blocks.count(), block);
        } else {
            (0..blocks.count()).for_each(block);
        }
    }
}

/// [`RandomHadamard::chunk`] applied to every column of 16 consecutive rows at once: the same
/// operations on each element in the same order (so the same bits), for [`LANES`] columns at a
/// time whose 16 rows stay in vector registers through the four stages; compiled for the CPU's
/// vector ISA ([`dispatch`]). (A version that ran each stage over 64-column strips in an L1
/// buffer was 1.7–5× slower: 16 rows of 64 columns do not fit in registers, and every stage
/// went through memory.)
struct Rows16<'a> {
    signs: &'a [bool; RHT_SIZE],
    /// The 16 rows; read from here too when `src` is `None` (then every element is
    /// initialized).
    dst: &'a mut [MaybeUninit<f32>],
    src: Option<&'a [f32]>,
    cols: usize,
}

impl Job for Rows16<'_> {
    type Out = ();
    #[inline(always)]
    fn run(self) {
        let Rows16 {
            signs,
            dst,
            src,
            cols,
        } = self;
        let n = RHT_SIZE * cols;
        assert!(dst.len() == n && src.is_none_or(|s| s.len() == n));
        let out = dst.as_mut_ptr();
        // Negation flips the sign bit, NaN included: an XOR with the row's mask is the same.
        let masks = signs.map(|n| if n { 0x8000_0000u32 } else { 0 });
        let mut c0 = 0;
        while c0 + LANES <= cols {
            // SAFETY: `c0 + LANES <= cols`, and `src`/`out` hold 16 rows of `cols` (asserted).
            unsafe { group::<LANES>(src, out, cols, c0, &masks) };
            c0 += LANES;
        }
        // The last columns, one at a time (the same operations, so the same bits).
        for c in c0..cols {
            // SAFETY: as above, `c + 1 <= cols`.
            unsafe { group::<1>(src, out, cols, c, &masks) };
        }
    }
}

/// Columns `c0..c0 + W` of the 16 rows of [`Rows16`]: read (from `src`, or in place from
/// `out`), sign-flipped by `masks`, through the [`butterfly`], scaled by 1/4 and written to
/// `out`. The group is read whole before any of it is written.
///
/// # Safety
/// `c0 + W <= cols`; `out` points to `16 · cols` elements that this call may write, all
/// initialized when `src` is `None`, and `src`, if given, holds `16 · cols` elements.
#[inline(always)]
unsafe fn group<const W: usize>(
    src: Option<&[f32]>,
    out: *mut MaybeUninit<f32>,
    cols: usize,
    c0: usize,
    masks: &[u32; RHT_SIZE],
) {
    let mut v = [[0.0f32; W]; RHT_SIZE];
    for (i, row) in v.iter_mut().enumerate() {
        let k = i * cols + c0;
        let seg: [f32; W] = match src {
            Some(s) => s[k..k + W].try_into().expect("W elements"),
            // SAFETY: `k + W <= 16 · cols` and initialized in place (the caller's promise).
            None => unsafe { out.add(k).cast::<[f32; W]>().read_unaligned() },
        };
        *row = seg.map(|y| f32::from_bits(y.to_bits() ^ masks[i]));
    }
    butterfly(&mut v);
    for (i, row) in v.iter().enumerate() {
        // SAFETY: as above; `MaybeUninit<f32>` has `f32`'s layout.
        unsafe {
            out.add(i * cols + c0)
                .cast::<[f32; W]>()
                .write_unaligned(row.map(|x| x * 0.25))
        };
    }
}

/// Columns transformed together: one AVX-512 register per row (two AVX2 ones), so the 16 rows
/// of a lane group stay in registers through the four butterfly stages.
const LANES: usize = 16;

/// The four stages of the Walsh–Hadamard butterfly on 16 rows of `W` lanes, in
/// [`RandomHadamard::chunk`]'s order: stage `h` pairs row `j` with row `j + h` for every `j`
/// whose bit `h` is clear. Constant trip counts, so LLVM unrolls it into register operations.
// Indexing rows `j` and `j + h` of the same array reads as the butterfly does; LLVM keeps it all
// in registers.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn butterfly<const W: usize>(v: &mut [[f32; W]; RHT_SIZE]) {
    for stage in 0..4 {
        let h = 1 << stage;
        for j in 0..RHT_SIZE {
            if j & h == 0 {
                for l in 0..W {
                    let (a, b) = (v[j][l], v[j + h][l]);
                    v[j][l] = a + b;
                    v[j + h][l] = a - b;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tᵀ·T = I exactly: every entry is ±1/4, so each dot product is a sum of sixteen ±1/16,
    /// exact in f32.
    #[test]
    fn transform_is_orthogonal() {
        for rht in [RandomHadamard::te(), RandomHadamard::from_seed(7)] {
            let t = rht.matrix();
            for i in 0..RHT_SIZE {
                for j in 0..RHT_SIZE {
                    let dot: f32 = (0..RHT_SIZE).map(|k| t[k][i] * t[k][j]).sum();
                    assert_eq!(dot, if i == j { 1.0 } else { 0.0 }, "({i}, {j})");
                }
            }
        }
    }

    /// The butterfly equals the matrix product `vᵀ·T` on integers (exact in both).
    #[test]
    fn butterfly_matches_the_matrix() {
        let rht = RandomHadamard::te();
        let t = rht.matrix();
        let mut data: Vec<f32> = (0..RHT_SIZE * 3)
            .map(|i| ((i * 7) % 11) as f32 - 5.0)
            .collect();
        let orig = data.clone();
        rht.apply(&mut data, RHT_SIZE, 3);
        for c in 0..3 {
            for j in 0..RHT_SIZE {
                let want: f32 = (0..RHT_SIZE).map(|i| orig[i * 3 + c] * t[i][j]).sum();
                assert_eq!(data[j * 3 + c], want, "column {c}, output {j}");
            }
        }
    }

    /// TE's signs and the first rows of its matrix by hand: row 0 of H is all ones, so
    /// `T[0][j] = s_0/4 = 1/4`; row 3 has s_3 = −1 and H[3][j] = (−1)^popcount(3 & j).
    #[test]
    fn te_signs_by_hand() {
        let t = RandomHadamard::te().matrix();
        assert!(t[0].iter().all(|&v| v == 0.25));
        assert_eq!(&t[3][..4], &[-0.25, 0.25, 0.25, -0.25]);
        assert_eq!(RandomHadamard::from_seed(3), RandomHadamard::from_seed(3));
        assert_ne!(RandomHadamard::from_seed(3), RandomHadamard::from_seed(4));
    }

    /// `apply` (16 columns at a time in registers, a one-column tail, blocks in parallel) and
    /// `apply_into` compute exactly what the one-column butterfly `chunk` gives for each
    /// column, on ragged widths and heights (a tail of rows is copied as it is).
    #[test]
    fn apply_equals_the_butterfly_per_column() {
        let rht = RandomHadamard::from_seed(5);
        let mut z = crate::rng::SplitMix64::new(9);
        for (rows, cols) in [(32, 1), (48, 63), (16, 64), (35, 130), (64, 300)] {
            let data: Vec<f32> = (0..rows * cols)
                .map(|_| (z.next_u64() >> 40) as f32 / 1e5 - 80.0)
                .collect();
            let mut got = data.clone();
            rht.apply(&mut got, rows, cols);
            let mut want = data.clone();
            for r0 in (0..rows / RHT_SIZE).map(|b| b * RHT_SIZE) {
                for c in 0..cols {
                    let mut v = [0.0f32; RHT_SIZE];
                    for (i, x) in v.iter_mut().enumerate() {
                        *x = data[(r0 + i) * cols + c];
                    }
                    rht.chunk(&mut v);
                    for (i, x) in v.iter().enumerate() {
                        want[(r0 + i) * cols + c] = *x;
                    }
                }
            }
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{rows}x{cols}");
            let mut into = vec![MaybeUninit::new(f32::NAN); rows * cols];
            rht.apply_into(&data, &mut into, rows, cols);
            // SAFETY: `apply_into` wrote every element (and they started initialized).
            let into: Vec<f32> = into
                .into_iter()
                .map(|x| unsafe { x.assume_init() })
                .collect();
            assert_eq!(bits(&into), bits(&want), "{rows}x{cols} into");
        }
    }

    /// Ragged tails stay untouched.
    #[test]
    fn tail_rows_are_left_alone() {
        let rht = RandomHadamard::from_seed(1);
        let mut data: Vec<f32> = (0..20).map(|i| i as f32).collect();
        rht.apply(&mut data, 20, 1);
        assert_eq!(&data[16..], &[16.0, 17.0, 18.0, 19.0]);
        assert_ne!(
            &data[..16],
            &(0..16).map(|i| i as f32).collect::<Vec<_>>()[..]
        );
    }
}
