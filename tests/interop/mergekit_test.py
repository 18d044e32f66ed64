"""Interop 3: the same YAML run by mergekit (the pinned PyPI release) and by `deltaedit merge`.

Fixtures, made here: the llama fixture base (F32, 2 layers, vocab 1000, untied lm_head) and three
fine-tunes of it, base + seeded Gaussian noise of different scales (a few MB in all).

- Deterministic methods whose arithmetic deltaedit reproduces (linear, task_arithmetic, ties,
  breadcrumbs, breadcrumbs_ties, nearswap, ram, ramplus_tl, passthrough; F32 and BF16): every output
  tensor equals mergekit's bit for bit, or within one ulp of the output dtype on at most 0.01 % of
  the elements (MERGE.md §0), tensor names, shapes and dtypes identical; counts printed.
- Methods built on whole-tensor reductions (model_stock, slerp, nuslerp, sce, karcher,
  multislerp): norms, dot products and variances are sums over the tensor, which torch accumulates
  in f32 in its own blocked order and deltaedit in f64 in a fixed order rounded once (at least as
  close to the exact sum; src/merge/method_impl.h). The per-tensor scalars (cosines, norms,
  weights) then differ in their last bits, and the output, Σ c_i·x_i with those coefficients,
  differs by a few ulps of the operands: where the result cancels (|out| ≪ |x_i|), by many ulps of
  the result. Bound: |mergekit − deltaedit| ≤ 32 ulp(max_i |x_i|) per element (the largest
  observed is 20, multislerp with a base); per method the count of identical elements, of elements
  within 1 ulp of the output and the largest distance in operand ulps are printed. Independent
  check of that decision: mergekit's own formula run in float64 (dtype: float64) is the reference,
  and deltaedit's Frobenius error from it must stay within 1.25× of mergekit's f32 error.
- ties in BF16: BF16 task vectors have many equal magnitudes, and mergekit keeps the top k by
  torch.argsort, which is not stable (introsort), so which of the entries tied at the cut survive
  is unspecified; deltaedit keeps the lowest flat indices (MERGE.md §2.2 [R]). Elements may differ
  only where some model's |τ| equals its cut value; everywhere else bit for bit.
- Documented refusals (MERGE.md §0 validation): ties with int(density·n) = 0 for some tensor, which
  mergekit 0.1.5 runs (it keeps one entry), deltaedit rejects with exit 2 naming the density.
- Random methods (dare_linear, dare_ties, della, della_linear), one fine-tune at weight 1 so that
  merged − base is that model's sparsified task vector: on both sides, per tensor, the kept
  fraction lies within 5 binomial standard deviations of the density (della: of density ± ε/2
  over the smaller and larger half of each row's magnitudes), and the survivors are rescaled by
  exactly the L1 ratio Σ|τ| / Σ|kept τ| of that side's own mask (relative 1e-5). The mask itself
  differs by design (MERGE.md §0: keyed Philox draws, mergekit's torch stream).
- Configs mergekit silently misreads (a typo'd parameter, a global parameter under a model, an
  unknown top-level key): mergekit runs them (no error; one through the `mergekit-yaml` command,
  exit 0) while `deltaedit merge` exits 2 naming the key.

mergekit runs in this process through the function `mergekit-yaml` calls (run_merge), on the CPU,
so its imports are paid once; one config also goes through the `mergekit-yaml` command line and
must give the same bytes.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import torch
import yaml
from safetensors.torch import save_file

from common import Judge, read_checkpoint, same_bits, ulp_distance, ulp_of

j = Judge(__doc__)

from mergekit.config import MergeConfiguration  # noqa: E402  (after Judge: offline env set)
from mergekit.merge import run_merge  # noqa: E402
from mergekit.options import MergeOptions  # noqa: E402

OPTIONS = MergeOptions(copy_tokenizer=False, quiet=True, write_model_card=False, device="cpu")
MAX_DIFF_FRACTION = 1e-4  # MERGE.md §0: bit-identical on ≥ 99.99 % of the elements

# ---------------------------------------------------------------------------------------------
# Fixtures

src = j.fixtures / "llama" / "base"
fx = j.work / "models"
base_t, _ = read_checkpoint(src)


def make_model(name, noise, seed):
    d = fx / name
    d.mkdir(parents=True)
    shutil.copy(src / "config.json", d / "config.json")
    g = torch.Generator().manual_seed(seed)
    tensors = {k: (v + noise * torch.randn(v.shape, generator=g)).contiguous() for k, v in base_t.items()}
    if noise == 0:
        tensors = dict(base_t)
    save_file(tensors, str(d / "model.safetensors"), metadata={"format": "pt"})
    return d


BASE = make_model("base", 0.0, 0)
FT = [make_model(f"ft{i}", s, 100 + i) for i, s in enumerate([0.01, 0.02, 0.015])]
MODELS = [base_t] + [read_checkpoint(d)[0] for d in FT]
MODEL_OF = {str(d): m for d, m in zip([BASE, *FT], MODELS)}


def config(method, models, base=BASE, dtype="float32", params=None, extra=""):
    """A mergekit YAML: models = [(dir, {param: value})], params = the global parameters."""
    doc = {"merge_method": method, "dtype": dtype}
    if base is not None:
        doc["base_model"] = str(base)
    doc["models"] = [{"model": str(m), **({"parameters": p} if p else {})} for m, p in models]
    if params:
        doc["parameters"] = params
    return yaml.safe_dump(doc, sort_keys=False) + extra


def mergekit(text, out):
    """mergekit's run_merge on the parsed YAML, exactly as mergekit-yaml does it."""
    cfg = MergeConfiguration.model_validate(yaml.safe_load(text))
    run_merge(cfg, str(out), options=OPTIONS, config_source=text)
    return read_checkpoint(out)[0]


