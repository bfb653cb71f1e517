"""A separate draft model's runner, kept in step with the target's context, for two-model speculation
(strategies/speculative.py). Any backend's runner works: the draft model is a bundle of its own, inside
the target's (export/draft_model.py), run on the target's backend.
"""
from __future__ import annotations

import numpy as np

from edgedec.bundle import read_bundle
from edgedec.kvcache import shared_prefix


def draft_bundle(bundle):
    """The draft model's bundle inside `bundle`, or None when it has none."""
    entry = bundle.manifest.draft_model
    return read_bundle(bundle.path / entry.folder, verify_checksums=False) if entry else None


class DraftModel:
    """The draft's runner and the tokens its cache holds (positions 0..n-1 of the target's context)."""

    def __init__(self, runner):
        self.runner = runner
        self.tokens: list[int] = []

    @classmethod
    def of(cls, engine, n_ctx: int) -> "DraftModel | None":
        """A draft model for one conversation on `engine` (the target's), or None without one."""
        draft = engine.draft_engine()
        return cls(draft.runner(min(n_ctx, draft.config.context))) if draft is not None else None

    def catch_up(self, history: list[int]) -> np.ndarray:
        """Feed the draft what it has not seen of `history` (keeping the prefix it shares); the logits for
        the token after history[-1]."""
        self.runner.truncate(shared_prefix(self.tokens[: self.runner.length], history))
        logits = self.runner.forward(history[self.runner.length:])[-1]
        self.tokens = list(history)
        return logits

    def next(self, token: int) -> np.ndarray:
        """Feed one drafted token; the logits after it."""
        self.tokens.append(token)
        return self.runner.forward([token])[-1]

    def keep(self, n: int) -> None:
        """Forget every position from n on (the drafts the target rejected)."""
        self.runner.truncate(n)
        del self.tokens[n:]

    def release(self) -> None:
        self.runner.release()
        self.tokens = []
