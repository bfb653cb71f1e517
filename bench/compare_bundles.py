"""Which of several bundles decodes fastest? Paired, in one process: each round times llama.cpp (on the
first bundle's GGUF), then every bundle, then llama.cpp again, and divides each bundle's tok/s by the mean
of the two llama.cpp timings around it. Used to decide graph changes (export the same model with two
commits, compare). Prints medians and interquartile ranges of the per-round ratios.

    python bench/compare_bundles.py OLD_BUNDLE NEW_BUNDLE [--rounds 12] [-n 64] [-t 2]
"""
import argparse
import time

import numpy as np

import edgedec
from edgedec.runtimes.llamacpp import LlamaCppModel


def decode_tok_s(backend, prompt: list[int], n: int) -> float:
    """Greedy one-token steps after a prefill of `prompt`; tokens per second of the steps."""
    backend.truncate(0)
    tok = int(backend.forward(prompt)[-1].argmax())
    t = time.perf_counter()
    for _ in range(n):
        tok = int(backend.forward([tok])[-1].argmax())
    return n / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bundles", nargs="+")
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("-n", type=int, default=64, help="decode steps per timing")
    ap.add_argument("-t", "--threads", type=int, default=2)
    a = ap.parse_args()
    models = [edgedec.load(b, threads=a.threads) for b in a.bundles]
    peer = LlamaCppModel(models[0].bundle, threads=a.threads)
    prompt = models[0].tokenizer.encode("def fibonacci(n):\n    ")
    ratios = [[] for _ in models]
    speeds = [[] for _ in models]
    for _ in range(a.rounds):
        before = decode_tok_s(peer, prompt, a.n)
        now = [decode_tok_s(m.backend, prompt, a.n) for m in models]
        after = decode_tok_s(peer, prompt, a.n)
        for i, s in enumerate(now):
            speeds[i].append(s)
            ratios[i].append(s / ((before + after) / 2))
    for b, r, s in zip(a.bundles, ratios, speeds):
        print(f"{b}: {np.median(s):.1f} tok/s, ratio to llama.cpp median {np.median(r):.3f} "
              f"(IQR {np.percentile(r, 25):.3f}-{np.percentile(r, 75):.3f})")


if __name__ == "__main__":
    main()
