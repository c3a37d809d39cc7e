//! [`quantize_from`]: quantize into a fresh buffer from a shared or strided source, measuring
//! only what the caller needs.
//!
//! Why: a training step quantizes tensors it does not own (a buffer autodiff also keeps, a weight,
//! a strided head view of a fused projection). Copying them into a private buffer and then
//! quantizing that in place reads and writes memory twice, and a statistics pass costs more than
//! the cast itself; most steps log no telemetry and most recipes keep no scaling state. Here the
//! copy is fused into the cast (the source is read once, the destination written once) and
//! [`Measure`] says which statistics to gather.
//!
//! Whatever the source and the measure, the quantized values are bit for bit those of
//! [`quantize`](crate::quantize) on the same elements in the same order, and with
//! [`Measure::Full`] so are the statistics.

use crate::cast::Consts;
use crate::par::{self, Chunks};
use crate::quantize::quantize_measured;
use crate::scaling::{QuantSpec, Scaling, TensorScale};
use crate::simd::{dispatch, Elementwise, EwData, CHUNK, PAR_MIN};
use crate::stats::Stats;
use std::mem::MaybeUninit;

/// Which statistics a quantize call gathers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Measure {
    /// None: [`Stats`] carries only `scale` and `count` (the rest is 0, `snr_db` NaN).
    Nothing,
    /// The amax (what delayed scaling records) besides `scale` and `count`.
    Amax,
    /// Everything (telemetry).
    #[default]
    Full,
}

/// A strided view of `data`: element `(i0, …, ik)` of `shape` is
/// `data[offset + Σ ij·strides[j]]`. Elements are read in C order of `shape`.
#[derive(Clone, Copy, Debug)]
pub struct StridedView<'a> {
    pub data: &'a [f32],
    pub offset: usize,
    pub shape: &'a [usize],
    pub strides: &'a [usize],
}

impl StridedView<'_> {
    /// Copy the view's elements, in C order of its shape, into `dst` (every element written):
    /// whole rows at a time where the innermost (merged) dimension is contiguous. A plain copy
    /// for callers that need a dense buffer without quantizing (e.g. a backend's slow generic
    /// copy of a strided view).
    ///
    /// # Panics
    /// If the view does not hold `dst.len()` elements or reaches past its data.
    pub fn gather_into(&self, dst: &mut [MaybeUninit<f32>]) {
        Merged::new(*self, dst.len()).gather(0, dst);
    }
}

