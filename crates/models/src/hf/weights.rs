//! The exact correspondence between this crate's parameters and HF tensor names and layouts.
//!
//! | here | GPT-2 (`transformer.` prefix optional) | Llama |
//! |---|---|---|
//! | `wte [V, d]` | `wte.weight` | `model.embed_tokens.weight` |
//! | `wpe [ctx, d]` | `wpe.weight` | — (RoPE) |
//! | `h.i.ln_1` | `h.i.ln_1.{weight,bias}` | `model.layers.i.input_layernorm.weight` |
//! | `h.i.attn.qkv [d, q+k+v]` | `h.i.attn.c_attn.{weight,bias}` (Conv1D, `[in, out]`, as here) | `[q_projᵀ ∣ k_projᵀ ∣ v_projᵀ]` (`nn.Linear` is `[out, in]`) |
//! | `h.i.attn.proj` | `h.i.attn.c_proj.*` | `o_projᵀ` |
//! | `h.i.ln_2` | `h.i.ln_2.*` | `post_attention_layernorm.weight` |
//! | `h.i.mlp.fc` | `h.i.mlp.c_fc.*` | `[gate_projᵀ ∣ up_projᵀ]` |
//! | `h.i.mlp.proj` | `h.i.mlp.c_proj.*` | `down_projᵀ` |
//! | `ln_f` | `ln_f.*` | `model.norm.weight` |
//! | `lm_head [d, V]` (untied) | `lm_head.weightᵀ` | `lm_head.weightᵀ` |
//!
//! Every conversion is a transpose or a concatenation, so values are carried over bit for bit.
//! Both layouts agree on everything else that matters: GPT-2's `c_attn` output is `[q | k | v]`
//! with heads contiguous, like ours; HF Llama's RoPE is the rotate-half layout ours uses (HF's
//! conversion of Meta's weights permutes q/k for exactly that), and query head `h` reads KV head
//! `h / (n_head / n_kv_head)` in both.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use super::files::HostTensor;
use super::HfError;
use crate::config::{Arch, ModelConfig};
use crate::model::{Attention, Block, Mlp, Model, Norm};

/// Buffers some checkpoints carry that are no parameters (GPT-2's causal-mask buffers, old
/// Llama's RoPE frequencies): accepted and ignored.
fn is_buffer(name: &str) -> bool {
    name.ends_with(".attn.bias")
        || name.ends_with(".attn.masked_bias")
        || name.ends_with(".rotary_emb.inv_freq")
}

/// Hands out the checkpoint's tensors by name, checking shapes; what is left over is an error.
struct Take<'a> {
    tensors: BTreeMap<String, HostTensor>,
    dir: &'a Path,
}

impl Take<'_> {
    fn get(&mut self, name: &str, shape: &[usize]) -> Result<HostTensor, HfError> {
        let t = self
            .tensors
            .remove(name)
            .ok_or_else(|| HfError::MissingTensor {
                dir: self.dir.to_path_buf(),
                name: name.to_string(),
            })?;
        if t.shape != shape {
            return Err(HfError::Shape {
                dir: self.dir.to_path_buf(),
                name: name.to_string(),
                expected: shape.to_vec(),
                got: t.shape,
            });
        }
        Ok(t)
    }

    fn finish(self) -> Result<(), HfError> {
        let names: Vec<String> = self.tensors.into_keys().filter(|n| !is_buffer(n)).collect();
        if names.is_empty() {
            Ok(())
        } else {
            Err(HfError::UnexpectedTensors {
                dir: self.dir.to_path_buf(),
                names,
            })
        }
    }
}

fn param1<B: Backend>(t: HostTensor, device: &B::Device) -> Param<Tensor<B, 1>> {
    let n = t.data.len();
    Param::from_data(TensorData::new(t.data, [n]), device)
}

fn param2<B: Backend>(t: HostTensor, device: &B::Device) -> Param<Tensor<B, 2>> {
    let shape = [t.shape[0], t.shape[1]];
    Param::from_data(TensorData::new(t.data, shape), device)
}

/// The tensors of `tensors` as a [`Model`] for `cfg` (from the same checkpoint's config.json).
pub(crate) fn model_from<B: Backend>(
    cfg: &ModelConfig,
    tensors: BTreeMap<String, HostTensor>,
    dir: &Path,
    device: &B::Device,
) -> Result<Model<B>, HfError> {
    let mut take = Take { tensors, dir };
    let model = match cfg.arch {
        Arch::Gpt2 => gpt2_from(cfg, &mut take, device)?,
        Arch::Llama => llama_from(cfg, &mut take, device)?,
    };
    take.finish()?;
    Ok(model)
}

/// GPT-2's LayerNorm `{name}.{weight,bias}`.
fn layer_norm<B: Backend>(
    take: &mut Take,
    name: &str,
    d: usize,
    device: &B::Device,
) -> Result<Norm<B>, HfError> {
    Ok(Norm {
        weight: param1(take.get(&format!("{name}.weight"), &[d])?, device),
        bias: Some(param1(take.get(&format!("{name}.bias"), &[d])?, device)),
    })
}

