"""Tiny random Hugging Face checkpoints, and an independent numpy forward pass of
GPT2LMHeadModel / LlamaForCausalLM for tests/hf.rs.

    hf_reference.py make DIR VARIANT   write config.json and weights for VARIANT into DIR
    hf_reference.py logits DIR         read DIR as transformers would and write
                                       DIR/reference.safetensors: `tokens` [2, T] int64 and
                                       `logits` [2, T, vocab] float64

The forward pass transcribes transformers' modeling_gpt2.py and modeling_llama.py (eager
attention, no cache, no dropout) in float64: GPT-2's Conv1D computes x @ W + b with W [in, out];
nn.Linear computes x @ W.T with W [out, in]; LlamaRotaryEmbedding uses
inv_freq = 1 / theta^(arange(0, hd, 2) / hd), emb = cat(freqs, freqs) and rotate_half; repeat_kv
repeats each KV head n_rep times consecutively. Missing config fields take the defaults of
GPT2Config / LlamaConfig. Needs numpy and safetensors.
"""

import json
import os
import sys

import numpy as np
from safetensors.numpy import load_file, save_file

VARIANTS = {
    # The layout of the original `gpt2` repository: no `transformer.` prefix, the causal-mask
    # buffers stored, tied head, n_inner set.
    "gpt2": dict(
        config=dict(model_type="gpt2", architectures=["GPT2LMHeadModel"], vocab_size=40,
                    n_positions=12, n_embd=16, n_layer=2, n_head=2, n_inner=24,
                    activation_function="gelu_new", layer_norm_epsilon=1e-5),
        prefix="", buffers=True, dtype=np.float32, shards=1),
    # What GPT2LMHeadModel.save_pretrained writes with an untied head, in two shards.
    "gpt2-untied-sharded": dict(
        config=dict(model_type="gpt2", architectures=["GPT2LMHeadModel"], vocab_size=33,
                    n_positions=10, n_embd=12, n_layer=2, n_head=3,
                    activation_function="gelu_pytorch_tanh", layer_norm_epsilon=1e-4,
                    tie_word_embeddings=False),
        prefix="transformer.", buffers=False, dtype=np.float32, shards=2),
    # Grouped-query attention 4:2, untied, a small rope_theta so positions matter, half precision.
    "llama-gqa": dict(
        config=dict(model_type="llama", architectures=["LlamaForCausalLM"], vocab_size=37,
                    hidden_size=16, intermediate_size=20, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, hidden_act="silu",
                    max_position_embeddings=12, rms_norm_eps=1e-5, rope_theta=50.0,
                    tie_word_embeddings=False, attention_bias=False, mlp_bias=False),
        prefix="", buffers=False, dtype=np.float16, shards=1),
    # Tied Llama relying on LlamaConfig's defaults (MHA, rms_norm_eps 1e-6, rope_theta 1e4),
    # with the RoPE buffers old checkpoints carry, in three shards.
    "llama-tied": dict(
        config=dict(model_type="llama", vocab_size=29, hidden_size=12, intermediate_size=18,
                    num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=9,
                    tie_word_embeddings=True),
        prefix="", buffers=True, dtype=np.float32, shards=3),
}

GPT2_DEFAULTS = dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12,
                     n_inner=None, activation_function="gelu_new", layer_norm_epsilon=1e-5,
                     tie_word_embeddings=True)
LLAMA_DEFAULTS = dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008,
                      num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=None,
                      hidden_act="silu", max_position_embeddings=2048, rms_norm_eps=1e-6,
                      rope_theta=10000.0, tie_word_embeddings=False)


def with_defaults(cfg):
    defaults = GPT2_DEFAULTS if cfg["model_type"] == "gpt2" else LLAMA_DEFAULTS
    out = dict(defaults)
    out.update({k: v for k, v in cfg.items() if v is not None})
    return out


# ---- making checkpoints ---------------------------------------------------------------------