def deltaedit(text, out, *extra):
    """(exit status, stderr, tensors or None) of `deltaedit merge`."""
    cfg = out.with_suffix(".yaml")
    cfg.write_text(text)
    r = subprocess.run([j.bin, "merge", str(cfg), "--out", str(out), *map(str, extra)], capture_output=True, text=True)
    return r.returncode, r.stderr, (read_checkpoint(out)[0] if r.returncode == 0 else None)


n_case = 0


def run_both(tag, text, *extra):
    global n_case
    n_case += 1
    w = j.work / f"case{n_case:02d}"
    w.mkdir()
    theirs = mergekit(text, w / "mergekit")
    rc, err, mine = deltaedit(text, w / "deltaedit", *extra)
    j.check(rc == 0, f"{tag}: deltaedit merge exited {rc}: {err.strip()[:600]}")
    return theirs, mine


# ---------------------------------------------------------------------------------------------
# Deterministic methods

W3 = [(FT[0], {"weight": 0.5}), (FT[1], {"weight": 0.3}), (FT[2], {"weight": 0.7})]
REDUCTION = ("model_stock", "slerp", "nuslerp", "sce", "karcher", "multislerp")
REDUCTION_ULPS = 32
DETERMINISTIC = [
    ("linear", config("linear", W3, base=None)),
    ("linear normalize=false", config("linear", W3, base=None, params={"normalize": False})),
    ("task_arithmetic", config("task_arithmetic", W3, params={"lambda": 0.9})),
    ("task_arithmetic weight gradient", config("task_arithmetic", [(FT[0], {"weight": [0.2, 0.9]}), (FT[1], {"weight": 0.4})])),
    ("ties", config("ties", [(m, {**p, "density": d}) for (m, p), d in zip(W3, [0.5, 0.7, 0.3])])),
    ("ties normalize=false lambda", config("ties", [(m, {**p, "density": 0.6}) for m, p in W3],
                                           params={"normalize": False, "lambda": 1.2})),
    ("breadcrumbs", config("breadcrumbs", [(m, {**p, "density": 0.8, "gamma": 0.05}) for m, p in W3])),
    ("breadcrumbs_ties", config("breadcrumbs_ties", [(m, {**p, "density": 0.7, "gamma": 0.05}) for m, p in W3])),
    # gamma 0.01 of the 64-entry norms: int(0.64) = 0 outliers (0.1.5 keeps the top density).
    ("breadcrumbs default gamma", config("breadcrumbs", [(m, {**p, "density": 0.9}) for m, p in W3])),
    ("model_stock", config("model_stock", [(m, {}) for m in FT])),
    ("model_stock filter_wise", config("model_stock", [(m, {}) for m in FT], params={"filter_wise": True})),
    ("slerp", config("slerp", [(FT[0], {})], params={"t": 0.3})),
    ("slerp t gradient", config("slerp", [(FT[1], {})], params={"t": [0.1, 0.8]})),
    ("nuslerp with base", config("nuslerp", [(FT[0], {"weight": 0.6}), (FT[1], {"weight": 0.4})])),
    ("nuslerp no base", config("nuslerp", [(FT[0], {"weight": 0.6}), (FT[1], {"weight": 0.4})], base=None)),
    ("nuslerp row-wise", config("nuslerp", [(FT[0], {"weight": 0.5}), (FT[2], {"weight": 0.5})],
                                params={"nuslerp_flatten": False})),
    ("sce", config("sce", [(m, {}) for m in FT], params={"select_topk": 0.5})),
    ("sce select_topk=1", config("sce", [(m, {}) for m in FT])),
    ("karcher", config("karcher", [(m, {}) for m in FT], base=None)),
    ("multislerp", config("multislerp", W3, base=None)),
    ("multislerp with base", config("multislerp", W3)),
    ("nearswap", config("nearswap", [(FT[0], {})], params={"t": 0.005})),
    ("ram", config("ram", [(m, {}) for m in FT])),
    ("ramplus_tl", config("ramplus_tl", [(m, {}) for m in FT])),
    ("passthrough", config("passthrough", [(FT[1], {})], base=None)),
    ("passthrough slices (layer stacking)",
     "merge_method: passthrough\ndtype: float32\nslices:\n"
     f"  - sources:\n      - model: {FT[0]}\n        layer_range: [0, 2]\n"
     f"  - sources:\n      - model: {FT[1]}\n        layer_range: [1, 2]\n"),
    ("task_arithmetic bf16", config("task_arithmetic", W3, dtype="bfloat16")),
    ("ties bf16", config("ties", [(m, {**p, "density": 0.5}) for m, p in W3], dtype="bfloat16")),
    ("linear bf16", config("linear", W3, base=None, dtype="bfloat16")),
    ("slerp bf16", config("slerp", [(FT[0], {})], dtype="bfloat16", params={"t": 0.3})),
]


