//! The transformer itself, generic over any burn backend.
//!
//! Why it is written by hand rather than from `burn::nn::transformer`: every matrix multiply has
//! to run inside a named GEMM site ([`fp8_core::sites`]) so the `Precision` backend decorator can
//! quantize it, and attention must be explicit `matmul`s (not a fused attention op) so that the
//! score (`q·kᵀ`) and value (`p·v`) products are GEMMs too. Linears are `burn::nn::Linear`
//! (weight `[d_in, d_out]`, `ModuleOps::linear`), so the decorator sees which operand is the
//! weight.
//!
//! Choices worth knowing:
//! - No dropout: the precision study wants deterministic forward passes.
//! - Fused GEMMs: `attn.qkv` produces `[q | k | v]` (GQA: `n_head + 2·n_kv_head` heads of
//!   `head_dim`), Llama's `mlp.gate_up` produces `[gate | up]`. One GEMM means one scale per
//!   site under per-tensor scaling, as with TransformerEngine's fused layers.
//! - Attention scores are scaled by `1/sqrt(head_dim)` *after* the `scores` GEMM, so its operands
//!   are exactly q and k. The causal mask fills the strict upper triangle with `-inf` before the
//!   softmax (the scaling, the mask and the softmax are one fused op).
//! - GPT-2's GELU is the tanh approximation (`gelu_new` in HF), as in the released checkpoints.
//! - The softmax, GELU, LayerNorm/RMSNorm and the cross-entropy are fused backend ops
//!   ([`fp8_core::fused`]): one op and one autodiff node each, forward and backward, with the math
//!   stated here. Backends without kernels for them compose them from burn's ops; the model needs
//!   `B: FusedOps`.
//! - RoPE uses the "rotate half" layout of HF Llama (pairs `(i, i + head_dim/2)`).
//! - Smooth-SwiGLU (Fishman et al. 2024, "Scaling FP8 training to trillion-token LLMs"): with
//!   `h = silu(gate) ⊙ up`, per channel `c` of `h` we take `amax_c = max |h[·, c]|` over every
//!   token of the batch (detached), `s_c = 2^-ceil(log2 amax_c)`, and compute
//!   `mlp.proj` as `(h ⊙ s) · (diag(1/s)·W)`. In exact arithmetic this is `h·W`; under FP8 the
//!   GEMM input is per-channel normalised to `|·| ≤ 1`, which removes the channel outliers that
//!   SwiGLU develops late in training and that overflow a per-tensor scale. Powers of two make the
//!   rescaling itself exact in any binary float format, so the option changes nothing in f32.
//!   Gradients flow through both factors with `s` treated as a constant, which is what the
//!   paper's fused kernel computes.
//! - Stability options ([`ModelConfig::qk_norm`], [`ModelConfig::z_loss`]) are off by default and
//!   then add no op: a model without them computes bit for bit what it did before they existed.
//!   [`Model::loss_with_diagnostics`] reads back the attention-logit and log-partition statistics
//!   that these options are meant to keep small.

use std::f64::consts::LN_2;

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::activation;
use burn::tensor::backend::Backend;
use burn::tensor::module::linear;
use burn::tensor::{Bool, Int, Tensor, TensorData, TensorPrimitive};
use fp8_core::fused::{self, FusedOps};
use fp8_core::sites;

use crate::config::{Arch, ModelConfig};
use crate::init;

/// LayerNorm (GPT-2, with bias) or RMSNorm (Llama, `bias: None`) over the last dimension.
#[derive(Module, Debug)]
pub struct Norm<B: Backend> {
    /// Gain, initialised to 1.
    pub weight: Param<Tensor<B, 1>>,
    /// LayerNorm's shift, initialised to 0; absent for RMSNorm.
    pub bias: Option<Param<Tensor<B, 1>>>,
}

impl<B: FusedOps> Norm<B> {
    /// `LayerNorm` if `rms` is false (mean-centred, biased variance), else `RMSNorm`: one fused
    /// op ([`fused::norm`]).
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>, rms: bool, eps: f64) -> Tensor<B, D> {
        let bias = self.bias.as_ref().map(|b| b.val());
        fused::norm(x, self.weight.val(), bias, eps, rms)
    }
}

