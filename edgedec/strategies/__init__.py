"""Decoding strategies: generator functions over (model, new tokens, sampler) yielding `Step`s.

A strategy feeds the tokens the model has not seen yet, then produces tokens until the caller stops
iterating. Each Step says where its token came from, so callers can report it.
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class Step:
    token: int
    source: str = "model"   # "model" (a plain step), "self" / "lookup" (an accepted draft), "verify" (the verifier)


from .plain import plain  # noqa: E402
from .policy import SpecConfig  # noqa: E402,F401
from .speculative import SpecStats, speculative  # noqa: E402,F401


def self_spec(model, new_tokens, sample, history, spec=None, stats=None):
    return speculative(model, new_tokens, sample, history, spec, stats, self_draft=True)


def lookup(model, new_tokens, sample, history, spec=None, stats=None):
    return speculative(model, new_tokens, sample, history, spec, stats, self_draft=False)


STRATEGIES = {"plain": plain, "self-spec": self_spec, "lookup": lookup}
SPECULATIVE = ("self-spec", "lookup")
