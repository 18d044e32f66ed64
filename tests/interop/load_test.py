"""Interop 1: transformers loads every kind of checkpoint deltaedit writes.

For each fixture architecture (llama with llama3 RoPE, qwen2 with biases and tied embeddings,
mistral with head_dim ≠ hidden/heads) and the zoo pair, the outputs of `edit` (single file F32,
resharded F32, BF16 in post's shards, BF16 by --dtype) and of `apply` from a delta pack are
loaded with AutoModelForCausalLM.from_pretrained:
  - nothing missing, unexpected or mismatched, and dtype="auto" gives the files' dtype;
  - the loaded state dict equals the files (read by the safetensors library) bit for bit;
  - logits on fixed token ids, transformers in f32 vs `deltaedit eval --dump-logits` on the same
    directory: max|a − b| / max|b| ≤ 1e-4.
"""

import json

import torch
from transformers import AutoModelForCausalLM

from common import Judge, bits, read_checkpoint, rel_max_diff, same_bits, write_jsonl
from safetensors import safe_open

LOGIT_TOL = 1e-4

j = Judge(__doc__)


def outputs_of(name, base, post, post_bf16):
    """(label, directory, expected file dtype, sharded?) of each output deltaedit writes."""
    w = j.work / name
    outs = []

    def edit(label, post_dir, *extra):
        out = w / label
        j.run("edit", "--base", base, "--post", post_dir, "--seed", 7, "--out", out, *extra)
        return out

    outs.append(("edit f32 single", edit("f32", post, "--op", "dare:p=0.5"), torch.float32, False))
    outs.append(("edit f32 sharded", edit("f32-sharded", post, "--op", "dare:p=0.5", "--max-shard-size", "150KB"),
                 torch.float32, True))
    if post_bf16 is not None:
        outs.append(("edit bf16 sharded", edit("bf16-sharded", post_bf16, "--op", "bitdelta"), torch.bfloat16, True))
    outs.append(("edit bf16 single (--dtype)", edit("bf16", post, "--op", "magnitude:p=0.5", "--dtype", "BF16"),
                 torch.bfloat16, False))
    pack = edit("pack", post, "--op", "bitdelta", "--pack")
    rebuilt = w / "apply"
    j.run("apply", "--base", base, "--pack", pack, "--out", rebuilt)
    outs.append(("apply from pack", rebuilt, torch.float32, False))
    return outs


def check_output(label, directory, file_dtype, sharded, ids):
    tag = f"{label} ({directory})"
    tensors, files = read_checkpoint(directory)
    j.check((len(files) > 1) == sharded, f"{tag}: {len(files)} safetensors files, sharded expected: {sharded}")

    model, info = AutoModelForCausalLM.from_pretrained(str(directory), dtype="auto", output_loading_info=True)
    for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        j.check(not info.get(k), f"{tag}: from_pretrained reports {k}: {info.get(k)}")
    sd = model.state_dict()
    for name, t in tensors.items():
        j.check(t.dtype == file_dtype, f"{tag}: {name} is {t.dtype} in the file, {file_dtype} expected")
        if name not in sd:
            j.check(False, f"{tag}: {name} of the files is not in the loaded model")
            continue
        j.check(same_bits(sd[name], t), f"{tag}: {name}: loaded {sd[name].dtype} differs from the file's bits")
    for name in set(sd) - set(tensors):
        # Only the tied head may exist without a tensor of its own; it must be the embedding.
        tied = name == "lm_head.weight" and model.config.tie_word_embeddings
        j.check(tied, f"{tag}: {name} is in the loaded model but in none of the files")
        if tied:
            j.check(torch.equal(bits(sd[name]), bits(tensors["model.embed_tokens.weight"])),
                    f"{tag}: the tied lm_head.weight differs from model.embed_tokens.weight")

    # Logits in f32 on the same directory.
    model = AutoModelForCausalLM.from_pretrained(str(directory), dtype=torch.float32).eval()
    data = directory.parent / (directory.name + ".ids.jsonl")
    dump = directory.parent / (directory.name + ".logits.safetensors")
    write_jsonl(data, [{"input_ids": x} for x in ids])
    j.run("eval", "--model", directory, "--data", data, "--dump-logits", dump, "--threads", 2)
    with safe_open(str(dump), framework="pt") as h, torch.no_grad():
        for i, x in enumerate(ids):
            got_ids = h.get_tensor(f"input_ids.{i}").tolist()
            j.check(got_ids == x, f"{tag}: record {i}: deltaedit ran ids {got_ids[:8]}..., not {x[:8]}...")
            ours = h.get_tensor(f"logits.{i}")
            ref = model(torch.tensor([x])).logits[0].float()
            j.check(ours.shape == ref.shape, f"{tag}: record {i}: logits {tuple(ours.shape)} vs {tuple(ref.shape)}")
            if ours.shape == ref.shape:
                rel = rel_max_diff(ours.numpy(), ref.numpy())
                j.check(rel <= LOGIT_TOL, f"{tag}: record {i}: logits differ from transformers' by {rel:.3g} relative")
                print(f"  {label:28s} record {i}: {len(x)} tokens, logits rel diff {rel:.2e}")


def fixed_ids(vocab, seed, lengths):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(2, vocab, (n,), generator=g).tolist() for n in lengths]


for arch in ("llama", "qwen2", "mistral"):
    d = j.fixtures / arch
    with safe_open(str(d / "ref.safetensors"), framework="pt") as h:
        ids = h.get_tensor("input_ids").tolist()
    vocab = json.loads((d / "post" / "config.json").read_text())["vocab_size"]
    ids += fixed_ids(vocab, 1, [41])
    print(f"{arch}:")
    for out in outputs_of(arch, d / "base", d / "post", d / "post_bf16_sharded"):
        check_output(*out, ids)

# The zoo pair: a tokenizer travels with the output.
print("zoo:")
z = j.zoo
for out in outputs_of("zoo", z / "base", z / "post", None):
    check_output(*out, fixed_ids(768, 2, [17, 64]))

j.finish()
