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

