"""Shared helpers of the interop judges: run the deltaedit binary, read safetensors with the
reference library, compare tensors bit for bit. Test-time only (the judges' venv, issue 10)."""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Nothing is downloaded: every model and tokenizer is a local directory.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch
from safetensors import safe_open


class Judge:
    """Command line, scratch directory and failure bookkeeping of one interop script."""

    def __init__(self, description):
        p = argparse.ArgumentParser(description=description)
        p.add_argument("--deltaedit", required=True, help="the built deltaedit binary")
        p.add_argument("--source", required=True, help="the source tree (fixtures, zoo)")
        p.add_argument("--work", help="scratch directory (default: a fresh temporary one, removed after)")
        a = p.parse_args()
        self.bin = str(Path(a.deltaedit).resolve())
        self.src = Path(a.source).resolve()
        self.fixtures = self.src / "tests" / "data" / "hf-reference"
        self.zoo = self.src / "models" / "zoo" / "retrain"
        self._own_work = a.work is None
        self.work = Path(a.work or tempfile.mkdtemp(prefix="deltaedit-interop-"))
        self.work.mkdir(parents=True, exist_ok=True)
        self.failures = []
        self.checks = 0
        self.start = time.monotonic()
        torch.manual_seed(0)
        torch.set_num_threads(2)
        try:  # no progress bars in the test log
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        except ImportError:
            pass

    def run(self, *args, stdin=None):
        """Runs deltaedit; a non-zero exit is a failure of the test, with its stderr."""
        cmd = [self.bin, *map(str, args)]
        r = subprocess.run(cmd, input=stdin, capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"FAIL: {' '.join(cmd)} exited {r.returncode}:\n{r.stderr}")
        return r.stdout

    def check(self, ok, what):
        self.checks += 1
        if not ok:
            self.failures.append(what)
            print(f"FAIL: {what}", flush=True)

    def finish(self):
        secs = time.monotonic() - self.start
        if self._own_work:
            shutil.rmtree(self.work, ignore_errors=True)
        if self.failures:
            print(f"{len(self.failures)} of {self.checks} checks failed ({secs:.1f} s)")
            sys.exit(1)
        print(f"all {self.checks} checks passed ({secs:.1f} s)")
        sys.exit(0)


def read_checkpoint(directory):
    """Every tensor of a checkpoint directory (single file or sharded), read by safetensors."""
    d = Path(directory)
    index = d / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.exists() else ["model.safetensors"]
    out = {}
    for f in files:
        with safe_open(str(d / f), framework="pt") as h:
            for k in h.keys():
                if k in out:
                    raise SystemExit(f"FAIL: {d}: tensor {k} is in two shards")
                out[k] = h.get_tensor(k)
    return out, files


def bits(t):
    """The raw bytes of a tensor as an integer view (NaN-safe, -0 ≠ +0)."""
    t = t.detach().contiguous().cpu()
    view = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]
    return t.view(view)


def same_bits(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(bits(a), bits(b))


def write_jsonl(path, records):
    Path(path).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def rel_max_diff(a, b):
    """max |a − b| / max |b| (f64): the relative error of a logit tensor, robust to logits near 0."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))



# ---------------------------------------------------------------------------------------------
# Ulp comparison (float32, bfloat16, float16)

UNIT_ROUNDOFF = {torch.float32: 2.0**-24, torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}


def ulp_distance(a, b):
    """Element-wise distance in units in the last place of the common float dtype: the difference
    of the values' positions on the ordered integer line of that format (−0 and +0 coincide)."""
    assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, b.dtype, a.shape, b.shape)
    itype, nbits = {torch.float32: (torch.int32, 32), torch.bfloat16: (torch.int16, 16),
                    torch.float16: (torch.int16, 16)}[a.dtype]

    def ordered(t):
        i = t.detach().contiguous().cpu().view(itype).to(torch.int64)
        return torch.where(i < 0, -(i & ((1 << (nbits - 1)) - 1)), i)

    return (ordered(a) - ordered(b)).abs()


def ulp_of(t, dtype=None):
    """The spacing of `dtype` (default t's) at each element's magnitude, as f64: 2^(e − p) for
    |x| in [2^e, 2^(e+1)), subnormals and 0 at the smallest normal's spacing."""
    dtype = dtype or t.dtype
    p, emin = {torch.float32: (23, -126), torch.bfloat16: (7, -126), torch.float16: (10, -14)}[dtype]
    x = t.detach().cpu().double().abs()
    _, e = torch.frexp(x)  # x = m·2^e, m in [0.5, 1)
    e = torch.clamp(e.to(torch.int64) - 1, min=emin)
    return torch.pow(torch.full_like(x, 2.0), (e - p).double())


def ulp_summary(got, want):
    """{name: (max ulp distance, elements ≥ 1 ulp, elements)} over the shared names, and the
    names present on one side only."""
    out = {}
    for k in sorted(set(got) & set(want)):
        d = ulp_distance(got[k], want[k])
        out[k] = (int(d.max()) if d.numel() else 0, int((d > 0).sum()), d.numel())
    return out, sorted(set(got) ^ set(want))
