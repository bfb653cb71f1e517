"""The tools' commands, `edgedec-bench` and `edgedec-tune`. Errors print as one line, as `edgedec` does."""
from __future__ import annotations

import argparse

from edgedec.cli import run_command


def _measure_args(p, max_tokens: int, prompts: int, prompts_help: str) -> None:
    p.add_argument("bundle", nargs="?", help="bundle directory (default: the default model's bundle)")
    p.add_argument("-t", "--threads", type=int, default=2)
    p.add_argument("-n", "--max-tokens", type=int, default=max_tokens)
    p.add_argument("--prompts", type=int, default=prompts, help=prompts_help)
    p.add_argument("--out", default="bench/results",
                   help="folder for the JSON and PNG results (default: bench/results under the working directory)")


def bench(argv=None) -> int:
    p = argparse.ArgumentParser(prog="edgedec-bench",
                                description="tok/s of edgedec and llama.cpp on the same GGUF, same threads")
    _measure_args(p, max_tokens=128, prompts=8, prompts_help="--modes: prompts per set (default 8)")
    p.add_argument("--runs", type=int, default=5, help="repetitions; medians are reported (default 5)")
    p.add_argument("--modes", action="store_true", help="compare decoding modes on code and prose prompts")
    p.add_argument("--kv", default="fp32", help="KV cache type for both engines: fp32 (default), fp16, int8, int4 "
                   "(llama.cpp: f32, f16, q8_0, q4_0)")
    p.add_argument("--ctx", type=int, default=512, help="context of both engines (default 512)")
    a = p.parse_args(argv)
    if a.modes:
        from . import modes
        return run_command(modes.main, a)
    from . import bench as speed
    return run_command(speed.main, a)


def tune(argv=None) -> int:
    p = argparse.ArgumentParser(prog="edgedec-tune",
                                description="sweep self-spec settings on this device; store the best in the bundle")
    _measure_args(p, max_tokens=48, prompts=3, prompts_help="prompts per set, code and prose (default 3)")
    a = p.parse_args(argv)
    from . import tune as tuner
    return run_command(tuner.main, a)


def distill(argv=None) -> int:
    p = argparse.ArgumentParser(prog="edgedec-distill",
                                description="train a draft on the model's own predictions; report its acceptance")
    p.add_argument("bundle", nargs="?", help="bundle directory (default: the default model's bundle)")
    p.add_argument("--design", default="feature", help="feature (EAGLE-style, default) or exit (Kangaroo-style)")
    p.add_argument("--exit-layer", type=int, default=6, help="exit design: the cut it drafts from (default 6)")
    p.add_argument("--data", action="append", default=[], metavar="FILE",
                   help="also train on this UTF-8 text file (repeatable; recorded in the draft's manifest entry)")
    p.add_argument("--steps", type=int, default=900, help="training steps (default 900)")
    p.add_argument("--vocab", type=int, default=8192, help="rows of the reduced draft head (default 8192)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--out", default="distill", help="folder for teacher data, checkpoints and reports")
    a = p.parse_args(argv)
    from .distill import run
    return run_command(run.main, a)
