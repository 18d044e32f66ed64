#!/usr/bin/python3
"""Forward and forward+backward throughput of a small Llama in plain PyTorch eager mode.

The same configuration, batch and thread count as bench/model_bench.cpp (the C++ runtime), so the
two figures compare directly: hidden 256, intermediate 688, 4 layers, 8 query / 4 key-value heads,
vocabulary 8000, RMSNorm eps 1e-5, SiLU MLP, RoPE theta 500000 with llama3 scaling (factor 8,
low/high frequency factors 1/4, original context 64), untied head, weights N(0, 0.02^2), norms 1.
The model is written the usual eager way: RMSNorm in f32, rotate-half RoPE, key/value heads
repeated to the query heads, an additive causal mask, softmax in f32, mean token cross-entropy.

Usage: model_eager.py [--threads 2] [--batch 4] [--seq 128] [--iters 5] [--bf16] [--json]
"""
import argparse
import json
import math
import sys
import time

import torch
import torch.nn.functional as F

CFG = dict(hidden=256, inter=688, layers=4, heads=8, kv_heads=4, vocab=8000, eps=1e-5, theta=500000.0,
           rope_factor=8.0, low_freq=1.0, high_freq=4.0, orig_ctx=64)


def rope_inv_freq(c, head_dim):
    inv = 1.0 / (c["theta"] ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    wavelen = 2 * math.pi / inv
    long_wl = c["orig_ctx"] / c["low_freq"]   # longer than this: scaled down fully
    short_wl = c["orig_ctx"] / c["high_freq"]  # shorter than this: unchanged
    scaled = torch.where(wavelen > long_wl, inv / c["rope_factor"], inv)
    t = (c["orig_ctx"] / wavelen - c["low_freq"]) / (c["high_freq"] - c["low_freq"])
    blend = (1 - t) * scaled / c["rope_factor"] + t * scaled
    middle = (wavelen >= short_wl) & (wavelen <= long_wl)
    return torch.where(middle, blend, scaled).float()


class Llama:
    def __init__(self, c, dtype, seed=1):
        g = torch.Generator().manual_seed(seed)
        h, hd = c["hidden"], c["hidden"] // c["heads"]
        self.c, self.hd, self.dtype = c, hd, dtype

        def w(*shape):
            return (torch.randn(*shape, generator=g) * 0.02).to(dtype).requires_grad_()

        def ones(n):
            return torch.ones(n, dtype=dtype).requires_grad_()

        self.embed = w(c["vocab"], h)
        self.layers = []
        for _ in range(c["layers"]):
            self.layers.append(dict(
                ln1=ones(h), q=w(c["heads"] * hd, h), k=w(c["kv_heads"] * hd, h), v=w(c["kv_heads"] * hd, h),
                o=w(h, c["heads"] * hd), ln2=ones(h), gate=w(c["inter"], h), up=w(c["inter"], h),
                down=w(h, c["inter"])))
        self.norm = ones(h)
        self.head = w(c["vocab"], h)
        self.inv_freq = rope_inv_freq(c, hd)

    def params(self):
        ps = [self.embed, self.norm, self.head]
        for L in self.layers:
            ps += list(L.values())
        return ps

    def rms(self, x, w):
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.c["eps"])
        return w * xf.to(x.dtype)

    @staticmethod
    def rot(x):
        a, b = x.chunk(2, dim=-1)
        return torch.cat((-b, a), dim=-1)

    def forward(self, ids):
        c, hd = self.c, self.hd
        B, T = ids.shape
        pos = torch.arange(T, dtype=torch.float32)
        f = pos[:, None] * self.inv_freq[None, :]
        emb = torch.cat((f, f), -1)
        cos, sin = emb.cos()[None, None], emb.sin()[None, None]
        mask = torch.full((T, T), float("-inf")).triu(1)[None, None]
        rep = c["heads"] // c["kv_heads"]
        x = F.embedding(ids, self.embed)
        for L in self.layers:
            hn = self.rms(x, L["ln1"])
            q = F.linear(hn, L["q"]).view(B, T, c["heads"], hd).transpose(1, 2).float()
            k = F.linear(hn, L["k"]).view(B, T, c["kv_heads"], hd).transpose(1, 2).float()
            v = F.linear(hn, L["v"]).view(B, T, c["kv_heads"], hd).transpose(1, 2).float()
            q = q * cos + self.rot(q) * sin
            k = k * cos + self.rot(k) * sin
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
            s = q @ k.transpose(-1, -2) / math.sqrt(hd) + mask
            p = torch.softmax(s, dim=-1)
            ctx = (p @ v).transpose(1, 2).reshape(B, T, c["heads"] * hd).to(self.dtype)
            x = x + F.linear(ctx, L["o"])
            hm = self.rms(x, L["ln2"])
            x = x + F.linear(F.silu(F.linear(hm, L["gate"])) * F.linear(hm, L["up"]), L["down"])
        x = self.rms(x, self.norm)
        return F.linear(x, self.head).float()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    dtype = torch.bfloat16 if a.bf16 else torch.float32
    m = Llama(CFG, dtype)
    n_params = sum(p.numel() for p in m.params())
    ids = torch.randint(CFG["vocab"], (a.batch, a.seq), generator=torch.Generator().manual_seed(0))

    def step(backward):
        for p in m.params():
            p.grad = None
        logits = m.forward(ids)
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, CFG["vocab"]), ids[:, 1:].reshape(-1))
        if backward:
            loss.backward()
        return loss.item()

    step(True)  # warm-up
    out = {"params": n_params, "batch": a.batch, "seq": a.seq, "threads": a.threads,
           "dtype": "bf16" if a.bf16 else "f32"}
    for backward in (False, True):
        t0 = time.perf_counter()
        with torch.set_grad_enabled(backward):
            for _ in range(a.iters):
                step(backward)
        tps = a.batch * a.seq * a.iters / (time.perf_counter() - t0)
        key = "forward_backward" if backward else "forward"
        out[key] = tps
        if not a.json:
            print(f"{'forward+backward' if backward else 'forward':<17} params={n_params} batch={a.batch} "
                  f"seq={a.seq} threads={a.threads} dtype={out['dtype']}: {tps:.0f} tokens/s")
    if a.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
