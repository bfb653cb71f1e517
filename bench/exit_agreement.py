"""How well do the model's own early layers draft? Top-1 agreement of head(layers[0:E]) with the full
model, teacher-forced over greedy continuations of real prompts, for every cut E of a bundle.

    edgedec export -o /tmp/c3 --cuts 3,6,9,12,15,18,21,24,27
    python bench/exit_agreement.py /tmp/c3 [--prompts 6] [-n 96]
"""
import argparse

import numpy as np

import edgedec
from edgedec.prompts import PROMPT_SETS


def agreement(model, prompt: str, n_new: int) -> dict[int, float]:
    model.reset()
    new = model.generate(prompt, max_tokens=n_new).tokens
    ids = model.encode_prompt(prompt) + new
    be = model.backend
    be.truncate(0)
    cuts = be.cuts
    hidden, taps = be.layers(np.array(ids), taps=cuts[:-1])
    full = be.head(hidden.numpy()[:, len(ids) - len(new) - 1:-1]).argmax(1)
    return {c: float((be.head(h[:, len(ids) - len(new) - 1:-1]).argmax(1) == full).mean())
            for c, h in taps.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bundle")
    ap.add_argument("--prompts", type=int, default=6)
    ap.add_argument("-n", "--max-tokens", type=int, default=96)
    a = ap.parse_args()
    model = edgedec.load(a.bundle, n_ctx=2048)
    for name, load in PROMPT_SETS.items():
        rows = [agreement(model, p, a.max_tokens) for p in load(a.prompts)]
        print(name, {c: round(float(np.mean([r[c] for r in rows])), 3) for c in rows[0]})


if __name__ == "__main__":
    main()
