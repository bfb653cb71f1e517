"""`edgedec-bench --modes`: decoding modes side by side on real prompts, one process, same threads.

For each prompt set (HumanEval code, writingbench prose) and each run, every engine decodes every prompt:
llama.cpp plain (flash attention, the bundle's GGUF), edgedec plain (one-row kernels), edgedec plain on the
exact path, self-spec and lookup on the exact path (`--exact`: always speculate), and self-spec and lookup as
`generate` runs them by default (self-spec drafts with the bundle's trained draft when it has one, and then
also runs once with the model's own exits, `--no-draft`, for comparison) (auto: each call speculates, or decodes plainly on one-row kernels when what
earlier calls measured says speculation loses; `PathLedger`). Engines take turns prompt by prompt; each
run's tok/s is total new tokens over total decode time, and the report gives medians over runs plus ratios to
edgedec plain. Greedy, eos kept (each call's tokens equal one of the two plain paths', so they time the
same text up to rounding).
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from edgedec.sampling import SamplerConfig

from .prompts import PROMPT_SETS


def measure(model, prompts: list[list[int]], mode: str, spec=None, n_new: int = 96) -> dict:
    """One engine over every prompt (what `tune` times): tokens/s and speculation counters."""
    return measure_turns({mode: (model, mode, spec)}, prompts, n_new)[mode]


def measure_turns(table: dict, prompts: list[list[int]], n_new: int = 96) -> dict:
    """One run: every engine decodes every prompt from a cold cache. Engines take turns prompt by prompt
    (in an order rotated each prompt), so the machine's drift falls on all of them alike. Returns per
    engine: tokens/s (new tokens over decode time) and speculation counters."""
    names = list(table)
    totals = {n: {"tokens": 0.0, "seconds": 0.0, "verify_calls": 0, "accepted": 0, "drafted": 0, "plain_calls": 0}
              for n in names}
    for j, ids in enumerate(prompts):
        for name in names[j % len(names):] + names[:j % len(names)]:
            model, mode, spec = table[name]
            model.reset()
            r = model.generate(ids, max_tokens=n_new, mode=mode, spec=spec, sampler=SamplerConfig())
            t = totals[name]
            if r.n_new_tokens > 1:
                t["tokens"] += r.n_new_tokens - 1
                t["seconds"] += (r.n_new_tokens - 1) / r.decode_tok_s
            if r.speculation:
                t["plain_calls"] += r.speculation["path"] == "plain"
                t["verify_calls"] += r.speculation["n_verify_calls"]
                t["accepted"] += sum(r.speculation["accepted"].values())
                t["drafted"] += sum(r.speculation["drafted"].values())
    for t in totals.values():
        t["tok_s"] = t["tokens"] / t["seconds"] if t["seconds"] else 0.0
    return totals


def engines(bundle, threads: int):
    from edgedec.api import load
    fast = load(bundle, threads=threads, n_ctx=2048)
    exact = load(bundle, threads=threads, n_ctx=2048, exact=True)
    peer = load(bundle, backend="llamacpp", threads=threads, n_ctx=2048)
    spec = exact.default_config("self-spec")
    table = {
        "llama.cpp plain": (peer, "plain", None),
        "edgedec plain": (fast, "plain", None),
        "edgedec plain (exact path)": (exact, "plain", None),
        "edgedec self-spec --exact": (exact, "self-spec", spec),
        "edgedec lookup --exact": (exact, "lookup", None),
        "edgedec self-spec (auto)": (fast, "self-spec", spec),
        "edgedec lookup (auto)": (fast, "lookup", None),
    }
    if fast.bundle.manifest.drafts:     # the trained draft's rows above; the model's own exits for comparison
        table["edgedec self-spec, exits --exact"] = (exact, "self-spec", replace(spec, draft=False))
    return fast, table, spec


def main(a) -> None:
    from edgedec.cli import ensure_default_bundle
    bundle = ensure_default_bundle(a.bundle)
    fast, table, spec = engines(bundle, a.threads)
    result = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "bundle": str(bundle), "threads": a.threads,
              "runs": a.runs, "new_tokens": a.max_tokens, "spec": spec.__dict__, "sets": {}}
    for set_name, load_prompts in PROMPT_SETS.items():
        prompts = [fast.encode_prompt(p) for p in load_prompts(a.prompts)]
        runs = {name: [] for name in table}
        for i in range(a.runs):
            for name, r in measure_turns(table, prompts, a.max_tokens).items():
                runs[name].append(r)
            print(f"{set_name} run {i + 1}/{a.runs}: " + ", ".join(f"{n} {r[-1]['tok_s']:.1f}" for n, r in runs.items()),
                  file=sys.stderr)
        med = {n: float(np.median([r["tok_s"] for r in v])) for n, v in runs.items()}
        base = med["edgedec plain"]
        last = {n: v[-1] for n, v in runs.items()}
        result["sets"][set_name] = {
            "n_prompts": len(prompts), "median_tok_s": med,
            "ratio_to_edgedec_plain": {n: v / base for n, v in med.items()},
            "acceptance_rate": {n: r["accepted"] / r["drafted"] for n, r in last.items() if r["drafted"]},
            "mean_accepted_per_verify": {n: r["accepted"] / r["verify_calls"] for n, r in last.items()
                                         if r["verify_calls"]},
            "plain_calls_last_run": {n: r["plain_calls"] for n, r in last.items() if r["plain_calls"]},
            "raw": runs}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"modes-{time.strftime('%Y%m%d-%H%M%S')}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1))
    _plot(result, stem.with_suffix(".png"))
    for set_name, s in result["sets"].items():
        print(f"{set_name} ({s['n_prompts']} prompts, median of {a.runs} runs):")
        for n, v in s["median_tok_s"].items():
            acc = s["acceptance_rate"].get(n)
            print(f"  {n:28s} {v:6.1f} tok/s  {s['ratio_to_edgedec_plain'][n]:.2f}x plain"
                  + (f"  acceptance {acc:.0%}" if acc is not None else "")
                  + (f"  ({s['plain_calls_last_run'][n]} of {s['n_prompts']} calls plain in the last run)"
                     if n in s["plain_calls_last_run"] else ""))
    print(f"wrote {stem}.json and {stem}.png")


def _plot(result, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(result["sets"])
    fig, axes = plt.subplots(1, len(sets), figsize=(5 * len(sets), 3.6))
    for ax, s in zip(np.atleast_1d(axes), sets):
        med = result["sets"][s]["median_tok_s"]
        names = list(med)
        ax.barh(names, [med[n] for n in names], color="#3b7dd8")
        for i, n in enumerate(names):
            ax.text(med[n], i, f" {med[n]:.0f}", va="center")
        ax.set_title(f"{s}: decode tok/s, median of {result['runs']}")
        ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
