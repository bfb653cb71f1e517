"""Speculative decoding: draft cheaply, verify in one batched pass of the full model, keep what agrees.

Two drafters:
  self    the model's own first E layers plus the shared head (LayerSkip-style self-speculation). The
          draft's hidden states and its KV for layers[0:E] are the verifier's too: verification runs only
          layers[E:L], on the hidden states the draft already computed.
  lookup  tokens that followed an earlier occurrence of the current suffix (lookup.py); free to make.

One round, self-drafting k tokens after the last emitted token x (not yet in the cache):

    draft:   h_i = layers[0:E](t_i), q_i = head(h_i), d_(i+1) ~ q_i       for t = x, d_1, ..., d_(k-1)
             (stop early once max q_i < threshold)
    verify:  p_0..p_(k-1) = head(layers[E:L](h_0..h_(k-1)))               one batched call
    accept:  d_(i+1) against p_i, left to right (Sampler.verify); the first rejection emits the verifier's
             token instead and ends the round; the cache is truncated to the positions that were kept.

A lookup round feeds [x, d_1..d_m] through the whole model and, when every draft passes, also emits the
bonus token from p_m. Rejection sampling makes the output distribution exactly the full model's; greedy
output equals plain greedy decoding on the same row path (see runtimes/onnxruntime.py, `min_rows`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from edgedec.sampling import probabilities

from . import Step
from .lookup import propose
from .policy import CostModel, SpecConfig

PROBE_EVERY = 8     # every 8th self-draft round also measures the other exit layers' agreement
LOOKUP_MAX = 8      # most tokens a lookup proposal offers (k_max caps self-drafts only); the cost model
                    # decides how many of them to verify


@dataclass
class SpecStats:
    """What `generate --json` and `chat /stats` report."""
    n_verify_calls: int = 0
    drafted: dict = field(default_factory=dict)    # drafter -> tokens proposed
    accepted: dict = field(default_factory=dict)   # drafter -> tokens accepted
    exit_layers: dict = field(default_factory=dict)  # exit layer -> self rounds drafted there
    n_plain_steps: int = 0
    path: str = "speculate"    # "plain": the call decoded plainly, on one-row kernels (api.Model, PathLedger)
    t_plain: float | None = None   # the cost model's seconds per plain step in this call
    row_cost: float | None = None  # the cost model's extra cost per verified row, relative to one

    def record(self, drafter: str, drafted: int, accepted: int) -> None:
        """One verify call that checked `drafted` proposals from `drafter`, `accepted` of them passing."""
        self.drafted[drafter] = self.drafted.get(drafter, 0) + drafted
        self.accepted[drafter] = self.accepted.get(drafter, 0) + accepted
        self.n_verify_calls += 1

    def to_dict(self) -> dict:
        drafted, accepted = sum(self.drafted.values()), sum(self.accepted.values())
        return {"acceptance_rate": accepted / drafted if drafted else 0.0,
                "mean_accepted_per_verify": accepted / self.n_verify_calls if self.n_verify_calls else 0.0,
                "n_verify_calls": self.n_verify_calls, "n_plain_steps": self.n_plain_steps, "path": self.path,
                "drafted": dict(self.drafted), "accepted": dict(self.accepted),
                "exit_layers": {str(k): v for k, v in self.exit_layers.items()}}


def _numpy(h) -> np.ndarray:
    return h if isinstance(h, np.ndarray) else h.numpy()


def _untap(result, taps: dict):
    """layers() returns (hidden, {cut: hidden}) when asked for taps: file the tapped states, return hidden."""
    if not isinstance(result, tuple):
        return result
    hidden, tapped = result
    for c, v in tapped.items():
        taps[c].append(v)
    return hidden


def _accept(logits, drafts, qs, sample, history, model, base, source) -> tuple[list[Step], int]:
    """Check drafts against the verifier's logits rows; returns the steps to emit and the accepted count.
    Truncates the cache to `base` + the positions that stay valid."""
    steps = []
    for i, d in enumerate(drafts):
        ok, token = sample.verify(logits[i], d, qs[i] if qs else None, history)
        history.append(token)
        if not ok:
            steps.append(Step(token, "verify"))
            model.truncate(base + i + 1)
            return steps, i
        steps.append(Step(token, source))
    if len(logits) > len(drafts):                           # lookup: the bonus token
        token = sample(logits[len(drafts)], history)
        history.append(token)
        steps.append(Step(token, "verify"))
    model.truncate(base + len(logits))
    return steps, len(drafts)


def _self_round(model, x, exit_layer, k, cfg, sample, history, costs, stats, probe) -> list[Step]:
    base = model.length
    room = model.n_ctx - base - 1
    k = max(1, min(k, room))
    others = [c for c in costs.exits if c != exit_layer] if probe else []
    hidden, drafts, qs, taps = [], [], [], {c: [] for c in others}
    token, hist = x, list(history)
    t0 = time.perf_counter()
    for _ in range(k):
        h = _numpy(_untap(model.layers([token], end=exit_layer, taps=[c for c in others if c < exit_layer]), taps))
        hidden.append(h)
        logits = model.head(h)[0]
        if sample.cfg.greedy:
            token = int(np.argmax(logits))
            top = _top_prob(logits)
            qs.append(None)
        else:
            q = probabilities(logits, sample.cfg, hist)
            token, top = sample.draw(q), float(q.max())
            qs.append(q)
        drafts.append(token)
        hist.append(token)
        if top < cfg.threshold:
            break
    t1 = time.perf_counter()
    out = model.layers(hidden=np.concatenate(hidden, axis=1), start=exit_layer,
                       taps=[c for c in others if c > exit_layer])
    logits = model.head(_untap(out, taps))
    t2 = time.perf_counter()
    costs.observe_draft(exit_layer, (t1 - t0) / len(drafts))
    costs.observe_verify(exit_layer, len(drafts), t2 - t1)
    steps, n_ok = _accept(logits, drafts, qs if not sample.cfg.greedy else None, sample, history, model, base,
                          "self")
    costs.observe_accept(exit_layer, min(n_ok + 1, len(drafts)), n_ok)
    _probe_exits(model, taps, logits, steps, costs)
    stats.record("self", len(drafts), n_ok)
    stats.exit_layers[exit_layer] = stats.exit_layers.get(exit_layer, 0) + 1
    return steps


def _probe_exits(model, taps, logits, steps, costs) -> None:
    """Agreement of other exit layers with the verifier on this round's positions (greedy agreement is
    the acceptance estimate's proxy)."""
    n = len(steps)
    want = np.argmax(logits[:n], axis=1)
    for c, hs in taps.items():
        if hs:
            h = np.concatenate(hs, axis=1)[:, :n]
            guess = np.argmax(model.head(h), axis=1)
            costs.observe_accept(c, n, int((guess == want).sum()))


