//! The hot loops, written so LLVM vectorizes them, and compiled once per [`SimdLevel`] (picked
//! at run time by [`cpu::dispatch`]): a job's `run` is `#[inline(always)]`, so its whole body,
//! element kernel included, is compiled inside the `#[target_feature]` wrapper.
//!
//! Statistics are gathered in the same pass in `LANES` independent f32/u32 accumulators (so
//! the reduction vectorizes without reassociating anything), flushed into f64 every
//! block of `BLOCK` elements; the order of all additions is fixed by the data layout alone.
//!
//! Work is split into fixed items of [`CHUNK`] elements, whatever the thread count, by the
//! callers in `quantize` and `source`.

use crate::cast::{
    cast_bits, cast_bits_sub, cast_e8m0, hi_key, rand32_split, Consts, R_AWAY, R_NEAREST,
    R_NEAREST_FPU, R_NEAREST_SAT, R_STOCH, R_STOCH_SAT, R_ZERO,
};
use crate::cpu::{self, simd_level, SimdLevel};
use crate::scaling::{tile_scale, Nvfp4Scales, TileRule};

use std::mem::MaybeUninit;

const LANES: usize = 16;
const ABS: u32 = 0x7fff_ffff;
const INF: u32 = 0x7f80_0000;

/// Slices at least this long are split over the team of [`crate::par`].
pub(crate) const PAR_MIN: usize = 1 << 16;
/// Fixed work-item size, independent of the thread count (keeps stats sums reproducible); a
/// multiple of [`BLOCK`].
pub(crate) const CHUNK: usize = 1 << 16;

/// Per-work-item statistics, merged in a fixed order by the caller.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Acc {
    pub amax_bits: u32,
    pub under: u64,
    pub sat: u64,
    pub sx2: f64,
    pub se2: f64,
    pub count: u64,
    /// Sum and number of tile scales computed inside the pass (fused tile scaling only).
    pub scale_sum: f64,
    pub tiles: u64,
}

impl Acc {
    pub(crate) fn merge(&mut self, o: &Acc) {
        self.amax_bits = self.amax_bits.max(o.amax_bits);
        self.under += o.under;
        self.sat += o.sat;
        self.sx2 += o.sx2;
        self.se2 += o.se2;
        self.count += o.count;
        self.scale_sum += o.scale_sum;
        self.tiles += o.tiles;
    }
}

/// A unit of work whose body should be compiled with the best available vector ISA: `run` is
/// `#[inline(always)]`, so [`dispatch`] compiles all of it, element kernel included, inside
/// each of [`cpu::dispatch`]'s `#[target_feature]` copies.
pub(crate) trait Job {
    type Out;
    fn run(self) -> Self::Out;
}

/// Run `j`, compiled for the best vector ISA this CPU has ([`cpu::dispatch`]). Every copy
/// computes the same bits: the kernels have no FMA contractions (Rust never fuses `a * b + c`
/// on its own) and the statistics' summation order is fixed by [`LANES`], not by the vector
/// width.
#[inline(always)]
pub(crate) fn dispatch<J: Job>(j: J) -> J::Out {
    cpu::dispatch(
        #[inline(always)]
        move || j.run(),
    )
}

/// Split `[0, len)` into runs whose element indices `offset + i` share the high 32 bits.
#[inline(always)]
fn runs(offset: u64, len: usize) -> impl Iterator<Item = (usize, usize)> {
    let mut start = 0usize;
    std::iter::from_fn(move || {
        if start >= len {
            return None;
        }
        let idx = offset + start as u64;
        let to_boundary = (1u64 << 32) - (idx & 0xffff_ffff);
        let end = (start as u64 + to_boundary).min(len as u64) as usize;
        let r = (start, end);
        start = end;
        Some(r)
    })
}

/// Cast one element; `lo` is the low half of its index, `hk` the high-half hash part.
#[inline(always)]
fn cast_elem<const R: u8>(x: f32, k: &Consts, hk: u32, lo: u32, index: u64) -> (u32, bool) {
    if R == u8::MAX {
        cast_e8m0(x, k, index)
    } else if R == R_STOCH || R == R_STOCH_SAT {
        cast_bits::<R>(x.to_bits(), k, rand32_split(k.key.0, hk, lo))
    } else {
        cast_bits::<R>(x.to_bits(), k, 0)
    }
}

/// Cast without statistics.
#[inline(always)]
fn plain<const R: u8>(data: &mut [f32], k: &Consts, offset: u64) {
    let k = *k; // a local copy: LLVM then keeps the constants in registers
    let k = &k;
    for (s, e) in runs(offset, data.len()) {
        let base = offset + s as u64;
        let (hk, lo0) = (hi_key(k.key, base), base as u32);
        for (i, v) in data[s..e].iter_mut().enumerate() {
            let lo = lo0.wrapping_add(i as u32);
            *v = f32::from_bits(cast_elem::<R>(*v, k, hk, lo, base + i as u64).0);
        }
    }
}

/// `cast_slice` body for one work item.
pub(crate) struct Plain<'a> {
    pub data: &'a mut [f32],
    pub k: &'a Consts,
    pub offset: u64,
}