/// Causal self-attention with a fused `qkv` GEMM and explicit score/value GEMMs.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// `[d_model, (n_head + 2·n_kv_head)·head_dim]`, output laid out `[q | k | v]`.
    pub qkv: Linear<B>,
    /// Output projection `[n_head·head_dim, d_model]` (a residual projection).
    pub proj: Linear<B>,
    /// QK-norm of the queries, over `head_dim` ([`ModelConfig::qk_norm`]); `None` when off.
    pub q_norm: Option<Norm<B>>,
    /// QK-norm of the keys, over `head_dim`; `None` when off.
    pub k_norm: Option<Norm<B>>,
}

impl<B: FusedOps> Attention<B> {
    fn forward(
        &self,
        x: Tensor<B, 3>,
        cfg: &ModelConfig,
        rope: Option<&Rope<B>>,
        probe: Option<&mut Vec<Tensor<B, 1>>>,
    ) -> Tensor<B, 3> {
        let [b, t, _] = x.dims();
        let (nh, nkv, hd) = (cfg.n_head, cfg.n_kv_head, cfg.head_dim());
        let _attn = sites::scope("attn");

        let qkv = sites::with("qkv", || self.qkv.forward(x));
        // [b, t, heads·hd] → [b, heads, t, hd], as views (the GEMMs read the strided heads
        // directly); backward, each part's gradient is laid out in one pass.
        let heads = |first: usize, n: usize| fused::heads(qkv.clone(), first, n, hd);
        let (mut q, mut k, v) = (heads(0, nh), heads(nh, nkv), heads(nh + nkv, nkv));
        // QK-norm comes before RoPE (as in OLMo-2 and Qwen-3): the rotation keeps the norm, so
        // the bound on |q|·|k| holds for the rotated vectors too.
        let rms = cfg.arch == Arch::Llama;
        if let Some(norm) = &self.q_norm {
            q = norm.forward(q, rms, cfg.norm_eps);
        }
        if let Some(norm) = &self.k_norm {
            k = norm.forward(k, rms, cfg.norm_eps);
        }
        if let Some(rope) = rope {
            q = rope.apply(q);
            k = rope.apply(k);
        }
        let (k, v) = (repeat_kv(k, nh / nkv), repeat_kv(v, nh / nkv));

        // `k` copied once forward, so its gradient (which the GEMM produces transposed) is too.
        let k = fused::contiguous(k);
        let scores = sites::with("scores", || q.matmul(k.swap_dims(2, 3)));
        let scale = (1.0 / (hd as f64).sqrt()) as f32;
        if let Some(probe) = probe {
            // The largest logit the softmax sees: the masked entries are -inf, the diagonal never.
            let future = causal_mask::<B>(b, nh, t, &scores.device());
            let seen = (scores.clone().detach() * scale).mask_fill(future, f32::NEG_INFINITY);
            probe.push(seen.max());
        }
        let probs = fused::causal_softmax(scores, scale);
        let y = sites::with("values", || probs.matmul(v));

        let y = fused::contiguous(y.swap_dims(1, 2)).reshape([b, t, nh * hd]);
        sites::with("proj", || self.proj.forward(y))
    }
}

/// `[b, n_kv, t, hd]` → `[b, n_kv·groups, t, hd]`, query head `h` reading KV head `h / groups`.
fn repeat_kv<B: Backend>(x: Tensor<B, 4>, groups: usize) -> Tensor<B, 4> {
    if groups == 1 {
        return x;
    }
    let [b, nkv, t, hd] = x.dims();
    x.unsqueeze_dim::<5>(2)
        .repeat_dim(2, groups)
        .reshape([b, nkv * groups, t, hd])
}

/// RoPE tables for one sequence length, `[1, 1, t, head_dim/2]`.
struct Rope<B: Backend> {
    cos: Tensor<B, 4>,
    sin: Tensor<B, 4>,
}

