#!/usr/bin/python3
"""Writes a synthetic (base, post) pair of BF16 Llama-shaped safetensors checkpoints.

Layout per side: model.embed_tokens.weight [vocab, hidden], N decoder layers
(q/k/v/o_proj [hidden, hidden], gate/up_proj [inter, hidden], down_proj [hidden, inter],
input/post_attention_layernorm [hidden]), model.norm.weight, lm_head.weight [vocab, hidden].
N is the smallest layer count that makes one side at least --size bytes. Shards are cut at
--shard-size bytes with a model.safetensors.index.json, plus a config.json.

base ~ N(0, 0.02^2) (norms: 1 + small noise); post = base + N(0, noise^2), both rounded to BF16.
Every tensor is drawn from its own PCG64 stream keyed by (seed, side, tensor name), so the output
is byte-identical for the same arguments. Generation is chunked, so memory stays ~100 MB.

With --matrices N the pair is N down_proj-shaped [hidden, inter] matrices instead (the 0.47 GB
pair of the edit benchmark is --matrices 4).

Usage: make_pair.py --out DIR [--size 2GB] [--hidden 4096] [--inter 14336] [--vocab 32000]
                    [--shard-size 1GB] [--noise 0.001] [--seed 0] [--matrices N]
Writes DIR/base and DIR/post (DIR/pair.json records the arguments; an identical existing pair
is reused unless --force).
"""
import argparse
import hashlib
import json
import os
import shutil
import struct
import sys

import numpy as np

CHUNK = 1 << 22  # elements generated per step


def parse_size(text):
    t = text.strip().upper()
    for suffix, mult in (("GIB", 1 << 30), ("MIB", 1 << 20), ("GB", 10**9), ("MB", 10**6), ("KB", 10**3), ("B", 1)):
        if t.endswith(suffix):
            return int(float(t[: -len(suffix)]) * mult)
    return int(t)


def layout(hidden, inter, vocab, target_bytes):
    """Tensor (name, shape, kind) list with the fewest layers reaching target_bytes per side."""
    def tensors(n_layers):
        out = [("model.embed_tokens.weight", (vocab, hidden), "w")]
        for i in range(n_layers):
            p = f"model.layers.{i}."
            out.append((p + "input_layernorm.weight", (hidden,), "norm"))
            for m in ("q_proj", "k_proj", "v_proj", "o_proj"):
                out.append((p + f"self_attn.{m}.weight", (hidden, hidden), "w"))
            out.append((p + "post_attention_layernorm.weight", (hidden,), "norm"))
            out.append((p + "mlp.gate_proj.weight", (inter, hidden), "w"))
            out.append((p + "mlp.up_proj.weight", (inter, hidden), "w"))
            out.append((p + "mlp.down_proj.weight", (hidden, inter), "w"))
        out.append(("model.norm.weight", (hidden,), "norm"))
        out.append(("lm_head.weight", (vocab, hidden), "w"))
        return out

    n = 1
    while sum(2 * int(np.prod(s)) for _, s, _ in tensors(n)) < target_bytes:
        n += 1
    return n, tensors(n)


def stream(seed, side, name):
    h = hashlib.sha256(f"{seed}/{side}/{name}".encode()).digest()
    return np.random.Generator(np.random.PCG64(int.from_bytes(h[:16], "little")))


def to_bf16(x):
    """f32 array -> uint16 BF16 bits, round to nearest even (inputs are finite)."""
    u = x.view(np.uint32)
    u = u + (np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1)))
    return (u >> np.uint32(16)).astype(np.uint16)


def from_bf16(b):
    return (b.astype(np.uint32) << np.uint32(16)).view(np.float32)


def chunks(numel):
    for lo in range(0, numel, CHUNK):
        yield lo, min(numel, lo + CHUNK)


