"""`--mode self-spec`: draft with the model itself, verify with the whole model, lossless.

Two drafters: the bundle's trained draft, when it has one (edgedec-distill; draft.py), and the model's own
first layers, verified by the rest (LayerSkip-style self-speculation), described here:

The draft's hidden states and its KV for layers[0:E] are the verifier's too: verification runs only
layers[E:L], on the hidden states the draft already computed. One round, drafting k tokens after the last
emitted token x (not yet in the cache):

    draft:   h_i = layers[0:E](t_i), q_i = head(h_i), d_(i+1) ~ q_i       for t = x, d_1, ..., d_(k-1)
             (stop early once max q_i < threshold)
    verify:  p_0..p_(k-1) = head(layers[E:L](h_0..h_(k-1)))               one batched call
    accept:  d_(i+1) against p_i, left to right (Sampler.verify); the first rejection emits the verifier's
             token instead and ends the round; the cache is truncated to the positions that were kept.

Each round the cost model (cost.py) picks the plan with the highest expected tokens per second: a plain
step, a lookup round (lookup.py; free drafts from the context, when `lookup` is on), a trained-draft round
of k tokens, or a self-draft round at (E, k). Rejection sampling makes the output distribution exactly the
full model's; greedy output
equals plain greedy decoding on the same row path (runtimes/contract.py, "Row paths").
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from edgedec.bundle import require_cut
from edgedec.runtimes.contract import LayeredRunner

from .cost import CostModel
from .draft import draft_round
from .lookup import LookupConfig, lookup_round, propose
from .rounds import SpecStats, Step, accept, as_numpy, check_drafting, draft_token, plain_step

PROBE_EVERY = 8     # every 8th self-draft round also measures the other exit layers' agreement


@dataclass(frozen=True)
class SelfSpecConfig:
    exit_layer: int | None = None   # draft with layers[0:E]; None = choose per context among the cuts
    k_max: int = 4                  # most tokens drafted per round
    threshold: float = 0.3          # stop drafting once the draft's top probability falls below this
    lookup: bool = True             # also weigh prompt-lookup proposals each round
    adaptive: bool = True           # decode plainly when the cost model says drafting loses
    draft: bool = True              # draft with the bundle's trained draft when it has one (and no $exit_layer)
    ngram_max: int = 8              # lookup: longest suffix n-gram to match

    def check(self, n_layers: int, cuts: list[int]) -> None:
        """Bad settings get an error naming the valid range."""
        check_drafting(self.k_max, self.threshold)
        if self.exit_layer is not None:
            require_cut(self.exit_layer, cuts)


def self_spec(runner: LayeredRunner, new_tokens: list[int], sample, history: list[int],
              cfg: SelfSpecConfig | None = None, stats: SpecStats | None = None) -> Iterator[Step]:
    """Prefill, then decode in rounds the cost model chooses: plain steps, self-draft rounds, lookup rounds."""
    cfg = cfg or SelfSpecConfig()
    stats = stats if stats is not None else SpecStats()
    drafter = runner.drafter() if cfg.draft and cfg.exit_layer is None else None
    exits = [cfg.exit_layer] if cfg.exit_layer is not None else runner.cuts[:-1]   # the last cut is L
    costs = CostModel(runner.config.n_layers, exits, cfg.k_max, adaptive=cfg.adaptive, free_rows=runner.min_rows,
                      draft=drafter is not None)
    x = sample(runner.forward(new_tokens)[-1], history)
    history.append(x)
    yield Step(x)
    rounds = 0
    while True:
        proposal, match_len = (propose(history, LookupConfig.max_draft, cfg.ngram_max) if cfg.lookup
                               else ([], 0))
        plan = costs.choose(len(proposal), match_len)
        if plan[0] == "plain" or runner.length + 2 >= runner.n_ctx:
            steps = [plain_step(runner, x, sample, history, costs, stats)]
        elif plan[0] == "lookup":
            steps = lookup_round(runner, x, proposal[:plan[1]], match_len, sample, history, costs, stats)
        elif plan[0] == "draft":
            steps = draft_round(runner, drafter, x, plan[1], cfg.threshold, sample, history, costs, stats)
        else:
            rounds += 1
            steps = self_round(runner, x, plan[1], plan[2], cfg, sample, history, costs, stats,
                               probe=rounds % PROBE_EVERY == 0 and len(exits) > 1)
        stats.row_cost = costs.row_cost
        yield from steps
        x = steps[-1].token


def self_round(runner, x, exit_layer, k, cfg, sample, history, costs, stats, probe) -> list[Step]:
    """Draft up to k tokens with layers[0:E] + head, verify them with layers[E:L] + head in one call."""
    base = runner.length
    room = runner.n_ctx - base - 1
    k = max(1, min(k, room))
    others = [c for c in costs.exits if c != exit_layer] if probe else []
    hidden, drafts, qs, taps = [], [], [], {c: [] for c in others}
    token, hist = x, list(history)
    t0 = time.perf_counter()
    for _ in range(k):
        h, tapped = runner.layers([token], end=exit_layer, taps=[c for c in others if c < exit_layer])
        _file(taps, tapped)
        hidden.append(as_numpy(h))
        token, top, q = draft_token(runner.head(hidden[-1])[0], sample, hist)
        qs.append(q)
        drafts.append(token)
        hist.append(token)
        if top < cfg.threshold:
            break
    t1 = time.perf_counter()
    out, tapped = runner.layers(hidden=np.concatenate(hidden, axis=1), start=exit_layer,
                                taps=[c for c in others if c > exit_layer])
    _file(taps, tapped)
    logits = runner.head(out)
    t2 = time.perf_counter()
    costs.observe_draft(exit_layer, (t1 - t0) / len(drafts))
    costs.observe_verify(exit_layer, len(drafts), t2 - t1)
    steps, n_ok = accept(logits, drafts, qs if not sample.cfg.greedy else None, sample, history, runner, base,
                         "self", exit_layer)
    costs.observe_accept(exit_layer, min(n_ok + 1, len(drafts)), n_ok)
    _probe_exits(runner, taps, logits, steps, costs)
    stats.record("self", len(drafts), n_ok)
    stats.exit_layers[exit_layer] = stats.exit_layers.get(exit_layer, 0) + 1
    return steps


def _probe_exits(runner, taps, logits, steps, costs) -> None:
    """Agreement of other exit layers with the verifier on this round's positions (greedy agreement is
    the acceptance estimate's proxy)."""
    n = len(steps)
    want = np.argmax(logits[:n], axis=1)
    for c, hs in taps.items():
        if hs:
            h = np.concatenate(hs, axis=1)[:, :n]
            guess = np.argmax(runner.head(h), axis=1)
            costs.observe_accept(c, n, int((guess == want).sum()))


def _file(taps: dict, tapped: dict) -> None:
    for c, v in tapped.items():
        taps[c].append(v)
