#!/usr/bin/python3
"""Turns the records of bench/run.sh into bench/results/latest.json and latest.md.

Usage: report.py --records WORK/records.jsonl --logs WORK/logs --json OUT.json --md OUT.md
"""
import argparse
import json
import re

TARGETS = {
    "stats_rss_mb": 512, "stats_ratio": 0.5, "edit_rss_mb": 64, "svd_speedup": 5.0, "svd_err": 1.01,
    "model_ratio": 0.9, "philox_words": 1e9,
}
# ÷ floor targets of the edit table (floor = read both inputs, write one output, sync).
FLOOR_TARGET = {"magnitude": 2.0, "lowrank": None}
STREAMING_TARGET = 1.3
OP_ORDER = ["dare", "drop", "signflip", "scale", "bitdelta", "bitdelta_row_rms", "resample", "biased", "dare_l1",
            "magnitude", "lowrank"]
PAIR_NAMES = {"small": "0.47 GB pair", "big": "≥ 2 GB pair"}


def load(path):
    recs = {}
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            recs[r.pop("key")] = r
    return recs


def agg(R, key):
    """The runs recorded as KEY or KEY.1, KEY.2, ...: median wall/user/sys, max RSS, first load1,
    and the individual wall times."""
    runs = [R[k] for k in sorted(R) if k == key or (k.startswith(key + ".") and k[len(key) + 1:].isdigit())]
    if not runs:
        raise KeyError(key)

    def median(xs):
        xs = sorted(xs)
        n = len(xs)
        return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])

    return {"wall": median([r["wall"] for r in runs]), "user": median([r["user"] for r in runs]),
            "sys": median([r["sys"] for r in runs]), "rss_kb": max(r["rss_kb"] for r in runs),
            "load1": runs[0]["load1"], "walls": [r["wall"] for r in runs], "n": len(runs)}


def spread(r):
    return "" if r["n"] < 2 else f" ({min(r['walls']):.2f}–{max(r['walls']):.2f})"


def last_json(path):
    with open(path) as f:
        lines = [ln for ln in f.read().splitlines() if ln.startswith("{")]
    return json.loads(lines[-1]) if lines else None


def last_json_blob(path):
    """The JSON document a program printed (Google Benchmark's --benchmark_format=json)."""
    with open(path) as f:
        text = f.read()
    return json.loads(text[text.index("{"):]) if "{" in text else {}


def mb(kb):
    return kb / 1024.0


def ok(flag):
    return "met" if flag else "**missed**"


def op_order(op):
    return OP_ORDER.index(op) if op in OP_ORDER else len(OP_ORDER)


