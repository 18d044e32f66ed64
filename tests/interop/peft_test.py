"""Interop 2: peft reads the adapters deltaedit writes, and deltaedit reads the adapters peft writes.

A. Every kind of adapter `extract-lora` writes (a fixed rank with the exact and the randomized SVD,
   --energy with a rank_pattern, --vllm with a rank and with --energy, --save-modules, a BF16 post,
   and the qwen2 (biases, tied embeddings) and mistral fixtures) loads with
   PeftModel.from_pretrained on the matching transformers model with no missing or unexpected
   keys, and merge_and_unload() gives, for every target module, the weights `edit --op lowrank` of
   the same ranks writes (the same factors: same SVD method, seed and rank per module). Other
   tensors: the base's (left out) or post's bit for bit (modules_to_save).
B. Adapters written by peft itself (random non-zero A and B: init_lora_weights=False; rsLoRA;
   rank_pattern + alpha_pattern; embedding LoRA; modules_to_save; qwen2 with biases and a tied,
   LoRA-adapted embedding; mistral) given to deltaedit as --post: the W_post deltaedit forms
   (written by `edit` with every tensor excluded from the op, i.e. copied from post) equals
   merge_and_unload()'s state dict.

Tolerance. The two sides compute the same real number W + s·Σ_t B_it·A_tj with different f32
operation orders (deltaedit's fixed loops vs torch's BLAS matmul, and for part A the factor
products U·√S, √S·Vᵀ against U·S·Vᵀ), each rounding once to the output dtype at the end. One ulp
of the output holds only where the f32 evaluation errors of the rank-r sum stay below half an
ulp of the result. Each side's error is at most γ_{r+3}·s·Σ_t |B_it|·|A_tj| (r − 1 additions, one
product per term, up to three roundings of the factors and one of the scaling; γ_k = k·2⁻²⁴/(1 −
k·2⁻²⁴)), so an element may differ by more than one ulp wherever s·Σ|B||A| is not small against
|W + s·B·A|: where the rank-r terms cancel each other or W, or simply where the delta is as large
as the weight — as on these fixtures, fine-tuned for 40 AdamW steps from a 0.02-std init, where
|Δ| ≳ |W_base| (10–35 % of the elements of a low-rank extraction; real fine-tunes, |Δ| ≪ |W|, do
not have this). There the bound is the forward-error bound of the two evaluations:
    |got − want| ≤ ulp(max(|got|, |want|)) + (2r + 6)·2⁻²⁴·s·Σ_t |B_it|·|A_tj|.
Per comparison the counts of identical, 1-ulp and larger differences are printed, with the worst
ratio to the bound and the smallest s·Σ|B||A| / |W| among the elements beyond one ulp.
"""

import json
import re
import warnings
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors import safe_open
from transformers import AutoModelForCausalLM

from common import UNIT_ROUNDOFF, Judge, read_checkpoint, same_bits, ulp_distance, ulp_of

j = Judge(__doc__)
U32 = UNIT_ROUNDOFF[torch.float32]
VLLM_RANKS = {1, 8, 16, 32, 64, 128, 256, 320, 512}
PREFIX = "base_model.model."


def read_adapter(d):
    """(adapter_config.json, {module: (A, B, is_embedding)}, other tensors) of an adapter dir."""
    cfg = json.loads((Path(d) / "adapter_config.json").read_text())
    lora, other = {}, {}
    with safe_open(str(Path(d) / "adapter_model.safetensors"), framework="pt") as h:
        for k in h.keys():
            t = h.get_tensor(k)
            m = re.fullmatch(re.escape(PREFIX) + r"(.*)\.(lora_A|lora_B)\.weight", k)
            e = re.fullmatch(re.escape(PREFIX) + r"(.*)\.(lora_embedding_A|lora_embedding_B)", k)
            if m or e:
                mod, which = (m or e).groups()
                a, b, _ = lora.get(mod, (None, None, None))
                if which.endswith("A"):
                    a = t
                else:
                    b = t
                lora[mod] = (a, b, e is not None)
            else:
                other[k] = t
    return cfg, lora, other