def operand_scale(k):
    """max_i |x_i| over the fixture models at each element of tensor k (f32)."""
    return torch.stack([m[k].abs().float() for m in MODELS]).amax(0)


def ties_at_cut(text, k, shape):
    """Elements of tensor k where some model's BF16 |τ| equals its TIES cut (the k-th largest)."""
    doc = yaml.safe_load(text)
    b = base_t[k].bfloat16()
    out = torch.zeros(shape, dtype=torch.bool)
    for entry in doc["models"]:
        x = MODEL_OF[entry["model"]][k].bfloat16()
        w = (x - b).abs().float().flatten()
        keep = max(1, int(entry["parameters"].get("density", 1.0) * w.numel()))
        cut = w.sort(descending=True).values[keep - 1]
        out |= (w == cut).reshape(shape)
    return out


def compare(tag, text, theirs, mine):
    names = set(theirs) ^ set(mine)
    j.check(not names, f"{tag}: tensors on one side only: {sorted(names)[:6]}")
    reduction = tag.split()[0] in REDUCTION
    tied = tag.startswith("ties") and "bf16" in tag
    differ = one = total = at_cut = 0
    worst, worst_operand = 0, 0.0
    for k in sorted(set(theirs) & set(mine)):
        a, b = theirs[k], mine[k]
        if a.dtype != b.dtype or a.shape != b.shape:
            j.check(False, f"{tag}: {k}: mergekit {a.dtype}{list(a.shape)}, deltaedit {b.dtype}{list(b.shape)}")
            continue
        d = ulp_distance(a, b)
        total += d.numel()
        differ += int((d > 0).sum())
        one += int((d == 1).sum())
        worst = max(worst, int(d.max()))
        if reduction:
            dist = (a.double() - b.double()).abs() / ulp_of(operand_scale(k), a.dtype)
            worst_operand = max(worst_operand, float(dist.max()))
            j.check(float(dist.max()) <= REDUCTION_ULPS,
                    f"{tag}: {k}: {int((dist > REDUCTION_ULPS).sum())} elements beyond {REDUCTION_ULPS} "
                    f"ulps of the operands (max {float(dist.max()):.1f})")
        elif tied:
            cut = ties_at_cut(text, k, a.shape)
            at_cut += int(((d > 0) & cut).sum())
            j.check(not bool(((d > 0) & ~cut).any()), f"{tag}: {k}: {int(((d > 0) & ~cut).sum())} elements "
                                                      f"differ away from the magnitude ties at the cut")
        elif int(d.max()) > 1:
            j.check(False, f"{tag}: {k}: {int((d > 1).sum())} of {d.numel()} elements beyond 1 ulp "
                           f"(max {int(d.max())} ulp)")
    if not reduction and not tied:
        j.check(differ <= MAX_DIFF_FRACTION * total, f"{tag}: {differ} of {total} elements differ (> 0.01 %)")
    line = f"{tag}: {total} elements in {len(theirs)} tensors, {total - differ} identical, {one} at 1 ulp"
    if differ > one:
        line += f", {differ - one} beyond (max {worst} ulp of the result)"
    if reduction:
        line += f"; largest difference {worst_operand:.1f} ulps of the operands (bound {REDUCTION_ULPS})"
    if tied:
        line += f"; all {at_cut} differing elements are magnitude ties at a model's cut"
    print(line, flush=True)