impl<B: Backend> Rope<B> {
    fn new(t: usize, head_dim: usize, theta: f64, device: &B::Device) -> Self {
        let half = head_dim / 2;
        let (mut cos, mut sin) = (Vec::with_capacity(t * half), Vec::with_capacity(t * half));
        for p in 0..t {
            for j in 0..half {
                let angle = p as f64 * theta.powf(-2.0 * j as f64 / head_dim as f64);
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        let table = |v: Vec<f32>| Tensor::from_data(TensorData::new(v, [1, 1, t, half]), device);
        Self {
            cos: table(cos),
            sin: table(sin),
        }
    }

    /// Rotate pairs `(x[i], x[i + hd/2])` by the position's angle.
    fn apply(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let half = x.dims()[3] / 2;
        let x1 = x.clone().narrow(3, 0, half);
        let x2 = x.narrow(3, half, half);
        let (c, s) = (self.cos.clone(), self.sin.clone());
        Tensor::cat(
            vec![
                x1.clone() * c.clone() - x2.clone() * s.clone(),
                x1 * s + x2 * c,
            ],
            3,
        )
    }
}

/// GPT-2 MLP (`fc`, GELU, `proj`) or Llama SwiGLU (fused `gate_up`, SiLU·up, `proj`).
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// GPT-2: `[d_model, d_ff]`; Llama: `[d_model, 2·d_ff]` laid out `[gate | up]`.
    pub fc: Linear<B>,
    /// Down projection `[d_ff, d_model]` (a residual projection).
    pub proj: Linear<B>,
}

impl<B: FusedOps> Mlp<B> {
    fn forward(&self, x: Tensor<B, 3>, cfg: &ModelConfig) -> Tensor<B, 3> {
        let _mlp = sites::scope("mlp");
        match cfg.arch {
            Arch::Gpt2 => {
                let h = sites::with("fc", || self.fc.forward(x));
                let h = fused::gelu_tanh(h);
                sites::with("proj", || self.proj.forward(h))
            }
            Arch::Llama => {
                let ff = cfg.d_ff;
                let gu = sites::with("gate_up", || self.fc.forward(x));
                let gate = gu.clone().narrow(2, 0, ff);
                let up = gu.narrow(2, ff, ff);
                let h = activation::silu(gate) * up;
                if cfg.smooth_swiglu {
                    self.smooth_proj(h)
                } else {
                    sites::with("proj", || self.proj.forward(h))
                }
            }
        }
    }

    /// `mlp.proj` with Smooth-SwiGLU's per-channel power-of-two scaling (see the module docs).
    fn smooth_proj(&self, h: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, t, ff] = h.dims();
        let device = h.device();
        let amax = h
            .clone()
            .detach()
            .abs()
            .reshape([b * t, ff])
            .max_dim(0)
            .clamp_min(f32::MIN_POSITIVE);
        // e = ceil(log2 amax); s = 2^-e puts every channel's amax in (1/2, 1].
        let e = (amax.log() / LN_2).ceil();
        let two = Tensor::<B, 2>::full([1, ff], 2.0, &device);
        let s = two.clone().powf(e.clone().neg());
        let s_inv = two.powf(e);
        let h = h * s.unsqueeze::<3>();
        let w = self.proj.weight.val() * s_inv.reshape([ff, 1]);
        let bias = self.proj.bias.as_ref().map(|b| b.val());
        sites::with("proj", || linear(h, w, bias))
    }
}

/// The causal mask `[b, n_head, t, t]`, true strictly above the diagonal (the future positions),
/// for the diagnostics' largest attention logit (the softmax applies the mask itself).
fn causal_mask<B: Backend>(
    b: usize,
    nh: usize,
    t: usize,
    device: &B::Device,
) -> Tensor<B, 4, Bool> {
    let row: Vec<bool> = (0..t * t).map(|i| i % t > i / t).collect();
    let all: Vec<bool> = std::iter::repeat_n(row.as_slice(), b * nh)
        .flatten()
        .copied()
        .collect();
    Tensor::from_data(TensorData::new(all, [b, nh, t, t]), device)
}

/// One pre-norm transformer block: `x + attn(ln_1(x))`, then `x + mlp(ln_2(x))`.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    /// Norm before attention.
    pub ln_1: Norm<B>,
    /// Causal self-attention.
    pub attn: Attention<B>,
    /// Norm before the MLP.
    pub ln_2: Norm<B>,
    /// Feed-forward network.
    pub mlp: Mlp<B>,
}

