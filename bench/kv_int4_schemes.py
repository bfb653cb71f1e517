"""How close can a 4-bit KV cache get to fp32 on this model, with scales GroupQueryAttention cannot take?

The shipped int4 cache is what ONNX Runtime's GroupQueryAttention reads: static per-channel scales. This
script asks whether any cheap 4-bit scheme would reach the KV issue's goal (perplexity within 3% of fp32),
before anyone writes an attention kernel of their own for it. It simulates each scheme in numpy (fake
quantization: quantize, dequantize, attend) on the numpy reference's forward pass, on the GGUF's weights:

    static          per-channel scales calibrated on the export's text (keys: rotary pair norms), x(0.6, 1.0)
    static+H        the same after a per-head Hadamard rotation of K (after rotary) and V, x(0.7, 0.6)
    kivi            KIVI's layout: K per channel with the ranges of the very text scored (an oracle), V per token
    per-token+H     K and V per token (one scale per head and position) after the Hadamard rotation
    ... + fp window the last W positions before each query read full-precision K and V (KIVI's residual)

    python bench/kv_int4_schemes.py [--tokens 1024] [-o bench/results/kv-20261203/int4_schemes.json]
    python bench/kv_int4_schemes.py --layers [--tokens 512] [-o .../int4_layers.json]

--layers asks what GroupQueryAttention *can* read gets to: static scales, int4 in every layer but the most
sensitive ones, which keep int8 (the kernel's bit width is per node, so per layer). It measures each
layer's cost alone (int4 in that layer, fp32 elsewhere), then int8 in the top 2, 4, 6 and 8 layers, int4
in the rest; the issue's memory goal (6.5x below fp32) leaves room for 6.

Perplexity is King Lear's first `--tokens` tokens, one causal pass (each position reads every earlier one
from the simulated cache).
"""
import argparse
import json
import time

import numpy as np

import edgedec
from edgedec.export.kv import dequantize, quantize, scales
from edgedec.export.kv_calibration import stdlib_text
from edgedec.export.sources import load_source
from edgedec.models.known import default_gguf
from edgedec.runtimes.numpy_ref import rmsnorm, rope_interleaved
from edgedec_tools.prompts import lear


def hadamard(n: int) -> np.ndarray:
    h = np.array([[1.0]])
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return (h / np.sqrt(n)).astype(np.float32)


def q4(x, scale):
    return np.clip(np.rint(x / scale), -8, 7) * scale


def pair_norms(k):
    return np.repeat(np.sqrt(k[..., 0::2] ** 2 + k[..., 1::2] ** 2), 2, -1)


class Model:
    def __init__(self):
        src = load_source(default_gguf())
        self.c = src.config
        self.w = {n: src.tensor(n).astype(np.float32) for n in src.tensor_types}

    def forward(self, ids, cache, fp_window: int = 0):
        """Logits for ids; cache(layer, k, v) -> the (k, v) attention reads. With fp_window, the last
        fp_window positions before (and including) each query read the exact k, v instead."""
        c, w, S = self.c, self.w, len(ids)
        pos = np.arange(S)
        causal = pos[:, None] >= pos[None, :]
        recent = causal & (pos[:, None] - pos[None, :] < fp_window)
        x = w["token_embd.weight"][ids]
        g = c.n_heads // c.n_kv_heads
        for i in range(c.n_layers):
            p = f"blk.{i}."
            h = rmsnorm(x, w[p + "attn_norm.weight"], c.rms_eps)
            q = (h @ w[p + "attn_q.weight"].T).reshape(S, c.n_heads, c.head_dim)
            k = (h @ w[p + "attn_k.weight"].T).reshape(S, c.n_kv_heads, c.head_dim)
            v = (h @ w[p + "attn_v.weight"].T).reshape(S, c.n_kv_heads, c.head_dim)
            q = rope_interleaved(q, pos, c.rope_base).astype(np.float32)
            k = rope_interleaved(k, pos, c.rope_base).astype(np.float32)
            kq, vq = cache(i, k, v)
            sc_q = np.einsum("shd,thd->hst", q, np.repeat(kq, g, 1))
            sc_f = np.einsum("shd,thd->hst", q, np.repeat(k, g, 1))
            sc = np.where(recent[None], sc_f, sc_q) / np.sqrt(c.head_dim)
            sc = np.where(causal[None], sc, -np.inf)
            pr = np.exp(sc - sc.max(-1, keepdims=True))
            pr /= pr.sum(-1, keepdims=True)
            a = (np.einsum("hst,thd->shd", np.where(recent[None], 0, pr), np.repeat(vq, g, 1))
                 + np.einsum("hst,thd->shd", np.where(recent[None], pr, 0), np.repeat(v, g, 1)))
            x = x + a.reshape(S, -1) @ w[p + "attn_output.weight"].T
            h = rmsnorm(x, w[p + "ffn_norm.weight"], c.rms_eps)
            gg, u = h @ w[p + "ffn_gate.weight"].T, h @ w[p + "ffn_up.weight"].T
            x = x + (gg / (1 + np.exp(-gg)) * u) @ w[p + "ffn_down.weight"].T
        return rmsnorm(x, w["output_norm.weight"], c.rms_eps) @ w["token_embd.weight"].T