impl Job for Plain<'_> {
    type Out = ();
    #[inline(always)]
    fn run(self) {
        let Plain { data, k, offset } = self;
        if k.e8m0 {
            return plain::<{ u8::MAX }>(data, k, offset);
        }
        match k.rounding {
            R_NEAREST_SAT => plain::<R_NEAREST_SAT>(data, k, offset),
            R_NEAREST_FPU => plain::<R_NEAREST_FPU>(data, k, offset),
            R_NEAREST => plain::<R_NEAREST>(data, k, offset),
            R_ZERO => plain::<R_ZERO>(data, k, offset),
            R_AWAY => plain::<R_AWAY>(data, k, offset),
            R_STOCH_SAT => plain::<R_STOCH_SAT>(data, k, offset),
            _ => plain::<R_STOCH>(data, k, offset),
        }
    }
}

pub(crate) fn cast_plain(data: &mut [f32], k: &Consts, offset: u64) {
    dispatch(Plain { data, k, offset });
}

/// Largest finite magnitude of `x` as bits (0 for NaN and ±inf): the `amax` of [`Stats`].
///
/// [`Stats`]: crate::Stats
#[inline(always)]
fn finite_abs_bits(x: f32) -> u32 {
    let a = x.to_bits() & ABS;
    // All ones when a < INF (the difference is negative and cannot overflow): an arithmetic
    // mask, not a select, which in `out = max(out, ·)` loops LLVM turns into masked stores
    // (microcoded and slow on AMD).
    a & ((a as i32 - INF as i32) >> 31) as u32
}

/// One element of [`Elementwise`]: exactly what [`block`] computes for it (scale, cast,
/// unscale; no multiplies at all without scaling), without the statistics.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn ew_one<const R: u8, const SCALED: bool, const SUB: bool>(
    x: f32,
    s: f32,
    inv: f32,
    k: &Consts,
    hk: u32,
    lo: u32,
    index: u64,
) -> f32 {
    let y = if SCALED { x * s } else { x };
    let q = if SUB {
        f32::from_bits(cast_elem::<R>(y, k, hk, lo, index).0)
    } else {
        f32::from_bits(cast_bits_sub::<R, false>(y.to_bits(), k, 0).0)
    };
    if SCALED {
        q * inv
    } else {
        q
    }
}

#[inline(always)]
fn ew_loop<const R: u8, const SCALED: bool, const SUB: bool>(
    data: EwData<'_>,
    k: &Consts,
    (s, inv): (f32, f32),
    offset: u64,
) -> u32 {
    let k = *k; // a local copy: LLVM then keeps the constants in registers
    let k = &k;
    let mut amax = 0u32;
    match data {
        EwData::From(src, dst) => {
            amax = ew_from::<R, SCALED, SUB>(src, dst, k, (s, inv), offset);
        }
        EwData::Runs(src, runs, dst) => {
            let mut pos = 0;
            for &(start, len) in runs {
                let a = ew_from::<R, SCALED, SUB>(
                    &src[start..start + len],
                    &mut dst[pos..pos + len],
                    k,
                    (s, inv),
                    offset + pos as u64,
                );
                amax = amax.max(a);
                pos += len;
            }
            assert_eq!(pos, dst.len(), "the runs fill the destination");
        }
        EwData::InPlace(data) => {
            for (st, e) in runs(offset, data.len()) {
                let base = offset + st as u64;
                let (hk, lo0) = (hi_key(k.key, base), base as u32);
                for (i, d) in data[st..e].iter_mut().enumerate() {
                    let x = *d;
                    let lo = lo0.wrapping_add(i as u32);
                    *d = ew_one::<R, SCALED, SUB>(x, s, inv, k, hk, lo, base + i as u64);
                    amax = amax.max(finite_abs_bits(x));
                }
            }
        }
    }
    amax
}

/// `dst = q(src)`, returning the amax bits of `src` ([`ew_loop`] for one slice).
#[inline(always)]
fn ew_from<const R: u8, const SCALED: bool, const SUB: bool>(
    src: &[f32],
    dst: &mut [MaybeUninit<f32>],
    k: &Consts,
    (s, inv): (f32, f32),
    offset: u64,
) -> u32 {
    assert_eq!(src.len(), dst.len());
    let mut amax = 0u32;
    for (st, e) in runs(offset, dst.len()) {
        let base = offset + st as u64;
        let (hk, lo0) = (hi_key(k.key, base), base as u32);
        for (i, (d, &x)) in dst[st..e].iter_mut().zip(&src[st..e]).enumerate() {
            let lo = lo0.wrapping_add(i as u32);
            d.write(ew_one::<R, SCALED, SUB>(
                x,
                s,
                inv,
                k,
                hk,
                lo,
                base + i as u64,
            ));
            amax = amax.max(finite_abs_bits(x));
        }
    }
    amax
}

/// What [`Elementwise`] works on.
pub(crate) enum EwData<'a> {
    /// Quantize in place.
    InPlace(&'a mut [f32]),
    /// Read the first slice, write every element of the second (which may start uninitialized).
    From(&'a [f32], &'a mut [MaybeUninit<f32>]),
    /// Read the runs `(start, len)` of the first slice one after the other, writing every
    /// element of the destination (their lengths add up to its length).
    Runs(&'a [f32], &'a [(usize, usize)], &'a mut [MaybeUninit<f32>]),
}

/// Quantize with no tiles and no statistics but the amax, one scale for everything. The values are those of [`Tiled`] with
/// the same scale, bit for bit. Returns the amax bits of the input.
pub(crate) struct Elementwise<'a> {
    pub data: EwData<'a>,
    pub k: &'a Consts,
    /// `(scale, inverse)`, `None` for no scaling.
    pub scale: Option<(f32, f32)>,
    /// Element index of the first element (stochastic rounding).
    pub offset: u64,
}