/// GPT-2's `Conv1D` `{name}.{weight,bias}`: the weight is `[in, out]` like `burn`'s `Linear`.
fn conv1d<B: Backend>(
    take: &mut Take,
    name: &str,
    d_in: usize,
    d_out: usize,
    device: &B::Device,
) -> Result<Linear<B>, HfError> {
    Ok(Linear {
        weight: param2(take.get(&format!("{name}.weight"), &[d_in, d_out])?, device),
        bias: Some(param1(take.get(&format!("{name}.bias"), &[d_out])?, device)),
    })
}

fn gpt2_from<B: Backend>(
    cfg: &ModelConfig,
    take: &mut Take,
    device: &B::Device,
) -> Result<Model<B>, HfError> {
    let (d, v, ff) = (cfg.d_model, cfg.vocab_size, cfg.d_ff);
    // `GPT2LMHeadModel.save_pretrained` writes `transformer.…`; checkpoints saved from
    // `GPT2Model` (like the original `gpt2`) have no prefix.
    let prefix = if take.tensors.keys().any(|k| k.starts_with("transformer.")) {
        "transformer."
    } else {
        ""
    };
    let mut h = Vec::with_capacity(cfg.n_layer);
    for i in 0..cfg.n_layer {
        let p = format!("{prefix}h.{i}");
        h.push(Block {
            ln_1: layer_norm(take, &format!("{p}.ln_1"), d, device)?,
            attn: Attention {
                qkv: conv1d(take, &format!("{p}.attn.c_attn"), d, 3 * d, device)?,
                proj: conv1d(take, &format!("{p}.attn.c_proj"), d, d, device)?,
                q_norm: None,
                k_norm: None,
            },
            ln_2: layer_norm(take, &format!("{p}.ln_2"), d, device)?,
            mlp: Mlp {
                fc: conv1d(take, &format!("{p}.mlp.c_fc"), d, ff, device)?,
                proj: conv1d(take, &format!("{p}.mlp.c_proj"), ff, d, device)?,
            },
        });
    }
    let wte = take.get(&format!("{prefix}wte.weight"), &[v, d])?;
    let wpe = take.get(&format!("{prefix}wpe.weight"), &[cfg.context, d])?;
    let ln_f = layer_norm(take, &format!("{prefix}ln_f"), d, device)?;
    let lm_head = lm_head(cfg, take, &wte, device)?;
    Ok(Model {
        wte: param2(wte, device),
        wpe: Some(param2(wpe, device)),
        h,
        ln_f,
        lm_head,
        config: cfg.clone(),
    })
}

/// The untied head from `lm_head.weight [V, d]`. When tied, a checkpoint may still carry
/// `lm_head.weight`; it must then be the embedding itself.
fn lm_head<B: Backend>(
    cfg: &ModelConfig,
    take: &mut Take,
    wte: &HostTensor,
    device: &B::Device,
) -> Result<Option<Linear<B>>, HfError> {
    let shape = [cfg.vocab_size, cfg.d_model];
    if !cfg.tie_embeddings {
        let w = take.get("lm_head.weight", &shape)?;
        return Ok(Some(Linear {
            weight: param2(w.transposed(), device),
            bias: None,
        }));
    }
    if take.tensors.contains_key("lm_head.weight") {
        let w = take.get("lm_head.weight", &shape)?;
        if w.data
            .iter()
            .zip(&wte.data)
            .any(|(a, b)| a.to_bits() != b.to_bits())
        {
            return Err(HfError::Field {
                path: take.dir.join("config.json"),
                field: "tie_word_embeddings".to_string(),
                message: "is true but lm_head.weight differs from the token embedding".to_string(),
            });
        }
    }
    Ok(None)
}

fn llama_from<B: Backend>(
    cfg: &ModelConfig,
    take: &mut Take,
    device: &B::Device,
) -> Result<Model<B>, HfError> {
    let (d, v, ff) = (cfg.d_model, cfg.vocab_size, cfg.d_ff);
    let (q, kv) = (cfg.n_head * cfg.head_dim(), cfg.n_kv_head * cfg.head_dim());
    let mut h = Vec::with_capacity(cfg.n_layer);
    for i in 0..cfg.n_layer {
        let p = format!("model.layers.{i}");
        // nn.Linear weights are [out, in]; ours are [in, out].
        let mut w = |name: &str, d_out: usize, d_in: usize| -> Result<HostTensor, HfError> {
            Ok(take
                .get(&format!("{p}.{name}.weight"), &[d_out, d_in])?
                .transposed())
        };
        let linear = |weight: HostTensor| Linear {
            weight: param2(weight, device),
            bias: None,
        };
        let qkv = HostTensor::concat_cols(&[
            w("self_attn.q_proj", q, d)?,
            w("self_attn.k_proj", kv, d)?,
            w("self_attn.v_proj", kv, d)?,
        ]);
        let proj = w("self_attn.o_proj", d, q)?;
        let gate_up =
            HostTensor::concat_cols(&[w("mlp.gate_proj", ff, d)?, w("mlp.up_proj", ff, d)?]);
        let down = w("mlp.down_proj", d, ff)?;
        let mut rms = |name: &str| -> Result<Norm<B>, HfError> {
            Ok(Norm {
                weight: param1(take.get(&format!("{p}.{name}.weight"), &[d])?, device),
                bias: None,
            })
        };
        let (ln_1, ln_2) = (rms("input_layernorm")?, rms("post_attention_layernorm")?);
        h.push(Block {
            ln_1,
            attn: Attention {
                qkv: linear(qkv),
                proj: linear(proj),
                q_norm: None,
                k_norm: None,
            },
            ln_2,
            mlp: Mlp {
                fc: linear(gate_up),
                proj: linear(down),
            },
        });
    }
    let wte = take.get("model.embed_tokens.weight", &[v, d])?;
    let ln_f = Norm {
        weight: param1(take.get("model.norm.weight", &[d])?, device),
        bias: None,
    };
    let lm_head = lm_head(cfg, take, &wte, device)?;
    Ok(Model {
        wte: param2(wte, device),
        wpe: None,
        h,
        ln_f,
        lm_head,
        config: cfg.clone(),
    })
}

