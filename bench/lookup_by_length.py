"""Does weighing lookup proposals by the length of their suffix match pay? Paired, in one process.

    python bench/lookup_by_length.py [BUNDLE] [--runs 3] [-n 128]

Engines on the exact path (every call speculates; output = plain `--exact`, so all time the same text):
plain, and lookup / self-spec with the cost model's lookup acceptance kept per match length (as shipped)
or as one estimate for every proposal (what it did before). They take turns prompt by prompt
(`bench_modes.measure_turns`) over 8 HumanEval and 8 writingbench prompts; prints tok/s ratios to plain.
"""
import argparse

import numpy as np

import edgedec
from edgedec_tools import modes as bench_modes
from edgedec_tools.prompts import PROMPT_SETS
from edgedec.strategies import cost as policy


class OneEstimate:
    """The model, with every lookup proposal filed under one acceptance estimate (prior 0.5, as for any
    key without a prior) while it runs."""
    def __init__(self, model):
        self.model = model

    def reset(self):
        self.model.reset()

    def generate(self, *args, **kwargs):
        keep = policy.lookup_key
        policy.lookup_key = lambda match_len: ("lookup", 0)
        try:
            return self.model.generate(*args, **kwargs)
        finally:
            policy.lookup_key = keep


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("bundle", nargs="?")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("-n", type=int, default=128)
    a = ap.parse_args()
    exact = edgedec.load(a.bundle, threads=2, n_ctx=2048, exact=True)
    spec = exact.default_config("self-spec")
    table = {"plain --exact": (exact, "plain", None),
             "lookup, one estimate": (OneEstimate(exact), "lookup", None),
             "lookup, per match length": (exact, "lookup", None),
             "self-spec, one estimate": (OneEstimate(exact), "self-spec", spec),
             "self-spec, per match length": (exact, "self-spec", spec)}
    for name, load in PROMPT_SETS.items():
        prompts = [exact.encode_prompt(p) for p in load(8)]
        runs = [bench_modes.measure_turns(table, prompts, a.n) for _ in range(a.runs)]
        for engine in table:
            r = [run[engine]["tok_s"] / run["plain --exact"]["tok_s"] for run in runs]
            print(f"{name:6s} {engine:28s} x plain --exact: median {np.median(r):.3f}, runs "
                  + " ".join(f"{v:.3f}" for v in r), flush=True)


if __name__ == "__main__":
    main()
