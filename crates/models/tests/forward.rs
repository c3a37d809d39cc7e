//! Forward-pass behaviour: causality, determinism, training, and agreement with an independent
//! f64 reference written with plain loops.

// The reference is deliberately written as index loops, like the formulas it transcribes.
#![allow(clippy::needless_range_loop)]

use burn::backend::{Autodiff, NdArray};
use burn::module::Param;
use burn::nn::Linear;
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::{Int, Tensor, TensorData};
use fp8_models::model::{Attention, Block, Mlp, Norm};
use fp8_models::{Arch, Model, ModelConfig};

type B = NdArray;

fn tiny(arch: Arch) -> ModelConfig {
    match arch {
        Arch::Gpt2 => ModelConfig::from_preset_or_file("tiny").unwrap(),
        Arch::Llama => ModelConfig::llama(2, 4, 2, 32, 48, 16, 64),
    }
}

fn tokens(rows: &[Vec<i64>]) -> Tensor<B, 2, Int> {
    let (b, t) = (rows.len(), rows[0].len());
    let flat: Vec<i64> = rows.concat();
    Tensor::from_data(TensorData::new(flat, [b, t]), &Default::default())
}

fn values(t: Tensor<B, 3>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().unwrap()
}

#[test]
fn changing_a_token_leaves_earlier_logits_unchanged() {
    for arch in [Arch::Gpt2, Arch::Llama] {
        let cfg = tiny(arch);
        let model = cfg.init::<B>(&Default::default());
        let seq: Vec<i64> = (0..12).map(|i| (i * 7 + 3) % 64).collect();
        let mut changed = seq.clone();
        let t0 = 7;
        changed[t0] = (changed[t0] + 1) % 64;
        let a = values(model.forward(tokens(&[seq])));
        let b = values(model.forward(tokens(&[changed])));
        let v = cfg.vocab_size;
        assert_eq!(
            a[..t0 * v],
            b[..t0 * v],
            "{arch}: positions before {t0} must not change"
        );
        let diff: f32 = a[t0 * v..(t0 + 1) * v]
            .iter()
            .zip(&b[t0 * v..(t0 + 1) * v])
            .map(|(x, y)| (x - y).abs())
            .sum();
        assert!(
            diff > 1e-4,
            "{arch}: position {t0} should see its own token"
        );
    }
}

#[test]
fn init_is_deterministic_in_the_seed() {
    let device = Default::default();
    let cfg = tiny(Arch::Llama);
    let seq = tokens(&[(0..10).collect()]);
    let a = values(cfg.init::<B>(&device).forward(seq.clone()));
    let b = values(cfg.init::<B>(&device).forward(seq.clone()));
    assert_eq!(a, b);
    let other = ModelConfig { seed: 1, ..cfg };
    assert_ne!(a, values(other.init::<B>(&device).forward(seq)));
}

#[test]
fn smooth_swiglu_is_exact_in_full_precision() {
    let device = Default::default();
    let cfg = tiny(Arch::Llama);
    let smooth = ModelConfig {
        smooth_swiglu: true,
        ..cfg.clone()
    };
    let seq = tokens(&[(0..16).map(|i| (i * 5) % 64).collect()]);
    let a = values(cfg.init::<B>(&device).forward(seq.clone()));
    let b = values(smooth.init::<B>(&device).forward(seq));
    let max = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    assert!(max < 1e-5, "max diff {max}");
}

