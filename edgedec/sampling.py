"""Turning logits into the next token: greedy, or temperature with top-k, top-p, min-p and a
repetition penalty. Filters apply in llama.cpp's order: penalty, top-k, top-p, min-p, temperature."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import EdgedecError


@dataclass(frozen=True)
class SamplerConfig:
    temperature: float = 0.0         # 0 = greedy
    top_k: int = 0                   # keep the k most likely tokens (0 = all)
    top_p: float = 1.0               # keep the smallest set with this much probability
    min_p: float = 0.0               # drop tokens below min_p * p(most likely)
    repetition_penalty: float = 1.0  # >1 discourages tokens already in the context (CTRL-style)
    seed: int | None = None          # for reproducible sampling

    def __post_init__(self):
        checks = [(self.temperature >= 0, "$temperature must be >= 0"), (self.top_k >= 0, "$top_k must be >= 0"),
                  (0 < self.top_p <= 1, "$top_p must be in (0, 1]"), (0 <= self.min_p < 1, "$min_p must be in [0, 1)"),
                  (self.repetition_penalty > 0, "$repetition_penalty must be > 0")]
        for ok, msg in checks:
            if not ok:
                raise EdgedecError(msg)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def apply_penalty(logits: np.ndarray, history, penalty: float) -> np.ndarray:
    if penalty == 1.0 or not len(history):
        return logits
    logits = logits.copy()
    ids = np.unique(np.asarray(history, dtype=np.int64))
    vals = logits[ids]
    logits[ids] = np.where(vals > 0, vals / penalty, vals * penalty)
    return logits


def probabilities(logits: np.ndarray, cfg: SamplerConfig, history=()) -> np.ndarray:
    """The distribution sampling draws from, after every filter ([V], sums to 1)."""
    x = apply_penalty(np.asarray(logits, np.float64), history, cfg.repetition_penalty)
    if cfg.greedy:
        p = np.zeros_like(x)
        p[int(np.argmax(x))] = 1.0
        return p
    keep = np.ones(x.shape, bool)
    if cfg.top_k and cfg.top_k < x.size:
        kth = np.partition(x, -cfg.top_k)[-cfg.top_k]
        keep &= x >= kth
    p = np.exp((x - x.max()) / 1.0) * keep                      # filters use the untempered distribution
    p /= p.sum()
    if cfg.top_p < 1.0:
        order = np.argsort(-p)
        cum = np.cumsum(p[order])
        cut = order[np.searchsorted(cum, cfg.top_p) + 1:]      # keep through the token that crosses top_p
        keep[cut] = False
    if cfg.min_p > 0:
        keep &= p >= cfg.min_p * p.max()
    z = np.where(keep, (x - x[keep].max()) / cfg.temperature, -np.inf)
    q = np.exp(z)
    return q / q.sum()


class Sampler:
    def __init__(self, cfg: SamplerConfig):
        self.cfg = cfg
        self.rng = np.random.default_rng(cfg.seed)

    def __call__(self, logits: np.ndarray, history=()) -> int:
        if self.cfg.greedy and self.cfg.repetition_penalty == 1.0:
            return int(np.argmax(logits))
        return self.draw(probabilities(logits, self.cfg, history))

    def draw(self, p: np.ndarray) -> int:
        return int(self.rng.choice(p.size, p=p))

    def verify(self, logits: np.ndarray, draft: int, q: np.ndarray | None, history=()) -> tuple[bool, int]:
        """Speculative rejection sampling for one drafted token: (accepted, token to emit).

        p is the full model's distribution, q the drafter's (None: a deterministic proposal, q = one-hot).
        Accept with probability min(1, p[d]/q[d]); otherwise draw from max(0, p - q), renormalised. The
        emitted token is then distributed exactly as p (Leviathan et al. 2023). Greedy is the special case
        where p and q are one-hot: accept iff the draft is the full model's argmax.
        """
        if self.cfg.greedy:
            t = self(logits, history)
            return t == draft, t
        p = probabilities(logits, self.cfg, history)
        qd = 1.0 if q is None else q[draft]
        if self.rng.random() * qd < p[draft]:
            return True, draft
        if q is None:
            residual = p.copy()
            residual[draft] = 0.0
        else:
            residual = np.maximum(p - q, 0.0)
        total = residual.sum()
        return False, self.draw(residual / total if total > 0 else p)
