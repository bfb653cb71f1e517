"""Does replaying lookup on a call's output (`lookup.replay_lookup`, what `PathLedger` learns from after a
plain call) predict what a real speculative call gains? For each prompt, a real call on the exact path
measures its gain (decode tok/s x seconds per plain step in the same call); the replay runs on the tokens
that call produced.

    python bench/replay_gain.py [BUNDLE] [--prompts 8] [-n 128]
"""
import argparse

import numpy as np

import edgedec
from edgedec_tools.prompts import PROMPT_SETS
from edgedec.sampling import SamplerConfig
from edgedec.strategies.lookup import replay_lookup


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bundle", nargs="?")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("-n", "--max-tokens", type=int, default=128)
    a = ap.parse_args()
    model = edgedec.load(a.bundle, n_ctx=2048, exact=True)
    for set_name, load_prompts in PROMPT_SETS.items():
        errors = []
        for prompt in load_prompts(a.prompts):
            ids = model.encode_prompt(prompt)
            row = []
            for mode in ("lookup", "self-spec"):
                model.reset()
                r = model.generate(ids, max_tokens=a.max_tokens, mode=mode, sampler=SamplerConfig())
                stats = model.default_session.last_stats
                real = r.decode_tok_s * stats.t_plain
                replayed = replay_lookup(ids + r.tokens, len(ids), stats.row_cost)
                errors.append(replayed - real)
                row.append(f"{mode} real {real:.2f} replayed {replayed:.2f}")
            print(f"{set_name}: " + " | ".join(row), flush=True)
        e = np.abs(errors)
        print(f"{set_name}: |replayed - real| median {np.median(e):.2f}, max {e.max():.2f}")


if __name__ == "__main__":
    main()
