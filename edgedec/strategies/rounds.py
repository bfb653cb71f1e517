"""What every decoding loop shares: the Step it yields, the counters it keeps, one plain step, and the
acceptance of drafts against the verifier's logits.

Every Step says where its token came from:
    plain     a plain decoding step of the full model
    self      an accepted draft of the model's own first `layer` layers (self-spec)
    draft     an accepted draft of the bundle's trained draft (self-spec)
    lookup    an accepted draft copied from the context (prompt lookup)
    verify    the full model's own token at the end of a verified round (a correction or the bonus token)
    exit      a token that left the model at exit `layer` (early-exit, lossy)
    small     a token of the small model that the full model kept (entropy, lossy)
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from edgedec.errors import ModeError
from edgedec.sampling import probabilities


@dataclass(frozen=True)
class Step:
    token: int
    source: str = "plain"
    layer: int | None = None    # self: the exit layer that drafted it

    @property
    def origin(self) -> str:
        """The key the token is counted under: "plain", "verify", "lookup", "draft", or "self@E"."""
        return f"{self.source}@{self.layer}" if self.layer is not None else self.source


@dataclass
class SpecStats:
    """What a speculative call reports (`generate --json`, `chat /stats`)."""
    n_verify_calls: int = 0
    drafted: dict = field(default_factory=dict)    # drafter -> tokens proposed
    accepted: dict = field(default_factory=dict)   # drafter -> tokens accepted
    exit_layers: dict = field(default_factory=dict)  # exit layer -> self rounds drafted there
    n_plain_steps: int = 0
    path: str = "speculate"    # "plain": the call decoded plainly, on one-row kernels (strategies/path.py)
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


def top_probability(logits: np.ndarray) -> float:
    """The largest probability of softmax(logits): how sure a greedy drafter is of its token."""
    return float(1.0 / np.exp(logits - logits.max()).sum())


def entropy(logits: np.ndarray) -> float:
    """The entropy of softmax(logits), in nats: how unsure the model is of its next token."""
    z = logits.astype(np.float64) - logits.max()
    p = np.exp(z)
    total = p.sum()
    return float(np.log(total) - (p * z).sum() / total)


def check_drafting(k_max: int, threshold: float) -> None:
    """A drafter's round length and confidence threshold (self-spec, speculative)."""
    if k_max < 1:
        raise ModeError(f"$k_max {k_max} is invalid: it must be at least 1 (1..16 make sense)")
    if not 0.0 <= threshold < 1.0:
        raise ModeError(f"$threshold {threshold} is invalid: use a probability in [0, 1)")


def check_threshold(t: float) -> None:
    """An entropy threshold (early-exit, entropy) must be a possible entropy."""
    if not 0.0 <= t <= 20.0:
        raise ModeError(f"$threshold {t} is out of range: it is an entropy in nats, 0 (never) to about 11 "
                        "(this vocabulary's largest); 0.1-3 make sense")


def as_numpy(h) -> np.ndarray:
    """A backend's hidden state (numpy, or ONNX Runtime's OrtValue) as a numpy array."""
    return h if isinstance(h, np.ndarray) else h.numpy()


def draft_token(logits: np.ndarray, sample, history: list[int]) -> tuple[int, float, np.ndarray | None]:
    """A drafter's next token from its logits: (token, its top probability, q). Greedy takes the argmax
    (q None); sampling draws from q, the drafter's distribution under the sampler's settings, which
    rejection sampling needs (Sampler.verify)."""
    if sample.cfg.greedy:
        return int(np.argmax(logits)), top_probability(logits), None
    q = probabilities(logits, sample.cfg, history)
    return sample.draw(q), float(q.max()), q


def plain_step(runner, x: int, sample, history: list[int], costs, stats: SpecStats) -> Step:
    """Feed x through the full model and sample the next token, timing the step for the cost model."""
    t0 = time.perf_counter()
    logits = runner.forward([x])[-1]
    costs.observe_plain(time.perf_counter() - t0)
    stats.n_plain_steps += 1
    stats.t_plain = costs.t_plain
    token = sample(logits, history)
    history.append(token)
    return Step(token)


def accept(logits, drafts: list[int], qs, sample, history: list[int], runner, base: int, source: str,
           layer: int | None = None) -> tuple[list[Step], int]:
    """Check drafts against the verifier's logits rows, left to right; returns the steps to emit and how
    many drafts passed. Truncates the cache to `base` + the positions that stay valid."""
    steps = []
    for i, d in enumerate(drafts):
        ok, token = sample.verify(logits[i], d, qs[i] if qs else None, history)
        history.append(token)
        if not ok:
            steps.append(Step(token, "verify"))
            runner.truncate(base + i + 1)
            return steps, i
        steps.append(Step(token, source, layer))
    if len(logits) > len(drafts):                           # lookup: the bonus token
        token = sample(logits[len(drafts)], history)
        history.append(token)
        steps.append(Step(token, "verify"))
    runner.truncate(base + len(logits))
    return steps, len(drafts)
