#!/usr/bin/env python3
"""gen-hf-vocab-fixture.py: turns a Hugging Face tokenizer.json (byte-level
BPE) into a vocabulary-only GGUF, like llama.cpp's converter does, plus
expected ids computed by the Hugging Face `tokenizers` library, so our
tokenizer can be checked on vocabularies beyond ../shared/data/vocab.

Usage (venv with: pip install tokenizers gguf numpy):
  python3 scripts/gen-hf-vocab-fixture.py tokenizer.json PRE NAME.gguf CASES.inp...
writes NAME.gguf, NAME.gguf.inp (all cases, "__ggml_vocab_test__" format) and
NAME.gguf.out (ids without special tokens). PRE is the tokenizer.ggml.pre
name (e.g. llama-bpe, qwen2, smollm). The GGUF is written with the `gguf`
package, not with our writer, to keep the check independent. Cases that
appear in several CASES files are kept once."""
import json
import sys

import gguf
from tokenizers import Tokenizer

SEP = "\n__ggml_vocab_test__\n"


def main():
    tok_json, pre, out_gguf = sys.argv[1:4]
    cases = []
    for inp in sys.argv[4:]:
        parts = open(inp, encoding="utf-8").read().split(SEP)
        if parts and parts[-1] == "":
            parts.pop()
        cases += [c for c in parts if c not in cases]

    j = json.load(open(tok_json, encoding="utf-8"))
    assert j["model"]["type"] == "BPE"
    vocab = dict(j["model"]["vocab"])
    types = {}
    for a in j.get("added_tokens", []):
        vocab[a["content"]] = a["id"]
        types[a["id"]] = 3 if a.get("special") else 4   # control / user-defined
    n = max(vocab.values()) + 1
    tokens = ["[PAD%d]" % i for i in range(n)]
    for text, i in vocab.items():
        tokens[i] = text
    token_types = [types.get(i, 1) for i in range(n)]
    merges = [m if isinstance(m, str) else " ".join(m) for m in j["model"]["merges"]]

    w = gguf.GGUFWriter(out_gguf, "llama")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(token_types)
    w.add_token_merges(merges)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    # GGUF does not record ignore_merges; llama.cpp (and we) apply it for the
    # Llama 3 pre-tokenizer, as Meta's own Llama 3 tokenizer.json sets it.
    # Some re-exported copies lack the flag, so the reference gets it here.
    if pre in ("llama3", "llama-v3", "llama-bpe"):
        j["model"]["ignore_merges"] = True
    hf = Tokenizer.from_str(json.dumps(j))
    with open(out_gguf + ".inp", "w", encoding="utf-8") as f:
        f.write(SEP.join(cases) + SEP)
    with open(out_gguf + ".out", "w") as f:
        for c in cases:
            f.write(" ".join(str(i) for i in hf.encode(c, add_special_tokens=False).ids) + "\n")
    print("%s: %d tokens, %d merges, %d cases" % (out_gguf, n, len(merges), len(cases)))


if __name__ == "__main__":
    main()
