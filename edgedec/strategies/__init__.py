"""Decoding strategies: generator functions over (model, new tokens, sampler) yielding `Step`s.

A strategy feeds the tokens the model has not seen yet, then produces tokens until the caller stops
iterating. Each Step says where its token came from, so callers can report it.
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class Step:
    token: int
    source: str = "model"   # which model/drafter produced the token ("model", "draft", "verify", ...)


from .plain import plain  # noqa: E402

STRATEGIES = {"plain": plain}