impl Job for Elementwise<'_> {
    type Out = u32;
    #[inline(always)]
    fn run(self) -> u32 {
        if self.k.e8m0 {
            return ew::<{ u8::MAX }, true>(self);
        }
        match (self.k.rounding, self.k.sub_free) {
            // Never `sub_free` (f32's exponent range is not a small one), and it has no
            // separate subnormal path to skip.
            (R_NEAREST_SAT, _) => ew::<R_NEAREST_SAT, true>(self),
            (R_NEAREST_FPU, _) => ew::<R_NEAREST_FPU, true>(self),
            (R_NEAREST, true) => ew::<R_NEAREST, false>(self),
            (R_NEAREST, false) => ew::<R_NEAREST, true>(self),
            (R_ZERO, true) => ew::<R_ZERO, false>(self),
            (R_ZERO, false) => ew::<R_ZERO, true>(self),
            (R_AWAY, true) => ew::<R_AWAY, false>(self),
            (R_AWAY, false) => ew::<R_AWAY, true>(self),
            (R_STOCH_SAT, _) => ew::<R_STOCH_SAT, true>(self),
            _ => ew::<R_STOCH, true>(self),
        }
    }
}

#[inline(always)]
fn ew<const R: u8, const SUB: bool>(j: Elementwise<'_>) -> u32 {
    match j.scale {
        None => ew_loop::<R, false, SUB>(j.data, j.k, (1.0, 1.0), j.offset),
        Some(s) => ew_loop::<R, true, SUB>(j.data, j.k, s, j.offset),
    }
}

/// Elements per block of the quantize pass: a block's inputs, outputs, overflow flags and
/// scales live on the stack (10 KiB), so the statistics loop reads them from L1.
pub(crate) const BLOCK: usize = 512;

/// Statistics of one work item. The float sums are kept in `LANES` independent accumulators:
/// element `i` of a block always goes to lane `i % LANES`, and the f32 lane sums of a block are
/// added to the f64 lane sums at the block's end, so the order of all float additions is fixed
/// by the data layout alone (not by the ISA the code was compiled for, nor by the thread
/// count). Max and counts are exact in any order.
#[derive(Clone, Copy)]
struct Lanes {
    amax: u32,
    under: u64,
    sat: u64,
    sx2: [f64; LANES],
    se2: [f64; LANES],
}

impl Lanes {
    fn new() -> Lanes {
        Lanes {
            amax: 0,
            under: 0,
            sat: 0,
            sx2: [0.0; LANES],
            se2: [0.0; LANES],
        }
    }

    fn finish(&self, count: u64) -> Acc {
        Acc {
            amax_bits: self.amax,
            under: self.under,
            sat: self.sat,
            sx2: self.sx2.iter().sum(),
            se2: self.se2.iter().sum(),
            count,
            ..Acc::default()
        }
    }
}

/// Where the scale and inverse of block element `i` come from.
///
/// The block is walked as `BLOCK / G` groups of `G` elements; `get(t, u)` is element `u` of
/// group `t`. A scale that is constant over a group (an MX block) is then a broadcast in the
/// vectorized inner loop rather than a load per element.
trait BlockScale {
    /// No scaling at all: skip both multiplies (so NaN payloads pass through as in `cast_slice`).
    const NONE: bool = false;
    const G: usize = BLOCK;
    fn get(&self, t: usize, u: usize) -> (f32, f32);
}

struct NoScale;
impl BlockScale for NoScale {
    const NONE: bool = true;
    #[inline(always)]
    fn get(&self, _: usize, _: usize) -> (f32, f32) {
        (1.0, 1.0)
    }
}

/// One scale for the whole block.
struct Uniform(f32, f32);
impl BlockScale for Uniform {
    #[inline(always)]
    fn get(&self, _: usize, _: usize) -> (f32, f32) {
        (self.0, self.1)
    }
}

/// One scale per element.
struct PerElem<'a>(&'a [f32; BLOCK], &'a [f32; BLOCK]);
impl BlockScale for PerElem<'_> {
    #[inline(always)]
    fn get(&self, _: usize, u: usize) -> (f32, f32) {
        (self.0[u], self.1[u])
    }
}

/// One scale per group of `TC` elements (`scale[t]`, `inv[t]` for group `t`).
struct PerTile<'a, const TC: usize>(&'a [f32; BLOCK], &'a [f32; BLOCK]);
impl<const TC: usize> BlockScale for PerTile<'_, TC> {
    const G: usize = TC;
    #[inline(always)]
    fn get(&self, t: usize, _: usize) -> (f32, f32) {
        (self.0[t], self.1[t])
    }
}

