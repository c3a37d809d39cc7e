//! A minimal reader/writer for float32 `.npy` files (NumPy format versions 1.0, 2.0 and 3.0),
//! and a reader for int32/int64 ones (token ids for `fp8 logits`).
//!
//! Why not a crate: the only thing `fp8 cast` needs is "little-endian f32, C order, any shape",
//! and the format for that is a 10-to-12-byte preamble plus a Python-literal header. A small
//! parser that checks every field and says exactly what is wrong is easier to audit than a
//! general one, and it never panics on malformed input.

use anyhow::{bail, ensure, Context, Result};
use std::io::Write;
use std::path::Path;

const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// A float32 array: C-order data and its shape (`[]` for a 0-d array).
#[derive(Clone, Debug, PartialEq)]
pub struct Array {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Read a float32 `.npy` file.
pub fn read(path: &Path) -> Result<Array> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse(&bytes).with_context(|| format!("{} is not a float32 .npy file", path.display()))
}

/// Parse the bytes of a float32 `.npy` file.
pub fn parse(bytes: &[u8]) -> Result<Array> {
    let (descr, shape, body) = split(bytes)?;
    ensure!(
        matches!(descr, "<f4" | "=f4" | "f4"),
        "dtype is `{descr}`, expected little-endian float32 (`<f4`); convert with x.astype(np.float32)"
    );
    let data = body
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok(Array { shape, data })
}

/// An integer array read by [`read_ints`]: C-order values widened to `i64`, and its shape.
#[derive(Clone, Debug, PartialEq)]
pub struct IntArray {
    pub shape: Vec<usize>,
    pub data: Vec<i64>,
}

/// Read a little-endian int32 or int64 `.npy` file (token ids).
pub fn read_ints(path: &Path) -> Result<IntArray> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_ints(&bytes)
        .with_context(|| format!("{} is not an int32 or int64 .npy file", path.display()))
}

/// Parse the bytes of a little-endian int32 or int64 `.npy` file.
pub fn parse_ints(bytes: &[u8]) -> Result<IntArray> {
    let (descr, shape, body) = split(bytes)?;
    let data = match descr {
        "<i4" | "=i4" | "i4" => body
            .chunks_exact(4)
            .map(|c| i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        "<i8" | "=i8" | "i8" => body
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().expect("chunks of 8")))
            .collect(),
        _ => bail!(
            "dtype is `{descr}`, expected little-endian int32 (`<i4`) or int64 (`<i8`); \
             convert with x.astype(np.int64)"
        ),
    };
    Ok(IntArray { shape, data })
}

/// The dtype descriptor, shape and data bytes of a C-order `.npy` file, the data's length
/// checked against the shape and the descriptor's item size.
fn split(bytes: &[u8]) -> Result<(&str, Vec<usize>, &[u8])> {
    ensure!(
        bytes.len() >= 10 && &bytes[..6] == MAGIC,
        "missing the \\x93NUMPY magic bytes"
    );
    let major = bytes[6];
    let (hlen, start): (usize, usize) = match major {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 => {
            ensure!(bytes.len() >= 12, "truncated header");
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => bail!("unsupported .npy format version {v}.{}", bytes[7]),
    };
    let end = start
        .checked_add(hlen)
        .filter(|&e| e <= bytes.len())
        .context("truncated header")?;
    let header = std::str::from_utf8(&bytes[start..end]).context("header is not text")?;
    let descr = dict_value(header, "descr")?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    let item: usize = match descr.trim_start_matches(['<', '=', '|']) {
        "f4" | "i4" => 4,
        "i8" => 8,
        _ => bail!(
            "dtype is `{descr}`; supported: little-endian float32 (`<f4`), int32 (`<i4`), int64 (`<i8`)"
        ),
    };
    let fortran = dict_value(header, "fortran_order")?;
    match fortran {
        "False" => {}
        "True" => bail!("array is in Fortran order; save it with np.ascontiguousarray(x)"),
        v => bail!("bad fortran_order value `{v}`"),
    }
    let shape = parse_shape(dict_value(header, "shape")?)?;
    let n = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .context("shape is too large")?;
    let body = &bytes[end..];
    let need = n.checked_mul(item).context("shape is too large")?;
    ensure!(
        body.len() == need,
        "shape {shape:?} needs {need} data bytes but the file has {}",
        body.len()
    );
    Ok((descr, shape, body))
}

/// The text of `key`'s value in the header dict, up to the next top-level comma or `}`.
fn dict_value<'a>(header: &'a str, key: &str) -> Result<&'a str> {
    let pat_s = format!("'{key}'");
    let pat_d = format!("\"{key}\"");
    let at = header
        .find(&pat_s)
        .or_else(|| header.find(&pat_d))
        .with_context(|| format!("header has no `{key}`"))?;
    let rest = header[at + key.len() + 2..].trim_start();
    let rest = rest
        .strip_prefix(':')
        .with_context(|| format!("malformed `{key}` entry"))?
        .trim_start();
    let mut depth = 0i32;
    for (i, c) in rest.char_indices() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            ',' | '}' if depth == 0 => return Ok(rest[..i].trim()),
            _ => {}
        }
    }
    bail!("malformed `{key}` entry")
}

