#!/usr/bin/python3
"""Writes a synthetic BF16 base and K fine-tunes of it (Llama-shaped, as bench/make_pair.py).

The base is make_pair.py's base for the same arguments; fine-tune k (1..K) adds its own
N(0, noise^2) delta drawn from the stream keyed by (seed, "delta<k>", tensor name), so the
fine-tunes' task vectors are independent (their signs disagree as real fine-tunes' do).

Usage: make_merge.py --out DIR [--models 3] [--size 2GB] [--hidden 4096] [--inter 14336]
                     [--vocab 32000] [--shard-size 1GB] [--noise 0.001] [--seed 0] [--matrices N]
Writes DIR/base and DIR/ft1..ftK (DIR/merge.json records the arguments; an identical existing
set is reused unless --force).
"""
import argparse
import json
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_pair import chunks, from_bf16, header_bytes, layout, parse_size, stream, to_bf16  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--models", type=int, default=3)
    ap.add_argument("--size", default="2GB")
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--inter", type=int, default=14336)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--shard-size", default="1GB")
    ap.add_argument("--noise", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--matrices", type=int, default=0)
    ap.add_argument("--force", action="store_true")
    a = ap.parse_args()
    target, shard_limit = parse_size(a.size), parse_size(a.shard_size)
    if a.matrices > 0:
        n_layers = a.matrices
        tensors = [(f"model.layers.{i}.mlp.down_proj.weight", (a.hidden, a.inter), "w") for i in range(a.matrices)]
    else:
        n_layers, tensors = layout(a.hidden, a.inter, a.vocab, target)
    desc = dict(vars(a))
    desc.pop("force")
    desc.pop("out")
    desc["layers"] = n_layers
    meta = os.path.join(a.out, "merge.json")
    if not a.force and os.path.exists(meta):
        with open(meta) as f:
            if json.load(f) == desc:
                print(f"reusing {a.out} ({n_layers} layers)")
                return 0
    sides = ["base"] + [f"ft{k}" for k in range(1, a.models + 1)]
    for s in sides:
        shutil.rmtree(os.path.join(a.out, s), ignore_errors=True)
    if os.path.exists(meta):
        os.remove(meta)
    shards, cur, cur_bytes = [], [], 0
    for t in tensors:
        nb = 2 * int(np.prod(t[1]))
        if cur and cur_bytes + nb > shard_limit:
            shards.append(cur)
            cur, cur_bytes = [], 0
        cur.append(t)
        cur_bytes += nb
    shards.append(cur)
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": a.hidden,
              "intermediate_size": a.inter, "num_hidden_layers": n_layers,
              "num_attention_heads": max(1, a.hidden // 128), "num_key_value_heads": max(1, a.hidden // 128),
              "vocab_size": a.vocab, "rms_norm_eps": 1e-5, "hidden_act": "silu", "rope_theta": 10000.0,
              "max_position_embeddings": 4096, "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
    for s in sides:
        os.makedirs(os.path.join(a.out, s), exist_ok=True)
        with open(os.path.join(a.out, s, "config.json"), "w") as f:
            json.dump(config, f, indent=2)
    weight_map, total = {}, 0
    for i, entries in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        hdr = header_bytes(entries)
        files = [open(os.path.join(a.out, s, fname), "wb") for s in sides]
        for f in files:
            f.write(hdr)
        for name, shape, kind in entries:
            numel = int(np.prod(shape))
            gb = stream(a.seed, "base", name)
            gd = [stream(a.seed, f"delta{k}", name) for k in range(1, a.models + 1)]
            for lo, hi in chunks(numel):
                n = hi - lo
                x = gb.standard_normal(n, dtype=np.float32)
                x = np.float32(1.0) + np.float32(0.05) * x if kind == "norm" else x * np.float32(0.02)
                b = to_bf16(x)
                files[0].write(b.tobytes())
                for k, g in enumerate(gd):
                    d = g.standard_normal(n, dtype=np.float32) * np.float32(a.noise * (1.0 if kind == "w" else 10.0))
                    files[k + 1].write(to_bf16(from_bf16(b) + d).tobytes())
            weight_map[name] = fname
            total += 2 * numel
        for f in files:
            f.close()
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    for s in sides:
        with open(os.path.join(a.out, s, "model.safetensors.index.json"), "w") as f:
            json.dump(index, f, indent=2)
    with open(meta, "w") as f:
        json.dump(desc, f)
    print(f"wrote {a.out}: base + {a.models} fine-tunes, {n_layers} layers, {len(tensors)} tensors, "
          f"{total / 1e9:.2f} GB each")
    return 0


if __name__ == "__main__":
    sys.exit(main())