def _top_prob(logits: np.ndarray) -> float:
    z = logits - logits.max()
    return float(1.0 / np.exp(z).sum())


def _lookup_round(model, x, drafts, match_len, sample, history, costs, stats) -> list[Step]:
    base = model.length
    drafts = drafts[: max(0, model.n_ctx - base - 2)]
    t0 = time.perf_counter()
    logits = model.forward([x] + drafts, all_logits=True)
    costs.observe_verify(0, len(drafts) + 1, time.perf_counter() - t0)
    steps, n_ok = _accept(logits, drafts, None, sample, history, model, base, "lookup")
    costs.observe_lookup(match_len, min(n_ok + 1, len(drafts)), n_ok)
    stats.record("lookup", len(drafts), n_ok)
    return steps


def replay_lookup(tokens: list[int], start: int, row_cost: float, max_tokens: int = LOOKUP_MAX,
                  ngram_max: int = SpecConfig.ngram_max) -> float:
    """What lookup speculation would have gained over plain steps on its own path, replayed on tokens that
    a plain call produced (`tokens[start:]`, after the prompt `tokens[:start]`). Costs nothing to run.

    Greedy lookup is deterministic given the output: at each emitted token, the drafter's proposal is
    known, and so is how much of it the model would have accepted (the matching prefix of what the plain
    call produced next; for sampled output this is an estimate, since rejection sampling accepts a draft
    with probability p rather than on a match). The rounds are chosen as `speculative` chooses them, by
    the cost model, with time in units of one plain step on the speculating path (each extra verified
    row costs `row_cost`; a lookup round verifies the whole model, so the layer count cancels). Returns
    tokens per unit of time: the quantity `PathLedger.gain` holds for a real speculative call."""
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


def speculative(model, new_tokens: list[int], sample, history: list[int], spec: SpecConfig | None = None,
                stats: SpecStats | None = None, self_draft: bool = True) -> Iterator[Step]:
    """Prefill, then decode in rounds chosen by the cost model: plain steps, self-draft rounds, lookup
    rounds. `self_draft=False` is `--mode lookup`."""
    spec = spec or SpecConfig()
    stats = stats if stats is not None else SpecStats()
    if not self_draft:
        exits = []
    elif spec.exit_layer is not None:
        exits = [spec.exit_layer]
    else:
        exits = model.cuts[:-1]          # the last cut is the layer count
    costs = CostModel(model.config.n_layers, exits, spec.k_max, adaptive=spec.adaptive,
                      free_rows=getattr(model, "min_rows", 1))
    use_lookup = spec.lookup or not self_draft
    logits = model.forward(new_tokens)[-1]
    x = sample(logits, history)
    history.append(x)
    yield Step(x)
    rounds = 0
    while True:
        proposal, match_len = propose(history, LOOKUP_MAX, spec.ngram_max) if use_lookup else ([], 0)
        plan = costs.choose(len(proposal), match_len)
        if plan[0] == "plain" or model.length + 2 >= model.n_ctx:
            t0 = time.perf_counter()
            logits = model.forward([x])[-1]
            costs.observe_plain(time.perf_counter() - t0)
            stats.n_plain_steps += 1
            stats.t_plain = costs.t_plain
            steps = [Step(sample(logits, history))]
            history.append(steps[0].token)
        elif plan[0] == "lookup":
            steps = _lookup_round(model, x, proposal[:plan[1]], match_len, sample, history, costs, stats)
        else:
            rounds += 1
            steps = _self_round(model, x, plan[1], plan[2], spec, sample, history, costs, stats,
                                probe=rounds % PROBE_EVERY == 0 and len(exits) > 1)
        stats.row_cost = costs.row_cost
        yield from steps
        x = steps[-1].token
