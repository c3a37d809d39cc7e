//! `cast_raw FORMAT [ROUNDING]`: read little-endian f32 from stdin, cast (no scaling), write
//! little-endian f32 to stdout. Used by `scripts/crosscheck_ml_dtypes.py`.
use std::io::{Read, Write};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let format: fp8_formats::Format = args[1].parse().expect("format");
    let rounding = args
        .get(2)
        .map_or(Ok(fp8_formats::Rounding::NearestEven), |r| r.parse())
        .expect("rounding");
    let mut buf = Vec::new();
    std::io::stdin().read_to_end(&mut buf).expect("stdin");
    let mut v: Vec<f32> = buf
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let spec = fp8_formats::CastSpec::new(format).with_rounding(rounding);
    fp8_formats::cast_slice(&mut v, &spec, 0);
    let out: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    std::io::stdout().write_all(&out).expect("stdout");
}
