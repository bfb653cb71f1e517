"""Live acceptance of the bundle's trained draft: self-spec drafting k tokens every round with no fallback
(no lookup, no threshold, no plain steps), greedy, on the first N code and prose benchmark prompts.

    python bench/draft_live.py [BUNDLE] [--prompts 5] [--k 4]

Prints, per prompt set, the drafts proposed and accepted, accepted drafts per verify round (a round of k
drafts accepts a + a^2 + ... + a^k on average at per-token acceptance a), and the cost of one draft step.
"""
import argparse
import time

import numpy as np

import edgedec
from edgedec.strategies import SelfSpecConfig
from edgedec_tools.prompts import code_prompts, writing_prompts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bundle", nargs="?")
    ap.add_argument("--prompts", type=int, default=5)
    ap.add_argument("--k", type=int, default=4)
    a = ap.parse_args()
    model = edgedec.load(a.bundle, exact=True)
    spec = SelfSpecConfig(adaptive=False, lookup=False, k_max=a.k, threshold=0.0)
    for kind, prompts, chat in (("code", code_prompts(a.prompts), False), ("prose", writing_prompts(a.prompts), True)):
        drafted = accepted = rounds = 0
        for p in prompts:
            r = model.session().generate(model.encode_prompt(p, chat=chat), max_tokens=96, mode="self-spec", spec=spec)
            drafted += r.speculation["drafted"].get("draft", 0)
            accepted += r.speculation["accepted"].get("draft", 0)
            rounds += r.speculation["n_verify_calls"]
        print(f"{kind}: drafted {drafted}, accepted {accepted}, accepted per round {accepted / rounds:.2f}")
    drafter = model.session().backend.drafter()
    h = np.zeros((1, 1, model.bundle.config.hidden), np.float32)
    t0 = time.perf_counter()
    for _ in range(50):
        drafter.step(h, [1])
    print(f"draft step {(time.perf_counter() - t0) / 50 * 1000:.2f} ms")


if __name__ == "__main__":
    main()