fn host<B: Backend, const D: usize>(p: &Param<Tensor<B, D>>) -> HostTensor {
    let t = p.val();
    let shape = t.dims().to_vec();
    let data = t
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("a converted f32 tensor reads back as f32");
    HostTensor { shape, data }
}

/// `(HF name, tensor)` pairs in writing order.
type Named = Vec<(String, HostTensor)>;

fn put_norm<B: Backend>(out: &mut Named, name: &str, n: &Norm<B>) {
    out.push((format!("{name}.weight"), host(&n.weight)));
    if let Some(b) = &n.bias {
        out.push((format!("{name}.bias"), host(b)));
    }
}

/// A `Linear` as GPT-2's `Conv1D` (same `[in, out]` layout).
fn put_conv1d<B: Backend>(out: &mut Named, name: &str, l: &Linear<B>) {
    out.push((format!("{name}.weight"), host(&l.weight)));
    if let Some(b) = &l.bias {
        out.push((format!("{name}.bias"), host(b)));
    }
}

/// Every parameter of `model` under its HF name and layout (the inverse of [`model_from`]).
/// GPT-2 names carry the `transformer.` prefix, as `GPT2LMHeadModel.save_pretrained` writes them;
/// a tied head is not written (HF ties it on load).
pub(crate) fn tensors_of<B: Backend>(model: &Model<B>) -> Named {
    let cfg = &model.config;
    let mut out = Named::new();
    match cfg.arch {
        Arch::Gpt2 => {
            let pre = "transformer.";
            out.push((format!("{pre}wte.weight"), host(&model.wte)));
            if let Some(wpe) = &model.wpe {
                out.push((format!("{pre}wpe.weight"), host(wpe)));
            }
            for (i, b) in model.h.iter().enumerate() {
                let p = format!("{pre}h.{i}");
                put_norm(&mut out, &format!("{p}.ln_1"), &b.ln_1);
                put_conv1d(&mut out, &format!("{p}.attn.c_attn"), &b.attn.qkv);
                put_conv1d(&mut out, &format!("{p}.attn.c_proj"), &b.attn.proj);
                put_norm(&mut out, &format!("{p}.ln_2"), &b.ln_2);
                put_conv1d(&mut out, &format!("{p}.mlp.c_fc"), &b.mlp.fc);
                put_conv1d(&mut out, &format!("{p}.mlp.c_proj"), &b.mlp.proj);
            }
            put_norm(&mut out, &format!("{pre}ln_f"), &model.ln_f);
        }
        Arch::Llama => {
            out.push(("model.embed_tokens.weight".to_string(), host(&model.wte)));
            let hd = cfg.head_dim();
            let (q, kv) = (cfg.n_head * hd, cfg.n_kv_head * hd);
            for (i, b) in model.h.iter().enumerate() {
                let p = format!("model.layers.{i}");
                put_norm(&mut out, &format!("{p}.input_layernorm"), &b.ln_1);
                let qkv = host(&b.attn.qkv.weight).split_cols(&[q, kv, kv]);
                for (name, t) in ["q_proj", "k_proj", "v_proj"].iter().zip(qkv) {
                    out.push((format!("{p}.self_attn.{name}.weight"), t.transposed()));
                }
                let o = host(&b.attn.proj.weight).transposed();
                out.push((format!("{p}.self_attn.o_proj.weight"), o));
                put_norm(&mut out, &format!("{p}.post_attention_layernorm"), &b.ln_2);
                let gate_up = host(&b.mlp.fc.weight).split_cols(&[cfg.d_ff, cfg.d_ff]);
                for (name, t) in ["gate_proj", "up_proj"].iter().zip(gate_up) {
                    out.push((format!("{p}.mlp.{name}.weight"), t.transposed()));
                }
                let down = host(&b.mlp.proj.weight).transposed();
                out.push((format!("{p}.mlp.down_proj.weight"), down));
            }
            put_norm(&mut out, "model.norm", &model.ln_f);
        }
    }
    if let Some(head) = &model.lm_head {
        out.push((
            "lm_head.weight".to_string(),
            host(&head.weight).transposed(),
        ));
    }
    out
}
