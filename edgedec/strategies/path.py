"""The path choice, in one place: per call, whether a speculative mode speculates or decodes plainly, and on
which kernel row path (runtimes/contract.py, "Row paths"). The session asks `plan_call` before a call and
tells `learn` what the call measured; the decoding loops never see any of it.

    exact=True    always speculate, every step on the many-row path (token for token `plain` exact)
    exact=False   always speculate, plain steps on the one-row path (matches neither plain run bit for bit)
    exact=None    auto: the PathLedger decides per call from what earlier calls measured; the call either
                  speculates on the many-row path or decodes plainly on the one-row path, so its greedy
                  output is token for token one of the two plain runs

The lossy modes (early-exit, entropy) always run themselves, on the one-row path unless exact=True, and
teach the ledger nothing.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from edgedec.runtimes.contract import LayeredRunner

from .cost import ema
from .lookup import replay_lookup

SPECULATIVE = ("self-spec", "lookup", "speculative")
LOSSY = ("early-exit", "entropy")
MARGIN = 0.1   # how much a call's gain must beat the exact path's tax by (PathLedger)


@dataclass(frozen=True)
class CallPlan:
    strategy: str       # the mode whose loop runs: the requested one, or "plain"
    min_rows: int       # the row path: 1 or 2
    path: str           # "speculate", "plain" (also for plain mode), or "lossy" (early-exit, entropy)
    learns: bool        # whether the call's measurements go into the ledger


def plan_call(ledger: "PathLedger", runner, mode: str, adaptive: bool, exact: bool | None) -> CallPlan:
    """What the next call in `mode` runs, and on which row path (see the module docstring)."""
    if mode in LOSSY:                                       # always themselves
        rows = 2 if exact and 2 in runner.row_paths else 1
        return CallPlan(mode, rows, "lossy", False)
    path = "plain"
    if mode in SPECULATIVE:
        path = ledger.choose(mode) if exact is None and adaptive else "speculate"
    many = exact if exact is not None else path == "speculate"
    rows = 2 if many and 2 in runner.row_paths else 1
    learns = exact is None and isinstance(runner, LayeredRunner)
    return CallPlan(mode if path == "speculate" else "plain", rows, path, learns)


def learn(ledger: "PathLedger", plan: CallPlan, mode: str, tok_s: float, stats, history: list[int],
          n_prompt: int, ngram_max: int) -> None:
    """What a finished call measured: its decode rate and, for a speculative one, its gain."""
    if not plan.learns:
        return
    if plan.path == "speculate":
        ledger.observe_speculation(mode, tok_s, stats.t_plain, stats.row_cost)
    elif mode in SPECULATIVE:
        replayed = replay_lookup(history, n_prompt, ledger.row_cost, ngram_max=ngram_max)
        ledger.observe_plain(mode, tok_s, replayed)
    else:
        ledger.observe_plain(None, tok_s)


@dataclass
class PathLedger:
    """Per call, whether a speculative mode should speculate at all, from what earlier calls measured.

    Speculating runs every step on the many-row kernel path, so that the output is token for token plain
    `--exact`; that path's plain step costs t_exact, more than the one-row step t_one. Speculation pays only
    when its gain over plain steps on its own path beats that tax:

        gain = tokens per second of a speculative call * t_exact measured in the same call
        speculate  iff  gain > t_exact / t_one + MARGIN

    The gain comes from the last call in that mode. A speculative call measures it (within one call, so it
    is immune to the machine's drift between calls). A call that decoded plainly replays lookup on its own
    output (`replay_lookup`), which says what speculating would have gained without paying for it, so a
    losing path is never tried just to find out: a prose call after code calls costs at most that one call.
    The tax is an average over calls of both kinds. Before anything is measured a call speculates; the call
    after the first speculative one decodes plainly to measure t_one. MARGIN is about what one call's gain
    is off from the next one's on the same kind of text (bench/replay_gain.py: a median of 0.05-0.08), so a
    call speculates only when that is clearly worth it: where the two paths are within noise (prose), it
    keeps to plain decoding, which is the floor the speculative modes must not fall below.
    """
    gain: dict = field(default_factory=dict)       # speculative mode -> gain over its own plain steps
    t_one: float | None = None                     # seconds per one-row plain step
    t_exact: float | None = None                   # seconds per plain step on the many-row path
    row_cost: float = 0.2                          # extra cost of a verified row (CostModel.row_cost), learnt

    def choose(self, mode: str) -> str:
        """"speculate" or "plain" for the next call in `mode`."""
        if mode not in self.gain or self.t_exact is None:
            return "speculate"
        if self.t_one is None:
            return "plain"
        return "speculate" if self.gain[mode] > self.t_exact / self.t_one + MARGIN else "plain"

    def observe_speculation(self, mode: str, tok_s: float, t_exact_step: float | None,
                            row_cost: float | None = None) -> None:
        """A speculative call's decode rate, the mean time of its plain steps (many-row path) and its cost
        model's learnt cost per extra verified row."""
        if t_exact_step:
            self.gain[mode] = tok_s * t_exact_step
            self.t_exact = ema(self.t_exact, t_exact_step, 0.3)
        if row_cost is not None:
            self.row_cost = row_cost

    def observe_plain(self, mode: str | None, tok_s: float, replayed_gain: float | None = None) -> None:
        """A call decoded plainly on one-row kernels; in a speculative mode, with what lookup would have
        gained on its output (`replay_lookup`)."""
        self.t_one = ema(self.t_one, 1.0 / tok_s, 0.3)
        if mode is not None and replayed_gain is not None:
            self.gain[mode] = replayed_gain
