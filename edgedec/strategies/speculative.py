"""`--mode speculative`: classic two-model speculative decoding (Leviathan et al. 2023; Chen et al. 2023),
lossless: a separate, smaller draft model proposes, the full model verifies.

The draft model is a bundle inside the bundle (export --draft DRAFT.gguf | HF folder | truncate:E), run on
the same backend with its own KV cache, kept in step with the conversation (runtimes/draft_model.py). One
round, after the last emitted token x (not yet in either cache):

    draft:   feed the draft what it has not seen (x, and whatever plain steps or lookup rounds emitted
             since its last round); then d_1 ~ q_0, feed d_1, d_2 ~ q_1, ...   (k tokens; stop early once
             the draft's top probability falls below the threshold)
    verify:  p_0..p_k = the full model on [x, d_1..d_k], one batched call (the bonus row included)
    accept:  d_(i+1) against p_i, left to right (rounds.accept); both caches keep only what was accepted

The cost model (cost.py) weighs each round as it weighs a trained-draft round of self-spec: a draft step's
measured time and acceptance, against a plain step and, when `lookup` is on, a prompt-lookup round.
Rejection sampling keeps the output distribution exactly the full model's; greedy output equals plain
greedy decoding on the same row path.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterator

from edgedec.errors import ModeError

from .cost import CostModel
from .lookup import LookupConfig, lookup_round, propose
from .rounds import SpecStats, Step, accept, check_drafting, draft_token, plain_step


@dataclass(frozen=True)
class SpeculativeConfig:
    k_max: int = 4              # most tokens drafted per round
    threshold: float = 0.3      # stop drafting once the draft's top probability falls below this
    lookup: bool = True         # also weigh prompt-lookup proposals each round
    adaptive: bool = True       # decode plainly when the cost model says drafting loses
    ngram_max: int = 8          # lookup: longest suffix n-gram to match

    def check(self, n_layers: int, cuts: list[int]) -> None:
        check_drafting(self.k_max, self.threshold)


def speculative(runner, new_tokens: list[int], sample, history: list[int], cfg: SpeculativeConfig | None = None,
                stats: SpecStats | None = None) -> Iterator[Step]:
    """Prefill, then decode in rounds the cost model chooses: plain steps, draft-model rounds, lookup rounds."""
    cfg = cfg or SpeculativeConfig()
    stats = stats if stats is not None else SpecStats()
    draft = runner.draft_model()
    if draft is None:
        raise ModeError("$mode speculative needs a draft model in the bundle; export it with "
                        "--draft DRAFT.gguf (or a Hugging Face folder, or truncate:E for the model's first E layers)")
    costs = CostModel(runner.config.n_layers, [], cfg.k_max, adaptive=cfg.adaptive, free_rows=runner.min_rows,
                      draft=True)
    x = sample(runner.forward(new_tokens)[-1], history)
    history.append(x)
    yield Step(x)
    while True:
        proposal, match_len = (propose(history, LookupConfig.max_draft, cfg.ngram_max) if cfg.lookup
                               else ([], 0))
        plan = costs.choose(len(proposal), match_len)
        full = runner.length + 2 >= runner.n_ctx or len(history) + cfg.k_max >= draft.runner.n_ctx
        if plan[0] == "plain" or full:
            steps = [plain_step(runner, x, sample, history, costs, stats)]
        elif plan[0] == "lookup":
            steps = lookup_round(runner, x, proposal[:plan[1]], match_len, sample, history, costs, stats)
        else:
            steps = model_round(runner, draft, plan[1], cfg.threshold, sample, history, costs, stats)
        stats.row_cost = costs.row_cost
        yield from steps
        x = steps[-1].token


def model_round(runner, draft, k: int, threshold: float, sample, history: list[int], costs, stats) -> list[Step]:
    """Draft up to k tokens with the draft model after history[-1] (= x), verify [x, drafts] in one call."""
    base = runner.length                       # history[:base] is in the target's cache; x = history[base]
    x = history[-1]
    k = max(1, min(k, runner.n_ctx - base - 2))
    t0 = time.perf_counter()
    logits = draft.catch_up(history)
    drafts, qs, hist = [], [], list(history)
    for i in range(k):
        token, top, q = draft_token(logits, sample, hist)
        drafts.append(token)
        qs.append(q)
        hist.append(token)
        if top < threshold or i == k - 1:
            break
        logits = draft.next(token)
    t1 = time.perf_counter()
    logits = runner.forward([x] + drafts, all_logits=True)
    t2 = time.perf_counter()
    costs.observe_draft("draft", (t1 - t0) / len(drafts))
    costs.observe_verify(0, len(drafts) + 1, t2 - t1)
    steps, n_ok = accept(logits, drafts, None if sample.cfg.greedy else qs, sample, history, runner, base,
                         "draft")
    draft.keep(min(draft.runner.length, base + 1 + n_ok))
    costs.observe_accept("draft", min(n_ok + 1, len(drafts)), n_ok)
    stats.record("draft", len(drafts), n_ok)
    return steps
