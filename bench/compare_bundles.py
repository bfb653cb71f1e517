"""Which of several bundles decodes fastest? Paired, in one process: each round times llama.cpp (on the
first bundle's GGUF), then every bundle, then llama.cpp again, and divides each bundle's tok/s by the mean
of the two llama.cpp timings around it. Used to decide graph changes (export the same model with two
commits, compare). Prints medians and interquartile ranges of the per-round ratios.

    python bench/compare_bundles.py OLD_BUNDLE NEW_BUNDLE [--rounds 12] [-n 64] [-t 2]
"""
import argparse

import numpy as np

import edgedec
from edgedec_tools.bench import paired


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bundles", nargs="+")
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("-n", type=int, default=64, help="decode steps per timing")
    ap.add_argument("-t", "--threads", type=int, default=2)
    a = ap.parse_args()
    models = [edgedec.load(b, threads=a.threads) for b in a.bundles]
    peer = edgedec.load(a.bundles[0], backend="llamacpp", threads=a.threads).backend
    prompt = models[0].tokenizer.encode("def fibonacci(n):\n    ")
    got = paired({i: m.backend for i, m in enumerate(models)}, peer, prompt, a.n, a.rounds)
    for i, b in enumerate(a.bundles):
        r, s = got[i]["decode_ratio"], got[i]["decode"]
        print(f"{b}: {np.median(s):.1f} tok/s, ratio to llama.cpp median {np.median(r):.3f} "
              f"(IQR {np.percentile(r, 25):.3f}-{np.percentile(r, 75):.3f})")


if __name__ == "__main__":
    main()
