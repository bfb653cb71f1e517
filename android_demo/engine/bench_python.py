"""Decode speed of the Python runtime, measured as bench.ts measures the engine: a short prompt, 64 new
tokens (past the end of turn), median of 3 runs, each on a fresh session.

    .venv/bin/python android_demo/engine/bench_python.py [BUNDLE] [--threads N] [--tokens N] [--runs N] [--context N]
"""
import argparse
import json
import statistics

import edgedec

PROMPT = "Write a short story about a lighthouse keeper."

ap = argparse.ArgumentParser()
ap.add_argument("bundle", nargs="?")
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--tokens", type=int, default=64)
ap.add_argument("--runs", type=int, default=3)
ap.add_argument("--context", type=int, default=0, help="instead, N tokens of the prompt's text repeated")
a = ap.parse_args()
m = edgedec.load(a.bundle, threads=a.threads)
prompt = m.tokenizer.encode(PROMPT * (a.context // 5 + 1))[:a.context] if a.context else PROMPT
results = [m.session().generate(prompt, max_tokens=a.tokens, ignore_eos=True) for _ in range(a.runs)]
print(json.dumps({"runtime": "python", "threads": a.threads, "context": a.context, "tokens": a.tokens, "runs": a.runs,
                  "decode_tok_s": statistics.median(r.decode_tok_s for r in results),
                  "prefill_tok_s": statistics.median(r.prefill_tok_s for r in results),
                  "decode_runs": [round(r.decode_tok_s, 1) for r in results]}))
