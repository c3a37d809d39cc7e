//! Single-thread throughput of the quantize kernels against a plain memory copy of the same
//! buffer, measured in the same process (compare ratios, not absolute figures: the machine may be
//! shared). `cargo bench -p fp8-formats --bench cast` runs a short default; pass criterion
//! options (`-- --measurement-time 5`) for steadier numbers.
//!
//! Groups (all in one rayon pool of one thread, 16 Mi f32 = 64 MiB, well outside the caches):
//! - `copy`: `copy_from_slice` into a second buffer (the memory-bandwidth baseline);
//! - `quantize/{nearest,stochastic,mx}`: `quantize` to float8_e4m3fn in place, with stats;
//! - `cast_slice/nearest`: the plain cast without stats.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use fp8_formats::rng::splitmix64;
use fp8_formats::{cast_slice, quantize, CastSpec, Format, QuantSpec, Rounding, Scaling};
use std::time::Duration;

const N: usize = 1 << 24;

/// Deterministic pseudo-normal data spread over the format's range (as `fp8 bench cast`).
fn data(n: usize, spread: f32) -> Vec<f32> {
    (0..n as u64)
        .map(|i| {
            let h = splitmix64(i);
            let u = (h >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            let v = ((h >> 8) & 0xffff) as f32 / 65536.0 - 0.5;
            (u + v) * spread
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let f = Format::FLOAT8_E4M3FN;
    let src = data(N, f.max() / 8.0);
    let mut dst = vec![0f32; N];
    let mut work = src.clone();
    let nearest = CastSpec::new(f);
    let stoch = nearest.with_rounding(Rounding::Stochastic).with_seed(1);
    let specs = [
        ("nearest", QuantSpec::cast(nearest)),
        ("stochastic", QuantSpec::cast(stoch)),
        (
            "mx",
            QuantSpec {
                cast: nearest,
                scaling: Scaling::MX,
            },
        ),
    ];

    let mut g = c.benchmark_group("cast");
    g.throughput(Throughput::Elements(N as u64));
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(300));
    g.measurement_time(Duration::from_secs(2));
    // Each timed call runs inside the one-thread pool (the install costs microseconds; a call
    // tens of milliseconds), so `quantize` never splits work across threads.
    g.bench_function("copy", |b| {
        b.iter(|| {
            dst.copy_from_slice(&src);
            black_box(&mut dst);
        })
    });
    for (name, spec) in &specs {
        g.bench_function(format!("quantize/{name}"), |b| {
            b.iter(|| pool.install(|| black_box(quantize(&mut work, &[N], spec))))
        });
    }
    g.bench_function("cast_slice/nearest", |b| {
        b.iter(|| {
            pool.install(|| cast_slice(&mut work, &nearest, 0));
            black_box(&mut work);
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
