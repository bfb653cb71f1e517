"""`--mode early-exit`: each token stops at the first candidate exit where the model is sure enough, lossy
(CALM, SkipDecode).

A token runs layers[0:E] for the first candidate exit E and reads head(h_E). If the entropy of that
distribution is below the threshold (nats), the token is emitted from it and its remaining layers are
skipped; otherwise it goes on to the next candidate exit, and finally to the last layer.

The skipped layers' cache is filled, never faked: a position that exited at E leaves its hidden state h_E
waiting at E. The next token that goes past E first carries every position waiting there through the
layers it runs, in the same batched call as its own row, so no later token reads a missing or stale entry.
Positions that exit deeper always come before positions waiting at a shallower exit (a token passing an
exit flushes it), so the rows of each call are consecutive positions:

    token t:  h = layers[0:E1](t)
              at each exit E:  rows = waiting[E] + h
                               entropy(head(h_last)) < T  ->  emit argmax, waiting[E] = rows, next token
                               else                       ->  h = layers[E:next](rows)
              at the last layer: the rows' logits; the last is t's, the rest are the deferred positions'
                               full-model logits, counted as the exits' agreement (stats)

A threshold of 0 never exits (an entropy is never below 0): the output is plain decoding's. At most
MAX_WAITING positions wait at an exit (a longer backlog makes one call slow); near the end of the context
every token runs every layer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from edgedec.bundle import require_cut
from edgedec.errors import ModeError
from edgedec.runtimes.contract import LayeredRunner

from .rounds import SpecStats, Step, as_numpy, check_threshold, entropy

MAX_WAITING = 8


@dataclass(frozen=True)
class EarlyExitConfig:
    threshold: float = 0.5         # nats: exit where head(h_E)'s entropy is below this; 0 never exits
    exit_layer: int | None = None  # the one candidate exit; None = every cut from half the depth on

    def check(self, n_layers: int, cuts: list[int]) -> None:
        check_threshold(self.threshold)
        if self.exit_layer is not None:
            require_cut(self.exit_layer, cuts)

    def exits(self, cuts: list[int]) -> list[int]:
        n_layers = cuts[-1]
        return [self.exit_layer] if self.exit_layer is not None else [c for c in cuts[:-1] if 2 * c >= n_layers]


def early_exit(runner: LayeredRunner, new_tokens: list[int], sample, history: list[int],
               cfg: EarlyExitConfig | None = None, stats: SpecStats | None = None) -> Iterator[Step]:
    """Prefill, then one token per step, each through the layers its confidence asks for."""
    cfg = cfg or EarlyExitConfig()
    stats = stats if stats is not None else SpecStats()
    exits = cfg.exits(runner.cuts)
    if not exits:
        raise ModeError(f"this bundle has no exit from half its depth on (cuts: {runner.cuts}); export it again "
                        f"with more $cuts (edgedec export --cuts 6,12,18,24), or name an exit with $exit_layer")
    waiting: dict[int, np.ndarray] = {}       # exit -> hidden rows [1, m, H] of the positions waiting there
    logits, exit_at = runner.forward(new_tokens)[-1], None
    while True:
        token = sample(logits, history)
        history.append(token)
        yield Step(token, "exit", exit_at) if exit_at is not None else Step(token)
        logits, exit_at = _token(runner, token, exits, waiting, cfg.threshold)
        if exit_at is not None:
            stats.exit_layers[exit_at] = stats.exit_layers.get(exit_at, 0) + 1
        else:
            stats.n_plain_steps += 1


def _token(runner, x: int, exits: list[int], waiting: dict, threshold: float) -> tuple[np.ndarray, int | None]:
    """Run token x as deep as it needs: (its logits, the exit it stopped at or None for the last layer)."""
    n_waiting = sum(h.shape[1] for h in waiting.values())
    may_exit = threshold > 0 and n_waiting < MAX_WAITING and runner.length + n_waiting + 2 < runner.n_ctx
    h = as_numpy(runner.layers([x], end=exits[0])[0])
    for e, deeper in zip(exits, exits[1:] + [runner.config.n_layers]):
        if e in waiting:
            h = np.concatenate([waiting.pop(e), h], axis=1)
        if may_exit:
            logits = runner.head(h[:, -1:])[0]
            if entropy(logits) < threshold:
                waiting[e] = h
                return logits, e
        h = as_numpy(runner.layers(hidden=h, start=e, end=deeper)[0])
    return runner.head(h[:, -1:])[0], None