/// Scale, cast and unscale one block `qs` in place, accumulating statistics into `l`.
///
/// Two loops with compile-time trip counts. The cast loop is element-wise (vectorized like
/// [`plain`]); it also does the order-free statistics (integer max and counts, which the
/// vectorizer may reduce in any order) and stores each element's masked `x²` and `(x − q)²` to
/// the stack buffers `ex` and `ee`. The second loop adds those from L1 into `LANES` f32
/// accumulators indexed only by constants (so they live in vector registers and the order of
/// the float additions is fixed). Padding elements (zeros) contribute nothing.
///
/// Without `STATS` only the values are computed (the caller takes the amax from its tiles).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn block<const R: u8, S: BlockScale, const STATS: bool>(
    qs: &mut [f32; BLOCK],
    ex: &mut [f32; BLOCK],
    ee: &mut [f32; BLOCK],
    fl: &mut [u32; BLOCK],
    k: &Consts,
    sc: &S,
    idx0: u64,
    l: &mut Lanes,
) {
    let hk = hi_key(k.key, idx0);
    let lo0 = idx0 as u32;
    if !STATS {
        for t in 0..BLOCK / S::G {
            for u in 0..S::G {
                let i = t * S::G + u;
                let (s, inv) = sc.get(t, u);
                let y = if S::NONE { qs[i] } else { qs[i] * s };
                let q = f32::from_bits(
                    cast_elem::<R>(y, k, hk, lo0.wrapping_add(i as u32), idx0 + i as u64).0,
                );
                qs[i] = if S::NONE { q } else { q * inv };
            }
        }
        return;
    }
    let (mut amax, mut under, mut sat) = (0u32, 0u32, 0u32);
    for t in 0..BLOCK / S::G {
        for u in 0..S::G {
            let i = t * S::G + u;
            let x = qs[i];
            let (s, inv) = sc.get(t, u);
            let y = if S::NONE { x } else { x * s };
            let (qb, over) = cast_elem::<R>(y, k, hk, lo0.wrapping_add(i as u32), idx0 + i as u64);
            let q = f32::from_bits(qb);
            let q = if S::NONE { q } else { q * inv };
            qs[i] = q;

            let a = x.to_bits() & ABS;
            let qa = q.to_bits() & ABS;
            let finite = a < INF;
            let un = u32::from(finite & (a != 0) & (qa == 0));
            // A finite x whose scaled value is already non-finite also counts as saturated.
            let sa = u32::from(finite & (over | ((y.to_bits() & ABS) >= INF)));
            if S::G == BLOCK {
                amax = amax.max(sel(finite, a, 0));
                under += un;
                sat += sa;
            } else {
                // Reductions in a short inner loop would be finished after every group; store
                // the flags and count them once per block instead. The caller has the amax.
                fl[i] = un | (sa << 16);
            }
            let used = finite & (qa < INF);
            let d = x - q;
            ex[i] = f32::from_bits(sel(used, (x * x).to_bits(), 0));
            ee[i] = f32::from_bits(sel(used, (d * d).to_bits(), 0));
        }
    }
    if S::G < BLOCK {
        let both: u32 = fl.iter().sum();
        under = both & 0xffff;
        sat = both >> 16;
    }
    l.amax = l.amax.max(amax);
    l.under += u64::from(under);
    l.sat += u64::from(sat);

    lane_sum(ex, &mut l.sx2);
    lane_sum(ee, &mut l.se2);
}

/// Add `buf[c·LANES + j]` over `c` into an f32 lane `j`, then the lanes into `out[j]` (one
/// array at a time: with two, the vectorizer pairs them up into narrow vectors).
#[inline(always)]
fn lane_sum(buf: &[f32; BLOCK], out: &mut [f64; LANES]) {
    let mut acc = [0f32; LANES];
    for c in buf.chunks_exact(LANES) {
        for j in 0..LANES {
            acc[j] += c[j];
        }
    }
    for j in 0..LANES {
        out[j] += f64::from(acc[j]);
    }
}

#[inline(always)]
fn sel(c: bool, a: u32, b: u32) -> u32 {
    let m = 0u32.wrapping_sub(u32::from(c));
    (a & m) | (b & !m)
}

/// How scales are laid out over the 2-D view `[rows, cols]`: tiles of `tr × tc` with one
/// `(scale, inverse)` each in `grid` (row-major over tiles, `n_tc` per tile row), or, when
/// `percol` is set, one expanded per-column vector per tile row (`percol[tile_row]`).
pub(crate) struct Layout<'a> {
    pub cols: usize,
    pub tr: usize,
    pub tc: usize,
    pub n_tc: usize,
    pub grid: &'a [(f32, f32)],
    pub percol: Option<&'a [(Vec<f32>, Vec<f32>)]>,
    /// No scaling at all.
    pub none: bool,
    /// Tiles are the runs `[j·tc, (j+1)·tc)` of the flat index (1-row tiles, with `tc`
    /// dividing [`BLOCK`]): each block holds whole tiles, so their amax and scale are computed
    /// from the block itself, in the same memory pass (`grid` is then unused).
    pub fused: Option<TileRule>,
    /// Tiles are the runs `[j·tc, (j+1)·tc)` of the flat index, `tc` 16 or 32, with scales
    /// from `grid` (NVFP4's two-level scales, which need the tensor amax first): `grid[j]`
    /// scales tile `j`, one broadcast per tile as in the fused case.
    pub periodic: bool,
    /// The tile row that `grid` and `percol` begin with (a band of tile rows, see
    /// `quantize::bands`; 0 for the whole tensor).
    pub tile_row0: usize,
}

/// Quantize the elements `[start, start + dst.len())` of the flattened view; `start` is a
/// multiple of [`BLOCK`] for fused tiles.
pub(crate) struct Tiled<'a> {
    /// Where the values go: in place when `src` is `None` (then every element is initialized).
    pub dst: &'a mut [MaybeUninit<f32>],
    /// The input, as long as `dst`, read block by block into L1 (the copy of a shared tensor
    /// fused into the cast: one pass over memory instead of a copy and a pass).
    pub src: Option<&'a [f32]>,
    pub start: usize,
    pub layout: &'a Layout<'a>,
    pub k: &'a Consts,
    /// Gather the statistics (else only the values, and the amax of fused tiles).
    pub stats: bool,
}

impl Job for Tiled<'_> {
    type Out = Acc;
    #[inline(always)]
    fn run(self) -> Acc {
        if self.stats {
            tiled_with::<true>(self)
        } else {
            tiled_with::<false>(self)
        }
    }
}