def against_f64(tag, text, theirs, mine):
    """Reduction methods: mergekit's own formula evaluated in float64 (dtype: float64) is the
    reference; deltaedit's RMS error from it must not exceed 1.25× mergekit's f32 error (both are
    dominated by the final f32 rounding; measured ratios 0.14–1.06)."""
    doc = yaml.safe_load(text)
    doc["dtype"] = "float64"
    ref = mergekit(yaml.safe_dump(doc, sort_keys=False), j.work / f"case{n_case:02d}" / "mergekit-f64")
    e_de = e_mk = 0.0
    for k in theirs:
        r = ref[k].double()
        e_de += float(((mine[k].double() - r) ** 2).sum())
        e_mk += float(((theirs[k].double() - r) ** 2).sum())
    e_de, e_mk = e_de**0.5, e_mk**0.5
    j.check(e_de <= 1.25 * e_mk, f"{tag}: RMS error from mergekit's float64 result: deltaedit {e_de:.3e} > 1.25 × "
                                 f"mergekit's {e_mk:.3e}")
    print(f"{tag}: Frobenius error from mergekit's float64 evaluation: deltaedit {e_de:.3e}, mergekit {e_mk:.3e} "
          f"(ratio {e_de / e_mk:.2f})", flush=True)


for tag, text in DETERMINISTIC:
    theirs, mine = run_both(tag, text)
    if mine is not None:
        compare(tag, text, theirs, mine)
        if tag.split()[0] in REDUCTION and "bf16" not in tag:
            against_f64(tag, text, theirs, mine)

# The mergekit-yaml command line gives what run_merge gives in this process.
cli_out = j.work / "cli"
r = subprocess.run([str(Path(sys.executable).parent / "mergekit-yaml"), str(j.work / "case03" / "deltaedit.yaml"),
                    str(cli_out), "--no-copy-tokenizer", "--no-write-model-card", "--quiet"], capture_output=True, text=True)
