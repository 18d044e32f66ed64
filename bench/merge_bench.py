#!/usr/bin/env python3
"""`deltaedit merge` against `mergekit-yaml`, and `deltaedit extract-lora` against
`mergekit-extract-lora`, side by side in one run on a synthetic BF16 base and three fine-tunes.

Run with the interop venv's Python (scripts/venv.sh --python), which has mergekit and torch:
    $(scripts/venv.sh --python) bench/merge_bench.py --deltaedit build/deltaedit --out /tmp/mbench
        [--size 2GB] [--hidden 4096] [--inter 14336] [--vocab 32000] [--reps 1] [--lora-rank 16]
        [--methods task_arithmetic,ties,dare_ties] [--tools deltaedit,mergekit,mergekit-lowmem]
        [--skip-lora]

Models: a Llama-shaped base (N(0, 0.02²) weights, norms 1 + N(0, 0.01²)) with the fewest layers
reaching --size per model, and three fine-tunes base + N(0, σ_i²), σ = 1e-3, 1.5e-3, 2e-3, all BF16
in 1 GB shards with an index; each tensor drawn from its own seeded torch generator, so the set is
identical for the same arguments (reused when DIR/models.json matches).

Merges (dtype bfloat16): task_arithmetic (weights 0.5/0.3/0.2), ties (density 0.5, weights
0.5/0.3/0.2), dare_ties (density 0.5, same weights, seed 1). Each merge runs with
  deltaedit merge CONFIG --out O --threads 2
  mergekit-yaml CONFIG O --no-copy-tokenizer                         (its defaults)
  mergekit-yaml CONFIG O --no-copy-tokenizer --lazy-unpickle --low-cpu-memory --out-shard-size 1B
alternating, under /usr/bin/time -v (wall time, peak RSS); `sync` before each run so earlier
write-back is not charged to the next; outputs removed after each. deltaedit fsyncs its output
(the staging protocol); mergekit does not.

extract-lora (base vs fine-tune 1, --lora-rank R): deltaedit extract-lora --rank R, exact and
default (auto: randomized SVD where accurate) methods, against mergekit-extract-lora --max-rank R;
the error is ‖Δ − s·B·A‖_F / ‖Δ‖_F over the linear modules both adapters hold, computed here in
f32 from the written adapters.

Writes DIR/results.json and DIR/results.md (the table for README).
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

SHARD = 10**9


def parse_size(t):
    t = t.strip().upper()
    for suf, mult in (("GIB", 1 << 30), ("MIB", 1 << 20), ("GB", 10**9), ("MB", 10**6), ("KB", 10**3), ("B", 1)):
        if t.endswith(suf):
            return int(float(t[: -len(suf)]) * mult)
    return int(t)


def layout(hidden, inter, vocab, target):
    def tensors(n):
        out = [("model.embed_tokens.weight", (vocab, hidden), "w")]
        for i in range(n):
            p = f"model.layers.{i}."
            out.append((p + "input_layernorm.weight", (hidden,), "norm"))
            for m in ("q_proj", "k_proj", "v_proj", "o_proj"):
                out.append((p + f"self_attn.{m}.weight", (hidden, hidden), "w"))
            out.append((p + "post_attention_layernorm.weight", (hidden,), "norm"))
            out.append((p + "mlp.gate_proj.weight", (inter, hidden), "w"))
            out.append((p + "mlp.up_proj.weight", (inter, hidden), "w"))
            out.append((p + "mlp.down_proj.weight", (hidden, inter), "w"))
        out += [("model.norm.weight", (hidden,), "norm"), ("lm_head.weight", (vocab, hidden), "w")]
        return out

    n = 1
    while sum(2 * torch.Size(s).numel() for _, s, _ in tensors(n)) < target:
        n += 1
    return n, tensors(n)


def gen(seed, model, name, shape, kind, noise):
    g = torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(f"{seed}/{model}/{name}".encode()).digest()[:8], "little"))
    if model == "base":
        x = torch.randn(shape, generator=g) * (0.01 if kind == "norm" else 0.02)
        return (x + 1.0 if kind == "norm" else x).bfloat16()
    return torch.randn(shape, generator=g).mul_(noise).bfloat16()


def make_models(d, a):
    spec = {"size": a.size, "hidden": a.hidden, "inter": a.inter, "vocab": a.vocab, "seed": 0, "v": 1}
    if (d / "models.json").exists() and json.loads((d / "models.json").read_text()) == spec:
        return json.loads((d / "layout.json").read_text())
    shutil.rmtree(d, ignore_errors=True)
    n_layers, tensors = layout(a.hidden, a.inter, a.vocab, parse_size(a.size))
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": a.hidden,
           "intermediate_size": a.inter, "num_hidden_layers": n_layers, "num_attention_heads": a.hidden // 128,
           "num_key_value_heads": a.hidden // 128, "vocab_size": a.vocab, "rms_norm_eps": 1e-5,
           "max_position_embeddings": 4096, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
           "hidden_act": "silu", "rope_theta": 10000.0, "bos_token_id": 1, "eos_token_id": 2}
    names = ["base", "ft1", "ft2", "ft3"]
    noise = {"ft1": 1e-3, "ft2": 1.5e-3, "ft3": 2e-3}
    t0 = time.monotonic()
    for m in names:
        out = d / m
        out.mkdir(parents=True)
        (out / "config.json").write_text(json.dumps(cfg, indent=2))
        shards, cur, cur_bytes = [], {}, 0
        for name, shape, kind in tensors:
            x = gen(0, "base", name, shape, kind, 0)
            if m != "base":
                x = (x.float() + gen(0, m, name, shape, kind, noise[m]).float()).bfloat16()
            nb = x.numel() * 2
            if cur and cur_bytes + nb > SHARD:
                shards.append(cur)
                cur, cur_bytes = {}, 0
            cur[name] = x
            cur_bytes += nb
            if cur_bytes >= SHARD:
                shards.append(cur)
                cur, cur_bytes = {}, 0
        if cur:
            shards.append(cur)
        wmap, total = {}, 0
        for i, sh in enumerate(shards):
            fn = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            save_file(sh, str(out / fn), metadata={"format": "pt"})
            for k, v in sh.items():
                wmap[k] = fn
                total += v.numel() * 2
        (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": wmap}))
        print(f"  wrote {out} ({total / 1e9:.2f} GB, {len(shards)} shards, {time.monotonic() - t0:.0f} s)", flush=True)
    info = {"layers": n_layers, "bytes_per_model": total, "tensors": len(tensors)}
    (d / "layout.json").write_text(json.dumps(info))
    (d / "models.json").write_text(json.dumps(spec))
    return info


def timed(cmd, log):
    """Runs cmd under /usr/bin/time -v after a sync; (wall s, peak RSS MB, exit status, CPU s
    (user + system), GB read from disk (file system inputs × 512 B))."""
    subprocess.run(["sync"])
    load = Path("/proc/loadavg").read_text().split()[0]
    r = subprocess.run(["/usr/bin/time", "-v", *map(str, cmd)], capture_output=True, text=True)
    load += " → " + Path("/proc/loadavg").read_text().split()[0]
    log.write(f"$ {' '.join(map(str, cmd))}\nload average {load}\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}\n")
    log.flush()
    rss = float(re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr).group(1)) / 1024
    el = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", r.stderr).group(1).split(":")
    wall = sum(float(x) * 60**i for i, x in enumerate(reversed(el)))
    cpu = sum(float(re.search(rf"{w} time \(seconds\): ([\d.]+)", r.stderr).group(1)) for w in ("User", "System"))
    disk = float(re.search(r"File system inputs: (\d+)", r.stderr).group(1)) * 512 / 1e9
    return wall, rss, r.returncode, cpu, disk


def lora_error(adapter, base_dir, post_dir):
    """‖Δ − s·B·A‖ / ‖Δ‖ over the adapter's linear LoRA modules (f32), and their count."""
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    lora = {}
    with safe_open(str(adapter / "adapter_model.safetensors"), framework="pt") as h:
        for k in h.keys():
            m = re.fullmatch(r"base_model\.model\.(.*)\.lora_(A|B)\.weight", k)
            if m:
                lora.setdefault(m.group(1), {})[m.group(2)] = h.get_tensor(k).float()

    def index(d):
        return json.loads((d / "model.safetensors.index.json").read_text())["weight_map"]

    bi, pi = index(base_dir), index(post_dir)
    num = den = 0.0
    for mod, f in sorted(lora.items()):
        name = mod + ".weight"
        with safe_open(str(base_dir / bi[name]), framework="pt") as hb, safe_open(str(post_dir / pi[name]), framework="pt") as hp:
            delta = hp.get_tensor(name).float() - hb.get_tensor(name).float()
        r = f["A"].shape[0]
        alpha = cfg.get("alpha_pattern", {}).get(mod.split(".")[-1], cfg["lora_alpha"])
        for key, v in (cfg.get("rank_pattern") or {}).items():
            if re.match(rf"(.*\.)?({key})$", mod):
                r = v
        s = alpha / (r**0.5 if cfg.get("use_rslora") else r)
        num += float((delta - s * (f["B"] @ f["A"])).norm() ** 2)
        den += float(delta.norm() ** 2)
    return (num / den) ** 0.5 if den else 0.0, len(lora)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--deltaedit", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--size", default="2GB")
    p.add_argument("--hidden", type=int, default=4096)
    p.add_argument("--inter", type=int, default=14336)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--lora-rank", type=int, default=16)
    p.add_argument("--skip-lora", action="store_true")
    p.add_argument("--methods", default="task_arithmetic,ties,dare_ties")
    p.add_argument("--tools", default="deltaedit,mergekit,mergekit-lowmem",
                   help="which of deltaedit, mergekit (its defaults), mergekit-lowmem to run")
    a = p.parse_args()
    de = str(Path(a.deltaedit).resolve())
    bin_dir = Path(sys.executable).parent
    d = Path(a.out)
    d.mkdir(parents=True, exist_ok=True)
    log = open(d / "log.txt", "a")
    print(f"models: {d / 'models'}", flush=True)
    info = make_models(d / "models", a)
    M = {m: d / "models" / m for m in ("base", "ft1", "ft2", "ft3")}
    results = {"models": info, "args": vars(a), "cpus": os.cpu_count(), "merge": {}, "lora": {}}
    cfgs = {}
    for method in a.methods.split(","):
        extra = {"ties": {"density": 0.5}, "dare_ties": {"density": 0.5}}.get(method, {})
        lines = [f"merge_method: {method}", f"base_model: {M['base']}", "dtype: bfloat16", "models:"]
        for m, w in (("ft1", 0.5), ("ft2", 0.3), ("ft3", 0.2)):
            lines.append(f"  - model: {M[m]}")
            lines.append("    parameters: {" + ", ".join(f"{k}: {v}" for k, v in {"weight": w, **extra}.items()) + "}")
        if method == "dare_ties":
            lines.append("random_seed: 1")
        cfgs[method] = d / f"{method}.yaml"
        cfgs[method].write_text("\n".join(lines) + "\n")
    # mergekit does not know random_seed: (it ignores it); deltaedit honours it.
    tools = {
        "deltaedit": lambda c, o: [de, "merge", c, "--out", o, "--threads", 2],
        "mergekit": lambda c, o: [bin_dir / "mergekit-yaml", c, o, "--no-copy-tokenizer"],
        "mergekit-lowmem": lambda c, o: [bin_dir / "mergekit-yaml", c, o, "--no-copy-tokenizer", "--lazy-unpickle",
                                         "--low-cpu-memory", "--out-shard-size", "1B"],
    }
    chosen = a.tools.split(",")
    unknown = [t for t in chosen if t not in tools]
    if unknown or "deltaedit" not in chosen:
        sys.exit(f"merge_bench.py: --tools takes deltaedit (required), mergekit, mergekit-lowmem; got {a.tools}")
    tools = {t: cmd for t, cmd in tools.items() if t in chosen}
    for method, c in cfgs.items():
        for rep in range(a.reps):
            for tool, cmd in tools.items():
                o = d / "out"
                shutil.rmtree(o, ignore_errors=True)
                wall, rss, rc, cpu, disk = timed(cmd(c, o), log)
                shutil.rmtree(o, ignore_errors=True)
                results["merge"].setdefault(method, {}).setdefault(tool, []).append(
                    {"wall_s": wall, "rss_mb": rss, "rc": rc, "cpu_s": cpu, "disk_read_gb": disk})
                print(f"  {method} {tool}: {wall:.1f} s, peak RSS {rss:.0f} MB, CPU {cpu:.1f} s, read from disk "
                      f"{disk:.1f} GB, exit {rc}", flush=True)
                (d / "results.json").write_text(json.dumps(results, indent=2))
    if not a.skip_lora:
        r = a.lora_rank
        runs = {
            "deltaedit (auto)": lambda o: [de, "extract-lora", "--base", M["base"], "--post", M["ft1"], "--rank", r, "--out", o],
            "deltaedit (exact)": lambda o: [de, "extract-lora", "--base", M["base"], "--post", M["ft1"], "--rank", r,
                                            "--method", "exact", "--out", o],
            "mergekit-extract-lora": lambda o: [bin_dir / "mergekit-extract-lora", "--model", M["ft1"], "--base-model", M["base"],
                                                "--out-path", o, "--max-rank", r, "--no-copy-tokenizer"],
        }
        for tool, cmd in runs.items():
            o = d / "lora"
            shutil.rmtree(o, ignore_errors=True)
            wall, rss, rc, cpu, disk = timed(cmd(o), log)
            err, n = lora_error(o, M["base"], M["ft1"]) if rc == 0 else (float("nan"), 0)
            shutil.rmtree(o, ignore_errors=True)
            results["lora"][tool] = {"wall_s": wall, "rss_mb": rss, "rc": rc, "cpu_s": cpu, "rel_error": err, "modules": n}
            print(f"  extract-lora {tool}: {wall:.1f} s, peak RSS {rss:.0f} MB, error {err:.5f} over {n} modules, exit {rc}",
                  flush=True)
            (d / "results.json").write_text(json.dumps(results, indent=2))
    write_md(d, results)


