//! The hot loops, written so LLVM vectorizes them, and compiled twice on x86-64 (baseline SSE2
//! and AVX2, picked at run time): a job's `run` is `#[inline(always)]`, so its whole body,
//! element kernel included, is compiled inside the `#[target_feature]` wrapper.
//!
//! Statistics are gathered in the same pass in `LANES` independent f32/u32 accumulators (so
//! the reduction vectorizes without reassociating anything), flushed into f64 every
//! block of `BLOCK` elements; the order of all additions is fixed by the data layout alone.

use crate::kernel::{
    cast_bits, cast_e8m0, hi_key, rand32_split, Consts, R_AWAY, R_NEAREST, R_STOCH, R_ZERO,
};

const LANES: usize = 8;
const ABS: u32 = 0x7fff_ffff;
const INF: u32 = 0x7f80_0000;

/// Per-work-item statistics, merged in a fixed order by the caller.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Acc {
    pub amax_bits: u32,
    pub under: u64,
    pub sat: u64,
    pub sx2: f64,
    pub se2: f64,
    pub count: u64,
}

impl Acc {
    pub(crate) fn merge(&mut self, o: &Acc) {
        self.amax_bits = self.amax_bits.max(o.amax_bits);
        self.under += o.under;
        self.sat += o.sat;
        self.sx2 += o.sx2;
        self.se2 += o.se2;
        self.count += o.count;
    }
}

/// A unit of work whose body should be compiled with the best available vector ISA.
pub(crate) trait Job {
    type Out;
    fn run(self) -> Self::Out;
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn run_avx2<J: Job>(j: J) -> J::Out {
    j.run()
}

/// Run `j`, compiled for AVX2 when the CPU has it.
#[inline]
pub(crate) fn dispatch<J: Job>(j: J) -> J::Out {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            return unsafe { run_avx2(j) };
        }
    }
    j.run()
}

/// Where a segment's scale and inverse come from.
pub(crate) trait ScaleSrc: Copy {
    fn get(&self, i: usize) -> (f32, f32);
}

/// One scale for the whole segment.
#[derive(Clone, Copy)]
pub(crate) struct Uniform(pub f32, pub f32);
impl ScaleSrc for Uniform {
    #[inline(always)]
    fn get(&self, _: usize) -> (f32, f32) {
        (self.0, self.1)
    }
}

