"""A self-spec round with the bundle's trained draft (EAGLE-style; export/drafts.py), lossless.

The draft reads the full model's last hidden state and the next token, and predicts the next hidden state
and the token after it, without running any of the model's layers. One round, after the last emitted token
x (at position p, not yet in the cache):

    draft:   (h_j, x_(j+1)) for the true states not read yet (the last is (h_(p-1), x)), in one call
             -> r_p, q_p -> d_1;  then (r_p, d_1) -> r_(p+1), q_(p+1) -> d_2;  ...   (k calls in all;
             stop early once the draft's top probability falls below the threshold)
    verify:  p_0..p_k = the full model on [x, d_1..d_k], one batched call (the bonus row included)
    accept:  d_(i+1) against p_i, left to right (rounds.accept), as a lookup round does

The draft's predicted states are dropped after the round; the verified true states reach it through the
runner (`Drafter`, runtimes/contract.py). Drafts are sampled from the draft's own distribution q (zero
outside its reduced vocabulary), so rejection sampling keeps the output exactly the full model's.
"""
from __future__ import annotations

import time

import numpy as np

from edgedec.sampling import probabilities

from .rounds import Step, accept, plain_step, top_probability


def draft_round(runner, drafter, x: int, k: int, threshold: float, sample, history: list[int], costs,
                stats) -> list[Step]:
    base = runner.length
    k = max(1, min(k, runner.n_ctx - base - 2))
    t0 = time.perf_counter()
    hidden, next_ids = drafter.take_pending(history)
    if not next_ids:                            # nothing to draft from (the draft's cache just restarted)
        return [plain_step(runner, x, sample, history, costs, stats)]
    drafts, qs, hist = [], [], list(history)
    for _ in range(k):
        hidden, logits = drafter.step(hidden, next_ids)
        hidden = hidden[:, -1:]
        if sample.cfg.greedy:
            token, top, q = int(drafter.vocab[int(np.argmax(logits))]), top_probability(logits), None
        else:
            full = np.full(runner.config.vocab, -np.inf, np.float32)
            full[drafter.vocab] = logits
            q = probabilities(full, sample.cfg, hist)
            token, top = sample.draw(q), float(q.max())
        drafts.append(token)
        qs.append(q)
        hist.append(token)
        next_ids = [token]
        if top < threshold:
            break
    drafter.truncate(base)                      # drop the predicted states; the verified ones come back
    t1 = time.perf_counter()
    out, _ = runner.layers([x] + drafts)
    logits = runner.head(out)
    t2 = time.perf_counter()
    costs.observe_draft("draft", (t1 - t0) / len(drafts))
    costs.observe_verify(0, len(drafts) + 1, t2 - t1)
    steps, n_ok = accept(logits, drafts, None if sample.cfg.greedy else qs, sample, history, runner, base,
                         "draft")
    costs.observe_accept("draft", min(n_ok + 1, len(drafts)), n_ok)
    stats.record("draft", len(drafts), n_ok)
    return steps