impl<B: FusedOps> Block<B> {
    fn forward(
        &self,
        x: Tensor<B, 3>,
        cfg: &ModelConfig,
        rope: Option<&Rope<B>>,
        probe: Option<&mut Vec<Tensor<B, 1>>>,
    ) -> Tensor<B, 3> {
        let rms = cfg.arch == Arch::Llama;
        let a = self.attn.forward(
            self.ln_1.forward(x.clone(), rms, cfg.norm_eps),
            cfg,
            rope,
            probe,
        );
        let x = x + a;
        let m = self
            .mlp
            .forward(self.ln_2.forward(x.clone(), rms, cfg.norm_eps), cfg);
        x + m
    }
}

/// A GPT-2 or Llama decoder-only language model; build it with [`ModelConfig::init`].
///
/// Field names follow nanoGPT/HF GPT-2 (`wte`, `wpe`, `h`, `ln_f`, `lm_head`) so checkpoints and
/// site names read the same.
#[derive(Module, Debug)]
pub struct Model<B: Backend> {
    /// Token embedding `[vocab_size, d_model]`; also the output head when tied.
    pub wte: Param<Tensor<B, 2>>,
    /// Learned positions `[context, d_model]` (GPT-2); `None` for Llama (RoPE).
    pub wpe: Option<Param<Tensor<B, 2>>>,
    /// The blocks, `h.0` … `h.{n_layer-1}`.
    pub h: Vec<Block<B>>,
    /// Final norm.
    pub ln_f: Norm<B>,
    /// Untied output head `[d_model, vocab_size]`; `None` when tied to `wte`.
    pub lm_head: Option<Linear<B>>,
    /// The config this model was built from (not a parameter, not saved in records).
    #[module(skip)]
    pub config: ModelConfig,
}

impl<B: FusedOps> Model<B> {
    /// Logits `[batch, seq, vocab]` for token ids `[batch, seq]` (`seq ≤ context`).
    pub fn forward(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.forward_probed(tokens, None)
    }

    /// [`forward`](Self::forward), pushing each layer's largest attention logit (a detached `[1]`
    /// tensor) onto `probe` when given; `None` adds no op at all.
    fn forward_probed(
        &self,
        tokens: Tensor<B, 2, Int>,
        mut probe: Option<&mut Vec<Tensor<B, 1>>>,
    ) -> Tensor<B, 3> {
        let cfg = &self.config;
        let [b, t] = tokens.dims();
        assert!(
            t <= cfg.context,
            "sequence length {t} exceeds the model context {}",
            cfg.context
        );
        let d = cfg.d_model;
        let device = tokens.device();

        // Embedding lookups are gathers, not GEMMs: no site.
        let mut x = self
            .wte
            .val()
            .select(0, tokens.reshape([b * t]))
            .reshape([b, t, d]);
        if let Some(wpe) = &self.wpe {
            x = x + wpe.val().narrow(0, 0, t).unsqueeze::<3>();
        }
        let rope = (cfg.arch == Arch::Llama)
            .then(|| Rope::new(t, cfg.head_dim(), cfg.rope_theta, &device));

        for (i, block) in self.h.iter().enumerate() {
            let _block = sites::scope(&format!("h.{i}"));
            x = block.forward(x, cfg, rope.as_ref(), probe.as_deref_mut());
        }
        let x = self.ln_f.forward(x, cfg.arch == Arch::Llama, cfg.norm_eps);

        sites::with("lm_head", || match &self.lm_head {
            Some(head) => head.forward(x),
            None => linear(x, self.wte.val().transpose(), None),
        })
    }

    /// The training loss, shape `[1]`: the mean next-token cross-entropy over every position,
    /// plus the z-loss `c · mean((log Z)²)` when [`ModelConfig::z_loss`] `c` is not 0.
    ///
    /// `targets[b, t]` is the token that should follow `tokens[b, ..=t]`. The log-softmax is the
    /// stable `x − max − ln Σ exp(x − max)`. With `z_loss` 0 this is exactly
    /// [`cross_entropy`]`(self.forward(tokens), targets)`; evaluation should report that (the
    /// cross-entropy alone) whatever the config.
    pub fn loss(&self, tokens: Tensor<B, 2, Int>, targets: Tensor<B, 2, Int>) -> Tensor<B, 1> {
        let logits = self.forward(tokens);
        self.objective(logits, targets).0
    }