def write_tensor(fb, fp, name, shape, kind, seed, noise):
    """Writes the BF16 bytes of one tensor to the base and post files, chunk by chunk."""
    numel = int(np.prod(shape))
    gb, gn = stream(seed, "base", name), stream(seed, "delta", name)
    for lo, hi in chunks(numel):
        n = hi - lo
        x = gb.standard_normal(n, dtype=np.float32)
        if kind == "norm":
            x = np.float32(1.0) + np.float32(0.05) * x
        else:
            x *= np.float32(0.02)
        b = to_bf16(x)
        d = gn.standard_normal(n, dtype=np.float32)
        d *= np.float32(noise * (1.0 if kind == "w" else 10.0))
        p = to_bf16(from_bf16(b) + d)
        fb.write(b.tobytes())
        fp.write(p.tobytes())


def header_bytes(entries):
    hdr = {"__metadata__": {"format": "pt"}}
    off = 0
    for name, shape, _ in entries:
        nb = 2 * int(np.prod(shape))
        hdr[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + nb]}
        off += nb
    text = json.dumps(hdr, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--size", default="2GB", help="minimum bytes per side (default 2GB)")
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--inter", type=int, default=14336)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--shard-size", default="1GB")
    ap.add_argument("--noise", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--matrices", type=int, default=0,
                    help="instead of a Llama layout: this many [hidden, inter] matrices (--size is ignored)")
    ap.add_argument("--force", action="store_true")
    a = ap.parse_args()

    target, shard_limit = parse_size(a.size), parse_size(a.shard_size)
    if a.matrices > 0:
        n_layers = a.matrices
        tensors = [(f"model.layers.{i}.mlp.down_proj.weight", (a.hidden, a.inter), "w") for i in range(a.matrices)]
    else:
        n_layers, tensors = layout(a.hidden, a.inter, a.vocab, target)
    desc = {"size": target, "hidden": a.hidden, "inter": a.inter, "vocab": a.vocab, "layers": n_layers,
            "shard_size": shard_limit, "noise": a.noise, "seed": a.seed, "version": 1}
    if a.matrices > 0:
        desc = {"matrices": a.matrices, "hidden": a.hidden, "inter": a.inter, "shard_size": shard_limit,
                "noise": a.noise, "seed": a.seed, "version": 1}
    meta = os.path.join(a.out, "pair.json")
    if not a.force and os.path.exists(meta):
        with open(meta) as f:
            if json.load(f) == desc:
                print(f"reusing {a.out} ({n_layers} layers)")
                return 0
    for side in ("base", "post"):
        shutil.rmtree(os.path.join(a.out, side), ignore_errors=True)
    if os.path.exists(meta):
        os.remove(meta)

    # Shards: consecutive tensors until the next would pass the limit.
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
              "num_attention_heads": a.hidden // 128, "num_key_value_heads": a.hidden // 128,
              "vocab_size": a.vocab, "rms_norm_eps": 1e-5, "hidden_act": "silu", "rope_theta": 10000.0,
              "max_position_embeddings": 4096, "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
    dirs = {s: os.path.join(a.out, s) for s in ("base", "post")}
    for d in dirs.values():
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(config, f, indent=2)
    weight_map, total = {}, 0
    for i, entries in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        hdr = header_bytes(entries)
        with open(os.path.join(dirs["base"], fname), "wb") as fb, open(os.path.join(dirs["post"], fname), "wb") as fp:
            fb.write(hdr)
            fp.write(hdr)
            for name, shape, kind in entries:
                write_tensor(fb, fp, name, shape, kind, a.seed, a.noise)
                weight_map[name] = fname
                total += 2 * int(np.prod(shape))
        print(f"  {fname}: {len(entries)} tensors", file=sys.stderr)
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    for d in dirs.values():
        with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
            json.dump(index, f, indent=2)
    with open(meta, "w") as f:
        json.dump(desc, f)
    print(f"wrote {a.out}/base and {a.out}/post: {n_layers} layers, {len(tensors)} tensors, "
          f"{total / 1e9:.2f} GB per side in {len(shards)} shards")
    return 0


if __name__ == "__main__":
    sys.exit(main())
