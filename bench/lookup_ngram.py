"""How long a suffix should prompt lookup match? Replays greedy continuations and scores the proposals.

    python bench/lookup_ngram.py [BUNDLE] [--first 24 --count 12] [-n 128]

For prompts first..first+count of each set (HumanEval code, writingbench prose; held out from the 8 that
`bench --modes` times and the 20 the tests use), decode greedily once, then at every position of the output
ask `propose()` for up to 8 tokens with each ngram_max and report how often there is a proposal, how often
its first token is the model's next token, and the mean length of the correct prefix per position; then, for
ngram_max 8, the same by the length of the suffix that matched (the cost model's per-length priors).
"""
import argparse
from collections import Counter

import numpy as np

import edgedec
from edgedec_tools.prompts import PROMPT_SETS
from edgedec.strategies.lookup import propose
from edgedec.strategies.cost import lookup_key


def score(runs, ngram_max: int) -> dict:
    has = first = accepted = total = 0
    for ids, gen in runs:
        for t in range(1, len(gen)):
            prop, _ = propose(ids + gen[:t], 8, ngram_max)
            total += 1
            if prop:
                has += 1
                first += prop[0] == gen[t]
                k = 0
                while k < len(prop) and t + k < len(gen) and prop[k] == gen[t + k]:
                    k += 1
                accepted += k
    return {"has_proposal": has / total, "first_token_right": first / total, "mean_correct_prefix": accepted / total}


def by_match_length(runs) -> dict:
    """match length, bucketed as the cost model files it (4 = 4 or more) -> (positions, first token right)."""
    seen, right = Counter(), Counter()
    for ids, gen in runs:
        for t in range(1, len(gen)):
            prop, n = propose(ids + gen[:t], 1, 8)
            if prop:
                key = lookup_key(n)[1]
                seen[key] += 1
                right[key] += prop[0] == gen[t]
    return {n: (seen[n], right[n] / seen[n]) for n in sorted(seen)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("bundle", nargs="?")
    ap.add_argument("--first", type=int, default=24)
    ap.add_argument("--count", type=int, default=12)
    ap.add_argument("-n", type=int, default=128)
    a = ap.parse_args()
    model = edgedec.load(a.bundle)
    for name, load in PROMPT_SETS.items():
        runs = []
        for p in load(a.first + a.count)[a.first:]:
            ids = model.encode_prompt(p)
            model.reset()
            runs.append((list(ids), list(model.generate(ids, max_tokens=a.n).tokens)))
        for n in (2, 3, 4, 6, 8):
            r = score(runs, n)
            print(f"{name:6s} ngram_max {n}: " + ", ".join(f"{k} {v:.3f}" for k, v in r.items()))
        for n, (count, hit) in by_match_length(runs).items():
            print(f"{name:6s} match length {n}{'+' if n == 4 else ''}: {count} positions, "
                  f"first token right {hit:.3f}")


if __name__ == "__main__":
    main()