def mean_nll(logits, ids) -> float:
    l = logits[:-1].astype(np.float64)
    l -= l.max(-1, keepdims=True)
    lp = l - np.log(np.exp(l).sum(-1, keepdims=True))
    return float(-lp[np.arange(len(ids) - 1), ids[1:]].mean())


def layers(m, tok, ranges, n_tokens: int) -> dict:
    """Per-layer sensitivity of the static int4 cache, then int8 in the most sensitive layers."""
    def mixed(int8: set, only: int | None = None):
        def cache(i, k, v):
            if only is not None and i != only:
                return k, v
            kv = "int8" if i in int8 else "int4"

            def round_trip(x, part, r):                             # the shipped format and scales (export/kv.py)
                scale = scales(kv, r, part)
                return dequantize(quantize(x, kv, scale), kv, scale)
            return round_trip(k, "k", ranges[i][0]), round_trip(v, "v", ranges[i][1])
        return cache
    ids = tok.encode(lear(30000))[:n_tokens]
    base = mean_nll(m.forward(ids, lambda i, k, v: (k, v)), ids)
    pct = lambda cache: round(100 * float(np.exp(mean_nll(m.forward(ids, cache), ids) - base) - 1), 2)  # noqa: E731
    out = {"tokens": len(ids), "fp32_ppl": round(float(np.exp(base)), 3), "int4_everywhere_pct": pct(mixed(set()))}
    out["one_layer_int4_pct"] = {i: pct(mixed(set(), only=i)) for i in range(m.c.n_layers)}
    order = sorted(out["one_layer_int4_pct"], key=lambda i: -out["one_layer_int4_pct"][i])
    out["int8_in_top"] = {n: {"layers": order[:n], "vs_fp32_pct": pct(mixed(set(order[:n])))} for n in (2, 4, 6, 8)}
    print(json.dumps(out, indent=1), flush=True)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--layers", action="store_true", help="per-layer sensitivity and int8/int4 mixes instead")
    ap.add_argument("-o", "--out", default="bench/results/kv-20261203/int4_schemes.json")
    a = ap.parse_args()
    m = Model()
    tok = edgedec.load().tokenizer
    H = hadamard(m.c.head_dim)

    ranges = {}                                       # the export's calibration, and the same after Hadamard
    def calibrate(i, k, v):
        r = (pair_norms(k).max(0), np.abs(v).max(0), np.abs(k @ H).max(0), np.abs(v @ H).max(0))
        ranges[i] = r if i not in ranges else tuple(np.maximum(x, y) for x, y in zip(ranges[i], r))
        return k, v
    cal = tok.encode(stdlib_text())[:1024]
    for s in range(0, len(cal), 512):
        m.forward(cal[s:s + 512], calibrate)
    if a.layers:
        with open(a.out, "w") as f:
            json.dump(layers(m, tok, ranges, a.tokens), f, indent=1)
        return

    def static(i, k, v):
        kr, vr = ranges[i][:2]
        return q4(k, kr * 0.6 / 7), q4(v, vr * 1.0 / 7)

    def static_h(i, k, v):
        kr, vr = ranges[i][2:]
        return q4(k @ H, kr * 0.7 / 7) @ H.T, q4(v @ H, vr * 0.6 / 7) @ H.T

    def kivi(i, k, v):
        return q4(k, np.abs(k).max(0, keepdims=True) / 7), q4(v, np.abs(v).max(-1, keepdims=True) / 7)

    def per_token_h(i, k, v):
        kh, vh = k @ H, v @ H
        return (q4(kh, np.abs(kh).max(-1, keepdims=True) / 7) @ H.T,
                q4(vh, np.abs(vh).max(-1, keepdims=True) / 7) @ H.T)

    schemes = [("fp32", lambda i, k, v: (k, v), 0), ("static (shipped)", static, 0), ("static+H", static_h, 0),
               ("kivi (oracle K ranges)", kivi, 0), ("per-token+H", per_token_h, 0),
               ("static + fp window 64", static, 64), ("per-token+H + fp window 64", per_token_h, 64),
               ("per-token+H + fp window 128", per_token_h, 128)]
    ids = tok.encode(lear(30000))[: a.tokens]
    out = {"tokens": len(ids), "text": "King Lear", "perplexity": {}}
    base = None
    for name, cache, window in schemes:
        t = time.time()
        nll = mean_nll(m.forward(ids, cache, window), ids)
        base = nll if base is None else base
        out["perplexity"][name] = {"ppl": round(float(np.exp(nll)), 3),
                                   "vs_fp32_pct": round(100 * (np.exp(nll - base) - 1), 2)}
        print(f"{name:30s} {np.exp(nll):8.3f}  {100 * (np.exp(nll - base) - 1):+6.1f}%  ({time.time() - t:.0f} s)",
              flush=True)
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
