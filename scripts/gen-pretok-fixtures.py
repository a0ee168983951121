#!/usr/bin/env python3
"""gen-pretok-fixtures.py: expected word splits for the BPE pre-tokenizers,
computed with the original Hugging Face regexes by the `regex` package (an
independent engine), for inference/tests/test_tokenizer.c.

Usage: python3 scripts/gen-pretok-fixtures.py > inference/tests/fixtures/pretok.txt
Each output line: KIND<TAB>hex(text)<TAB>hex(piece1),hex(piece2),...
KIND is gpt2, llama3, qwen2, starcoder, deepseek-coder or deepseek-v3. Inputs avoid characters whose
treatment depends on the engine's Unicode version or full case folding."""
import regex

GPT2 = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
LLAMA3 = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"""
          r""" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")
QWEN2 = LLAMA3.replace(r"\p{N}{1,3}", r"\p{N}")
DIGIT = r"\p{N}"
DEEPSEEK_CODER = [r"[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", r"[一-龥ࠀ-一가-퟿]+", r"\p{N}"]
DEEPSEEK3 = [r"\p{N}{1,3}", r"[一-龥぀-ゟ゠-ヿ]+",
             r"""[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+|"""
             r""" ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""]

TEXTS = [
    "Hello world", " Hello world", "  Hello world", "   leading spaces", "trailing spaces   ",
    "I'm sure you'll like it; we've done it, haven't we? They're here, she's gone, I'd go.",
    "I'M SURE YOU'LL LIKE IT; WE'VE DONE IT. THEY'RE HERE, SHE'S GONE, I'D GO.",
    "'hello' \"quoted\" 'tis", "don't stop", "x'sy",
    "1 12 123 1234 12345 1234567", "abc123def 4five6", "$100 and 3.14159 and 1,000,000",
    "line one\nline two\n\nline four\n\n\n", "a\r\nb\r\n\r\nc", "  \n  x", "x  \n\n  y",
    "\ttab\tseparated\tvalues\n", "!!!\n\nx", "hello!!!\n", " !! ?? ..", "  !!", "...\n\n...",
    "naïve café résumé", "e\u0301cole", "Übermäßig große Straßen", "Привет, мир!",
    "日本語のテキスト", "我想在苹果公司工作1314151天～", "안녕하세요 세계", "مرحبا بالعالم", "नमस्ते दुनिया",
    "🦙🚀 emoji 😀👍🏽 ✅", "int main(void) {\n\treturn 0;\n}", "def f(x):\n    return x * 2\n",
    "    four spaces then\n        eight", "{\"key\": [1, 2, 3]}", "https://example.org/a?b=1&c=two#d",
    "w048 7tuijk dsdfhu", "\u00a0non\u00a0breaking\u2003em space", "a", " ", "  ", "\n", "",
    "Hello, y'all! How are you 😁 ?我想在apple工作1314151天～",
    "#include <stdio.h> .NET $x+=1; a->b == c", "カタカナとひらがな、漢字。", "ab\u0301\u0302 \u0301x",
]


def split(pattern, text):
    """Regex split that keeps both matches and the gaps between them."""
    out, pos = [], 0
    for m in regex.finditer(pattern, text):
        if m.start() > pos:
            out.append(text[pos:m.start()])
        if m.end() > m.start():
            out.append(m.group())
        pos = m.end()
    if pos < len(text):
        out.append(text[pos:])
    return out


def stages(patterns, text):
    """llama.cpp's multi-regex families: each regex splits every piece left
    by the previous one."""
    pieces = [text] if text else []
    for p in patterns:
        pieces = [w for piece in pieces for w in split(p, piece)]
    return pieces


def hx(s):
    return s.encode("utf-8").hex()


def main():
    kinds = [
        ("gpt2", lambda t: split(GPT2, t)),
        ("llama3", lambda t: split(LLAMA3, t)),
        ("qwen2", lambda t: split(QWEN2, t)),
        ("starcoder", lambda t: stages([DIGIT, GPT2], t)),
        ("deepseek-coder", lambda t: stages(DEEPSEEK_CODER, t)),
        ("deepseek-v3", lambda t: stages(DEEPSEEK3, t)),
    ]
    for name, fn in kinds:
        for t in TEXTS:
            print("%s\t%s\t%s" % (name, hx(t), ",".join(hx(p) for p in fn(t))))


if __name__ == "__main__":
    main()
