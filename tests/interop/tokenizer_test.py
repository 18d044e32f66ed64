"""Interop 4: transformers' AutoTokenizer and `deltaedit tokenize` agree.

Tokenizers: the zoo's (models/zoo/retrain/post) and every fixture style (tests/data/hf-reference/
tokenizers/*: llama3, qwen2 and gpt2 byte-level BPE, SentencePiece-style BPE with byte fallback).
Corpus: 2,400 strings generated from a fixed seed (ASCII prose, whitespace runs, digits and
numbers, contractions, CJK, Cyrillic, Arabic, Devanagari, combining marks, emoji with ZWJ and
skin tones, zero-width and RTL marks, random code points of every plane, each tokenizer's special
tokens written in plain text, the zoo's word problems). For every string, with and without the
special-token template: the ids and the token strings are identical.
"""

import json
import random
import subprocess

from transformers import AutoTokenizer

from common import Judge

N_STRINGS = 2400
SEED = 20240610

j = Judge(__doc__)

WORDS = ("the a of and to in is was he she it they we you I that for on with as at by from this have not "
         "but had are or be one two three apples books marbles Tom Zoe Sam has gets gives more how many "
         "Hello world HELLO World hello-world naïve café résumé façade Straße").split()
PIECES = [
    "日本語のテキスト", "中文字符测试", "한국어 문장", "Привет, мир!", "Ёжик в тумане", "مرحبا بالعالم",
    "नमस्ते दुनिया", "שלום עולם", "Ελληνικά γράμματα", "ไทยภาษา", "e\u0301", "n\u0303o", "A\u030a",
    "👍", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "❤️", "🇩🇪", "\u200b", "\u200d", "\u200e", "\u202e", "\ufeff",
    "\u00a0", "\u3000", "\u2028", "½", "²", "Ⅻ", "١٢٣", "１２３", "ﬁ", "Å", "µ", "ß", "İ", "ǅ",
    "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'LL", "n't", "’s",
    "...", "?!", "--", "—", "«»", "“quoted”", "(paren)", "[x]", "{y}", "a_b", "#", "####", "$5", "3.14",
    "1,000,000", "0x1F", "1e-5", "-42", "+7", "12:30", "2024-06-10", "192.168.0.1",
]
WS = [" ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n ", "\t\t ", "\u00a0", "\v", "\f", "        "]


def random_codepoint(rng):
    plane = rng.random()
    if plane < 0.5:
        lo, hi = 0x20, 0x7FF
    elif plane < 0.85:
        lo, hi = 0x800, 0xFFFD
    else:
        lo, hi = 0x10000, 0x10FFFF
    while True:
        c = rng.randint(lo, hi)
        if not 0xD800 <= c <= 0xDFFF:
            return chr(c)


def number(rng):
    n = rng.randint(1, 24)
    return "".join(rng.choice("0123456789") for _ in range(n))


def make_corpus(specials, problems):
    rng = random.Random(SEED)
    out = ["", " ", "\n", "a", "0", "00", "0000", " 1", "\t\t", "  \n\n  "]
    out += specials
    out += [f"{s}{s}" for s in specials] + [f" {s} " for s in specials]
    while len(out) < N_STRINGS:
        kind = rng.randrange(8)
        parts = []
        for _ in range(rng.randint(1, 12)):
            r = rng.random()
            if kind == 0 or r < 0.35:
                parts.append(rng.choice(WORDS))
            elif r < 0.5:
                parts.append(rng.choice(PIECES))
            elif r < 0.62:
                parts.append(number(rng))
            elif r < 0.75:
                parts.append(rng.choice(WS))
            elif r < 0.85:
                parts.append("".join(random_codepoint(rng) for _ in range(rng.randint(1, 6))))
            elif r < 0.92 and specials:
                parts.append(rng.choice(specials))
            else:
                parts.append(rng.choice(problems)[: rng.randint(1, 80)])
            parts.append(rng.choice(["", " ", " ", " ", "\n", "  "]))
        s = "".join(parts)
        if kind == 1:
            s = s.upper()
        elif kind == 2:
            s = rng.choice(WS) + s + rng.choice(WS)
        out.append(s)
    return out[:N_STRINGS]


problems = [json.loads(l)["prompt"] for l in (j.zoo / "data" / "tasks_test.jsonl").read_text().splitlines()[:50]]
targets = [("zoo", j.zoo / "post")]
targets += [(p.name, p) for p in sorted((j.fixtures / "tokenizers").iterdir()) if (p / "tokenizer.json").exists()]
for name, directory in targets:
    tok_json = directory / "tokenizer.json"
    specials = [t["content"] for t in json.loads(tok_json.read_text())["added_tokens"]]
    corpus = make_corpus(specials, problems)
    hf = AutoTokenizer.from_pretrained(str(directory))
    stdin = "".join(json.dumps(s) + "\n" for s in corpus)
    mismatches = 0
    for special in (False, True):
        args = [j.bin, "tokenize", str(tok_json), "--jsonl"] + (["--special"] if special else [])
        r = subprocess.run(args, input=stdin, capture_output=True, text=True)
        if r.returncode != 0:
            j.check(False, f"{name}: deltaedit tokenize exited {r.returncode}: {r.stderr.strip()}")
            continue
        ours = [json.loads(l) for l in r.stdout.splitlines()]
        j.check(len(ours) == len(corpus), f"{name}: {len(ours)} outputs for {len(corpus)} strings")
        ref_ids = hf(corpus, add_special_tokens=special)["input_ids"]
        for s, o, ids in zip(corpus, ours, ref_ids):
            toks = hf.convert_ids_to_tokens(ids)
            if o["ids"] != ids or o["tokens"] != toks:
                mismatches += 1
                if mismatches <= 5:
                    print(f"  {name} special={special} {s!r}:\n    deltaedit    {o['ids']}\n    transformers {ids}")
    j.check(mismatches == 0, f"{name}: {mismatches} of {2 * len(corpus)} encodings differ from AutoTokenizer")
    print(f"  {name}: {len(corpus)} strings x 2 templates, {mismatches} differences")

j.finish()