def scaling_of(cfg, module, rank):
    """peft's scaling for a module: lora_alpha (or the first alpha_pattern key matching like peft's
    `(.*\\.)?(KEY)$`) over r (or √r with use_rslora)."""
    alpha = cfg["lora_alpha"]
    for key, v in (cfg.get("alpha_pattern") or {}).items():
        if re.match(rf"(.*\.)?({key})$", module):
            alpha = v
            break
    return alpha / (rank**0.5 if cfg.get("use_rslora") else rank)


def load_peft(base_dir, adapter_dir, tag):
    """PeftModel.from_pretrained on the base (f32) → merge_and_unload() state dict; a warning about
    missing or unexpected adapter keys is a failure."""
    base = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pm = PeftModel.from_pretrained(base, str(adapter_dir))
    for w in caught:
        msg = str(w.message)
        j.check(not re.search(r"missing adapter keys|unexpected keys|[Mm]issing keys", msg),
                f"{tag}: PeftModel.from_pretrained warns: {msg[:300]}")
    merged = pm.merge_and_unload()
    return {k: v.detach().clone() for k, v in merged.state_dict().items()}


def compare_lora_tensor(tag, name, got, want, a, b, s, embedding):
    """got (peft) vs want (deltaedit), same dtype: ≤ 1 ulp, or within the cancellation bound."""
    if got.shape != want.shape or got.dtype != want.dtype:
        j.check(False, f"{tag}: {name}: {got.dtype}{list(got.shape)} vs {want.dtype}{list(want.shape)}")
        return 0, 0, 0.0, float("inf")
    d = ulp_distance(got, want)
    over = d > 1
    ratio, amp = 0.0, float("inf")
    if over.any():
        r = a.shape[0]
        terms = b.double().abs() @ a.double().abs()  # Σ_t |B_it||A_tj|
        if embedding:
            terms = terms.T
        bound = ulp_of(torch.maximum(got.abs(), want.abs())) + (2 * r + 6) * U32 * abs(s) * terms
        diff = (got.double() - want.double()).abs()
        ratio = float((diff[over] / bound[over]).max())
        # How large the summed terms are against the result there.
        amp = float((abs(s) * terms[over] / torch.maximum(got.abs(), want.abs()).double()[over]).min())
        j.check(ratio <= 1.0, f"{tag}: {name}: {int(over.sum())} elements beyond 1 ulp, the largest at "
                              f"{ratio:.3g}× the cancellation bound")
    return int((d == 1).sum()), int(over.sum()), ratio, amp


def report(tag, n_mod, elems, one, over, ratio, amp):
    tail = ""
    if over:
        tail = f" (worst at {ratio:.3g}× the bound; there s·Σ|B||A| ≥ {amp:.3g}× |W|)"
    print(f"{tag}: {n_mod} LoRA modules, {elems} elements: {elems - one - over} identical, {one} at 1 ulp, "
          f"{over} beyond 1 ulp{tail}", flush=True)


# ---------------------------------------------------------------------------------------------
# A. extract-lora → peft

FIX = j.fixtures


