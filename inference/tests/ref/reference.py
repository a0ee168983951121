#!/usr/bin/env python3
"""Independent numpy reference for the Commons inference core (Llama family, Gemma 3).

Runs the forward pass of a GGUF model with nothing but the `gguf` (reading, dequantizing)
and `numpy` packages, in float64 on exactly dequantized weights, and writes a logits
fixture that the C tests compare against (see README.md in this folder for the format
and the commands that made every fixture). It is written from the published model
definitions, not from the C code, so that a shared misunderstanding is unlikely.

Usage:
  reference.py MODEL.gguf --tokens "2 818 5279" [--generate N] [--out FIXTURE.txt]
  reference.py MODEL.gguf --words "<bos> The ▁capital" ...   (ids looked up in the vocab)
"""
import argparse
import math
import sys

import numpy as np
import gguf

TOPK = 16       # logits stored per position: the K largest ...
NPROBE = 48     # ... plus the same NPROBE fixed vocabulary ids at every position


class Model:
    def __init__(self, path):
        self.path = path
        self.r = gguf.GGUFReader(path)
        self.t = {t.name: t for t in self.r.tensors}
        self.arch = self.kv('general.architecture')
        if self.arch not in ('llama', 'gemma3'):
            sys.exit(f'{path}: architecture {self.arch!r} is not llama or gemma3')
        a = self.arch
        self.n_embd = self.kv(f'{a}.embedding_length')
        self.n_layer = self.kv(f'{a}.block_count')
        self.n_ff = self.kv(f'{a}.feed_forward_length')
        self.n_head = self.kv(f'{a}.attention.head_count')
        self.n_head_kv = self.kv(f'{a}.attention.head_count_kv', self.n_head)
        self.d_k = self.kv(f'{a}.attention.key_length', self.n_embd // self.n_head)
        self.d_v = self.kv(f'{a}.attention.value_length', self.d_k)
        self.eps = self.kv(f'{a}.attention.layer_norm_rms_epsilon')
        default_base = 1e6 if a == 'gemma3' else 10000.0
        self.rope_base = self.kv(f'{a}.rope.freq_base', default_base)
        self.n_rot = self.kv(f'{a}.rope.dimension_count', self.d_k)
        stype = self.kv(f'{a}.rope.scaling.type', 'none')
        self.rope_scale = 1.0
        if stype == 'linear':
            self.rope_scale = 1.0 / self.kv(f'{a}.rope.scaling.factor', 1.0)
        elif stype not in ('none', None):
            sys.exit(f'{path}: rope scaling {stype!r} not supported by the reference')
        self.window = self.kv(f'{a}.attention.sliding_window', 0) if a == 'gemma3' else 0
        # Gemma 3: layer il is local (sliding window) unless (il + 1) % period == 0;
        # llama.cpp lets these two keys override its defaults (period 6, base 10000).
        self.swa_period = self.kv(f'{a}.attention.sliding_window_pattern', 6)
        self.rope_base_local = self.kv(f'{a}.rope.freq_base_swa', 10000.0)
        self.vocab = self.kv_tokens()
        self._cache = {}

    def kv(self, key, default=KeyError):
        f = self.r.fields.get(key)
        if f is None:
            if default is KeyError:
                sys.exit(f'{self.path}: missing metadata key {key}')
            return default
        v = f.contents()
        return v

    def kv_tokens(self):
        f = self.r.fields['tokenizer.ggml.tokens']
        return [bytes(f.parts[i]).decode('utf-8', 'replace') for i in f.data]

    def w(self, name):
        """Tensor `name` dequantized, numpy shape = reversed ggml ne."""
        if name in self._cache:
            return self._cache[name]
        t = self.t[name]
        shape = tuple(int(x) for x in reversed(t.shape))
        # Cached as float32 (exact: every GGUF type dequantizes to a float32 value);
        # callers compute in float64.
        a = gguf.quants.dequantize(t.data, t.tensor_type).reshape(shape).astype(np.float32)
        self._cache[name] = a
        return a

    def has(self, name):
        return name in self.t

    # --- building blocks ---
    def mm(self, x, name):
        """x [n, k] times weight `name` (ggml [k, m], numpy [m, k]) -> [n, m]."""
        return x @ self.w(name).T

    def rms(self, x, w):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * w

    def rope(self, x, pos, base, scale, neox, freq_factors):
        """x: [n, heads, d]. Rotates the first n_rot dims of every head by pos*scale*theta_i."""
        n_rot = self.n_rot
        half = n_rot // 2
        inv = base ** (-np.arange(0, half, dtype=np.float64) * 2.0 / n_rot)
        if freq_factors is not None:
            inv = inv / freq_factors
        ang = (pos.astype(np.float64) * scale)[:, None] * inv[None, :]
        c = np.cos(ang)[:, None, :]
        s = np.sin(ang)[:, None, :]
        out = x.copy()
        if neox:   # pairs (i, i + n_rot/2)
            x1, x2 = x[..., :half], x[..., half:n_rot]
            out[..., :half] = x1 * c - x2 * s
            out[..., half:n_rot] = x2 * c + x1 * s
        else:      # pairs (2i, 2i+1)
            x1, x2 = x[..., 0:n_rot:2], x[..., 1:n_rot:2]
            out[..., 0:n_rot:2] = x1 * c - x2 * s
            out[..., 1:n_rot:2] = x2 * c + x1 * s
        return out

    def attention(self, q, k, v, pos, window):
        """q [n,H,dk], k [n,Hkv,dk], v [n,Hkv,dv]; causal, optional sliding window."""
        n = q.shape[0]
        group = self.n_head // self.n_head_kv
        scale = 1.0 / math.sqrt(self.d_k)
        allowed = pos[None, :] <= pos[:, None]          # [query, key]
        if window:
            allowed &= (pos[:, None] - pos[None, :]) < window
        out = np.empty((n, self.n_head, self.d_v))
        for h in range(self.n_head):
            kh = k[:, h // group, :]
            vh = v[:, h // group, :]
            s = (q[:, h, :] @ kh.T) * scale
            s = np.where(allowed, s, -np.inf)
            s = s - s.max(axis=1, keepdims=True)
            p = np.exp(s)
            p /= p.sum(axis=1, keepdims=True)
            out[:, h, :] = p @ vh
        return out.reshape(n, self.n_head * self.d_v)

    # --- forward ---
    def forward(self, tokens, all_logits=True, first=0):
        """Logits [n - first, n_vocab] of positions first.. (all_logits) or of the last."""
        toks = np.asarray(tokens, dtype=np.int64)
        n = len(toks)
        pos = np.arange(n)
        emb = self.w('token_embd.weight')
        x = emb[toks].astype(np.float64)
        gemma = self.arch == 'gemma3'
        if gemma:
            x *= math.sqrt(self.n_embd)
        ff = self.w('rope_freqs.weight') if self.has('rope_freqs.weight') else None
        for il in range(self.n_layer):
            p = f'blk.{il}.'
            h = self.rms(x, self.w(p + 'attn_norm.weight'))
            q = self.mm(h, p + 'attn_q.weight').reshape(n, self.n_head, self.d_k)
            k = self.mm(h, p + 'attn_k.weight').reshape(n, self.n_head_kv, self.d_k)
            v = self.mm(h, p + 'attn_v.weight').reshape(n, self.n_head_kv, self.d_v)
            if gemma:
                q = self.rms(q, self.w(p + 'attn_q_norm.weight'))
                k = self.rms(k, self.w(p + 'attn_k_norm.weight'))
                local = self.window > 0 and (il + 1) % self.swa_period != 0
                base = self.rope_base_local if local else self.rope_base
                scale = 1.0 if local else self.rope_scale
                q = self.rope(q, pos, base, scale, True, None)
                k = self.rope(k, pos, base, scale, True, None)
                a = self.attention(q, k, v, pos, self.window if local else 0)
            else:
                q = self.rope(q, pos, self.rope_base, self.rope_scale, False, ff)
                k = self.rope(k, pos, self.rope_base, self.rope_scale, False, ff)
                a = self.attention(q, k, v, pos, 0)
            a = self.mm(a, p + 'attn_output.weight')
            if gemma:
                a = self.rms(a, self.w(p + 'post_attention_norm.weight'))
            x = x + a
            h = self.rms(x, self.w(p + 'ffn_norm.weight'))
            g = self.mm(h, p + 'ffn_gate.weight')
            u = self.mm(h, p + 'ffn_up.weight')
            if gemma:   # GELU, tanh approximation
                g = 0.5 * g * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (g + 0.044715 * g ** 3)))
            else:       # SiLU
                g = g / (1.0 + np.exp(-g))
            f = self.mm(g * u, p + 'ffn_down.weight')
            if gemma:
                f = self.rms(f, self.w(p + 'post_ffw_norm.weight'))
            x = x + f
        x = x[first:] if all_logits else x[-1:]
        x = self.rms(x, self.w('output_norm.weight'))
        return self.mm(x, 'output.weight' if self.has('output.weight') else 'token_embd.weight')


def file_fnv1a64(path):
    """FNV-1a 64 of the whole file: the C test recomputes it to be sure it compares
    against logits of the very same bytes (synthetic models are regenerated in CI)."""
    data = np.fromfile(path, dtype=np.uint8)
    h = 0xcbf29ce484222325
    prime = 0x100000001b3
    mask = (1 << 64) - 1
    for b in data.tobytes():
        h = ((h ^ b) * prime) & mask
    return f'{h:016x}'


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('model')
    ap.add_argument('--tokens', help='space-separated token ids')
    ap.add_argument('--words', help='space-separated vocabulary pieces, looked up exactly')
    ap.add_argument('--generate', type=int, default=0, help='greedy tokens to append')
    ap.add_argument('--out', help='fixture file to write (default: stdout summary only)')
    ap.add_argument('--name', default='', help='label stored in the fixture')
    ap.add_argument('--first-pos', type=int, default=0,
                    help='store positions from this one on (long prompts: n_prompt - 1)')
    args = ap.parse_args()

    m = Model(args.model)
    if args.tokens:
        toks = [int(t) for t in args.tokens.split()]
    elif args.words:
        index = {p: i for i, p in enumerate(m.vocab)}
        toks = []
        for wd in args.words.split(' '):
            wd = wd.replace('\\n', '\n')
            if wd not in index:
                sys.exit(f'piece {wd!r} not in the vocabulary')
            toks.append(index[wd])
    else:
        sys.exit('give --tokens or --words')
    n_prompt = len(toks)
    for _ in range(args.generate):
        lg = m.forward(toks, all_logits=False)[-1]
        toks.append(int(np.argmax(lg)))
    first = args.first_pos
    if not 0 <= first < len(toks):
        sys.exit('--first-pos must be a position of the sequence')
    logits = m.forward(toks, first=first)
    n_vocab = logits.shape[1]
    text = ''.join(m.vocab[t] for t in toks).replace('\u2581', ' ')
    print(f'tokens: {toks}', file=sys.stderr)
    print(f'text: {text!r}', file=sys.stderr)
    if not args.out:
        return
    rng = np.random.RandomState(1234)
    probes = np.sort(rng.choice(n_vocab, size=min(NPROBE, n_vocab), replace=False))
    with open(args.out, 'w') as f:
        f.write('commons-logits-fixture 1\n')
        f.write(f'name {args.name or "unnamed"}\n')
        f.write(f'model_fnv1a64 {file_fnv1a64(args.model)}\n')
        f.write(f'n_vocab {n_vocab}\n')
        f.write(f'n_prompt {n_prompt}\n')
        if first:
            f.write(f'first_pos {first}\n')
        f.write(f'tokens {len(toks)} ' + ' '.join(map(str, toks)) + '\n')
        f.write(f'probes {len(probes)} ' + ' '.join(map(str, probes)) + '\n')
        for i, row in enumerate(logits, start=first):
            order = np.argsort(-row, kind='stable')
            top = order[:TOPK]
            gap = row[order[0]] - row[order[1]]
            f.write(f'pos {i} argmax {order[0]} gap {gap:.6g} '
                    f'maxabs {np.max(np.abs(row)):.6g}\n')
            f.write(f'top {TOPK} ' + ' '.join(f'{t} {row[t]:.6g}' for t in top) + '\n')
            f.write('probe ' + ' '.join(f'{row[t]:.6g}' for t in probes) + '\n')
        f.write('end\n')


if __name__ == '__main__':
    main()
