"""`--mode lookup`: model-free drafts from the context (prompt lookup decoding, Saxena 2023; the
suffix-match idea of SAM).

If the last n tokens occurred earlier in the prompt or the output, propose the tokens that followed that
earlier occurrence. Code and edits repeat identifiers and whole lines, so the proposals are often right,
and they cost nothing to make.

Matching suffixes of up to 8 tokens rather than 3 picks the better of several earlier occurrences: on
held-out greedy continuations (`python bench/lookup_ngram.py`, int4 bundle) the first proposed token is the
model's next token at 53.8% rather than 49.9% of the positions on code (45.7% vs 45.4% on prose).

How long the match was says how far to trust it. In the same run, the first proposed token is right after
a 1-token match 20% of the time (code and prose), after 2 tokens 44-50%, after 3 tokens 62-81%, after 4 or
more 90-91% (prose-code), so the cost model keeps one acceptance estimate per match length (cost.py).

A round feeds [x, d_1..d_m] through the whole model in one call and accepts the drafts left to right
(rounds.accept); when every draft passes it also emits the bonus token from p_m. The cost model decides,
round by round, between a lookup round (and how many proposed tokens to verify) and a plain step.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from edgedec.errors import ModeError
from edgedec.runtimes.contract import Runner

from .cost import CostModel
from .rounds import SpecStats, Step, accept, plain_step


@dataclass(frozen=True)
class LookupConfig:
    max_draft: int = 8          # most tokens a proposal offers; the cost model decides how many to verify
    ngram_max: int = 8          # longest suffix n-gram to match (bench/lookup_ngram.py)
    adaptive: bool = True       # decode plainly when lookup would not pay (and per call: strategies/path.py)

    def check(self, n_layers: int, cuts: list[int]) -> None:
        if self.max_draft < 1:
            raise ModeError(f"$max_draft {self.max_draft} is invalid: it must be at least 1 (1..16 make sense)")
        if self.ngram_max < 1:
            raise ModeError(f"$ngram_max {self.ngram_max} is invalid: it must be at least 1")


def lookup(runner: Runner, new_tokens: list[int], sample, history: list[int], cfg: LookupConfig | None = None,
           stats: SpecStats | None = None) -> Iterator[Step]:
    """Prefill, then decode in rounds the cost model chooses: a lookup round or a plain step."""
    cfg = cfg or LookupConfig()
    stats = stats if stats is not None else SpecStats()
    costs = CostModel(runner.config.n_layers, [], cfg.max_draft, adaptive=cfg.adaptive, free_rows=runner.min_rows)
    x = sample(runner.forward(new_tokens)[-1], history)
    history.append(x)
    yield Step(x)
    while True:
        proposal, match_len = propose(history, cfg.max_draft, cfg.ngram_max)
        plan = costs.choose(len(proposal), match_len)
        if plan[0] == "lookup" and runner.length + 2 < runner.n_ctx:
            steps = lookup_round(runner, x, proposal[:plan[1]], match_len, sample, history, costs, stats)
        else:
            steps = [plain_step(runner, x, sample, history, costs, stats)]
        stats.row_cost = costs.row_cost
        yield from steps
        x = steps[-1].token


def lookup_round(runner, x, drafts, match_len, sample, history, costs, stats) -> list[Step]:
    """Verify [x, drafts...] with the whole model in one call; keep the agreeing prefix (+ the bonus)."""
    base = runner.length
    drafts = drafts[: max(0, runner.n_ctx - base - 2)]
    t0 = time.perf_counter()
    logits = runner.forward([x] + drafts, all_logits=True)
    costs.observe_verify(0, len(drafts) + 1, time.perf_counter() - t0)
    steps, n_ok = accept(logits, drafts, None, sample, history, runner, base, "lookup")
    costs.observe_lookup(match_len, min(n_ok + 1, len(drafts)), n_ok)
    stats.record("lookup", len(drafts), n_ok)
    return steps


def propose(history: list[int], max_tokens: int, ngram_max: int = 8,
            ngram_min: int = 1) -> tuple[list[int], int]:
    """Up to `max_tokens` tokens that followed the most recent earlier match of the longest suffix n-gram
    (n from ngram_max down to ngram_min), and that n. Returns ([], 0) when nothing matches."""
    h = np.asarray(history, dtype=np.int64)
    n_hist = h.size
    for n in range(min(ngram_max, n_hist - 1), ngram_min - 1, -1):
        starts = np.flatnonzero(h[:n_hist - n] == h[n_hist - n])     # earlier places the suffix could start
        for j in range(1, n):
            starts = starts[h[starts + j] == h[n_hist - n + j]]
        if starts.size:
            s = int(starts[-1]) + n              # the most recent occurrence is the best guess
            return h[s:s + max_tokens].tolist(), n
    return [], 0


def replay_lookup(tokens: list[int], start: int, row_cost: float, max_tokens: int = LookupConfig.max_draft,
                  ngram_max: int = LookupConfig.ngram_max) -> float:
    """What lookup speculation would have gained over plain steps on its own path, replayed on tokens that
    a plain call produced (`tokens[start:]`, after the prompt `tokens[:start]`). Costs nothing to run.

    Greedy lookup is deterministic given the output: at each emitted token, the drafter's proposal is
    known, and so is how much of it the model would have accepted (the matching prefix of what the plain
    call produced next; for sampled output this is an estimate, since rejection sampling accepts a draft
    with probability p rather than on a match). The rounds are chosen as `lookup` chooses them, by the
    cost model, with time in units of one plain step on the speculating path (each extra verified row
    costs `row_cost`; a lookup round verifies the whole model, so the layer count cancels). Returns tokens
    per unit of time: the quantity `PathLedger.gain` holds for a real speculative call."""
    costs = CostModel(1, [], max_tokens, free_rows=2, t_plain=1.0, row_cost=row_cost)
    seq = np.asarray(tokens, dtype=np.int64)
    produced, spent, i = 0, 0.0, start + 1       # tokens[start] came from the prefill
    while i < len(seq):
        proposal, match_len = propose(seq[:i], max_tokens, ngram_max)
        plan = costs.choose(len(proposal), match_len)
        if plan[0] == "lookup":
            drafts, future = proposal[:plan[1]], seq[i:]
            ok = next((j for j, d in enumerate(drafts) if j >= len(future) or d != future[j]), len(drafts))
            costs.observe_lookup(match_len, min(ok + 1, len(drafts)), ok)
            spent += costs.verify_time(0, len(drafts) + 1)
            step = ok + 1
        else:
            spent += 1.0
            step = 1
        produced += min(step, len(seq) - i)
        i += step
    return produced / spent if spent else 0.0
