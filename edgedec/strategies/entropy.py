"""`--mode entropy`: a small model writes while it is sure, the full model takes over when it is not, lossy
(Entropy Adaptive Decoding, with BiLD's rollback).

The small model is the bundle's trained draft (draft.py has how it reads the full model's states), or with
`--exit-layer E` the model's own first E layers and its head. The measure is the entropy (nats) of the
next-token distribution, averaged over the last `entropy_window` tokens:

    small:  draft up to max_run tokens d_1..d_n after x while the rolling entropy of the small model's
            predictions stays below `threshold`
    catch up: the full model reads [x, d_1..d_n] in one batched call; its rows p_0..p_n come for free:
            keep d_i while  log p_(i-1)(best) - log p_(i-1)(d_i) <= margin,
            at the first d_i past the margin, emit the full model's own token instead and roll back
            (otherwise the full model's token after d_n is a bonus); the kept rows' full-model entropies
            now fill the rolling window
    full:   when the small model's entropy rose, or the full model rolled back, the full model decodes
            plain steps, for at least `entropy_window` steps, until its own rolling entropy falls below
            threshold * DOWN (hysteresis: the two models do not take turns on every token)

threshold 0 never uses the small model (an entropy is never below 0): the output is plain decoding's.
margin 0 keeps only small tokens that are the full model's greedy choice. Each token says who wrote it
(rounds.Step): small (the small model's, kept), verify (the full model's after a catch-up), plain (the
full model's own step).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from edgedec.bundle import require_cut
from edgedec.errors import ModeError
from edgedec.runtimes.contract import LayeredRunner
from edgedec.sampling import probabilities

from .rounds import SpecStats, Step, as_numpy, check_threshold, entropy

DOWN = 0.75     # the full model hands back once its rolling entropy is below threshold * DOWN


@dataclass(frozen=True)
class EntropyConfig:
    threshold: float = 1.0           # nats: the small model writes while its rolling entropy is below this
    entropy_window: int = 4          # tokens in the rolling mean
    margin: float = 1.0              # rollback at a small token this many nats below the full model's best
    max_run: int = 8                 # most small tokens before the full model catches up
    exit_layer: int | None = None    # the small model: layers[0:E] + head instead of the trained draft

    def check(self, n_layers: int, cuts: list[int]) -> None:
        check_threshold(self.threshold)
        if self.entropy_window < 1:
            raise ModeError(f"$entropy_window {self.entropy_window} is invalid: the rolling entropy needs at "
                            "least 1 token")
        if self.margin < 0:
            raise ModeError(f"$margin {self.margin} is invalid: it is a log-probability gap in nats, 0 or more "
                            "(0 keeps only the full model's own choices)")
        if self.max_run < 1:
            raise ModeError(f"$max_run {self.max_run} is invalid: it must be at least 1")
        if self.exit_layer is not None:
            require_cut(self.exit_layer, cuts)


def entropy_switch(runner: LayeredRunner, new_tokens: list[int], sample, history: list[int],
                   cfg: EntropyConfig | None = None, stats: SpecStats | None = None) -> Iterator[Step]:
    """Prefill, then decode with whichever model the rolling entropy picks."""
    cfg = cfg or EntropyConfig()
    stats = stats if stats is not None else SpecStats()
    small = small_model(runner, cfg)
    logits = runner.forward(new_tokens)[-1]
    recent = deque([entropy(logits)], maxlen=cfg.entropy_window)
    x = sample(logits, history)
    history.append(x)
    yield Step(x)
    full_steps = cfg.entropy_window                 # plain steps since the full model took over
    while True:
        use_small = (full_steps >= cfg.entropy_window and np.mean(recent) < cfg.threshold * DOWN
                     and runner.length + 3 < runner.n_ctx)
        if use_small:
            steps, handed_back = _small_run(runner, small, x, cfg, sample, history, recent, stats)
            if handed_back:
                full_steps = 0
        else:
            logits = runner.forward([x])[-1]
            recent.append(entropy(logits))
            token = sample(logits, history)
            history.append(token)
            steps = [Step(token)]
            full_steps += 1
            stats.n_plain_steps += 1
        yield from steps
        x = steps[-1].token


def _small_run(runner, small, x: int, cfg: EntropyConfig, sample, history: list[int], recent: deque,
               stats: SpecStats) -> tuple[list[Step], bool]:
    """The small model writes after x, the full model catches up: (the steps to emit, whether the full
    model takes over now)."""
    base = runner.length
    k = max(1, min(cfg.max_run, runner.n_ctx - base - 2))
    drafts, entropies = _write(small, x, k, cfg.threshold, sample, history, recent)
    if not drafts:                                     # nothing to write from: one plain step
        logits = runner.forward([x])[-1]
        recent.append(entropy(logits))
        token = sample(logits, history)
        history.append(token)
        return [Step(token)], False
    rose = np.mean((list(recent) + entropies)[-cfg.entropy_window:]) >= cfg.threshold
    logits = small.catch_up(x, drafts)     # the full model's rows p_0..: one per draft, and a bonus row or not
    steps = []
    for i, d in enumerate(drafts):
        recent.append(entropy(logits[i]))
        if logits[i].max() - logits[i][d] > cfg.margin:    # logits and log-probs differ by one constant a row
            break
        history.append(d)
        steps.append(Step(d, "small"))
    n = len(steps)
    rolled_back = n < len(drafts)
    if rolled_back or len(logits) > n:                 # the full model's token: a correction, or the bonus
        if not rolled_back:
            recent.append(entropy(logits[n]))
        token = sample(logits[n], history)
        history.append(token)
        steps.append(Step(token, "verify"))
        runner.truncate(base + n + 1)
    else:
        runner.truncate(base + n)                      # the last kept draft is the next token to feed
    stats.record("small", len(drafts), n)
    return steps, rose or rolled_back


def small_model(runner, cfg: EntropyConfig):
    if cfg.exit_layer is not None:
        return FirstLayers(runner, cfg.exit_layer)
    drafter = runner.drafter()
    if drafter is None:
        raise ModeError("this bundle has no trained draft to write with in $mode entropy (or its cache evicts); "
                        "export one in with 'edgedec export --draft FILE' (edgedec-distill trains it), or "
                        "write with the model's own first layers: $exit_layer E")
    return TrainedDraft(runner, drafter)


class TrainedDraft:
    """The bundle's trained draft as the small model: it chains on its own predicted states while it
    writes, and reads the full model's true states again at each catch-up."""

    def __init__(self, runner, drafter):
        self.runner, self.drafter = runner, drafter

    def start(self, x: int, history: list[int]) -> bool:
        """Read the true states not read yet; False when there is nothing to write from."""
        self.hidden, self.pending_ids = self.drafter.take_pending(history)
        return bool(self.pending_ids)

    def next(self, token: int) -> tuple[np.ndarray, np.ndarray]:
        """After `token`: (logits over the whole vocabulary, the draft's own logits)."""
        ids, self.pending_ids = self.pending_ids or [token], None
        hidden, logits = self.drafter.step(self.hidden, ids)
        self.hidden = hidden[:, -1:]
        full = np.full(self.runner.config.vocab, -np.inf, np.float32)
        full[self.drafter.vocab] = logits
        return full, logits

    def done(self) -> None:
        self.drafter.truncate(self.runner.length)      # drop the predicted states; the true ones come back

    def catch_up(self, x: int, drafts: list[int]) -> np.ndarray:
        """The full model's rows for [x, d_1..d_n]: one per draft and the bonus row."""
        out, _ = self.runner.layers([x] + drafts)
        return self.runner.head(out)


