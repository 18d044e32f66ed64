"""Interop 5: greedy generation, transformers `generate` vs deltaedit's decoding.

On the zoo post (models/zoo/retrain/post) and the last 20 of the 500 held-out problems
(models/zoo/retrain/data/tasks_test.jsonl), `deltaedit eval --metric accuracy --dump-generations`
records each prompt's token ids and the greedy tokens it decoded (KV cache, up to 64 new tokens,
stopping after EOS). transformers must give:
  - the same prompt ids from AutoTokenizer (with the BOS template);
  - the same new tokens from model.generate(do_sample=False) in f32, token for token, EOS included;
  - the same text from tokenizer.decode(skip_special_tokens=True).
"""

import json

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from common import Judge, read_jsonl, write_jsonl

N_PROBLEMS = 20
MAX_NEW = 64

j = Judge(__doc__)
post = j.zoo / "post"
problems = read_jsonl(j.zoo / "data" / "tasks_test.jsonl")[-N_PROBLEMS:]
data = j.work / "problems.jsonl"
dump = j.work / "generations.jsonl"
write_jsonl(data, problems)
out = j.run("eval", "--model", post, "--data", data, "--metric", "accuracy", "--max-new-tokens", MAX_NEW,
            "--dump-generations", dump, "--json", "--threads", 2)
ours = read_jsonl(dump)
j.check(len(ours) == N_PROBLEMS, f"{len(ours)} generations for {N_PROBLEMS} problems")

tok = AutoTokenizer.from_pretrained(str(post))
model = AutoModelForCausalLM.from_pretrained(str(post), dtype=torch.float32).eval()
gen_cfg = GenerationConfig.from_pretrained(str(post))
same = 0
for i, (p, o) in enumerate(zip(problems, ours)):
    ids = tok(p["prompt"], add_special_tokens=True)["input_ids"]
    j.check(ids == o["prompt_ids"], f"problem {i}: AutoTokenizer prompt ids differ from deltaedit's")
    with torch.no_grad():
        g = model.generate(torch.tensor([o["prompt_ids"]]), attention_mask=torch.ones(1, len(o["prompt_ids"]), dtype=torch.long),
                           do_sample=False, max_new_tokens=MAX_NEW, eos_token_id=gen_cfg.eos_token_id,
                           pad_token_id=gen_cfg.pad_token_id)
    new = g[0, len(o["prompt_ids"]):].tolist()
    ok = new == o["output_ids"]
    same += ok
    if not ok:
        k = next((t for t, (a, b) in enumerate(zip(new, o["output_ids"])) if a != b), min(len(new), len(o["output_ids"])))
        print(f"  problem {i}: first difference at new token {k}:\n    deltaedit    {o['output_ids']}\n    transformers {new}")
    j.check(ok, f"problem {i}: transformers generate and deltaedit's greedy decoding differ")
    text = tok.decode(new, skip_special_tokens=True)
    j.check(text == o["output"], f"problem {i}: decoded {text!r} vs deltaedit's {o['output']!r}")
acc = json.loads(out)["accuracy"]
print(f"  {same}/{len(ours)} greedy continuations identical; deltaedit's accuracy on them {acc:.2f}")
j.finish()