/// Where [`quantize_from`] reads its input.
#[derive(Clone, Copy, Debug)]
pub enum Source<'a> {
    /// The destination itself (in place).
    InPlace,
    /// A slice as long as the destination.
    Slice(&'a [f32]),
    /// The elements of a strided view, in C order of its shape.
    Strided(StridedView<'a>),
}

/// Quantize the elements of `src` into `dst` (C order, `shape`), gathering the statistics that
/// `measure` asks for. `shape` is what scaling tiles and stochastic-rounding indices refer to,
/// as in [`quantize`](crate::quantize).
///
/// Without tiles (no scaling or a given tensor scale) and without [`Measure::Full`] this is a
/// single elementwise pass, as cheap as [`cast_slice`](crate::cast_slice). Tiled specs take
/// their tile amaxes and scales in any case, and gather the error and count statistics only for
/// [`Measure::Full`].
///
/// # Panics
/// If the product of `shape` is not `dst.len()`, a slice source differs in length, or a strided
/// view's shape does not hold `dst.len()` elements or reaches past its data.
pub fn quantize_from(
    src: Source<'_>,
    dst: &mut [f32],
    shape: &[usize],
    spec: &QuantSpec,
    measure: Measure,
) -> Stats {
    if let Source::InPlace = src {
        check_shape(shape, dst.len());
        return match elementwise_scale(spec, measure) {
            Some(scale) => {
                let n = dst.len();
                let dst = SyncPtr(dst.as_mut_ptr().cast::<MaybeUninit<f32>>(), n);
                elementwise(n, spec, scale, measure, |start, len, cast| {
                    // SAFETY: `elementwise` hands out disjoint, in-bounds chunks, and the
                    // elements were initialized by the caller.
                    cast(EwData::InPlace(unsafe {
                        assume_init(dst.chunk(start, len))
                    }))
                })
            }
            None => {
                // SAFETY: same layout; in place, every element stays initialized.
                let dst = unsafe { &mut *(dst as *mut [f32] as *mut [MaybeUninit<f32>]) };
                quantize_measured(None, dst, shape, spec, measure)
            }
        };
    }
    // SAFETY: `[f32]` and `[MaybeUninit<f32>]` have the same layout, and `quantize_into` only
    // writes initialized `f32` values into it.
    let dst = unsafe { &mut *(dst as *mut [f32] as *mut [MaybeUninit<f32>]) };
    quantize_into(src, dst, shape, spec, measure)
}

/// [`quantize_from`] into a destination that may start uninitialized (a fresh allocation need
/// not be zeroed first): every element of `dst` is initialized when it returns.
///
/// # Panics
/// As [`quantize_from`], and if `src` is [`Source::InPlace`] (there is nothing to read).
pub fn quantize_into(
    src: Source<'_>,
    dst: &mut [MaybeUninit<f32>],
    shape: &[usize],
    spec: &QuantSpec,
    measure: Measure,
) -> Stats {
    let n = dst.len();
    check_shape(shape, n);
    let view = match src {
        Source::InPlace => panic!("quantize_into: an in-place source has nothing to read"),
        Source::Slice(s) => {
            assert_eq!(
                s.len(),
                n,
                "quantize_into: source and destination lengths differ"
            );
            None
        }
        Source::Strided(v) => Some(Merged::new(v, n)),
    };
    let Some(scale) = elementwise_scale(spec, measure) else {
        // Tiles or every statistic: a slice is read by the quantize pass itself; a strided
        // view is gathered first, then quantized in place.
        let Some(v) = &view else {
            let Source::Slice(s) = src else {
                unreachable!("an in-place source was rejected above")
            };
            return quantize_measured(Some(s), dst, shape, spec, measure);
        };
        if n >= PAR_MIN {
            let chunks = Chunks::new(dst, CHUNK);
            // SAFETY: task `i` is the only one that takes chunk `i`.
            par::for_each(chunks.count(), |i| {
                v.gather(i * CHUNK, unsafe { chunks.get(i) })
            });
        } else {
            v.gather(0, dst);
        }
        // `gather` wrote every element.
        return quantize_measured(None, dst, shape, spec, measure);
    };
    let dst = SyncPtr(dst.as_mut_ptr(), n);
    elementwise(n, spec, scale, measure, |start, len, cast| {
        // SAFETY: `elementwise` hands out disjoint, in-bounds chunks `[start, start + len)`.
        let chunk = unsafe { dst.chunk(start, len) };
        match (&view, src) {
            (Some(v), _) if v.rows() => {
                // Cast straight from the rows of the source.
                let mut runs = Vec::new();
                v.runs(start, len, &mut runs);
                cast(EwData::Runs(v.data, &runs, chunk))
            }
            (Some(v), _) => {
                // The chunk is filled with plain copies, then cast where it lies (in cache).
                v.gather(start, chunk);
                // SAFETY: `gather` wrote every element of the chunk.
                cast(EwData::InPlace(unsafe { assume_init(chunk) }))
            }
            (None, Source::Slice(s)) => cast(EwData::From(&s[start..start + len], chunk)),
            _ => unreachable!("an in-place source was rejected above"),
        }
    })
}

fn check_shape(shape: &[usize], n: usize) {
    assert_eq!(
        shape.iter().product::<usize>(),
        n,
        "quantize_from: shape {shape:?} does not match data length {n}"
    );
}

/// The one `(scale, inverse)` of a spec without tiles (`None` inside for no scaling), when the
/// measure lets the cast skip the statistics pass; `None` otherwise.
#[allow(clippy::option_option)]
fn elementwise_scale(spec: &QuantSpec, measure: Measure) -> Option<Option<(f32, f32)>> {
    if measure == Measure::Full {
        return None;
    }
    match spec.scaling {
        Scaling::None => Some(None),
        Scaling::Tensor(TensorScale::Given(s)) => Some(Some((s, 1.0 / s))),
        _ => None,
    }
}

/// Run the elementwise kernel over `n` elements in fixed work items (in parallel for large
/// tensors): `item(start, len, cast)` hands the work item `[start, start + len)` to `cast`,
/// which runs the kernel on it and returns its amax bits.
fn elementwise(
    n: usize,
    spec: &QuantSpec,
    scale: Option<(f32, f32)>,
    measure: Measure,
    item: impl Fn(usize, usize, &dyn Fn(EwData<'_>) -> u32) -> u32 + Sync,
) -> Stats {
    let mut cast = spec.cast;
    if spec.scaling != Scaling::None {
        cast.saturate = true; // as `quantize`: every scaled scheme saturates
    }
    let k = Consts::new(&cast);
    let run = |i: usize| {
        let start = i * CHUNK;
        let cast = |data: EwData<'_>| {
            dispatch(Elementwise {
                data,
                k: &k,
                scale,
                offset: start as u64,
            })
        };
        item(start, CHUNK.min(n - start), &cast)
    };
    let items = n.div_ceil(CHUNK);
    let amax = if n >= PAR_MIN {
        par::map(items, run).into_iter().max().unwrap_or(0)
    } else {
        (0..items).map(run).max().unwrap_or(0)
    };
    Stats {
        amax: if measure == Measure::Amax {
            f32::from_bits(amax)
        } else {
            0.0
        },
        scale: scale.map_or(1.0, |(s, _)| s),
        underflow: 0.0,
        saturation: 0.0,
        snr_db: f64::NAN,
        count: n as u64,
    }
}

/// A destination shared by the work items of [`elementwise`], each of which takes its own
/// disjoint chunk.
struct SyncPtr(*mut MaybeUninit<f32>, usize);

// SAFETY: the chunks handed out are disjoint (see `chunk`), so no two threads touch the same
// element.
unsafe impl Sync for SyncPtr {}

impl SyncPtr {
    /// # Safety
    /// `[start, start + len)` must lie within the buffer and no other live chunk may overlap it.
    #[allow(clippy::mut_from_ref)]
    unsafe fn chunk(&self, start: usize, len: usize) -> &mut [MaybeUninit<f32>] {
        assert!(start + len <= self.1);
        // SAFETY: in bounds (checked) and exclusive (the caller's promise).
        unsafe { std::slice::from_raw_parts_mut(self.0.add(start), len) }
    }
}

/// # Safety
/// Every element of `s` must be initialized.
unsafe fn assume_init(s: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    // SAFETY: same layout; initialized by the caller's promise.
    unsafe { &mut *(s as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

fn write_slice(dst: &mut [MaybeUninit<f32>], src: &[f32]) {
    assert_eq!(dst.len(), src.len());
    // SAFETY: same length (checked), `MaybeUninit<f32>` has `f32`'s layout, and a shared and a
    // mutable slice never overlap.
    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst.as_mut_ptr().cast(), src.len()) };
}

/// A strided view with size-1 dimensions dropped and adjacent dimensions that are contiguous
/// with each other merged (so a head view of a fused projection copies whole rows).
struct Merged<'a> {
    data: &'a [f32],
    offset: usize,
    shape: Vec<usize>,
    strides: Vec<usize>,
}

impl<'a> Merged<'a> {
    fn new(v: StridedView<'a>, n: usize) -> Merged<'a> {
        assert_eq!(
            v.shape.len(),
            v.strides.len(),
            "quantize_from: strided view with {} dims but {} strides",
            v.shape.len(),
            v.strides.len()
        );
        assert_eq!(
            v.shape.iter().product::<usize>(),
            n,
            "quantize_from: strided view of shape {:?} does not hold {n} elements",
            v.shape
        );
        if n > 0 {
            let last = v.offset
                + v.shape
                    .iter()
                    .zip(v.strides)
                    .map(|(&d, &s)| (d - 1) * s)
                    .sum::<usize>();
            assert!(
                last < v.data.len(),
                "quantize_from: strided view reaches element {last} of {}",
                v.data.len()
            );
        }
        let mut shape: Vec<usize> = Vec::with_capacity(v.shape.len());
        let mut strides: Vec<usize> = Vec::with_capacity(v.shape.len());
        for (&d, &s) in v.shape.iter().zip(v.strides) {
            if d == 1 {
                continue;
            }
            match (shape.last_mut(), strides.last_mut()) {
                (Some(pd), Some(ps)) if *ps == s * d => {
                    *pd *= d;
                    *ps = s;
                }
                _ => {
                    shape.push(d);
                    strides.push(s);
                }
            }
        }
        if shape.is_empty() {
            shape.push(1);
            strides.push(1);
        }
        Merged {
            data: v.data,
            offset: v.offset,
            shape,
            strides,
        }
    }

    /// Whether the innermost (merged) dimension is contiguous, so the view is a sequence of
    /// slices of its data.
    fn rows(&self) -> bool {
        self.strides.last() == Some(&1)
    }

    /// The slices `(start, len)` of the data that hold elements `[f0, f0 + n)` (C order), in
    /// order; only when [`rows`](Self::rows) holds.
    fn runs(&self, f0: usize, n: usize, out: &mut Vec<(usize, usize)>) {
        debug_assert!(self.rows());
        out.clear();
        self.visit(f0, n, |start, take| out.push((start, take)));
    }

    /// Call `f(start, len)` for each stretch of elements `[f0, f0 + n)` (C order) along the
    /// innermost dimension: `len` elements from data index `start` with that dimension's stride.
    fn visit(&self, f0: usize, n: usize, mut f: impl FnMut(usize, usize)) {
        if n == 0 {
            return;
        }
        let nd = self.shape.len();
        let (inner, is) = (self.shape[nd - 1], self.strides[nd - 1]);
        let (outer, ostr) = (&self.shape[..nd - 1], &self.strides[..nd - 1]);
        let mut idx = vec![0usize; nd - 1];
        let mut rest = f0 / inner;
        let mut pos = f0 % inner;
        let mut base = self.offset;
        for d in (0..nd - 1).rev() {
            idx[d] = rest % outer[d];
            rest /= outer[d];
            base += idx[d] * ostr[d];
        }
        let mut w = 0;
        while w < n {
            let take = (inner - pos).min(n - w);
            f(base + pos * is, take);
            w += take;
            pos = 0;
            for d in (0..nd - 1).rev() {
                idx[d] += 1;
                base += ostr[d];
                if idx[d] < outer[d] {
                    break;
                }
                base -= ostr[d] * outer[d];
                idx[d] = 0;
            }
        }
    }

    /// Write elements `[f0, f0 + out.len())` (C order) into `out`, every one of them.
    fn gather(&self, f0: usize, out: &mut [MaybeUninit<f32>]) {
        let is = *self.strides.last().expect("a merged view has a dimension");
        let mut w = 0;
        self.visit(f0, out.len(), |start, take| {
            let o = &mut out[w..w + take];
            if is == 1 {
                write_slice(o, &self.data[start..start + take]);
            } else {
                for (j, x) in o.iter_mut().enumerate() {
                    x.write(self.data[start + j * is]);
                }
            }
            w += take;
        });
    }
}