def extract_case(tag, arch, post_name, extract_args, seed=0, save_modules=()):
    base = FIX / arch / "base"
    post = FIX / arch / post_name
    w = j.work / "extract" / tag
    adapter = w / "adapter"
    w.mkdir(parents=True, exist_ok=True)
    rep = json.loads(j.run("extract-lora", "--base", base, "--post", post, "--out", adapter, "--seed", seed,
                           "--json", *extract_args))
    cfg, lora, other = read_adapter(adapter)
    j.check(len(lora) > 0, f"{tag}: the adapter has no LoRA modules")
    j.check(cfg.get("peft_type") == "LORA", f"{tag}: peft_type {cfg.get('peft_type')}")
    vllm = "--vllm" in extract_args
    if vllm:
        ranks = {a.shape[0] for a, _, _ in lora.values()} | {cfg["r"]} | set((cfg.get("rank_pattern") or {}).values())
        j.check(ranks <= VLLM_RANKS, f"{tag}: --vllm ranks {sorted(ranks)} outside {sorted(VLLM_RANKS)}")
        j.check(not cfg.get("modules_to_save") and not other, f"{tag}: --vllm wrote modules_to_save {other.keys()}")
        j.check(not any(".bias" in k for k in other), f"{tag}: --vllm wrote bias keys")

    # The same factors through `edit --op lowrank`: per (SVD rank, method), one edit whose only op
    # covers exactly those modules (op 0, so the randomized SVD's draws are keyed as extract-lora's).
    # The SVD rank is the count of non-zero rows of A (--vllm pads with zero rows).
    methods = {m["module"]: m["method"] for m in rep["modules"]}
    groups = {}
    for mod, (a, _, _) in lora.items():
        svd_rank = int((a.abs().amax(dim=1) > 0).sum())
        groups.setdefault((svd_rank, methods.get(mod, "exact")), []).append(mod)
    want = None
    for g, ((r, method), mods) in enumerate(sorted(groups.items())):
        inc = "^(" + "|".join(re.escape(m + ".weight") for m in mods) + ")$"
        spec = f"lowrank:rank={r},method={method}"
        if method == "randomized":
            spec += ",oversample=10,power_iters=4"
        ref_dir = w / f"edit{g}"
        j.run("edit", "--base", base, "--post", post, "--seed", seed, "--out", ref_dir, "--op", spec + f",include={inc}")
        part, _ = read_checkpoint(ref_dir)
        if want is None:
            want = part
        for m in mods:
            want[m + ".weight"] = part[m + ".weight"]
    base_t, _ = read_checkpoint(base)
    post_t, _ = read_checkpoint(post)

    merged = load_peft(base, adapter, tag)
    one = over = elems = 0
    worst, amp = 0.0, float("inf")
    for mod, (a, b, emb) in lora.items():
        name = mod + ".weight"
        if name not in want:
            j.check(False, f"{tag}: adapter module {mod} is not a tensor of the checkpoint")
            continue
        got = merged[name].to(want[name].dtype)  # peft on the f32 base; edit writes post's dtype
        o1, o2, rt, am = compare_lora_tensor(tag, name, got, want[name], a, b, scaling_of(cfg, mod, a.shape[0]), emb)
        one, over, elems, worst, amp = one + o1, over + o2, elems + got.numel(), max(worst, rt), min(amp, am)
    saved = [k for k in want if any(k.startswith(m + ".") or k == m for m in save_modules)]
    for k in want:
        if k[: -len(".weight")] in lora or not k.endswith(("weight", "bias")):
            continue
        if k in saved:
            j.check(same_bits(merged[k], post_t[k]), f"{tag}: modules_to_save {k} is not post's tensor")
        else:
            j.check(same_bits(merged[k], base_t[k]), f"{tag}: left-out {k} is not the base's tensor")
    if save_modules:
        j.check(len(saved) > 0 and cfg.get("modules_to_save"), f"{tag}: --save-modules wrote no modules_to_save")
    report(tag, len(lora), elems, one, over, worst, amp)
    return cfg, lora


cfg, _ = extract_case("llama rank 4 exact", "llama", "post", ["--rank", 4, "--method", "exact"])
j.check(not cfg.get("rank_pattern"), "rank 4: unexpected rank_pattern")
extract_case("llama rank 2 randomized", "llama", "post", ["--rank", 2], seed=3)
cfg, lora = extract_case("llama energy 0.6 (rank_pattern)", "llama", "post", ["--energy", 0.6])
j.check(bool(cfg.get("rank_pattern")) and len({a.shape[0] for a, _, _ in lora.values()}) > 1,
        f"--energy 0.6: one rank for every module, no rank_pattern case: {cfg.get('rank_pattern')}")
extract_case("llama --vllm rank 4", "llama", "post", ["--rank", 4, "--vllm"])
extract_case("llama --vllm energy 0.6", "llama", "post", ["--energy", 0.6, "--vllm"])
extract_case("llama rank 4 --save-modules lm_head", "llama", "post", ["--rank", 4, "--save-modules", "lm_head"],
             save_modules=["lm_head"])
extract_case("llama bf16 post rank 4", "llama", "post_bf16_sharded", ["--rank", 4])
extract_case("qwen2 rank 4", "qwen2", "post", ["--rank", 4])
extract_case("mistral energy 0.6", "mistral", "post", ["--energy", 0.6])