    /// [`loss`](Self::loss) and the stability [`Diagnostics`] of the same forward pass.
    ///
    /// The diagnostics cost one reduction per layer and one read back to the host; the loss and
    /// its gradient are bit for bit those of [`loss`](Self::loss).
    pub fn loss_with_diagnostics(
        &self,
        tokens: Tensor<B, 2, Int>,
        targets: Tensor<B, 2, Int>,
    ) -> (Tensor<B, 1>, Diagnostics) {
        let mut probe = Vec::with_capacity(self.config.n_layer + 2);
        let logits = self.forward_probed(tokens, Some(&mut probe));
        let (loss, log_z) = self.objective(logits, targets);
        probe.push(log_z.clone().mean());
        probe.push(log_z.max());
        let n_layer = probe.len() - 2;
        let host = Tensor::cat(probe, 0)
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .expect("a converted f32 tensor reads back as f32");
        let diagnostics = Diagnostics {
            max_attn_logit: host[..n_layer].to_vec(),
            log_z_mean: host[n_layer],
            log_z_max: host[n_layer + 1],
        };
        (loss, diagnostics)
    }

    /// `(loss, log Z)` for `logits [b, t, v]`: the loss of [`loss`](Self::loss) and the detached
    /// per-token log-partition `[b·t]`, which the fused cross-entropy computes anyway.
    fn objective(
        &self,
        logits: Tensor<B, 3>,
        targets: Tensor<B, 2, Int>,
    ) -> (Tensor<B, 1>, Tensor<B, 1>) {
        let [b, t, v] = logits.dims();
        let logits = logits.reshape([b * t, v]);
        let c = self.config.z_loss;
        // Only the z-loss needs the logits after the fused op (a clone shares the buffer).
        let kept = (c != 0.0).then(|| logits.clone());
        let (ce, log_z) = B::fused_cross_entropy(
            logits.into_primitive().tensor(),
            targets.reshape([b * t]).into_primitive(),
        );
        let ce = Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(ce));
        let log_z = Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(log_z));
        let Some(logits) = kept else {
            return (ce, log_z);
        };
        let z = differentiable_log_z(logits, log_z.clone());
        (ce + z.powi_scalar(2).mean() * c, log_z)
    }
}

/// `log Z` of every row of `logits [n, v]` with its gradient (`softmax`), given the detached
/// values `log_z [n]` that the fused cross-entropy returned.
///
/// The fused op's `log Z` is a constant to autodiff, so the z-loss cannot be built on it alone.
/// `L + ln Σ exp(x − L)` with `L` that constant equals `log Z` (the sum is 1 up to rounding, so
/// the correction is a few ulps) and has `∂/∂x = softmax(x)`; shifting by `L` instead of the row
/// maximum saves the max pass and is just as safe from overflow, since `x − L ≤ 0`.
fn differentiable_log_z<B: Backend>(logits: Tensor<B, 2>, log_z: Tensor<B, 1>) -> Tensor<B, 1> {
    let [n, _] = logits.dims();
    let shift = log_z.reshape([n, 1]);
    let sum = (logits - shift.clone()).exp().sum_dim(1);
    (shift + sum.log()).reshape([n])
}

/// Stability diagnostics of one forward pass ([`Model::loss_with_diagnostics`]): the two
/// quantities whose growth precedes loss divergence in Wortsman et al. 2023.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostics {
    /// Per layer `h.{i}`, the largest attention logit `q·kᵀ/√head_dim` over the batch, the heads
    /// and the (query, key) pairs the softmax sees (the causal triangle with its diagonal), after
    /// QK-norm and RoPE, before the softmax. Future positions are left out: they never reach the
    /// softmax, so their logits cannot saturate it.
    pub max_attn_logit: Vec<f32>,
    /// Mean over tokens of the output log-partition `log Z = logsumexp(logits)`.
    pub log_z_mean: f32,
    /// Largest `log Z` over tokens.
    pub log_z_max: f32,
}

