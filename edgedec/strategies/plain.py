"""Plain decoding: one forward pass per token."""
from __future__ import annotations

from typing import Iterator

from . import Step


def plain(model, new_tokens: list[int], sample, history: list[int], spec=None, stats=None) -> Iterator[Step]:
    """Prefill `new_tokens` (appended to what the model has cached), then sample one token per step.

    model: a backend with forward(tokens) -> logits [1, V] for the last position.
    history: every token in the context so far (for repetition penalties); extended in place.
    spec, stats: unused; speculative strategies take them.
    """
    logits = model.forward(new_tokens)[-1]
    while True:
        token = sample(logits, history)
        history.append(token)
        yield Step(token)
        logits = model.forward([token])[-1]