/// One scale per element (per column of a row).
#[derive(Clone, Copy)]
pub(crate) struct PerElem<'a>(pub &'a [f32], pub &'a [f32]);
impl ScaleSrc for PerElem<'_> {
    #[inline(always)]
    fn get(&self, i: usize) -> (f32, f32) {
        (self.0[i], self.1[i])
    }
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
    } else if R == R_STOCH {
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

/// Elements per block of the statistics pass (kept on the stack, so in L1).
const BLOCK: usize = 256;

/// Scale, cast, unscale a segment, accumulating statistics into `acc`.
///
/// Each block is first cast in place by a simple element loop (which vectorizes like
/// [`plain`]), keeping a copy of the inputs and the overflow flags on the stack; a second loop
/// over the block then gathers the statistics in `LANES` independent accumulators.
#[inline(always)]
pub(crate) fn seg<const R: u8, S: ScaleSrc>(
    data: &mut [f32],
    k: &Consts,
    offset: u64,
    sc: S,
    acc: &mut Acc,
) {
    let k = *k;
    let k = &k;
    for (s, e) in runs(offset, data.len()) {
        let run_base = offset + s as u64;
        let hk = hi_key(k.key, run_base);
        for (bi, block) in data[s..e].chunks_mut(BLOCK).enumerate() {
            let first = s + bi * BLOCK; // index into `data` (and `sc`)
            let lo0 = (offset + first as u64) as u32;
            let n = block.len();
            let mut xs = [0f32; BLOCK];
            let mut ov = [0u32; BLOCK];
            xs[..n].copy_from_slice(block);
            for (i, (v, o)) in block.iter_mut().zip(ov.iter_mut()).enumerate() {
                let (s, inv) = sc.get(first + i);
                let y = *v * s;
                let (qb, over) = cast_elem::<R>(
                    y,
                    k,
                    hk,
                    lo0.wrapping_add(i as u32),
                    offset + (first + i) as u64,
                );
                *v = f32::from_bits(qb) * inv;
                // A finite x whose scaled value is already non-finite also counts as saturated.
                *o = u32::from(over | ((y.to_bits() & ABS) >= INF));
            }
            stats_block(&xs[..n], block, &ov[..n], acc);
        }
    }
    acc.count += data.len() as u64;
}

#[inline(always)]
fn stats_block(xs: &[f32], qs: &[f32], ov: &[u32], acc: &mut Acc) {
    let mut amax = [0u32; LANES];
    let mut under = [0u32; LANES];
    let mut sat = [0u32; LANES];
    let mut sx2 = [0f32; LANES];
    let mut se2 = [0f32; LANES];
    let mut step = |j: usize, x: f32, q: f32, o: u32| {
        let a = x.to_bits() & ABS;
        let qa = q.to_bits() & ABS;
        let finite = a < INF;
        amax[j] = amax[j].max(if finite { a } else { 0 });
        under[j] += u32::from(finite & (a != 0) & (qa == 0));
        sat[j] += u32::from(finite) & o;
        let used = finite & (qa < INF);
        let d = x - q;
        sx2[j] += if used { x * x } else { 0.0 };
        se2[j] += if used { d * d } else { 0.0 };
    };
    let full = xs.len() / LANES * LANES;
    for c in (0..full).step_by(LANES) {
        for j in 0..LANES {
            step(j, xs[c + j], qs[c + j], ov[c + j]);
        }
    }
    for j in 0..xs.len() - full {
        step(j, xs[full + j], qs[full + j], ov[full + j]);
    }
    acc.amax_bits = acc.amax_bits.max(amax.into_iter().max().unwrap_or(0));
    acc.under += under.iter().map(|&u| u64::from(u)).sum::<u64>();
    acc.sat += sat.iter().map(|&u| u64::from(u)).sum::<u64>();
    acc.sx2 += sx2.iter().map(|&u| f64::from(u)).sum::<f64>();
    acc.se2 += se2.iter().map(|&u| f64::from(u)).sum::<f64>();
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
            R_NEAREST => plain::<R_NEAREST>(data, k, offset),
            R_ZERO => plain::<R_ZERO>(data, k, offset),
            R_AWAY => plain::<R_AWAY>(data, k, offset),
            _ => plain::<R_STOCH>(data, k, offset),
        }
    }
}

pub(crate) fn cast_plain(data: &mut [f32], k: &Consts, offset: u64) {
    dispatch(Plain { data, k, offset });
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
}

/// Quantize the elements `[start, start + data.len())` of the flattened view.
pub(crate) struct Tiled<'a> {
    pub data: &'a mut [f32],
    pub start: usize,
    pub layout: &'a Layout<'a>,
    pub k: &'a Consts,
}

impl Job for Tiled<'_> {
    type Out = Acc;
    #[inline(always)]
    fn run(self) -> Acc {
        if self.k.e8m0 {
            return tiled::<{ u8::MAX }>(self);
        }
        match self.k.rounding {
            R_NEAREST => tiled::<R_NEAREST>(self),
            R_ZERO => tiled::<R_ZERO>(self),
            R_AWAY => tiled::<R_AWAY>(self),
            _ => tiled::<R_STOCH>(self),
        }
    }
}

#[inline(always)]
fn tiled<const R: u8>(job: Tiled<'_>) -> Acc {
    let Tiled {
        data,
        start,
        layout: l,
        k,
    } = job;
    let mut acc = Acc::default();
    let mut pos = 0usize;
    while pos < data.len() {
        let flat = start + pos;
        let (r, c) = (flat / l.cols, flat % l.cols);
        let tile_row = r / l.tr;
        if let Some(pc) = l.percol {
            // Rest of this row, one scale per column.
            let n = (l.cols - c).min(data.len() - pos);
            let (s, inv) = &pc[tile_row];
            let sc = PerElem(&s[c..c + n], &inv[c..c + n]);
            seg::<R, _>(&mut data[pos..pos + n], k, flat as u64, sc, &mut acc);
            pos += n;
        } else {
            let tile_col = c / l.tc;
            let end_c = ((tile_col + 1) * l.tc).min(l.cols);
            let n = (end_c - c).min(data.len() - pos);
            let (s, inv) = l.grid[tile_row * l.n_tc + tile_col];
            seg::<R, _>(
                &mut data[pos..pos + n],
                k,
                flat as u64,
                Uniform(s, inv),
                &mut acc,
            );
            pos += n;
        }
    }
    acc
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