#[inline(always)]
fn tiled_with<const STATS: bool>(job: Tiled<'_>) -> Acc {
    if job.k.e8m0 {
        return tiled::<{ u8::MAX }, STATS>(job);
    }
    match job.k.rounding {
        R_NEAREST_SAT => tiled::<R_NEAREST_SAT, STATS>(job),
        R_NEAREST_FPU => tiled::<R_NEAREST_FPU, STATS>(job),
        R_NEAREST => tiled::<R_NEAREST, STATS>(job),
        R_ZERO => tiled::<R_ZERO, STATS>(job),
        R_AWAY => tiled::<R_AWAY, STATS>(job),
        R_STOCH_SAT => tiled::<R_STOCH_SAT, STATS>(job),
        _ => tiled::<R_STOCH, STATS>(job),
    }
}

/// Fill `sc`/`inv` for the block at flat index `flat` (length `n`) from the layout; returns
/// the scale pair instead when one tile covers the whole block.
fn fill_scales(
    l: &Layout<'_>,
    flat: usize,
    n: usize,
    sc: &mut [f32; BLOCK],
    inv: &mut [f32; BLOCK],
) -> Option<(f32, f32)> {
    let mut pos = 0usize;
    while pos < n {
        let f = flat + pos;
        let (r, c) = (f / l.cols, f % l.cols);
        let tile_row = r / l.tr - l.tile_row0;
        if let Some(pc) = l.percol {
            let run = (l.cols - c).min(n - pos);
            let (s, i) = &pc[tile_row];
            sc[pos..pos + run].copy_from_slice(&s[c..c + run]);
            inv[pos..pos + run].copy_from_slice(&i[c..c + run]);
            pos += run;
        } else {
            let tile_col = c / l.tc;
            let end_c = ((tile_col + 1) * l.tc).min(l.cols);
            let run = (end_c - c).min(n - pos);
            let (s, i) = l.grid[tile_row * l.n_tc + tile_col];
            if pos == 0 && run == n {
                return Some((s, i));
            }
            sc[pos..pos + run].fill(s);
            inv[pos..pos + run].fill(i);
            pos += run;
        }
    }
    None
}

type BlockArgs<'a> = (
    &'a mut [f32; BLOCK],
    &'a mut [f32; BLOCK],
    &'a mut [f32; BLOCK],
    &'a mut [u32; BLOCK],
    &'a Consts,
    u64,
    &'a mut Lanes,
);

/// A block of whole `TC`-element tiles (`n` real elements): each tile's amax (a few full
/// vectors and one horizontal max), its scale, then [`block`] with one broadcast scale per
/// tile. Returns the sum and number of the scales of the real tiles.
#[inline(always)]
fn fused_block<const R: u8, const TC: usize, const STATS: bool>(
    (qs, ex, ee, fl, k, idx0, lanes): BlockArgs<'_>,
    n: usize,
    rule: TileRule,
    sc: &mut [f32; BLOCK],
    inv: &mut [f32; BLOCK],
    avx512: bool,
) -> (f64, usize) {
    let mut amax = [0u32; BLOCK / 16];
    tiles_amax::<TC>(qs, &mut amax, avx512);
    let used = n.div_ceil(TC);
    let floor_emax = match rule {
        TileRule::Mx(mx) => mx.floor_emax(),
        TileRule::Current { .. } | TileRule::Nvfp4(_) => None,
    };
    if let TileRule::Nvfp4(nv) = rule {
        nvfp4_scales(&nv, &amax[..BLOCK / TC], sc, inv);
    } else if let Some(emax) = floor_emax {
        // OCP MX FLOOR, branch-free over the block's tiles: floor(log2(amax)) from the
        // exponent field (a subnormal amax clamps to −127 anyway), amax 0 → exponent 0.
        let pow2 = |e: i32| f32::from_bits(sel(e >= -126, ((e + 127) as u32) << 23, 0x40_0000));
        for t in 0..BLOCK / TC {
            let b = amax[t];
            let fl = if b >= 0x80_0000 {
                (b >> 23) as i32 - 127
            } else {
                -150
            };
            let e = (fl - emax).clamp(-127, 127);
            let e = if b == 0 { 0 } else { e };
            (sc[t], inv[t]) = (pow2(-e), pow2(e));
        }
    } else {
        for t in 0..BLOCK / TC {
            (sc[t], inv[t]) = tile_scale(rule, amax[t]);
        }
    }
    let mut sum = 0f64;
    for (t, &s) in sc[..BLOCK / TC].iter().enumerate() {
        sum += if t < used { f64::from(s) } else { 0.0 };
    }
    lanes.amax = lanes.amax.max(amax.into_iter().fold(0, u32::max));
    block::<R, _, STATS>(qs, ex, ee, fl, k, &PerTile::<TC>(sc, inv), idx0, lanes);
    (sum, used)
}

/// NVFP4's `(scale, inverse)` of each block amax `amax[t]` into `sc[t]`, `inv[t]`: three loops
/// that vectorize (the E4M3 cast of the block scales is the element kernel).
#[inline(always)]
fn nvfp4_scales(nv: &Nvfp4Scales, amax: &[u32], sc: &mut [f32], inv: &mut [f32]) {
    let sb = &mut sc[..amax.len()];
    for (s, &a) in sb.iter_mut().zip(amax) {
        *s = nv.unrounded(a);
    }
    let e4m3 = *nv.e4m3();
    match e4m3.rounding {
        R_NEAREST_SAT => e4m3_scales::<R_NEAREST_SAT>(sb, &e4m3),
        R_NEAREST_FPU => e4m3_scales::<R_NEAREST_FPU>(sb, &e4m3),
        _ => e4m3_scales::<R_NEAREST>(sb, &e4m3),
    }
    for (s, i) in sb.iter_mut().zip(inv.iter_mut()) {
        (*s, *i) = nv.encode_decode(*s);
    }
}