j.check(r.returncode == 0, f"mergekit-yaml exited {r.returncode}: {r.stderr[-600:]}")
if r.returncode == 0:
    a, _ = read_checkpoint(cli_out)
    b, _ = read_checkpoint(j.work / "case03" / "mergekit")
    j.check(set(a) == set(b) and all(same_bits(a[k], b[k]) for k in a), "mergekit-yaml and run_merge differ")

# ---------------------------------------------------------------------------------------------
# Random methods: kept fraction and rescale


def sparsified(merged, k):
    """merged − base for tensor k, in f64 (exact)."""
    return merged[k].double() - base_t[k].double()


ft0, _ = read_checkpoint(FT[0])
TAU = {k: ft0[k].double() - base_t[k].double() for k in base_t}


def check_random(tag, merged, side, density, epsilon=None):
    kept_all = n_all = 0
    for k in sorted(merged):
        tau = TAU[k]
        m = sparsified(merged, k)
        kept = m != 0
        n = tau.numel()
        frac = float(kept.sum()) / n
        kept_all += int(kept.sum())
        n_all += n
        # The L1 rescale of this side's own mask: out = ⟦b + ⟦τ·ratio⟧⟧ with ratio = Σ|τ| / Σ|τ·mask|.
        # Bound: one ulp of the output (the final rounding) plus 1e-5 relative for the ratio and
        # the product (mergekit sums |τ| in f32: its ratio carries a few ulps of summation error).
        if kept.any():
            scale = float(tau.abs().sum() / tau[kept].abs().sum())
            expect = tau[kept] * scale
            err = (m[kept] - expect).abs()
            out_ulp = ulp_of(torch.maximum(merged[k].abs(), base_t[k].abs()).float())[kept]
            bad = err > out_ulp + 1e-5 * expect.abs()
            j.check(not bool(bad.any()), f"{tag} ({side}): {k}: {int(bad.sum())} survivors are not τ × the L1 ratio "
                                         f"{scale:.6g} (max error {float(err.max()):.3g})")
        if epsilon is not None and tau.dim() == 2 and tau.shape[1] > 1:
            # Keep probability rises linearly with the magnitude rank in each row from d − ε to
            # d + ε: the lower half of the ranks keeps d − ε/2 on average, the upper d + ε/2.
            order = tau.abs().argsort(dim=1)
            half = tau.shape[1] // 2
            lo = kept.gather(1, order[:, :half]).double().mean().item()
            hi = kept.gather(1, order[:, -half:]).double().mean().item()
            nh = half * tau.shape[0]
            for got, p, what in ((lo, density - epsilon / 2, "smaller"), (hi, density + epsilon / 2, "larger")):
                bound = 5 * (p * (1 - p) / nh) ** 0.5 + 2 * epsilon / tau.shape[1]
                j.check(abs(got - p) <= bound, f"{tag} ({side}): {k}: kept {got:.4f} of the {what} half, "
                                               f"expected {p:.4f} ± {bound:.4f}")
        else:
            bound = 5 * (density * (1 - density) / n) ** 0.5
            j.check(abs(frac - density) <= bound, f"{tag} ({side}): {k}: kept {frac:.4f}, expected "
                                                  f"{density} ± {bound:.4f}")
    return kept_all / n_all


