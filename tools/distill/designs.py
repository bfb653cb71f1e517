"""The draft designs, in torch. Both end in the model's own final norm and a reduced-vocabulary head (the
rows of the LM head for the N tokens the model predicts most often), both frozen.

    feature   EAGLE-style: one decoder layer predicts the next position's last hidden state from the
              current one and the next token's embedding,
                  r_(i+1) = layer(fc([embed(x_(i+1)); h_i]))         h_i: after the last layer, pre-norm
              and drafts without running any base layer; the next draft step feeds r_(i+1) back as h.
    exit      Kangaroo-style: the base model's layers[0:E] (shared with the verifier, KV cache included),
              then one trained decoder layer on the hidden state after layer E.

The trained layer starts as a copy of a base layer (the last one for `feature`, layer E for `exit`), and
`fc` starts by passing h through, so before training each design drafts about as well as its starting
point. Rotary is interleaved, as in the base model (runtimes/numpy_ref.py).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgedec.export.drafts import LAYER_NAMES

DESIGNS = ("feature", "exit")


def _param(w: np.ndarray, trainable: bool = True) -> nn.Parameter:
    return nn.Parameter(torch.tensor(np.asarray(w, np.float32)), requires_grad=trainable)


def rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rope_interleaved(x: torch.Tensor, positions: torch.Tensor, base: float) -> torch.Tensor:
    """x [B, heads, S, d], positions [B, S]: rotate pairs (x[2i], x[2i+1]) by pos * base^(-2i/d)."""
    d = x.shape[-1]
    inv = base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    ang = (positions.to(torch.float64)[..., None] * inv).to(x.dtype)[:, None]    # [B, 1, S, d/2]
    cos, sin = ang.cos(), ang.sin()
    x0, x1 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1).flatten(-2)


class Layer(nn.Module):
    """One llama decoder layer (GQA, SwiGLU), initialised from the base model's layer `index`."""

    NAMES = LAYER_NAMES

    def __init__(self, cfg, src, index: int):
        super().__init__()
        self.cfg = cfg
        self.w = nn.ParameterDict({n: _param(src.tensor(f"blk.{index}.{n}.weight")) for n in self.NAMES})

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        c, w = self.cfg, self.w
        B, S, _ = x.shape
        h = rms_norm(x, w["attn_norm"], c.rms_eps)
        q = (h @ w["attn_q"].T).view(B, S, c.n_heads, c.head_dim).transpose(1, 2)
        k = (h @ w["attn_k"].T).view(B, S, c.n_kv_heads, c.head_dim).transpose(1, 2)
        v = (h @ w["attn_v"].T).view(B, S, c.n_kv_heads, c.head_dim).transpose(1, 2)
        q, k = rope_interleaved(q, positions, c.rope_base), rope_interleaved(k, positions, c.rope_base)
        group = c.n_heads // c.n_kv_heads
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, S, -1)
        x = x + a @ w["attn_output"].T
        h = rms_norm(x, w["ffn_norm"], c.rms_eps)
        return x + (F.silu(h @ w["ffn_gate"].T) * (h @ w["ffn_up"].T)) @ w["ffn_down"].T


class Draft(nn.Module):
    """A design's trained layer plus the frozen final norm and reduced head.

    vocab: the N token ids the head keeps (most frequent first)."""

    def __init__(self, design: str, cfg, src, vocab: np.ndarray, exit_layer: int | None = None):
        super().__init__()
        self.design, self.cfg, self.exit_layer = design, cfg, exit_layer
        self.layer = Layer(cfg, src, cfg.n_layers - 1 if design == "feature" else exit_layer)
        embed = src.tensor("token_embd.weight")
        head = src.tensor("output.weight") if not cfg.tied_embeddings else embed
        self.register_buffer("vocab", torch.tensor(np.asarray(vocab, np.int64)))
        self.register_buffer("norm", torch.tensor(src.tensor("output_norm.weight")))
        self.register_buffer("head", torch.tensor(head[vocab]))
        if design == "feature":
            self.register_buffer("embed", torch.tensor(embed))
            fc = np.concatenate([np.zeros((cfg.hidden, cfg.hidden)), np.eye(cfg.hidden)], axis=1)
            self.fc = _param(fc)                                       # [H, 2H]: starts as h -> h

    def forward(self, hidden: torch.Tensor, next_ids: torch.Tensor | None, positions: torch.Tensor,
                last: bool = False):
        """hidden [B, S, H] (feature: h_i after the last layer; exit: after layer E), next_ids [B, S]
        (feature: the token at i + 1), positions [B, S]. Returns the predicted hidden state (pre-norm,
        [B, S, H]) and the logits [B, S, N] ([B, 1, N], the last position only, with `last`)."""
        if self.design == "feature":
            hidden = torch.cat([self.embed[next_ids], hidden], dim=-1) @ self.fc.T
        r = self.layer(hidden, positions)
        return r, rms_norm(r[:, -1:] if last else r, self.norm, self.cfg.rms_eps) @ self.head.T

    def reduced(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Full-vocabulary ids -> index in the reduced head, or -100 where the head lacks the token."""
        lookup = torch.full((self.cfg.vocab,), -100, dtype=torch.long)
        lookup[self.vocab] = torch.arange(len(self.vocab))
        return lookup[token_ids]