/// Mean cross-entropy of `logits [b, t, v]` against `targets [b, t]`, shape `[1]`.
///
/// One fused op ([`fused::cross_entropy`]): the stable log-softmax `x − max − ln Σ exp(x − max)`
/// at the target, averaged.
pub fn cross_entropy<B: FusedOps>(
    logits: Tensor<B, 3>,
    targets: Tensor<B, 2, Int>,
) -> Tensor<B, 1> {
    let [b, t, v] = logits.dims();
    fused::cross_entropy(logits.reshape([b * t, v]), targets.reshape([b * t]))
}

/// Builds parameters with the deterministic host-side init of [`crate::init`].
struct Builder<'a, B: Backend> {
    cfg: &'a ModelConfig,
    device: &'a B::Device,
}

impl<B: Backend> Builder<'_, B> {
    fn normal(&self, name: &str, shape: [usize; 2], std: f64) -> Param<Tensor<B, 2>> {
        let values = init::normal(self.cfg.seed, name, shape[0] * shape[1], std);
        Param::from_data(TensorData::new(values, shape), self.device)
    }

    fn filled(&self, n: usize, value: f32) -> Param<Tensor<B, 1>> {
        Param::from_data(TensorData::new(vec![value; n], [n]), self.device)
    }

    /// A linear layer; biases only for GPT-2 blocks (its `lm_head` has none, as in HF).
    fn linear(&self, name: &str, d_in: usize, d_out: usize, std: f64) -> Linear<B> {
        let bias = self.cfg.arch == Arch::Gpt2 && name != "lm_head";
        Linear {
            weight: self.normal(&format!("{name}.weight"), [d_in, d_out], std),
            bias: bias.then(|| self.filled(d_out, 0.0)),
        }
    }

    fn norm(&self) -> Norm<B> {
        self.norm_of(self.cfg.d_model)
    }

    /// The family's norm over `d` features: gain 1 and, for LayerNorm, bias 0.
    fn norm_of(&self, d: usize) -> Norm<B> {
        Norm {
            weight: self.filled(d, 1.0),
            bias: (self.cfg.arch == Arch::Gpt2).then(|| self.filled(d, 0.0)),
        }
    }
}

impl ModelConfig {
    /// Allocate and initialise a model: GPT-2 init, i.e. every weight `N(0, init_std²)`,
    /// residual projections (`attn.proj`, `mlp.proj`) `N(0, (init_std/sqrt(2·n_layer))²)`,
    /// biases 0, norm gains 1. Deterministic in `seed`, identical on every backend.
    ///
    /// # Panics
    /// If the config does not [validate](ModelConfig::validate).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Model<B> {
        if let Err(e) = self.validate() {
            panic!("{e}");
        }
        let p = Builder::<B> { cfg: self, device };
        let (d, std) = (self.d_model, self.init_std);
        let resid_std = std / (2.0 * self.n_layer as f64).sqrt();
        let h = (0..self.n_layer)
            .map(|i| Block {
                ln_1: p.norm(),
                attn: Attention {
                    qkv: p.linear(&format!("h.{i}.attn.qkv"), d, self.qkv_dim(), std),
                    proj: p.linear(
                        &format!("h.{i}.attn.proj"),
                        self.n_head * self.head_dim(),
                        d,
                        resid_std,
                    ),
                    q_norm: self.qk_norm.then(|| p.norm_of(self.head_dim())),
                    k_norm: self.qk_norm.then(|| p.norm_of(self.head_dim())),
                },
                ln_2: p.norm(),
                mlp: Mlp {
                    fc: p.linear(&format!("h.{i}.mlp.fc"), d, self.mlp_in_dim(), std),
                    proj: p.linear(&format!("h.{i}.mlp.proj"), self.d_ff, d, resid_std),
                },
            })
            .collect();
        Model {
            wte: p.normal("wte", [self.vocab_size, d], std),
            wpe: (self.arch == Arch::Gpt2).then(|| p.normal("wpe", [self.context, d], std)),
            h,
            ln_f: p.norm(),
            lm_head: (!self.tie_embeddings).then(|| p.linear("lm_head", d, self.vocab_size, std)),
            config: self.clone(),
        }
    }
}