def floor_check(op, ratio, rss):
    """The op's ÷ floor target and what of its figures is above target (empty when within)."""
    target = FLOOR_TARGET.get(op, STREAMING_TARGET)
    above = []
    if target is not None and ratio > target:
        above.append(f"{ratio:.2f}× floor > {target}×")
    if target is not None and rss >= TARGETS["edit_rss_mb"]:
        above.append(f"RSS {rss:.0f} MB ≥ {TARGETS['edit_rss_mb']} MB")
    return target, above


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", required=True)
    ap.add_argument("--logs", required=True)
    ap.add_argument("--json", required=True)
    ap.add_argument("--md", required=True)
    a = ap.parse_args()
    R = load(a.records)
    m = R["machine"]
    res = {"machine": m, "pairs": {k[5:]: v for k, v in R.items() if k.startswith("pair.")}, "end": R.get("end", {})}
    md = []
    w = md.append
    flagged = []
    w("# deltaedit benchmarks")
    w("")
    w(f"- date: {m['date']}, commit {m['commit']}{' (uncommitted changes)' if m['dirty'] else ''}")
    w(f"- machine: {m['cpu']}, {m['cores']} cores, {m['mem_gb']} GB RAM, Linux {m['kernel']}")
    w(f"- load at start: `{m['uptime_start']}`")
    if R.get("end"):
        w(f"- load at end: `{R['end']['uptime_end']}` (whole run {R['end']['total_s']} s)")
    for name, pr in res["pairs"].items():
        if name.startswith("scale_"):
            continue
        w(f"- pair {name}: {pr['params'] / 1e9:.3f} G parameters BF16 per side, {pr['bytes'] / 1e9:.2f} GB read for "
          f"both sides ({pr['args'] or 'defaults'}){' — quick mode' if m['quick'] else ''}")
    w(f"- threads: {m['threads']} for deltaedit and the eager reference")
    w("- figures are medians of warm-cache runs alternating with their baselines (range in parentheses); "
      "eager and SVD figures are single runs; `load1` is the 1-minute load average just before the first run")
    w("")

    # philox
    if "philox" in R:
        pj = last_json_blob(f"{a.logs}/philox.out")
        rates = {}
        for b in pj.get("benchmarks", []):
            if b.get("aggregate_name") != "median":
                continue
            # The batched kernels run once per ISA the CPU has (BM_PhiloxBlocks/<isa>, labelled).
            name = b["run_name"].replace("BM_", "")
            if b.get("label"):
                name = f"{name.split('/')[0]} ({b['label']})"
            rates[name] = {k: b[k] for k in ("words/s", "draws/s") if k in b}
        res["philox"] = rates
        w("## keyed Philox (one core, bench/philox_bench.cpp, medians of 3)")
        w("")
        w("| kernel | 32-bit words/s | Bernoulli draws/s |")
        w("|---|---:|---:|")
        for name, r in rates.items():
            w(f"| {name} | {r.get('words/s', 0) / 1e9:.2f} G | {r.get('draws/s', 0) / 1e9:.3f} G |"
              .replace("| 0.00 G |", "| — |").replace("| 0.000 G |", "| — |"))
        # The ops use the widest kernel: the last PhiloxBlocks row (generic, avx2, avx512 order).
        blocks = [r for n, r in rates.items() if n.startswith("PhiloxBlocks") and "Scalar" not in n]
        words = blocks[-1].get("words/s", 0) if blocks else 0
        w("")
        w(f"Target ≥ 1 G words/s per core (the widest kernel, which the ops use): "
          f"{ok(words >= TARGETS['philox_words'])} ({words / 1e9:.2f} G). A Bernoulli "
          "draw takes one Philox block (words 0–1 of counter i), so draws/s is the block rate.")
        w("")
        if words < TARGETS["philox_words"]:
            flagged.append(f"philox {words / 1e9:.2f} G words/s < 1 G")

    # stats
    if any(k.startswith("stats.cat") for k in R):
        pair = R["pair.big"]
        gb = pair["bytes"] / 1e9
        cat, st = agg(R, "stats.cat"), agg(R, "stats.deltaedit")
        ratio = cat["wall"] / st["wall"]
        res["stats"] = {"cat": cat, "deltaedit": st, "throughput_ratio": ratio}
        w("## stats (read both sides of the big pair, per-tensor delta statistics)")
        w("")
        w("| command | wall s | GB/s | peak RSS MB | user+sys s | load1 |")
        w("|---|---:|---:|---:|---:|---:|")
        for label, r in (("`cat base/* post/* > /dev/null`", cat), ("`deltaedit stats --threads 2`", st)):
            w(f"| {label} | {r['wall']:.2f}{spread(r)} | {gb / max(r['wall'], 1e-9):.2f} | {mb(r['rss_kb']):.0f} | "
              f"{r['user'] + r['sys']:.2f} | {r['load1']} |")
        w("")
        w(f"Throughput ratio deltaedit/cat = **{ratio:.2f}** (target ≥ {TARGETS['stats_ratio']}: "
          f"{ok(ratio >= TARGETS['stats_ratio'])}); peak RSS {mb(st['rss_kb']):.0f} MB "
          f"(target < {TARGETS['stats_rss_mb']} MB: {ok(mb(st['rss_kb']) < TARGETS['stats_rss_mb'])}).")
        w("")

    # edit
    if any(k.startswith("edit.") for k in R):
        w("## edit (write W_pre + Δ' as a BF16 checkpoint, 2 threads, hot page cache)")
        w("")
        w("Floor = `cat base/* > /dev/null; cat post/* > out; sync out` (read both inputs, write one output of the "
          "edit's size, fsync it, as deltaedit does), alternating with deltaedit in the same run. Eager = "
          "bench/eager_ref.py (torch per tensor, the usual merging-script way; in-script time scaled per parameter to "
          "the whole pair when measured on a subset). Targets: ≤ 1.3× the floor for pointwise and two-pass ops, ≤ 2× for "
          f"magnitude, peak RSS < {TARGETS['edit_rss_mb']} MB (lowrank: none).")
        w("")
        w("| op | pair | deltaedit s | floor s | ÷ floor | target | eager s | × faster than eager | peak RSS MB | "
          "user+sys s | load1 | |")
        w("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        res["edit"] = {}
        notes = []
        for pname in ("small", "big"):
            if f"pair.{pname}" not in R:
                continue
            pair = R[f"pair.{pname}"]
            ops = {k.split(".")[2] for k in R if k.startswith(f"edit.{pname}.") and k.split(".")[3] == "deltaedit"}
            for op in sorted(ops, key=op_order):
                de, fl, eg = (agg(R, f"edit.{pname}.{op}.{s}") for s in ("deltaedit", "floor", "eager"))
                ej = last_json(f"{a.logs}/edit.{pname}.{op}.eager.out")
                if op == "lowrank":
                    eager_full = eg["wall"]
                    how = "whole pair, the same 2 matrices edited, process wall time"
                elif ej["params"] < pair["params"]:
                    eager_full = ej["seconds"] * pair["params"] / ej["params"]
                    how = (f"{ej['tensors']} tensors / {ej['params'] / 1e6:.1f} M parameters "
                           f"({ej['seconds']:.1f} s in-script), scaled ×{pair['params'] / ej['params']:.2f}")
                else:
                    eager_full = ej["seconds"]
                    how = "whole pair, in-script time"
                notes.append(f"- {op} ({pname}): eager {how}")
                ratio = de["wall"] / fl["wall"]
                rss = mb(de["rss_kb"])
                target, above = floor_check(op, ratio, rss)
                flag = "**ABOVE TARGET**: " + "; ".join(above) if above else ("ok" if target is not None else "")
                if above:
                    flagged.append(f"{op} ({pname}): " + "; ".join(above))
                res["edit"][f"{pname}.{op}"] = {"deltaedit": de, "floor": fl, "eager": eg, "eager_json": ej,
                                                "eager_full_s": eager_full, "vs_floor": ratio,
                                                "speedup_vs_eager": eager_full / de["wall"], "target": target,
                                                "above_target": above}
                w(f"| {op} | {PAIR_NAMES.get(pname, pname)} | {de['wall']:.2f}{spread(de)} | {fl['wall']:.2f}{spread(fl)} | "
                  f"**{ratio:.2f}** | {'—' if target is None else f'≤ {target}'} | {eager_full:.1f} | "
                  f"{eager_full / de['wall']:.1f} | {rss:.0f} | {de['user'] + de['sys']:.2f} | {de['load1']} | {flag} |")
        w("")
        w("Eager figures:")
        md.extend(notes)
        w("")

    # cold cache
    cold = [k for k in R if k.startswith("cold.")]
    if cold:
        w("## edit with a cold page cache (caches dropped before every run, floor too; medians of 2 alternating runs)")
        w("")
        w("| op | pair | deltaedit s | floor s | ÷ floor | target | peak RSS MB | user+sys s | load1 | |")
        w("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
        res["cold"] = {}
        for pname in ("small", "big"):
            ops = {k.split(".")[2] for k in cold if k.split(".")[1] == pname}
            for op in sorted(ops, key=op_order):
                de, fl = agg(R, f"cold.{pname}.{op}.deltaedit"), agg(R, f"cold.{pname}.{op}.floor")
                ratio = de["wall"] / fl["wall"]
                rss = mb(de["rss_kb"])
                target, above = floor_check(op, ratio, rss)
                if above:
                    flagged.append(f"{op} ({pname}, cold): " + "; ".join(above))
                res["cold"][f"{pname}.{op}"] = {"deltaedit": de, "floor": fl, "vs_floor": ratio, "above_target": above}
                flag = "**ABOVE TARGET**: " + "; ".join(above) if above else "ok"
                w(f"| {op} | {PAIR_NAMES.get(pname, pname)} | {de['wall']:.2f}{spread(de)} | {fl['wall']:.2f}{spread(fl)} | "
                  f"**{ratio:.2f}** | {'—' if target is None else f'≤ {target}'} | {rss:.0f} | "
                  f"{de['user'] + de['sys']:.2f} | {de['load1']} | {flag} |")
        w("")

    # scaling
    # Keys are scaling.SIZE.… where SIZE may hold a dot (0.5GB): take it from the pair records.
    sizes = sorted({k[len("pair.scale_"):] for k in R if k.startswith("pair.scale_")},
                   key=lambda t: float(re.sub("[A-Za-z]", "", t)))
    if sizes:
        w("## cost against model size (dare p=0.9 and magnitude p=0.9; medians of 2 alternating runs)")
        w("")
        w("| pair | GB read | floor s | dare s | dare ÷ floor | dare s/GB | dare RSS MB | magnitude s | "
          "magnitude ÷ floor | magnitude s/GB | magnitude RSS MB |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        res["scaling"] = {}
        for size in sizes:
            pr = R[f"pair.scale_{size}"]
            gb = pr["bytes"] / 1e9
            fl = agg(R, f"scaling.{size}.floor.dare")
            fm = agg(R, f"scaling.{size}.floor.magnitude")
            d, g = agg(R, f"scaling.{size}.dare"), agg(R, f"scaling.{size}.magnitude")
            res["scaling"][size] = {"bytes": pr["bytes"], "floor": fl, "floor_m": fm, "dare": d, "magnitude": g}
            w(f"| {size} per side | {gb:.2f} | {fl['wall']:.2f} | {d['wall']:.2f} | {d['wall'] / fl['wall']:.2f} | "
              f"{d['wall'] / gb:.3f} | {mb(d['rss_kb']):.0f} | {g['wall']:.2f} | {g['wall'] / fm['wall']:.2f} | "
              f"{g['wall'] / gb:.3f} | {mb(g['rss_kb']):.0f} |")
        w("")

    # svd
    if "svd" in R:
        sj = last_json(f"{a.logs}/svd.out")
        res["svd"] = {"time": R["svd"], "result": sj}
        w(f"## lowrank: randomized vs exact SVD ({sj['rows']}×{sj['cols']}, rank {sj['rank']}, "
          "decaying spectrum, through the op registry)")
        w("")
        w("| keys | wall s | CPU s | rel. Frobenius error | speed-up (wall) | speed-up (CPU) | error ÷ exact error |")
        w("|---|---:|---:|---:|---:|---:|---:|")
        for r in sj["runs"]:
            w(f"| {r['keys']} | {r['seconds']:.2f} | {r['cpu_seconds']:.2f} | {r['rel_err']:.5f} | "
              f"{r['speedup']:.2f} | {r['cpu_speedup']:.2f} | {r['err_ratio']:.4f} |")
        d = sj["runs"][1]
        w("")
        w(f"Default randomized: speed-up {d['cpu_speedup']:.2f}× CPU time (target ≥ {TARGETS['svd_speedup']:.0f}×: "
          f"{ok(d['cpu_speedup'] >= TARGETS['svd_speedup'])}); error {100 * (d['err_ratio'] - 1):.2f}% above the "
          f"exact rank-r error (target ≤ 1%: {ok(d['err_ratio'] <= TARGETS['svd_err'])}). CPU time is the "
          "process's (OpenBLAS worker threads included), the load-independent figure."
          + (f" This table: {R['svd']['rerun']}." if R["svd"].get("rerun") else ""))
        w("")

    # model
    if any(k == "model.cpp" or k.startswith("model.cpp.") for k in R):
        keys = sorted(k for k in R if k == "model.cpp" or k.startswith("model.cpp."))
        runs_cpp, runs_eag = [], []
        for k in keys:
            out = open(f"{a.logs}/{k}.out").read()
            runs_cpp.append({n: float(v) for n, v in
                             re.findall(r"^(forward\+backward|forward)\s.*?: (\d+) tokens/s", out, re.M)})
            ej = last_json(f"{a.logs}/{k.replace('model.cpp', 'model.eager')}.out")
            runs_eag.append({"forward": ej["forward"], "forward+backward": ej["forward_backward"]})

        def med(xs):
            xs = sorted(xs)
            return xs[len(xs) // 2] if len(xs) % 2 else 0.5 * (xs[len(xs) // 2 - 1] + xs[len(xs) // 2])

        cpp = {n: med([r.get(n, float("nan")) for r in runs_cpp]) for n in ("forward", "forward+backward")}
        eag = {n: med([r[n] for r in runs_eag]) for n in ("forward", "forward+backward")}
        res["model"] = {"cpp": cpp, "eager": eag, "runs_cpp": runs_cpp, "runs_eager": runs_eag,
                        "cpp_time": agg(R, "model.cpp"), "eager_time": agg(R, "model.eager")}
        R["model.cpp"], R["model.eager"] = agg(R, "model.cpp"), agg(R, "model.eager")
        w(f"## model forward+backward ({ej['params'] / 1e6:.1f} M-parameter Llama, batch {ej['batch']}, "
          f"seq {ej['seq']}, {ej['threads']} threads, {ej['dtype']})")
        w("")
        w(f"Medians of {len(runs_cpp)} alternating runs each.")
        w("")
        w("| pass | model_bench (C++ libtorch) tokens/s | model_eager.py tokens/s | ratio C++/eager | load1 |")
        w("|---|---:|---:|---:|---:|")
        for k in ("forward", "forward+backward"):
            w(f"| {k} | {cpp.get(k, float('nan')):.0f} | {eag[k]:.0f} | {cpp.get(k, float('nan')) / eag[k]:.2f} | "
              f"{R['model.cpp']['load1']} / {R['model.eager']['load1']} |")
        fb = cpp.get("forward+backward", 0) / eag["forward+backward"]
        res["model"]["ratio_fb"] = fb
        w("")
        w(f"forward+backward ratio {fb:.2f} (target ≥ {TARGETS['model_ratio']}: {ok(fb >= TARGETS['model_ratio'])}).")
        w("")

    w("## above target")
    w("")
    md.extend([f"- {x}" for x in flagged] or ["- none"])
    w("")
    res["above_target"] = flagged
    with open(a.json, "w") as f:
        json.dump(res, f, indent=2)
    with open(a.md, "w") as f:
        f.write("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
