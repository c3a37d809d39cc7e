//! Safetensors files on the host: reading a checkpoint directory (one file or shards with an
//! index) into `f32` tensors by name, and writing `f32` tensors to one file.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, View};

use super::HfError;

/// The single-file weights of an HF checkpoint.
pub(crate) const WEIGHTS: &str = "model.safetensors";
/// The index of a sharded HF checkpoint: `{"weight_map": {tensor: file}}`.
pub(crate) const INDEX: &str = "model.safetensors.index.json";

/// A dense row-major `f32` tensor on the host.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl HostTensor {
    /// The transpose of a matrix `[r, c]` → `[c, r]` (exact: a permutation of the values).
    pub fn transposed(&self) -> HostTensor {
        let (r, c) = (self.shape[0], self.shape[1]);
        let mut data = Vec::with_capacity(r * c);
        for j in 0..c {
            data.extend((0..r).map(|i| self.data[i * c + j]));
        }
        HostTensor {
            shape: vec![c, r],
            data,
        }
    }

    /// Matrices `[r, c_k]` side by side: `[r, Σ c_k]`.
    pub fn concat_cols(parts: &[HostTensor]) -> HostTensor {
        let r = parts[0].shape[0];
        let width: usize = parts.iter().map(|p| p.shape[1]).sum();
        let mut data = Vec::with_capacity(r * width);
        for i in 0..r {
            for p in parts {
                let c = p.shape[1];
                data.extend_from_slice(&p.data[i * c..(i + 1) * c]);
            }
        }
        HostTensor {
            shape: vec![r, width],
            data,
        }
    }

    /// The inverse of [`concat_cols`](Self::concat_cols): column blocks of the given widths.
    pub fn split_cols(&self, widths: &[usize]) -> Vec<HostTensor> {
        let (r, c) = (self.shape[0], self.shape[1]);
        let mut first = 0;
        widths
            .iter()
            .map(|&w| {
                let mut data = Vec::with_capacity(r * w);
                for i in 0..r {
                    data.extend_from_slice(&self.data[i * c + first..i * c + first + w]);
                }
                first += w;
                HostTensor {
                    shape: vec![r, w],
                    data,
                }
            })
            .collect()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> HfError + '_ {
    move |source| HfError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Tensor name → the shard file holding it, from a sharded checkpoint's index.
type WeightMap = HashMap<String, String>;

/// The weight files of the checkpoint in `dir`, as `transformers` looks for them: the single
/// [`WEIGHTS`] file if present, else the shards named by [`INDEX`]. With an index, also the
/// tensor → file map, to check the shards against it.
fn weight_files(dir: &Path) -> Result<(Vec<PathBuf>, Option<WeightMap>), HfError> {
    let single = dir.join(WEIGHTS);
    if single.is_file() {
        return Ok((vec![single], None));
    }
    let index = dir.join(INDEX);
    if !index.is_file() {
        return Err(HfError::NoWeights {
            dir: dir.to_path_buf(),
        });
    }
    let text = std::fs::read_to_string(&index).map_err(io(&index))?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| HfError::Json {
        path: index.clone(),
        message: e.to_string(),
    })?;
    let bad = |message: String| HfError::Json {
        path: index.clone(),
        message,
    };
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| bad("no \"weight_map\" object".to_string()))?;
    let mut weight_map = HashMap::new();
    for (name, file) in map {
        let file = file
            .as_str()
            .ok_or_else(|| bad(format!("weight_map[\"{name}\"] is not a file name")))?;
        if file.contains('/') || file.contains('\\') || file == ".." {
            return Err(bad(format!(
                "weight_map[\"{name}\"] = \"{file}\" is not a file name in the checkpoint directory"
            )));
        }
        weight_map.insert(name.clone(), file.to_string());
    }
    let files: BTreeSet<&String> = weight_map.values().collect();
    let files = files.into_iter().map(|f| dir.join(f)).collect();
    Ok((files, Some(weight_map)))
}

/// Every tensor of the checkpoint in `dir`, converted to `f32` (from F32, F16, BF16 or F64).
/// `seen` gets every file read (the index first if there is one, then the weight files in name
/// order) with its bytes, for the checkpoint's content hash.
pub(crate) fn read_weights(
    dir: &Path,
    seen: &mut dyn FnMut(&Path, &[u8]),
) -> Result<BTreeMap<String, HostTensor>, HfError> {
    let (files, weight_map) = weight_files(dir)?;
    if weight_map.is_some() {
        let index = dir.join(INDEX);
        seen(&index, &std::fs::read(&index).map_err(io(&index))?);
    }
    let mut out = BTreeMap::new();
    for path in &files {
        let bytes = std::fs::read(path).map_err(io(path))?;
        seen(path, &bytes);
        let file = SafeTensors::deserialize(&bytes).map_err(|e| HfError::Safetensors {
            path: path.clone(),
            message: e.to_string(),
        })?;
        for (name, view) in file.iter() {
            if let Some(map) = &weight_map {
                let listed = map.get(name).map(|f| dir.join(f));
                if listed.as_ref() != Some(path) {
                    return Err(HfError::Json {
                        path: dir.join(INDEX),
                        message: format!(
                            "tensor `{name}` is in {} but the index maps it to {}",
                            path.display(),
                            map.get(name).map_or("nothing", String::as_str)
                        ),
                    });
                }
            }
            let data = to_f32(view.dtype(), view.data()).ok_or_else(|| HfError::Dtype {
                path: path.clone(),
                name: name.to_string(),
                dtype: format!("{:?}", view.dtype()),
            })?;
            let tensor = HostTensor {
                shape: view.shape().to_vec(),
                data,
            };
            if out.insert(name.to_string(), tensor).is_some() {
                return Err(HfError::Safetensors {
                    path: path.clone(),
                    message: format!("tensor `{name}` appears in more than one shard"),
                });
            }
        }
    }
    if let Some(map) = &weight_map {
        let mut absent: Vec<&String> = map.keys().filter(|n| !out.contains_key(*n)).collect();
        absent.sort();
        if let Some(name) = absent.first() {
            return Err(HfError::Json {
                path: dir.join(INDEX),
                message: format!(
                    "the index lists `{name}` in {} but that file does not hold it",
                    map[*name]
                ),
            });
        }
    }
    Ok(out)
}

/// Little-endian bytes of a float dtype as `f32`; `None` for other dtypes.
fn to_f32(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    let half = |f: fn(u16) -> f32| {
        bytes
            .chunks_exact(2)
            .map(|b| f(u16::from_le_bytes([b[0], b[1]])))
            .collect()
    };
    Some(match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap()) as f32)
            .collect(),
        Dtype::F16 => half(|b| half::f16::from_bits(b).to_f32()),
        Dtype::BF16 => half(|b| half::bf16::from_bits(b).to_f32()),
        _ => return None,
    })
}

/// An `f32` tensor ready for [`safetensors::serialize`].
struct F32View {
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl View for &F32View {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Write `tensors` as one F32 safetensors file with the `{"format": "pt"}` metadata that
/// `transformers` expects of PyTorch weights.
pub(crate) fn write_weights(
    path: &Path,
    tensors: Vec<(String, HostTensor)>,
) -> Result<(), HfError> {
    let views: Vec<(String, F32View)> = tensors
        .into_iter()
        .map(|(name, t)| {
            let bytes = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
            (
                name,
                F32View {
                    shape: t.shape,
                    bytes,
                },
            )
        })
        .collect();
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(
        views.iter().map(|(n, v)| (n.as_str(), v)),
        Some(metadata),
        path,
    )
    .map_err(|e| HfError::Safetensors {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}