fn parse_shape(s: &str) -> Result<Vec<usize>> {
    let inner = s
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .with_context(|| format!("bad shape `{s}`"))?;
    inner
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.trim_end_matches('L')
                .parse::<usize>()
                .with_context(|| format!("bad shape `{s}`"))
        })
        .collect()
}

/// Serialize a float32 array as `.npy` version 1.0 (header padded to 64 bytes, as NumPy does).
pub fn to_bytes(a: &Array) -> Vec<u8> {
    let shape = match a.shape.len() {
        0 => "()".to_string(),
        1 => format!("({},)", a.shape[0]),
        _ => format!(
            "({})",
            a.shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat(total.next_multiple_of(64) - total));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + a.data.len() * 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for x in &a.data {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

/// Write a float32 `.npy` file.
pub fn write(path: &Path, a: &Array) -> Result<()> {
    let mut f =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(&to_bytes(a))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_shapes() {
        for shape in [vec![], vec![3], vec![2, 3], vec![2, 1, 2]] {
            let n: usize = shape.iter().product();
            let a = Array {
                shape: shape.clone(),
                data: (0..n).map(|i| i as f32 * 0.5 - 1.0).collect(),
            };
            let b = to_bytes(&a);
            assert_eq!((b.len() - a.data.len() * 4) % 64, 0);
            assert_eq!(parse(&b).unwrap(), a);
        }
    }

    /// A version 1.0 file with `descr` and `shape` (Python literals) and the given data bytes.
    fn npy_bytes(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
        let mut header =
            format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        header.push('\n');
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend_from_slice(&(header.len() as u16).to_le_bytes());
        b.extend_from_slice(header.as_bytes());
        b.extend_from_slice(data);
        b
    }

    #[test]
    fn int32_and_int64_token_files() {
        let i4: Vec<u8> = [3i32, -1, 70000, 0, 5, 6]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let a = parse_ints(&npy_bytes("<i4", "(2, 3)", &i4)).unwrap();
        assert_eq!(a.shape, [2, 3]);
        assert_eq!(a.data, [3, -1, 70000, 0, 5, 6]);
        let i8: Vec<u8> = [1i64 << 40, 2]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let a = parse_ints(&npy_bytes("<i8", "(1, 2)", &i8)).unwrap();
        assert_eq!(a.data, [1i64 << 40, 2]);
        // Too few bytes for the shape, a float file, and big-endian ints are refused.
        let e = parse_ints(&npy_bytes("<i8", "(2, 2)", &i8))
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs 32 data bytes"), "{e}");
        let e = parse_ints(&npy_bytes("<f4", "(2,)", &[0; 8]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("int32") && e.contains("`<f4`"), "{e}");
        assert!(parse_ints(&npy_bytes(">i4", "(1,)", &[0; 4])).is_err());
        // And the float reader refuses ints.
        assert!(parse(&npy_bytes("<i4", "(2, 3)", &i4)).is_err());
    }

    #[test]
    fn rejects_bad_input() {
        assert!(parse(b"hello").is_err());
        let mut b = to_bytes(&Array {
            shape: vec![2],
            data: vec![1.0, 2.0],
        });
        b.truncate(b.len() - 1);
        assert!(parse(&b).is_err());
        // A well-formed float64 file: the header length field matches the header.
        let header = b"{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }          \n";
        let mut f8 = b"\x93NUMPY\x01\x00".to_vec();
        f8.extend_from_slice(&(header.len() as u16).to_le_bytes());
        f8.extend_from_slice(header);
        f8.extend_from_slice(&1.0f64.to_le_bytes());
        let e = parse(&f8).unwrap_err().to_string();
        assert!(e.contains("float32"), "{e}");
    }
}