/// Cast NVFP4 block scales to E4M3 in place (nearest-even: `R` is `k`'s rounding code).
#[inline(always)]
fn e4m3_scales<const R: u8>(sb: &mut [f32], k: &Consts) {
    for s in sb {
        *s = f32::from_bits(cast_bits::<R>(s.to_bits(), k, 0).0);
    }
}

/// [`nvfp4_scales`] of a whole tensor's block amaxes (`Nvfp4Scales::blocks`).
pub(crate) struct Nvfp4Blocks<'a> {
    pub nv: &'a Nvfp4Scales,
    pub amax: &'a [u32],
    pub sc: &'a mut [f32],
    pub inv: &'a mut [f32],
}

impl Job for Nvfp4Blocks<'_> {
    type Out = ();
    #[inline(always)]
    fn run(self) {
        nvfp4_scales(self.nv, self.amax, self.sc, self.inv);
    }
}

/// The largest finite magnitude (as bits) of each `TC`-element tile of `qs` into `amax[t]`.
/// `avx512`: this CPU runs the AVX-512 copy of the loops (`simd_level() == Avx512`, read once
/// per work item by the caller).
#[inline(always)]
fn tiles_amax<const TC: usize>(qs: &[f32; BLOCK], amax: &mut [u32; BLOCK / 16], avx512: bool) {
    #[cfg(target_arch = "x86_64")]
    if TC.is_multiple_of(16) && avx512 {
        // SAFETY: the CPU has AVX-512 F/BW/VL/DQ (`avx512` is only true then, see `cpu`).
        return unsafe { tiles_amax_avx512::<TC>(qs, amax) };
    }
    for (t, tile) in qs.chunks_exact(TC).enumerate() {
        let mut m = [0u32; LANES];
        for c in tile.chunks_exact(LANES) {
            for j in 0..LANES {
                let a = c[j].to_bits() & ABS;
                m[j] = m[j].max(sel(a < INF, a, 0));
            }
        }
        amax[t] = m.into_iter().fold(0, u32::max);
    }
}

/// [`tiles_amax`] with explicit AVX-512 (`TC` a multiple of 16): one register per tile and a
/// reduction within it. Left to itself, LLVM vectorizes the portable loop across the tiles
/// (tile `t` in lane `t`), which on AVX-512 turns every load into a gather. This is inlined
/// into the AVX-512 copy of the loops (same target features) and only called from there.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
#[inline]
fn tiles_amax_avx512<const TC: usize>(qs: &[f32; BLOCK], amax: &mut [u32; BLOCK / 16]) {
    use std::arch::x86_64::*;
    let abs = _mm512_set1_epi32(ABS as i32);
    let inf = _mm512_set1_epi32(INF as i32);
    for (t, tile) in qs.chunks_exact(TC).enumerate() {
        let mut m = _mm512_setzero_si512();
        for c in tile.chunks_exact(16) {
            // SAFETY: `c` is 16 f32s (64 bytes); the load is unaligned.
            let v = _mm512_castps_si512(unsafe { _mm512_loadu_ps(c.as_ptr()) });
            let a = _mm512_and_si512(v, abs);
            // Finite lanes only: `max(m, a)` where `a < INF`, `m` elsewhere.
            m = _mm512_mask_max_epu32(m, _mm512_cmplt_epu32_mask(a, inf), m, a);
        }
        amax[t] = _mm512_reduce_max_epu32(m);
    }
}

