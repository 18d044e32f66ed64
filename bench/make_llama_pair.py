#!/usr/bin/python3
"""Writes a synthetic (base, post) pair of BF16 Llama checkpoints of any Llama shape, GQA included,
with a config.json the model runtime loads (for the streamed-analysis benchmark).

Weights: base ~ N(0, 0.02^2) (norms 1), post = base + N(0, noise^2), both rounded to BF16. To make
8B parameters in minutes on two cores, each tensor is cut from a pool of 2^24 normal draws at
offsets drawn per chunk from a PCG64 stream keyed by (seed, side, tensor name): the values are
random-looking and reproducible, not independent across the whole model (enough for timing and
memory, which is what the pair is for). One shard per decoder layer plus one for the embeddings
and one for the head, with model.safetensors.index.json.

Usage: make_llama_pair.py --out DIR [--layers 32] [--hidden 4096] [--heads 32] [--kv-heads 8]
                          [--inter 14336] [--vocab 128256] [--noise 0.001] [--seed 0]
"""
import argparse
import hashlib
import json
import os
import struct
import sys

import numpy as np

POOL = 1 << 24
CHUNK = 1 << 22


def tensors(a):
    hd = a.hidden // a.heads
    out = [[("model.embed_tokens.weight", (a.vocab, a.hidden), "w")]]
    for i in range(a.layers):
        p = f"model.layers.{i}."
        out.append([
            (p + "input_layernorm.weight", (a.hidden,), "norm"),
            (p + "self_attn.q_proj.weight", (a.heads * hd, a.hidden), "w"),
            (p + "self_attn.k_proj.weight", (a.kv_heads * hd, a.hidden), "w"),
            (p + "self_attn.v_proj.weight", (a.kv_heads * hd, a.hidden), "w"),
            (p + "self_attn.o_proj.weight", (a.hidden, a.heads * hd), "w"),
            (p + "post_attention_layernorm.weight", (a.hidden,), "norm"),
            (p + "mlp.gate_proj.weight", (a.inter, a.hidden), "w"),
            (p + "mlp.up_proj.weight", (a.inter, a.hidden), "w"),
            (p + "mlp.down_proj.weight", (a.hidden, a.inter), "w"),
        ])
    out.append([("model.norm.weight", (a.hidden,), "norm"), ("lm_head.weight", (a.vocab, a.hidden), "w")])
    return out


def to_bf16(x):
    u = x.astype(np.float32).view(np.uint32)
    r = ((u >> 16) & 1) + 0x7FFF
    return ((u + r) >> 16).astype(np.uint16)


def stream(seed, side, name):
    h = hashlib.sha256(f"{seed}/{side}/{name}".encode()).digest()
    return np.random.Generator(np.random.PCG64(int.from_bytes(h[:16], "little")))


def write_shard(path, group, a, pools):
    header, off = {}, 0
    for name, shape, _ in group:
        n = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * ((8 - len(hb) % 8) % 8)
    base_pool, noise_pool = pools
    with open(path + ".base.tmp", "wb") as fb, open(path + ".post.tmp", "wb") as fp:
        for f in (fb, fp):
            f.write(struct.pack("<Q", len(hb)))
            f.write(hb)
        for name, shape, kind in group:
            n = int(np.prod(shape))
            rb, rp = stream(a.seed, "base", name), stream(a.seed, "post", name)
            for at in range(0, n, CHUNK):
                c = min(CHUNK, n - at)
                if kind == "norm":
                    b = np.ones(c, np.float32)
                else:
                    o = int(rb.integers(0, POOL - c + 1))
                    b = base_pool[o:o + c]
                o = int(rp.integers(0, POOL - c + 1))
                q = b + noise_pool[o:o + c]
                fb.write(to_bf16(b).tobytes())
                fp.write(to_bf16(q).tobytes())
    return off


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--inter", type=int, default=14336)
    ap.add_argument("--vocab", type=int, default=128256)
    ap.add_argument("--noise", type=float, default=0.001)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    groups = tensors(a)
    params = sum(int(np.prod(s)) for g in groups for _, s, _ in g)
    key = {k: getattr(a, k) for k in ("layers", "hidden", "heads", "kv_heads", "inter", "vocab", "noise", "seed")}
    stamp = os.path.join(a.out, "pair.json")
    if os.path.exists(stamp) and json.load(open(stamp)).get("args") == key:
        print(f"reusing {a.out} ({params / 1e9:.2f}B parameters)")
        return
    g = np.random.Generator(np.random.PCG64(a.seed))
    pools = ((g.standard_normal(POOL, dtype=np.float32) * 0.02),
             (g.standard_normal(POOL, dtype=np.float32) * a.noise))
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
        "hidden_size": a.hidden, "intermediate_size": a.inter, "num_hidden_layers": a.layers,
        "num_attention_heads": a.heads, "num_key_value_heads": a.kv_heads, "head_dim": a.hidden // a.heads,
        "vocab_size": a.vocab, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192},
        "max_position_embeddings": 131072, "tie_word_embeddings": False, "attention_bias": False,
        "mlp_bias": False, "torch_dtype": "bfloat16", "bos_token_id": 128000, "eos_token_id": 128001,
    }
    for side in ("base", "post"):
        os.makedirs(os.path.join(a.out, side), exist_ok=True)
    n = len(groups)
    wm, total = {}, 0
    for i, grp in enumerate(groups):
        fname = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        tmp = os.path.join(a.out, fname)
        total += write_shard(tmp, grp, a, pools)
        for side in ("base", "post"):
            os.replace(f"{tmp}.{side}.tmp", os.path.join(a.out, side, fname))
        for name, _, _ in grp:
            wm[name] = fname
        print(f"\r{i + 1}/{n} shards", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    for side in ("base", "post"):
        d = os.path.join(a.out, side)
        json.dump(config, open(os.path.join(d, "config.json"), "w"), indent=2)
        json.dump({"metadata": {"total_size": total}, "weight_map": wm},
                  open(os.path.join(d, "model.safetensors.index.json"), "w"), indent=2)
    json.dump({"args": key, "parameters": params}, open(stamp, "w"))
    print(f"wrote {a.out}: {params / 1e9:.2f}B parameters, {total / 1e9:.1f} GB per side")


if __name__ == "__main__":
    main()