def random_weights(cfg, rng):
    c = with_defaults(cfg)
    w = lambda *shape: rng.normal(0.0, 0.3, shape)
    gain = lambda n: 1.0 + rng.normal(0.0, 0.2, n)
    bias = lambda n: rng.normal(0.0, 0.1, n)
    t = {}
    if c["model_type"] == "gpt2":
        d, ff = c["n_embd"], c["n_inner"] or 4 * c["n_embd"]
        t["wte.weight"] = w(c["vocab_size"], d)
        t["wpe.weight"] = w(c["n_positions"], d)
        for i in range(c["n_layer"]):
            p = f"h.{i}."
            for ln in ("ln_1", "ln_2"):
                t[p + ln + ".weight"], t[p + ln + ".bias"] = gain(d), bias(d)
            for name, (n_in, n_out) in {"attn.c_attn": (d, 3 * d), "attn.c_proj": (d, d),
                                        "mlp.c_fc": (d, ff), "mlp.c_proj": (ff, d)}.items():
                t[p + name + ".weight"], t[p + name + ".bias"] = w(n_in, n_out), bias(n_out)
        t["ln_f.weight"], t["ln_f.bias"] = gain(d), bias(d)
    else:
        d, ff = c["hidden_size"], c["intermediate_size"]
        nh = c["num_attention_heads"]
        nkv = c["num_key_value_heads"] or nh
        hd = d // nh
        t["model.embed_tokens.weight"] = w(c["vocab_size"], d)
        for i in range(c["num_hidden_layers"]):
            p = f"model.layers.{i}."
            t[p + "input_layernorm.weight"] = gain(d)
            t[p + "post_attention_layernorm.weight"] = gain(d)
            t[p + "self_attn.q_proj.weight"] = w(nh * hd, d)
            t[p + "self_attn.k_proj.weight"] = w(nkv * hd, d)
            t[p + "self_attn.v_proj.weight"] = w(nkv * hd, d)
            t[p + "self_attn.o_proj.weight"] = w(d, nh * hd)
            t[p + "mlp.gate_proj.weight"] = w(ff, d)
            t[p + "mlp.up_proj.weight"] = w(ff, d)
            t[p + "mlp.down_proj.weight"] = w(d, ff)
        t["model.norm.weight"] = gain(d)
    if not c["tie_word_embeddings"]:
        t["lm_head.weight"] = w(c["vocab_size"], d)
    return t


def make(out_dir, variant):
    spec = VARIANTS[variant]
    cfg = spec["config"]
    rng = np.random.default_rng(sum(map(ord, variant)))
    tensors = {k: v.astype(spec["dtype"]) for k, v in random_weights(cfg, rng).items()}
    c = with_defaults(cfg)
    if spec["buffers"]:
        if c["model_type"] == "gpt2":
            n = c["n_positions"]
            mask = np.tril(np.ones((n, n), dtype=np.uint8)).reshape(1, 1, n, n)
            for i in range(c["n_layer"]):
                tensors[f"h.{i}.attn.bias"] = mask.astype(np.float32)
        else:
            hd = c["hidden_size"] // c["num_attention_heads"]
            inv = 1.0 / c["rope_theta"] ** (np.arange(0, hd, 2) / hd)
            for i in range(c["num_hidden_layers"]):
                tensors[f"model.layers.{i}.self_attn.rotary_emb.inv_freq"] = inv.astype(np.float32)
    tensors = {(spec["prefix"] + k if k != "lm_head.weight" else k): v
               for k, v in tensors.items()}
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    names = sorted(tensors)
    shards = spec["shards"]
    if shards == 1:
        save_file(tensors, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
        return
    weight_map = {}
    for s in range(shards):
        file = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: tensors[n] for n in names[s::shards]}
        save_file(part, os.path.join(out_dir, file), metadata={"format": "pt"})
        weight_map.update({n: file for n in part})
    index = {"metadata": {"total_size": int(sum(t.nbytes for t in tensors.values()))},
             "weight_map": weight_map}
    with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f, indent=2)


# ---- reading checkpoints and the forward pass -----------------------------------------------

def read(ckpt):
    with open(os.path.join(ckpt, "config.json")) as f:
        cfg = with_defaults(json.load(f))
    single = os.path.join(ckpt, "model.safetensors")
    if os.path.exists(single):
        files = [single]
    else:
        with open(os.path.join(ckpt, "model.safetensors.index.json")) as f:
            files = [os.path.join(ckpt, n) for n in sorted(set(json.load(f)["weight_map"].values()))]
    w = {}
    for path in files:
        w.update(load_file(path))
    # GPT2LMHeadModel accepts its base model's names with or without `transformer.`.
    w = {(k[len("transformer."):] if k.startswith("transformer.") else k): v.astype(np.float64)
         for k, v in w.items()}
    return cfg, w


def softmax_causal(scores):
    t = scores.shape[-1]
    future = np.triu(np.ones((t, t), dtype=bool), 1)
    scores = np.where(future, -np.inf, scores)
    e = np.exp(scores - scores.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def gelu_new(x):
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))


