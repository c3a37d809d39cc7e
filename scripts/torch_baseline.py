"""PyTorch eager baseline for `fp8 bench train --model gpt2-mini` (issue: training throughput).

Same model as fp8's gpt2-mini preset (GPT-2: 4 layers, 4 heads, d 128, ctx 128, vocab 256,
tied embeddings, pre-LN, GELU-tanh MLP, no dropout), the same step (AdamW, global-norm clip 1.0,
batch 16, seq 128), random tokens. Prints one JSON line per attention variant:
`manual` writes the score/value products as explicit matmuls (as fp8's model does, so that
a recipe can quantize them); `sdpa` uses torch's fused scaled_dot_product_attention.
`--attention manual` (or `sdpa`) runs one variant only. `scripts/bench_vs_torch.sh` alternates
this with `fp8 bench train` and prints the ratio.

    python scripts/torch_baseline.py --threads 2 --steps 16 --warmup 2
"""
import argparse, json, math, time
import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, d, h, sdpa):
        super().__init__()
        self.h, self.sdpa = h, sdpa
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def attn(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=2)
        q, k, v = (z.view(b, t, self.h, d // self.h).transpose(1, 2) for z in (q, k, v))
        if self.sdpa:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            s = (q @ k.transpose(-2, -1)) / math.sqrt(d // self.h)
            mask = torch.ones(t, t, dtype=torch.bool).tril()
            s = s.masked_fill(~mask, float("-inf"))
            y = F.softmax(s, dim=-1) @ v
        return self.proj(y.transpose(1, 2).reshape(b, t, d))

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.fc2(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class Gpt2(nn.Module):
    def __init__(self, layers=4, heads=4, d=128, ctx=128, vocab=256, sdpa=False):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(ctx, d)
        self.blocks = nn.ModuleList(Block(d, heads, sdpa) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)

    def forward(self, idx, targets):
        t = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(t))
        for blk in self.blocks:
            x = blk(x)
        logits = self.ln_f(x) @ self.wte.weight.T
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))


def bench(sdpa, args):
    torch.manual_seed(0)
    model = Gpt2(sdpa=sdpa)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)
    idx = torch.randint(0, 256, (args.batch, args.seq + 1))
    x, y = idx[:, :-1], idx[:, 1:]

    def step():
        loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss.item()

    for _ in range(args.warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    dt = time.perf_counter() - t0
    tokens = args.steps * args.batch * args.seq
    return {"attention": "sdpa" if sdpa else "manual", "threads": torch.get_num_threads(),
            "step_ms": 1e3 * dt / args.steps, "tokens_per_s": tokens / dt,
            "torch": torch.__version__}


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--attention", choices=("both", "manual", "sdpa"), default="both")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    variants = {"both": (False, True), "manual": (False,), "sdpa": (True,)}[args.attention]
    for sdpa in variants:
        print(json.dumps(bench(sdpa, args)), flush=True)
