#!/usr/bin/python3
"""PyTorch eager reference for the delta edits, computed the way common merging scripts do it.

Per tensor: load base and post from safetensors, delta = post.float() - base.float(), edit the delta
with plain torch calls, write (base.float() + delta) rounded to BF16 into a safetensors checkpoint
laid out like post. Tensors outside --include are copied from post unchanged.

Ops (parameters named as in `deltaedit ops`):
  dare:p=P            mask = torch.bernoulli(full(P)); delta * (1 - mask) / (1 - P)
  dare:rescale=l1     the kept entries rescaled to the tensor's L1 norm
  drop:p=P            delta * (1 - bernoulli(P))
  signflip:q=Q        delta * (1 - 2 bernoulli(Q))
  resample            rand * 2 mean|delta| * sign(delta)
  biased:k=K          M = [delta < 0], p = mean(M): delta * (K M + (1 - K p)/(1 - p) (1 - M))
  bitdelta            delta.abs().mean() * delta.sign() (granularity=row: per row; stat=rms)
  scale:alpha=A       delta * (1 + A)
  magnitude:p=P       keep the floor((1-P)*n) largest |delta| (threshold from torch.kthvalue)
  lowrank:ratio=R     2-D only: r = floor(R*min(rows, cols)); torch.svd_lowrank(delta, q=r+10, niter=4),
                      delta = U_r diag(S_r) V_r^T

--subset REGEX edits and writes only the tensors matching REGEX (others are neither read nor
written), for timing a part of a checkpoint that would take too long in eager mode; the run
prints the parameter count it covered so callers can scale per parameter.

Usage: eager_ref.py --base B --post P --op SPEC --out DIR [--threads 2] [--subset REGEX]
                    [--include REGEX] [--seed 0]
Prints one JSON line: {"op", "params", "tensors", "seconds"}.
"""
import argparse
import json
import os
import re
import shutil
import struct
import sys
import time

import numpy as np
import torch

DTYPES = {"BF16": (torch.bfloat16, np.int16, 2), "F16": (torch.float16, np.float16, 2),
          "F32": (torch.float32, np.float32, 4)}