/// Memorise one fixed batch. Every sequence starts with a distinct token, so each prefix is
/// unique and every target is a function of its prefix: the achievable loss is 0. Chance level is
/// ln(vocab) = 4.16; a loss below a tenth of that means the model (forward, backward, all
/// parameters reachable) fits the batch rather than the unigram statistics (whose entropy here is
/// about ln(64) too, as tokens are uniform).
#[test]
fn tiny_model_overfits_one_batch() {
    type AB = Autodiff<NdArray>;
    let device = Default::default();
    for arch in [Arch::Gpt2, Arch::Llama] {
        let cfg = tiny(arch);
        let (batch, t, v) = (4usize, cfg.context, cfg.vocab_size as i64);
        let mut state = 12345u64;
        let mut rows = Vec::new();
        for r in 0..batch {
            let mut row = vec![r as i64];
            for _ in 0..t {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                row.push(((state >> 33) % v as u64) as i64);
            }
            rows.push(row);
        }
        let inputs: Vec<i64> = rows.iter().flat_map(|r| r[..t].to_vec()).collect();
        let targets: Vec<i64> = rows.iter().flat_map(|r| r[1..].to_vec()).collect();
        let x = Tensor::<AB, 2, Int>::from_data(TensorData::new(inputs, [batch, t]), &device);
        let y = Tensor::<AB, 2, Int>::from_data(TensorData::new(targets, [batch, t]), &device);

        let mut model: Model<AB> = cfg.init(&device);
        let mut optim = AdamConfig::new().init();
        let initial: f32 = model.loss(x.clone(), y.clone()).into_scalar();
        let mut last = initial;
        for _ in 0..300 {
            let loss = model.loss(x.clone(), y.clone());
            last = loss.clone().into_scalar();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(1e-2, model, grads);
        }
        let bound = 0.1 * (v as f32).ln();
        assert!(
            (initial - (v as f32).ln()).abs() < 0.5,
            "{arch}: initial loss {initial} should be near ln(V)"
        );
        assert!(
            last < bound,
            "{arch}: loss {last} after 300 steps, want < {bound}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Hand-computed reference: one block, d_model 4, two heads of dim 2, vocab 5, three tokens.

/// Deterministic, irregular weights: element `k` of parameter `p`.
fn w(p: u32, k: usize) -> f32 {
    (((k as f64 + 1.0) * 0.731 + p as f64 * 1.37).sin() * 0.6) as f32
}

fn mat(p: u32, rows: usize, cols: usize) -> Vec<Vec<f64>> {
    (0..rows)
        .map(|r| (0..cols).map(|c| w(p, r * cols + c) as f64).collect())
        .collect()
}

fn vec_(p: u32, n: usize) -> Vec<f64> {
    (0..n).map(|k| w(p, k) as f64).collect()
}

fn p2(m: &[Vec<f64>]) -> Param<Tensor<B, 2>> {
    let (r, c) = (m.len(), m[0].len());
    let flat: Vec<f32> = m.iter().flatten().map(|&x| x as f32).collect();
    Param::from_data(TensorData::new(flat, [r, c]), &Default::default())
}

fn p1(v: &[f64]) -> Param<Tensor<B, 1>> {
    let flat: Vec<f32> = v.iter().map(|&x| x as f32).collect();
    Param::from_data(TensorData::new(flat, [v.len()]), &Default::default())
}

/// All weights of a one-block model, as f64 matrices `[in][out]`.
struct Weights {
    wte: Vec<Vec<f64>>,
    wpe: Option<Vec<Vec<f64>>>,
    ln1: (Vec<f64>, Option<Vec<f64>>),
    qkv: (Vec<Vec<f64>>, Option<Vec<f64>>),
    proj: (Vec<Vec<f64>>, Option<Vec<f64>>),
    ln2: (Vec<f64>, Option<Vec<f64>>),
    fc: (Vec<Vec<f64>>, Option<Vec<f64>>),
    down: (Vec<Vec<f64>>, Option<Vec<f64>>),
    lnf: (Vec<f64>, Option<Vec<f64>>),
    head: Option<Vec<Vec<f64>>>,
    /// QK-norm gains (and LayerNorm biases) over `head_dim`, for queries and keys.
    q_norm: Option<(Vec<f64>, Option<Vec<f64>>)>,
    k_norm: Option<(Vec<f64>, Option<Vec<f64>>)>,
}

fn weights(cfg: &ModelConfig) -> Weights {
    let gpt2 = cfg.arch == Arch::Gpt2;
    let (d, v, ff) = (cfg.d_model, cfg.vocab_size, cfg.d_ff);
    let qkv_out = (cfg.n_head + 2 * cfg.n_kv_head) * cfg.head_dim();
    let fc_out = if gpt2 { ff } else { 2 * ff };
    let bias = |p: u32, n: usize| gpt2.then(|| vec_(p, n));
    // Norm gains near 1 so the test exercises them without degenerating.
    let gain_of = |p: u32, n: usize| vec_(p, n).iter().map(|x| 1.0 + x).collect::<Vec<_>>();
    let gain = |p: u32| gain_of(p, d);
    let hd = cfg.head_dim();
    let qk = |p: u32| cfg.qk_norm.then(|| (gain_of(p, hd), bias(p + 1, hd)));
    Weights {
        wte: mat(1, v, d),
        wpe: gpt2.then(|| mat(2, cfg.context, d)),
        ln1: (gain(3), bias(4, d)),
        qkv: (mat(5, d, qkv_out), bias(6, qkv_out)),
        proj: (mat(7, d, d), bias(8, d)),
        ln2: (gain(9), bias(10, d)),
        fc: (mat(11, d, fc_out), bias(12, fc_out)),
        down: (mat(13, ff, d), bias(14, d)),
        lnf: (gain(15), bias(16, d)),
        head: (!cfg.tie_embeddings).then(|| mat(17, d, v)),
        q_norm: qk(18),
        k_norm: qk(20),
    }
}

fn build(cfg: &ModelConfig, w: &Weights) -> Model<B> {
    let lin = |(m, b): &(Vec<Vec<f64>>, Option<Vec<f64>>)| Linear {
        weight: p2(m),
        bias: b.as_deref().map(p1),
    };
    let norm = |(g, b): &(Vec<f64>, Option<Vec<f64>>)| Norm {
        weight: p1(g),
        bias: b.as_deref().map(p1),
    };
    Model {
        wte: p2(&w.wte),
        wpe: w.wpe.as_deref().map(p2),
        h: vec![Block {
            ln_1: norm(&w.ln1),
            attn: Attention {
                qkv: lin(&w.qkv),
                proj: lin(&w.proj),
                q_norm: w.q_norm.as_ref().map(norm),
                k_norm: w.k_norm.as_ref().map(norm),
            },
            ln_2: norm(&w.ln2),
            mlp: Mlp {
                fc: lin(&w.fc),
                proj: lin(&w.down),
            },
        }],
        ln_f: norm(&w.lnf),
        lm_head: w.head.as_ref().map(|m| Linear {
            weight: p2(m),
            bias: None,
        }),
        config: cfg.clone(),
    }
}

fn affine(x: &[f64], (m, b): &(Vec<Vec<f64>>, Option<Vec<f64>>)) -> Vec<f64> {
    let out = m[0].len();
    (0..out)
        .map(|j| {
            let s: f64 = (0..x.len()).map(|i| x[i] * m[i][j]).sum();
            s + b.as_ref().map_or(0.0, |b| b[j])
        })
        .collect()
}

fn norm_ref(
    x: &[f64],
    (g, b): &(Vec<f64>, Option<Vec<f64>>),
    layer_norm: bool,
    eps: f64,
) -> Vec<f64> {
    let n = x.len() as f64;
    let mean = if layer_norm {
        x.iter().sum::<f64>() / n
    } else {
        0.0
    };
    let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    (0..x.len())
        .map(|i| (x[i] - mean) / (var + eps).sqrt() * g[i] + b.as_ref().map_or(0.0, |b| b[i]))
        .collect()
}

/// HF-style rotate-half RoPE of one head vector at position `pos`.
fn rope_ref(x: &[f64], pos: usize, theta: f64) -> Vec<f64> {
    let hd = x.len();
    let half = hd / 2;
    let mut out = vec![0.0; hd];
    for i in 0..half {
        let freq = 1.0 / theta.powf((2 * i) as f64 / hd as f64);
        let (s, c) = (pos as f64 * freq).sin_cos();
        out[i] = x[i] * c - x[i + half] * s;
        out[i + half] = x[i + half] * c + x[i] * s;
    }
    out
}

/// Logits `[t][vocab]` and the largest attention logit over heads and causal (query, key) pairs.
fn reference(cfg: &ModelConfig, w: &Weights, toks: &[usize]) -> (Vec<Vec<f64>>, f64) {
    let gpt2 = cfg.arch == Arch::Gpt2;
    let (d, nh, nkv, hd) = (cfg.d_model, cfg.n_head, cfg.n_kv_head, cfg.head_dim());
    let t = toks.len();
    let mut x: Vec<Vec<f64>> = toks
        .iter()
        .enumerate()
        .map(|(p, &tok)| {
            (0..d)
                .map(|i| w.wte[tok][i] + w.wpe.as_ref().map_or(0.0, |wpe| wpe[p][i]))
                .collect()
        })
        .collect();

    // Attention.
    let qkv: Vec<Vec<f64>> = x
        .iter()
        .map(|r| affine(&norm_ref(r, &w.ln1, gpt2, cfg.norm_eps), &w.qkv))
        .collect();
    // Query heads are 0..nh, key heads nh..nh+nkv; QK-norm (if any) comes before RoPE.
    let head = |p: usize, h: usize| -> Vec<f64> {
        let mut v = qkv[p][h * hd..(h + 1) * hd].to_vec();
        let qk = if h < nh { &w.q_norm } else { &w.k_norm };
        if let (Some(norm), true) = (qk, h < nh + nkv) {
            v = norm_ref(&v, norm, gpt2, cfg.norm_eps);
        }
        if gpt2 {
            v
        } else {
            rope_ref(&v, p, cfg.rope_theta)
        }
    };
    let mut attn = vec![vec![0.0; d]; t];
    let mut max_logit = f64::NEG_INFINITY;
    for h in 0..nh {
        let kvh = h / (nh / nkv);
        for p in 0..t {
            let q = head(p, h);
            let scores: Vec<f64> = (0..=p)
                .map(|s| {
                    let k = head(s, nh + kvh);
                    q.iter().zip(&k).map(|(a, b)| a * b).sum::<f64>() / (hd as f64).sqrt()
                })
                .collect();
            let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            max_logit = max_logit.max(m);
            let z: f64 = scores.iter().map(|s| (s - m).exp()).sum();
            for (s, sc) in scores.iter().enumerate() {
                let prob = (sc - m).exp() / z;
                let vbase = (nh + nkv + kvh) * hd;
                for j in 0..hd {
                    attn[p][h * hd + j] += prob * qkv[s][vbase + j];
                }
            }
        }
    }
    for (row, a) in x.iter_mut().zip(&attn) {
        let o = affine(a, &w.proj);
        for i in 0..d {
            row[i] += o[i];
        }
    }

    // MLP.
    let ff = cfg.d_ff;
    for row in x.iter_mut() {
        let a = affine(&norm_ref(row, &w.ln2, gpt2, cfg.norm_eps), &w.fc);
        let hidden: Vec<f64> = if gpt2 {
            let c = (2.0 / std::f64::consts::PI).sqrt();
            a.iter()
                .map(|&u| 0.5 * u * (1.0 + (c * (u + 0.044715 * u.powi(3))).tanh()))
                .collect()
        } else {
            (0..ff)
                .map(|j| a[j] / (1.0 + (-a[j]).exp()) * a[ff + j])
                .collect()
        };
        let o = affine(&hidden, &w.down);
        for i in 0..d {
            row[i] += o[i];
        }
    }

    let logits = x
        .iter()
        .map(|r| {
            let y = norm_ref(r, &w.lnf, gpt2, cfg.norm_eps);
            match &w.head {
                Some(hm) => affine(&y, &(hm.clone(), None)),
                None => w
                    .wte
                    .iter()
                    .map(|e| e.iter().zip(&y).map(|(a, b)| a * b).sum())
                    .collect(),
            }
        })
        .collect();
    (logits, max_logit)
}

fn check_against_reference(cfg: ModelConfig) {
    cfg.validate().unwrap();
    let w = weights(&cfg);
    let model = build(&cfg, &w);
    let toks = [3usize, 0, 4];
    let input = tokens(&[toks.iter().map(|&t| t as i64).collect()]);
    let got = values(model.forward(input));
    let (want, _) = reference(&cfg, &w, &toks);
    let v = cfg.vocab_size;
    for (p, row) in want.iter().enumerate() {
        for (j, &r) in row.iter().enumerate() {
            let g = got[p * v + j] as f64;
            assert!(
                (g - r).abs() < 1e-5,
                "{cfg:?}\nposition {p} logit {j}: got {g}, want {r}"
            );
        }
    }
}

#[test]
fn gpt2_forward_matches_hand_computed_reference() {
    check_against_reference(ModelConfig::gpt2(1, 2, 4, 4, 5));
    let untied = ModelConfig {
        tie_embeddings: false,
        ..ModelConfig::gpt2(1, 2, 4, 4, 5)
    };
    check_against_reference(untied);
}

#[test]
fn llama_forward_matches_hand_computed_reference() {
    // Two query heads sharing one KV head (GQA), SwiGLU width 6, a small θ so RoPE visibly rotates.
    let cfg = ModelConfig {
        rope_theta: 3.0,
        ..ModelConfig::llama(1, 2, 1, 4, 6, 4, 5)
    };
    check_against_reference(cfg.clone());
    check_against_reference(ModelConfig {
        smooth_swiglu: true,
        ..cfg.clone()
    });
    check_against_reference(ModelConfig {
        n_kv_head: 2,
        tie_embeddings: true,
        ..cfg
    });
}

#[test]
fn qk_norm_forward_matches_hand_computed_reference() {
    // GPT-2: LayerNorm (gain and bias) on each head; Llama: RMSNorm (gain) before RoPE, with GQA.
    let gpt2 = ModelConfig {
        qk_norm: true,
        ..ModelConfig::gpt2(1, 2, 4, 4, 5)
    };
    check_against_reference(gpt2);
    let llama = ModelConfig {
        rope_theta: 3.0,
        qk_norm: true,
        ..ModelConfig::llama(1, 2, 1, 4, 6, 4, 5)
    };
    check_against_reference(llama);
}

#[test]
fn qk_norm_keeps_causality() {
    for arch in [Arch::Gpt2, Arch::Llama] {
        let cfg = ModelConfig {
            qk_norm: true,
            ..tiny(arch)
        };
        let model = cfg.init::<B>(&Default::default());
        let seq: Vec<i64> = (0..12).map(|i| (i * 5 + 1) % 64).collect();
        let t0 = 5;
        let mut changed = seq.clone();
        changed[t0] = (changed[t0] + 9) % 64;
        let a = values(model.forward(tokens(&[seq])));
        let b = values(model.forward(tokens(&[changed])));
        let v = cfg.vocab_size;
        assert_eq!(a[..t0 * v], b[..t0 * v], "{arch}: the past changed");
        assert_ne!(
            a[t0 * v..],
            b[t0 * v..],
            "{arch}: the present did not change"
        );
    }
}

/// The loss with z-loss and every diagnostic, against the f64 reference: `log Z` of each position
/// is `ln Σ exp` of the reference logits, the cross-entropy `log Z − logit[target]`.
#[test]
fn loss_and_diagnostics_match_hand_computed_reference() {
    let gpt2 = ModelConfig::gpt2(1, 2, 4, 4, 5);
    let llama = ModelConfig {
        rope_theta: 3.0,
        qk_norm: true,
        ..ModelConfig::llama(1, 2, 1, 4, 6, 4, 5)
    };
    for (cfg, c) in [
        (gpt2.clone(), 0.0),
        (gpt2, 0.25),
        (llama.clone(), 0.0),
        (llama, 1e-4),
    ] {
        let cfg = ModelConfig { z_loss: c, ..cfg };
        let w = weights(&cfg);
        let model = build(&cfg, &w);
        let toks = [3usize, 0, 4];
        let targets = [1usize, 4, 2];
        let (logits, max_logit) = reference(&cfg, &w, &toks);
        let log_z: Vec<f64> = logits
            .iter()
            .map(|row| row.iter().map(|x| x.exp()).sum::<f64>().ln())
            .collect();
        let n = toks.len() as f64;
        let ce: f64 = (0..toks.len())
            .map(|p| log_z[p] - logits[p][targets[p]])
            .sum::<f64>()
            / n;
        let want = ce + c * log_z.iter().map(|z| z * z).sum::<f64>() / n;

        let as_row = |v: &[usize]| tokens(&[v.iter().map(|&t| t as i64).collect()]);
        let (loss, diag) = model.loss_with_diagnostics(as_row(&toks), as_row(&targets));
        let got = loss.into_scalar() as f64;
        assert!(
            (got - want).abs() < 1e-5,
            "{cfg:?}: loss {got}, want {want}"
        );
        let plain = model.loss(as_row(&toks), as_row(&targets)).into_scalar() as f64;
        assert_eq!(plain, got, "loss and loss_with_diagnostics must agree");

        assert_eq!(diag.max_attn_logit.len(), 1);
        let close = |g: f32, r: f64, what: &str| {
            assert!((g as f64 - r).abs() < 1e-5, "{cfg:?}: {what} {g}, want {r}");
        };
        close(diag.max_attn_logit[0], max_logit, "max attention logit");
        close(diag.log_z_mean, log_z.iter().sum::<f64>() / n, "mean log Z");
        let z_max = log_z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        close(diag.log_z_max, z_max, "max log Z");
    }
}
