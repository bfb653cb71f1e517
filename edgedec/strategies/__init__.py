"""Decoding strategies: one module per mode, each a generator function over (runner, new tokens, sampler,
history, config, stats) that yields `Step`s, with its own config dataclass.

    plain       plain.py       PlainConfig
    self-spec   self_spec.py   SelfSpecConfig
    lookup      lookup.py      LookupConfig
    speculative speculative.py SpeculativeConfig (a separate draft model)
    early-exit  early_exit.py  EarlyExitConfig   (lossy)
    entropy     entropy.py     EntropyConfig     (lossy)

Each mode names the runner protocol it needs (runtimes/contract.py): plain runs on any Runner; the
speculative modes verify many rows in one call and pick a row path, and the lossy modes run layer ranges
and the head apart, so they need a LayeredRunner.

A strategy feeds the tokens the runner has not seen yet, then produces tokens until the caller stops
iterating. Each Step says where its token came from (rounds.py). Whether a call speculates at all, and on
which kernel row path, is decided outside the loops, in path.py.
"""
from dataclasses import dataclass
from typing import Callable

from edgedec.runtimes.contract import LayeredRunner, Runner

from .early_exit import EarlyExitConfig, early_exit
from .entropy import EntropyConfig, entropy_switch
from .lookup import LookupConfig, lookup
from .plain import PlainConfig, plain
from .rounds import SpecStats, Step
from .self_spec import SelfSpecConfig, self_spec
from .speculative import SpeculativeConfig, speculative


@dataclass(frozen=True)
class Mode:
    run: Callable
    config: type
    needs: type            # the runner protocol it is written against


MODES = {
    "plain": Mode(plain, PlainConfig, Runner),
    "self-spec": Mode(self_spec, SelfSpecConfig, LayeredRunner),
    "lookup": Mode(lookup, LookupConfig, LayeredRunner),
    "speculative": Mode(speculative, SpeculativeConfig, Runner),
    "early-exit": Mode(early_exit, EarlyExitConfig, LayeredRunner),
    "entropy": Mode(entropy_switch, EntropyConfig, LayeredRunner),
}

__all__ = ["MODES", "Mode", "EarlyExitConfig", "EntropyConfig", "Step", "SpecStats", "PlainConfig", "SelfSpecConfig", "LookupConfig",
           "SpeculativeConfig", "speculative",
           "plain", "self_spec", "lookup", "early_exit", "entropy_switch"]