class SafetensorsFile:
    """Minimal reader: header parsed once; tensors read with numpy from their byte range."""

    def __init__(self, path):
        self.path = path
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            self.header = json.loads(f.read(n))
        self.meta = self.header.pop("__metadata__", None)
        self.base = 8 + n

    def names(self):
        return sorted(self.header, key=lambda k: self.header[k]["data_offsets"][0])

    def get(self, name):
        e = self.header[name]
        tdtype, npdtype, size = DTYPES[e["dtype"]]
        lo, hi = e["data_offsets"]
        arr = np.fromfile(self.path, dtype=npdtype, count=(hi - lo) // size, offset=self.base + lo)
        t = torch.from_numpy(arr)
        if tdtype == torch.bfloat16:
            t = t.view(torch.bfloat16)
        return t.reshape(e["shape"])


def open_checkpoint(path):
    """tensor name -> SafetensorsFile, plus the list of files in order."""
    idx = os.path.join(path, "model.safetensors.index.json")
    if os.path.exists(idx):
        with open(idx) as f:
            wm = json.load(f)["weight_map"]
        files = {fn: SafetensorsFile(os.path.join(path, fn)) for fn in sorted(set(wm.values()))}
    else:
        files = {"model.safetensors": SafetensorsFile(os.path.join(path, "model.safetensors"))}
    where = {n: fn for fn, f in files.items() for n in f.header}
    return files, where


def parse_spec(text):
    name, _, rest = text.partition(":")
    params = {}
    for kv in filter(None, rest.split(",")):
        k, _, v = kv.partition("=")
        params[k] = v
    return name, params


def make_op(text, gen):
    name, p = parse_spec(text)
    if name == "dare":
        rate = float(p.get("p", 0.9))

        def op(d):
            mask = torch.bernoulli(torch.full_like(d, rate), generator=gen)
            return d * (1 - mask) / (1 - rate)
        if p.get("rescale") == "l1":
            def op(d):
                mask = torch.bernoulli(torch.full_like(d, rate), generator=gen)
                a = d.abs()
                kept = (a * (1 - mask)).sum()
                return d * (1 - mask) * (a.sum() / kept if kept > 0 else 1.0)
    elif name == "drop":
        rate = float(p.get("p", 0.9))

        def op(d):
            return d * (1 - torch.bernoulli(torch.full_like(d, rate), generator=gen))
    elif name == "signflip":
        q = float(p.get("q", 0.1))

        def op(d):
            return d * (1 - 2 * torch.bernoulli(torch.full_like(d, q), generator=gen))
    elif name == "resample":
        def op(d):
            mu = d.abs().mean()
            return torch.rand(d.shape, generator=gen) * (2 * mu) * d.sign()
    elif name == "biased":
        k = float(p.get("k", 0.5))

        def op(d):
            m = (d < 0).float()
            frac = m.mean()
            return d * (k * m + (1 - k * frac) / (1 - frac) * (1 - m))
    elif name == "bitdelta":
        row = p.get("granularity") == "row"
        rms = p.get("stat") == "rms"

        def op(d):
            a = d.abs()
            if row and d.dim() >= 2:
                s = (a * a).mean(dim=1, keepdim=True).sqrt() if rms else a.mean(dim=1, keepdim=True)
            else:
                s = (a * a).mean().sqrt() if rms else a.mean()
            return s * d.sign()
    elif name == "scale":
        alpha = float(p.get("alpha", 0.0))

        def op(d):
            return d * (1 + alpha)
    elif name == "magnitude":
        rate = float(p.get("p", 0.9))

        def op(d):
            n = d.numel()
            k = int((1 - rate) * n)
            if k <= 0:
                return torch.zeros_like(d)
            mag = d.abs().reshape(-1)
            thr = torch.kthvalue(mag, n - k + 1).values
            return d * (d.abs() >= thr)
    elif name == "lowrank":
        ratio = float(p.get("ratio", 0.1))

        def op(d):
            if d.dim() != 2:
                return d
            r = int(ratio * min(d.shape))
            if r >= min(d.shape):
                return d
            u, s, v = torch.svd_lowrank(d, q=min(r + 10, min(d.shape)), niter=4)
            return (u[:, :r] * s[:r]) @ v[:, :r].T
    else:
        raise SystemExit(f"eager_ref: unsupported op '{name}'")
    return op


def write_safetensors(path, tensors):
    """tensors: list of (name, tensor) in write order; BF16/F16/F32 only."""
    rev = {v[0]: k for k, v in DTYPES.items()}
    hdr, off = {"__metadata__": {"format": "pt"}}, 0
    for name, t in tensors:
        nb = t.numel() * t.element_size()
        hdr[name] = {"dtype": rev[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + nb]}
        off += nb
    text = json.dumps(hdr, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for _, t in tensors:
            t = t.contiguous()
            if t.dtype == torch.bfloat16:
                t = t.view(torch.int16)
            f.write(t.numpy().tobytes())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True)
    ap.add_argument("--post", required=True)
    ap.add_argument("--op", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--subset", default="")
    ap.add_argument("--include", default="")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    gen = torch.Generator().manual_seed(a.seed)
    op = make_op(a.op, gen)
    t0 = time.perf_counter()
    bfiles, bwhere = open_checkpoint(a.base)
    pfiles, pwhere = open_checkpoint(a.post)
    subset = re.compile(a.subset) if a.subset else None
    include = re.compile(a.include) if a.include else None
    if os.path.exists(a.out):
        shutil.rmtree(a.out)
    os.makedirs(a.out)
    params = count = 0
    weight_map = {}
    with torch.no_grad():
        for fn, pf in pfiles.items():
            out = []
            for name in pf.names():
                if subset and not subset.search(name):
                    continue
                post = pf.get(name)
                if name in bwhere and (include is None or include.search(name)) and post.is_floating_point():
                    base = bfiles[bwhere[name]].get(name)
                    delta = post.float() - base.float()
                    delta = op(delta)
                    post = (base.float() + delta).to(post.dtype)
                    params += post.numel()
                    count += 1
                out.append((name, post))
                weight_map[name] = fn
            if out:
                write_safetensors(os.path.join(a.out, fn), out)
                del out
    for extra in ("config.json",):
        src = os.path.join(a.post, extra)
        if os.path.exists(src):
            shutil.copyfile(src, os.path.join(a.out, extra))
    with open(os.path.join(a.out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)
    secs = time.perf_counter() - t0
    print(json.dumps({"op": a.op, "params": params, "tensors": count, "seconds": secs}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