class FirstLayers:
    """layers[0:E] + the head as the small model; the full model's catch-up runs only layers[E:L], on the
    states the small model computed (as a self-spec round's verification)."""

    def __init__(self, runner, exit_layer: int):
        self.runner, self.exit_layer = runner, exit_layer
        self.hidden: list[np.ndarray] = []

    def start(self, x: int, history: list[int]) -> bool:
        self.hidden = []
        return True

    def next(self, token: int) -> tuple[np.ndarray, np.ndarray]:
        h, _ = self.runner.layers([token], end=self.exit_layer)
        self.hidden.append(as_numpy(h))
        logits = self.runner.head(self.hidden[-1])[0]
        return logits, logits

    def done(self) -> None:
        pass

    def catch_up(self, x: int, drafts: list[int]) -> np.ndarray:
        """The full model's rows for [x, d_1..d_(n-1)], from the small model's states (no bonus row)."""
        out, _ = self.runner.layers(hidden=np.concatenate(self.hidden, axis=1), start=self.exit_layer)
        return self.runner.head(out)


def _write(small, x: int, k: int, threshold: float, sample, history: list[int], recent: deque):
    """Up to k small-model tokens after x, while the rolling entropy (continuing `recent`) stays below
    `threshold`: (tokens, the small model's entropy before each)."""
    if not small.start(x, history):
        return [], []
    rolling = deque(recent, maxlen=recent.maxlen)
    drafts, entropies, hist, token = [], [], list(history), x
    for _ in range(k):
        logits, own = small.next(token)
        token = _draw(logits, sample, hist)
        drafts.append(token)
        hist.append(token)
        entropies.append(entropy(own))
        rolling.append(entropies[-1])
        if np.mean(rolling) >= threshold:
            break
    small.done()
    return drafts, entropies


def _draw(logits: np.ndarray, sample, history: list[int]) -> int:
    if sample.cfg.greedy:
        return int(np.argmax(logits))
    return sample.draw(probabilities(logits, sample.cfg, history))