# ---------------------------------------------------------------------------------------------
# B. peft's adapters → deltaedit --post

ATTN = ["q_proj", "k_proj", "v_proj", "o_proj"]
PEFT_KINDS = {
    "plain": dict(r=8, lora_alpha=16, target_modules=ATTN),
    "rslora": dict(r=8, lora_alpha=16, use_rslora=True, target_modules=["q_proj", "v_proj", "down_proj"]),
    "rank_pattern": dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj", "gate_proj"],
                         rank_pattern={"v_proj": 2, "layers.1.mlp.up_proj": 6},
                         alpha_pattern={"up_proj": 3, "model.layers.0.self_attn.q_proj": 5}),
    "embedding": dict(r=4, lora_alpha=4, target_modules=["embed_tokens", "q_proj"]),
    "modules_to_save": dict(r=4, lora_alpha=8, target_modules=["q_proj", "gate_proj"], modules_to_save=["lm_head"]),
}
PEFT_CASES = [("llama", k) for k in PEFT_KINDS] + [("qwen2", "plain"), ("qwen2", "embedding"), ("mistral", "rank_pattern")]


def make_peft_adapter(base_dir, out_dir, kind, seed):
    """An adapter written by peft's save_pretrained: random non-zero A and B; modules_to_save
    copies perturbed so they differ from the base."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    pm = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", init_lora_weights=False, **PEFT_KINDS[kind]))
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "modules_to_save" in n:
                p.add_(torch.randn_like(p) * 1e-2)
    pm.save_pretrained(str(out_dir))


for seed, (arch, kind) in enumerate(PEFT_CASES):
    tag = f"peft {kind} on {arch}"
    base = FIX / arch / "base"
    w = j.work / "peft" / f"{arch}-{kind}"
    adapter = w / "adapter"
    make_peft_adapter(base, adapter, kind, seed + 10)
    cfg, lora, other = read_adapter(adapter)
    j.check(all(b.abs().max() > 0 for _, b, _ in lora.values()), f"{tag}: a lora_B is zero")
    if kind == "rank_pattern":
        j.check(len({a.shape[0] for a, _, _ in lora.values()}) == 3, f"{tag}: rank_pattern gave ranks "
                f"{sorted({a.shape[0] for a, _, _ in lora.values()})}")
    if kind == "embedding":
        j.check(any(e for _, _, e in lora.values()), f"{tag}: no lora_embedding_A/B in the adapter")
    # W_post as deltaedit forms it, written unedited (every tensor excluded from the op: copied).
    out = w / "post"
    j.run("edit", "--base", base, "--post", adapter, "--op", "scale:alpha=0", "--exclude", ".", "--out", out)
    mine, _ = read_checkpoint(out)
    base_t, _ = read_checkpoint(base)
    merged = load_peft(base, adapter, tag)
    j.check(set(mine) <= set(merged), f"{tag}: tensors peft's model lacks: {sorted(set(mine) - set(merged))[:5]}")
    j.check(set(mine) == set(base_t), f"{tag}: W_post's tensors differ from the base's: {sorted(set(mine) ^ set(base_t))[:5]}")
    one = over = elems = 0
    worst, amp = 0.0, float("inf")
    for name in sorted(mine):
        mod = name[: -len(".weight")] if name.endswith(".weight") else None
        if mod in lora:
            a, b, emb = lora[mod]
            o1, o2, rt, am = compare_lora_tensor(tag, name, merged[name], mine[name], a, b,
                                                 scaling_of(cfg, mod, a.shape[0]), emb)
            one, over, elems = one + o1, over + o2, elems + mine[name].numel()
            worst, amp = max(worst, rt), min(amp, am)
        else:
            j.check(same_bits(merged[name], mine[name]), f"{tag}: {name} (no LoRA) differs from peft's")
            if kind == "modules_to_save" and name.startswith("lm_head"):
                j.check(not same_bits(mine[name], base_t[name]), f"{tag}: {name} is the base's, not the saved module")
    report(tag, len(lora), elems, one, over, worst, amp)

j.finish()
