"""The llama forward pass in plain numpy: the readable spec every backend is tested against.

    x = embed[tokens]                                  # [S, hidden]
    for each block:
        h = rmsnorm(x) ; q,k,v = h Wq^T, h Wk^T, h Wv^T  # q [S, n_heads, d], k/v [S, n_kv, d]
        q,k = rope_interleaved(q,k, positions)          # pairs (0,1), (2,3), ... rotate together
        x += softmax(q k^T / sqrt(d) + causal) v Wo^T   # each kv head serves n_heads/n_kv query heads
        x += (silu(rmsnorm(x) Wg^T) * (rmsnorm(x) Wu^T)) Wd^T
    logits = rmsnorm(x) embed^T                         # tied embeddings
"""
from __future__ import annotations

import numpy as np


def rmsnorm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rope_interleaved(x: np.ndarray, positions: np.ndarray, base: float) -> np.ndarray:
    """x: [S, heads, d]. Rotate pairs (x[2i], x[2i+1]) by angle pos * base^(-2i/d)."""
    d = x.shape[-1]
    inv_freq = base ** (-np.arange(0, d, 2, dtype=np.float64) / d)          # [d/2]
    ang = positions[:, None].astype(np.float64) * inv_freq[None, :]         # [S, d/2]
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]             # [S, 1, d/2]
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = x0 * cos - x1 * sin
    out[..., 1::2] = x0 * sin + x1 * cos
    return out


class NumpyLlama:
    """Full-precision reference. `weights` maps GGUF tensor names to float32 arrays [out, in]."""

    def __init__(self, config, weights: dict[str, np.ndarray]):
        self.c = config
        self.w = weights
        self.k_cache: list[list[np.ndarray]] = [[] for _ in range(config.n_layers)]  # per layer: [n_kv, d] rows
        self.v_cache: list[list[np.ndarray]] = [[] for _ in range(config.n_layers)]
        self.cache_pos: list[int] = []     # the position of each cached row
        self.n_past = 0                    # positions read so far (the next token's position)

    def drop(self, start: int, end: int) -> None:
        """Forget the cached rows of positions start..end-1 (eviction): later tokens cannot attend to them,
        and every position keeps its number."""
        keep = [j for j, p in enumerate(self.cache_pos) if not start <= p < end]
        self.cache_pos = [self.cache_pos[j] for j in keep]
        for cache in self.k_cache + self.v_cache:
            cache[:] = [cache[j] for j in keep]

    def move(self, first: int, delta: int) -> None:
        """Renumber cached positions >= first by delta, rotating their keys to match (a context shift); the
        next token's position moves too."""
        rows = [j for j, p in enumerate(self.cache_pos) if p >= first]
        for keys in self.k_cache:
            moved = rope_interleaved(np.stack([keys[j] for j in rows]), np.full(len(rows), delta), self.c.rope_base)
            for j, k in zip(rows, moved):
                keys[j] = k
        self.cache_pos = [p + delta if p >= first else p for p in self.cache_pos]
        self.n_past += delta

    def forward(self, tokens: list[int], last_layer: int | None = None, tap=None) -> np.ndarray:
        """Run `tokens` after the cached ones; return logits [S, vocab] (float64 math, float32 out).
        tap(layer, name, x): sees each linear's input x [S, in] (names: attn_in, attn_out, ffn_in, ffn_mid)."""
        tap = tap or (lambda i, name, x: None)
        c, w = self.c, self.w
        S = len(tokens)
        pos = np.arange(self.n_past, self.n_past + S)
        x = w["token_embd.weight"][tokens].astype(np.float64)                  # [S, hidden]
        for i in range(c.n_layers if last_layer is None else last_layer):
            p = f"blk.{i}."
            h = rmsnorm(x, w[p + "attn_norm.weight"], c.rms_eps)
            tap(i, "attn_in", h)
            q = (h @ w[p + "attn_q.weight"].T).reshape(S, c.n_heads, c.head_dim)
            k = (h @ w[p + "attn_k.weight"].T).reshape(S, c.n_kv_heads, c.head_dim)
            v = (h @ w[p + "attn_v.weight"].T).reshape(S, c.n_kv_heads, c.head_dim)
            q, k = rope_interleaved(q, pos, c.rope_base), rope_interleaved(k, pos, c.rope_base)
            self.k_cache[i].extend(k)
            self.v_cache[i].extend(v)
            K, V = np.stack(self.k_cache[i]), np.stack(self.v_cache[i])       # [T, n_kv, d]
            group = c.n_heads // c.n_kv_heads
            K, V = np.repeat(K, group, axis=1), np.repeat(V, group, axis=1)    # [T, n_heads, d]
            scores = np.einsum("shd,thd->hst", q, K) / np.sqrt(c.head_dim)     # [heads, S, T]
            causal = pos[:, None] >= np.array(self.cache_pos + list(pos))[None, :]   # [S, T]
            scores = np.where(causal[None], scores, -np.inf)
            probs = np.exp(scores - scores.max(-1, keepdims=True))
            probs /= probs.sum(-1, keepdims=True)
            attn = np.einsum("hst,thd->shd", probs, V).reshape(S, c.n_heads * c.head_dim)
            tap(i, "attn_out", attn)
            x = x + attn @ w[p + "attn_output.weight"].T
            h = rmsnorm(x, w[p + "ffn_norm.weight"], c.rms_eps)
            tap(i, "ffn_in", h)
            g, u = h @ w[p + "ffn_gate.weight"].T, h @ w[p + "ffn_up.weight"].T
            mid = g / (1 + np.exp(-g)) * u
            tap(i, "ffn_mid", mid)
            x = x + mid @ w[p + "ffn_down.weight"].T
        self.cache_pos += list(pos)
        self.n_past += S
        head = w.get("output.weight", w["token_embd.weight"])
        return (rmsnorm(x, w["output_norm.weight"], c.rms_eps) @ head.T).astype(np.float32)