def write_md(d, R):
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    info = R["models"]
    out = [f"Base + 3 fine-tunes, {info['bytes_per_model'] / 1e9:.2f} GB BF16 each ({info['layers']} layers, hidden "
           f"{R['args']['hidden']}, intermediate {R['args']['inter']}, vocab {R['args']['vocab']}), {R['cpus']} CPUs, "
           f"median of {R['args']['reps']}.", "",
           "| method | deltaedit | mergekit-yaml (defaults) | ratio | mergekit-yaml --lazy-unpickle --low-cpu-memory --out-shard-size 1B | ratio |",
           "|---|---|---|---|---|---|"]
    for method, t in R["merge"].items():
        de = t["deltaedit"]
        dw, dr = med([x["wall_s"] for x in de]), med([x["rss_mb"] for x in de])
        dc = med([x.get("cpu_s", float("nan")) for x in de])
        row = [method, f"{dw:.1f} s (CPU {dc:.0f} s), {dr:.0f} MB"]
        for tool in ("mergekit", "mergekit-lowmem"):
            if tool not in t:
                row += ["–", "–"]
                continue
            w, r = med([x["wall_s"] for x in t[tool]]), med([x["rss_mb"] for x in t[tool]])
            c = med([x.get("cpu_s", float("nan")) for x in t[tool]])
            row += [f"{w:.1f} s (CPU {c:.0f} s), {r:.0f} MB", f"{w / dw:.1f}× faster, {dr / r:.3f}× the RSS"]
        out.append("| " + " | ".join(row) + " |")
    if R["lora"]:
        out += ["", f"extract-lora at rank {R['args']['lora_rank']} (base vs fine-tune 1):", "",
                "| tool | wall | peak RSS | ‖Δ − s·B·A‖/‖Δ‖ (linear modules) |", "|---|---|---|---|"]
        for tool, x in R["lora"].items():
            out.append(f"| {tool} | {x['wall_s']:.1f} s | {x['rss_mb']:.0f} MB | {x['rel_error']:.5f} ({x['modules']} modules) |")
    (d / "results.md").write_text("\n".join(out) + "\n")
    print("\n".join(out))


if __name__ == "__main__":
    main()
