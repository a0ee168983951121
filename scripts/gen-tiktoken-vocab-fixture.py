#!/usr/bin/env python3
"""gen-tiktoken-vocab-fixture.py: turns a tiktoken rank file (Qwen ships its
vocabulary this way) into a vocabulary-only byte-level BPE GGUF, recovering
the merge list from the ranks the way llama.cpp's converter does, plus
expected ids from the `tiktoken` library itself.

Usage (venv with: pip install tiktoken gguf numpy):
  python3 scripts/gen-tiktoken-vocab-fixture.py RANKS.tiktoken PRE 'PATTERN' NAME.gguf CASES.inp...
PATTERN is the model's split regex (tiktoken needs it); PRE the matching
tokenizer.ggml.pre name (qwen2 for Qwen's pattern). Writes NAME.gguf,
NAME.gguf.inp and NAME.gguf.out like gen-hf-vocab-fixture.py."""
import base64
import sys

import gguf
import tiktoken

SEP = "\n__ggml_vocab_test__\n"


def byte_symbols():
    """GPT-2's byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def split_by_lower_ranks(ranks, token, max_rank):
    """BPE of token's bytes using only merges ranked below max_rank: the
    two parts left are the merge that made token."""
    parts = [bytes([b]) for b in token]
    while True:
        best = None
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < max_rank and (best is None or r < best[1]):
                best = (i, r)
        if best is None:
            return parts
        i = best[0]
        parts = parts[:i] + [parts[i] + parts[i + 1]] + parts[i + 2:]


def main():
    ranks_path, pre, pattern, out_gguf = sys.argv[1:5]
    cases = []
    for inp in sys.argv[5:]:
        parts = open(inp, encoding="utf-8").read().split(SEP)
        if parts and parts[-1] == "":
            parts.pop()
        cases += [c for c in parts if c not in cases]

    ranks = {}
    for line in open(ranks_path, "rb"):
        if line.strip():
            tok, rank = line.split()
            ranks[base64.b64decode(tok)] = int(rank)
    sym = byte_symbols()
    enc = lambda b: "".join(sym[x] for x in b)
    n = max(ranks.values()) + 1
    tokens = [None] * n
    merges = []
    for tok, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        tokens[rank] = enc(tok)
        if len(tok) > 1:
            parts = split_by_lower_ranks(ranks, tok, rank)
            assert len(parts) == 2, (tok, parts)
            merges.append(enc(parts[0]) + " " + enc(parts[1]))
    assert all(t is not None for t in tokens)

    w = gguf.GGUFWriter(out_gguf, "qwen2")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types([1] * n)
    w.add_token_merges(merges)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    ref = tiktoken.Encoding(name="ref", pat_str=pattern, mergeable_ranks=ranks, special_tokens={})
    with open(out_gguf + ".inp", "w", encoding="utf-8") as f:
        f.write(SEP.join(cases) + SEP)
    with open(out_gguf + ".out", "w") as f:
        for c in cases:
            f.write(" ".join(str(i) for i in ref.encode_ordinary(c)) + "\n")
    print("%s: %d tokens, %d merges, %d cases" % (out_gguf, n, len(merges), len(cases)))


if __name__ == "__main__":
    main()