/// Ask for a block two ahead, so that its cache misses overlap this block's arithmetic (each
/// block is read in one burst, then worked on from L1 for a while).
#[inline(always)]
fn prefetch_block(p: *const f32) {
    #[cfg(target_arch = "x86_64")]
    for line in 0..BLOCK * 4 / 64 {
        // SAFETY: prefetching has no side effects and cannot fault; `p` points into the slice.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                p.wrapping_add(line * 16).cast(),
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[inline(always)]
fn tiled<const R: u8, const STATS: bool>(job: Tiled<'_>) -> Acc {
    let Tiled {
        dst,
        src,
        start,
        layout: l,
        k,
        stats: _,
    } = job;
    let k = *k; // a local copy: LLVM then keeps the constants in registers
    let k = &k;
    let mut lanes = Lanes::new();
    let mut ex = [0f32; BLOCK];
    let mut ee = [0f32; BLOCK];
    let mut fl = [0u32; BLOCK];
    let mut tail = [0f32; BLOCK];
    let mut sc = [0f32; BLOCK];
    let mut inv = [0f32; BLOCK];
    let (mut scale_sum, mut tiles) = (0f64, 0u64);
    let avx512 = simd_level() == SimdLevel::Avx512;
    let len = dst.len();
    if let Some(s) = src {
        assert_eq!(s.len(), len, "tiled: source and destination lengths differ");
    }
    let nblocks = len.div_ceil(BLOCK);
    let base = src.map_or(dst.as_ptr().cast::<f32>(), <[f32]>::as_ptr);
    for (b, chunk) in dst.chunks_mut(BLOCK).enumerate() {
        let flat = start + b * BLOCK;
        let n = chunk.len();
        if b + 2 < nblocks {
            prefetch_block(base.wrapping_add((b + 2) * BLOCK));
        }
        // A full block is cast where it lies; a source block, and the last, short one, through
        // a (zero-padded) copy on the stack.
        let qs: &mut [f32; BLOCK] = match src {
            Some(s) => {
                tail[..n].copy_from_slice(&s[b * BLOCK..b * BLOCK + n]);
                tail[n..].fill(0.0);
                &mut tail
            }
            None => {
                // SAFETY: in place, every element of `dst` is initialized (see the field).
                let chunk = unsafe { &mut *(chunk as *mut [MaybeUninit<f32>] as *mut [f32]) };
                match chunk.try_into() {
                    Ok(full) => full,
                    Err(_) => {
                        tail[..n].copy_from_slice(chunk);
                        tail[n..].fill(0.0);
                        &mut tail
                    }
                }
            }
        };
        let idx0 = flat as u64;
        let (ex, ee, fl) = (&mut ex, &mut ee, &mut fl);
        if l.none {
            block::<R, _, STATS>(qs, ex, ee, fl, k, &NoScale, idx0, &mut lanes);
        } else if let Some(rule) = l.fused {
            // Whole tiles of `tc` elements (the last one possibly cut short by the data end;
            // its zero padding does not change the amax).
            let args = (qs, ex, ee, fl, k, idx0, &mut lanes);
            let (sum, used) = match l.tc {
                16 => fused_block::<R, 16, STATS>(args, n, rule, &mut sc, &mut inv, avx512),
                32 => fused_block::<R, 32, STATS>(args, n, rule, &mut sc, &mut inv, avx512),
                64 => fused_block::<R, 64, STATS>(args, n, rule, &mut sc, &mut inv, avx512),
                128 => fused_block::<R, 128, STATS>(args, n, rule, &mut sc, &mut inv, avx512),
                tc => {
                    let (qs, ex, ee, fl, k, idx0, lanes) = args;
                    let mut sum = 0f64;
                    let used = n.div_ceil(tc);
                    for (t, tile) in qs.chunks_exact(tc).take(used).enumerate() {
                        let a = tile.iter().fold(0u32, |m, &x| {
                            let a = x.to_bits() & ABS;
                            m.max(sel(a < INF, a, 0))
                        });
                        lanes.amax = lanes.amax.max(a);
                        let (s, i) = tile_scale(rule, a);
                        sc[t * tc..(t + 1) * tc].fill(s);
                        inv[t * tc..(t + 1) * tc].fill(i);
                        sum += f64::from(s);
                    }
                    block::<R, _, STATS>(qs, ex, ee, fl, k, &PerElem(&sc, &inv), idx0, lanes);
                    (sum, used)
                }
            };
            scale_sum += sum;
            tiles += used as u64;
        } else if l.periodic && matches!(l.tc, 16 | 32) {
            let (t0, used) = (flat / l.tc, n.div_ceil(l.tc));
            for t in 0..BLOCK / l.tc {
                // Tiles past the data end cover zero padding: any scale will do.
                (sc[t], inv[t]) = if t < used { l.grid[t0 + t] } else { (1.0, 1.0) };
            }
            if STATS {
                // `block` leaves the amax of grouped scales to its caller.
                let a = qs.iter().fold(0u32, |m, &x| m.max(finite_abs_bits(x)));
                lanes.amax = lanes.amax.max(a);
            }
            let (ex, ee, fl) = (ex, ee, fl);
            if l.tc == 16 {
                let sc = PerTile::<16>(&sc, &inv);
                block::<R, _, STATS>(qs, ex, ee, fl, k, &sc, idx0, &mut lanes);
            } else {
                let sc = PerTile::<32>(&sc, &inv);
                block::<R, _, STATS>(qs, ex, ee, fl, k, &sc, idx0, &mut lanes);
            }
        } else if let Some((s, i)) = fill_scales(l, flat, n, &mut sc, &mut inv) {
            block::<R, _, STATS>(qs, ex, ee, fl, k, &Uniform(s, i), idx0, &mut lanes);
        } else {
            block::<R, _, STATS>(qs, ex, ee, fl, k, &PerElem(&sc, &inv), idx0, &mut lanes);
        }
        if src.is_some() || n < BLOCK {
            for (d, &q) in chunk.iter_mut().zip(&tail[..n]) {
                d.write(q);
            }
        }
    }
    let mut acc = lanes.finish(len as u64);
    acc.scale_sum = scale_sum;
    acc.tiles = tiles;
    acc
}

/// Quantize rows `[row0, row0 + dst.len() / cols)` of the 2-D view with one `(scale, inverse)`
/// per element of a row, `percol[r / tr]` for row `r` of this band (its narrow tiles' scales
/// expanded per column), without statistics: what [`Tiled`] computes for each element, bit
/// for bit, in a loop over whole rows that needs no per-block scale copies. `start` is the flat
/// index of the band's first element.
pub(crate) struct ColumnScaled<'a> {
    /// `None`: in place (every element of `dst` initialized).
    pub src: Option<&'a [f32]>,
    pub dst: &'a mut [MaybeUninit<f32>],
    pub cols: usize,
    pub tr: usize,
    pub percol: &'a [(Vec<f32>, Vec<f32>)],
    pub k: &'a Consts,
    pub start: usize,
}

impl Job for ColumnScaled<'_> {
    type Out = ();
    #[inline(always)]
    fn run(self) {
        if self.k.e8m0 {
            return column_scaled::<{ u8::MAX }>(self);
        }
        match self.k.rounding {
            R_NEAREST_SAT => column_scaled::<R_NEAREST_SAT>(self),
            R_NEAREST_FPU => column_scaled::<R_NEAREST_FPU>(self),
            R_NEAREST => column_scaled::<R_NEAREST>(self),
            R_ZERO => column_scaled::<R_ZERO>(self),
            R_AWAY => column_scaled::<R_AWAY>(self),
            R_STOCH_SAT => column_scaled::<R_STOCH_SAT>(self),
            _ => column_scaled::<R_STOCH>(self),
        }
    }
}