def gpt2_logits(c, w, ids):
    assert c["activation_function"] in ("gelu_new", "gelu_pytorch_tanh")
    b, t = ids.shape
    d, nh = c["n_embd"], c["n_head"]
    hd = d // nh
    eps = c["layer_norm_epsilon"]
    heads = lambda x: x.reshape(b, t, nh, hd).transpose(0, 2, 1, 3)
    x = w["wte.weight"][ids] + w["wpe.weight"][np.arange(t)]
    for i in range(c["n_layer"]):
        p = f"h.{i}."
        conv1d = lambda x, n: x @ w[p + n + ".weight"] + w[p + n + ".bias"]
        a = layer_norm(x, w[p + "ln_1.weight"], w[p + "ln_1.bias"], eps)
        q, k, v = map(heads, np.split(conv1d(a, "attn.c_attn"), 3, axis=-1))
        probs = softmax_causal(q @ k.transpose(0, 1, 3, 2) / np.sqrt(hd))
        o = (probs @ v).transpose(0, 2, 1, 3).reshape(b, t, d)
        x = x + conv1d(o, "attn.c_proj")
        m = layer_norm(x, w[p + "ln_2.weight"], w[p + "ln_2.bias"], eps)
        x = x + conv1d(gelu_new(conv1d(m, "mlp.c_fc")), "mlp.c_proj")
    x = layer_norm(x, w["ln_f.weight"], w["ln_f.bias"], eps)
    head = w["wte.weight"] if c["tie_word_embeddings"] else w["lm_head.weight"]
    return x @ head.T


def rms_norm(x, weight, eps):
    return x / np.sqrt((x ** 2).mean(-1, keepdims=True) + eps) * weight


def rotate_half(x):
    h = x.shape[-1] // 2
    return np.concatenate([-x[..., h:], x[..., :h]], axis=-1)


def llama_logits(c, w, ids):
    assert c["hidden_act"] == "silu"
    b, t = ids.shape
    d, nh = c["hidden_size"], c["num_attention_heads"]
    nkv = c["num_key_value_heads"] or nh
    hd = d // nh
    eps = c["rms_norm_eps"]
    inv_freq = 1.0 / c["rope_theta"] ** (np.arange(0, hd, 2) / hd)
    freqs = np.outer(np.arange(t), inv_freq)
    emb = np.concatenate([freqs, freqs], axis=-1)
    cos, sin = np.cos(emb), np.sin(emb)
    rope = lambda x: x * cos + rotate_half(x) * sin
    heads = lambda x, n: x.reshape(b, t, n, hd).transpose(0, 2, 1, 3)
    x = w["model.embed_tokens.weight"][ids]
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        lin = lambda x, n: x @ w[p + n + ".weight"].T
        a = rms_norm(x, w[p + "input_layernorm.weight"], eps)
        q = rope(heads(lin(a, "self_attn.q_proj"), nh))
        k = rope(heads(lin(a, "self_attn.k_proj"), nkv))
        v = heads(lin(a, "self_attn.v_proj"), nkv)
        k, v = np.repeat(k, nh // nkv, axis=1), np.repeat(v, nh // nkv, axis=1)
        probs = softmax_causal(q @ k.transpose(0, 1, 3, 2) / np.sqrt(hd))
        o = (probs @ v).transpose(0, 2, 1, 3).reshape(b, t, nh * hd)
        x = x + lin(o, "self_attn.o_proj")
        m = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        gate = lin(m, "mlp.gate_proj")
        x = x + lin(gate / (1.0 + np.exp(-gate)) * lin(m, "mlp.up_proj"), "mlp.down_proj")
    x = rms_norm(x, w["model.norm.weight"], eps)
    head = w["model.embed_tokens.weight"] if c["tie_word_embeddings"] else w["lm_head.weight"]
    return x @ head.T


def logits(ckpt):
    c, w = read(ckpt)
    context = c["n_positions"] if c["model_type"] == "gpt2" else c["max_position_embeddings"]
    ids = np.random.default_rng(1234).integers(0, c["vocab_size"], size=(2, min(context, 7)))
    forward = gpt2_logits if c["model_type"] == "gpt2" else llama_logits
    out = {"tokens": ids.astype(np.int64), "logits": forward(c, w, ids)}
    save_file(out, os.path.join(ckpt, "reference.safetensors"))


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "logits":
        logits(sys.argv[2])
    else:
        sys.exit(__doc__)