RANDOM = [
    ("dare_linear", dict(density=0.4), None),
    ("dare_ties", dict(density=0.6), None),
    ("della", dict(density=0.5, epsilon=0.2), 0.2),
    ("della_linear", dict(density=0.4, epsilon=0.1), 0.1),
]
for method, p, eps in RANDOM:
    tag = f"{method} (density {p['density']})"
    theirs, mine = run_both(tag, config(method, [(FT[0], {"weight": 1.0, **p})]), "--seed", 5)
    if mine is None:
        continue
    ft = check_random(tag, theirs, "mergekit", p["density"], eps)
    fd = check_random(tag, mine, "deltaedit", p["density"], eps)
    print(f"{tag}: kept fraction mergekit {ft:.4f}, deltaedit {fd:.4f}; survivors × the L1 ratio on both", flush=True)
    # Three models: both run, and the merged deltas agree in scale (relative L2 within 10 %: the
    # masks differ, the expectation is the same).
    theirs, mine = run_both(f"{method} 3 models", config(method, [(m, {**q, **p}) for m, q in W3]), "--seed", 5)
    if mine is not None:
        nt = sum(float((theirs[k].double() - base_t[k].double()).norm() ** 2) for k in theirs) ** 0.5
        nm = sum(float((mine[k].double() - base_t[k].double()).norm() ** 2) for k in mine) ** 0.5
        j.check(abs(nm / nt - 1) <= 0.1, f"{method} 3 models: ‖merged − base‖ deltaedit {nm:.4g}, mergekit {nt:.4g}")
        print(f"{method} 3 models: ‖merged − base‖ deltaedit {nm:.4g}, mergekit {nt:.4g}", flush=True)

# ---------------------------------------------------------------------------------------------
# Documented refusal: ties keeping int(density·n) = 0 entries of the 64-entry norms

text = config("ties", [(FT[0], {"weight": 0.5, "density": 0.01}), (FT[1], {"weight": 0.5, "density": 0.5})])
w = j.work / "refusal"
w.mkdir()
try:
    mergekit(text, w / "mergekit")
    ok = True
except Exception as e:  # noqa: BLE001
    ok = False
    j.check(False, f"ties int(d·n) = 0: mergekit 0.1.5 rejects it now ({e}); update MERGE.md and this case")
rc, err, _ = deltaedit(text, w / "deltaedit")
j.check(rc == 2 and "density" in err, f"ties int(d·n) = 0: deltaedit exited {rc}, expected 2 naming density: {err[:300]}")
print(f"ties int(density·n) = 0: mergekit {'runs it' if ok else 'fails'}, deltaedit exits {rc}: "
      f"{err.strip().splitlines()[0][:160] if err.strip() else ''}", flush=True)

# ---------------------------------------------------------------------------------------------
# Configs mergekit silently misreads

MISREAD = [
    ("typo'd parameter desnity", "desnity", config("ties", [(FT[0], {"weight": 0.5, "desnity": 0.3}), (FT[1], {"weight": 0.5})])),
    ("global parameter under a model", "normalize",
     config("ties", [(FT[0], {"weight": 0.5, "density": 0.5, "normalize": False}), (FT[1], {"weight": 0.5})])),
    ("slerp t under the model", "t", config("slerp", [(FT[0], {"t": 0.5})], params={"t": 0.2})),
    ("unknown top-level key", "out_dtpye", config("linear", W3, base=None, extra="out_dtpye: bfloat16\n")),
]
for i, (tag, key, text) in enumerate(MISREAD):
    w = j.work / f"misread{i}"
    w.mkdir()
    if i == 0:  # the command line, for its exit status
        (w / "c.yaml").write_text(text)
        r = subprocess.run([str(Path(sys.executable).parent / "mergekit-yaml"), str(w / "c.yaml"), str(w / "mergekit"),
                            "--no-copy-tokenizer", "--quiet"], capture_output=True, text=True)
        j.check(r.returncode == 0, f"{tag}: mergekit-yaml exited {r.returncode} (expected to accept it): {r.stderr[-300:]}")
    else:
        try:
            mergekit(text, w / "mergekit")
        except Exception as e:  # noqa: BLE001
            j.check(False, f"{tag}: mergekit rejects it ({e}); this case no longer shows a silent misread")
    rc, err, _ = deltaedit(text, w / "deltaedit")
    j.check(rc == 2, f"{tag}: deltaedit merge exited {rc}, expected 2")
    j.check(key in err, f"{tag}: deltaedit's error does not name '{key}': {err.strip()[:300]}")
    j.check(not (w / "deltaedit").exists(), f"{tag}: deltaedit created its --out")
    print(f"{tag}: mergekit accepts it, deltaedit exits {rc}: {err.strip().splitlines()[0][:160] if err.strip() else ''}",
          flush=True)

j.finish()