#[inline(always)]
fn column_scaled<const R: u8>(j: ColumnScaled<'_>) {
    let k = *j.k; // a local copy: LLVM then keeps the constants in registers
    let k = &k;
    let mut buf = [0f32; BLOCK];
    for (r, out) in j.dst.chunks_mut(j.cols).enumerate() {
        let (s, inv) = &j.percol[r / j.tr];
        let off = r * j.cols;
        // Segments of a block, so an in-place row goes through the stack.
        for c0 in (0..out.len()).step_by(BLOCK) {
            let c1 = (c0 + BLOCK).min(out.len());
            let x: &[f32] = match j.src {
                Some(src) => &src[off + c0..off + c1],
                None => {
                    // SAFETY: in place, `dst` is initialized (see the field).
                    let seg =
                        unsafe { &*(&out[c0..c1] as *const [MaybeUninit<f32>] as *const [f32]) };
                    buf[..c1 - c0].copy_from_slice(seg);
                    &buf[..c1 - c0]
                }
            };
            let base0 = (j.start + off + c0) as u64;
            let (s, inv, out) = (&s[c0..c1], &inv[c0..c1], &mut out[c0..c1]);
            for (st, e) in runs(base0, c1 - c0) {
                let base = base0 + st as u64;
                let (hk, lo0) = (hi_key(k.key, base), base as u32);
                let it = out[st..e]
                    .iter_mut()
                    .zip(&x[st..e])
                    .zip(&s[st..e])
                    .zip(&inv[st..e]);
                for (i, (((d, &x), &s), &inv)) in it.enumerate() {
                    let lo = lo0.wrapping_add(i as u32);
                    let y = x * s;
                    let q = f32::from_bits(cast_elem::<R>(y, k, hk, lo, base + i as u64).0);
                    d.write(q * inv);
                }
            }
        }
    }
}

/// Largest finite |x| of a slice, as bits (NVFP4's tensor amax, before the fused pass).
pub(crate) struct Amax<'a>(pub &'a [f32]);

impl Job for Amax<'_> {
    type Out = u32;
    #[inline(always)]
    fn run(self) -> u32 {
        let mut m = [0u32; LANES];
        let mut it = self.0.chunks_exact(LANES);
        for c in &mut it {
            for j in 0..LANES {
                m[j] = m[j].max(finite_abs_bits(c[j]));
            }
        }
        let tail = it.remainder().iter().map(|&x| finite_abs_bits(x));
        m.into_iter().chain(tail).fold(0, u32::max)
    }
}

/// Largest finite |x| (as bits) of each column of the rows `rows` (`out.len()` columns each),
/// merged into `out`: a tile of one column and a few rows. Each run of `LANES` columns is
/// reduced over the rows in registers and stored once (merging row by row into `out` becomes
/// masked stores).
pub(crate) struct ColumnAmax<'a> {
    pub rows: &'a [f32],
    pub out: &'a mut [u32],
}

impl Job for ColumnAmax<'_> {
    type Out = ();
    #[inline(always)]
    fn run(self) {
        let cols = self.out.len();
        let mut c0 = 0;
        for out in self.out.chunks_mut(LANES) {
            let w = out.len();
            let mut m = [0u32; LANES];
            for row in self.rows.chunks(cols) {
                if w == LANES {
                    let seg: &[f32; LANES] = row[c0..c0 + LANES].try_into().expect("LANES");
                    for j in 0..LANES {
                        m[j] = m[j].max(finite_abs_bits(seg[j]));
                    }
                } else {
                    for (m, &x) in m.iter_mut().zip(&row[c0..c0 + w]) {
                        *m = (*m).max(finite_abs_bits(x));
                    }
                }
            }
            for (o, &m) in out.iter_mut().zip(&m) {
                *o = (*o).max(m);
            }
            c0 += w;
        }
    }
}

/// Largest finite |x| (as bits) per tile column of each row, merged into `out[tile_col]`.
pub(crate) struct TileAmax<'a> {
    pub row: &'a [f32],
    pub tc: usize,
    pub out: &'a mut [u32],
}

impl Job for TileAmax<'_> {
    type Out = ();
    #[inline(always)]
    fn run(self) {
        if self.tc == 1 {
            // One tile per column (scales down the columns): an element-wise max that
            // vectorizes along the row.
            for (o, &x) in self.out.iter_mut().zip(self.row) {
                *o = (*o).max(finite_abs_bits(x));
            }
            return;
        }
        for (t, seg) in self.row.chunks(self.tc).enumerate() {
            let mut m = [0u32; LANES];
            let mut it = seg.chunks_exact(LANES);
            for c in &mut it {
                for j in 0..LANES {
                    let a = c[j].to_bits() & ABS;
                    m[j] = m[j].max(if a < INF { a } else { 0 });
                }
            }
            let mut best = m.into_iter().max().unwrap_or(0);
            for &x in it.remainder() {
                let a = x.to_bits() & ABS;
                best = best.max(if a < INF { a } else { 0 });
            }
            self.out[t] = self.out[t].max(best);
        }
    }
}
