"""Plain decoding: one forward pass of the full model per token."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from edgedec.runtimes.contract import Runner

from .rounds import Step


@dataclass(frozen=True)
class PlainConfig:
    """Plain decoding has no settings of its own; the sampler decides everything."""

    def check(self, n_layers: int, cuts: list[int]) -> None:
        pass


def plain(runner: Runner, new_tokens: list[int], sample, history: list[int], cfg: PlainConfig | None = None,
          stats=None) -> Iterator[Step]:
    """Prefill `new_tokens` (appended to what the runner has cached), then sample one token per step.

    history: every token in the context so far (for repetition penalties); extended in place.
    """
    logits = runner.forward(new_tokens)[-1]
    while True:
        token = sample(logits, history)
        history.append(token)
        yield Step(token)
        logits = runner.forward([token])[-1]
