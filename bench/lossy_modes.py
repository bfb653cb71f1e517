"""Speed against fidelity for the lossy modes: a sweep of thresholds through `edgedec eval`'s harness.

    python bench/lossy_modes.py -o bench/results/lossy-YYYYMMDD [--prompts 8] [-n 64] [--parts sweep,costs,margins]

Prompts: the first HumanEval prompts (code) and writingbench queries (prose), which the shipped draft never
trained on (it read HumanEval 40+ and writingbench 40+). Each setting runs edgedec.evaluate: per prompt,
plain greedy decoding and the mode in turn, in this one process, then the full model teacher-forced over
each output. Writes lossy.json (every setting, code and prose apart) and lossy.png (speed ratio against
teacher-forced agreement, one curve per mode and kind). The costs part times the calls the modes are made
of (medians of 30): a plain step, the head, a catch-up of n rows, a trained-draft step. The margins part
runs the entropy mode with the entropy stop out of the way (threshold 8), so that the rollback margin alone
decides: how many drafted tokens a margin keeps, and how fast the mode would be if none were rolled back.
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np

import edgedec
from edgedec.evaluate import evaluate
from edgedec.strategies import EarlyExitConfig, EntropyConfig
from edgedec_tools.prompts import code_prompts, writing_prompts

SWEEP = {
    "early-exit": [EarlyExitConfig(threshold=t) for t in (0.05, 0.2, 0.5, 1.0, 2.0)],
    "entropy (draft)": [EntropyConfig(threshold=t) for t in (0.3, 1.0, 2.0, 3.0, 5.0)],
    "entropy (draft, margin 1)": [EntropyConfig(threshold=t, margin=1.0) for t in (1.0, 3.0, 5.0)],
    "entropy (layers 0-24)": [EntropyConfig(threshold=t, exit_layer=24) for t in (1.0, 3.0)],
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bundle", nargs="?")
    ap.add_argument("-o", "--out", default=f"bench/results/lossy-{time.strftime('%Y%m%d')}")
    ap.add_argument("--prompts", type=int, default=8, help="prompts of each kind")
    ap.add_argument("-n", "--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--parts", default="sweep,costs")
    a = ap.parse_args()
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = edgedec.load(a.bundle, threads=a.threads)
    if "costs" in a.parts:
        costs = step_costs(model)
        print(json.dumps(costs))
        path = out_dir / "lossy.json"
        old = json.loads(path.read_text()) if path.exists() else {}
        path.write_text(json.dumps({**old, "costs_ms": costs}, indent=1))
    if "margins" in a.parts:
        rows = {}
        for margin in (3.0, 30.0):
            r = evaluate(model, [("code", p) for p in code_prompts(4)] + [("prose", p) for p in writing_prompts(4)],
                         "entropy", EntropyConfig(threshold=8.0, margin=margin), a.max_tokens)
            rows[str(margin)] = {k: r[k] for k in ("agreement", "tok_s", "plain_tok_s", "speedup", "sources",
                                                   "perplexity", "plain_perplexity")}
            print(f"margin {margin}: {rows[str(margin)]}", flush=True)
        path = out_dir / "lossy.json"
        old = json.loads(path.read_text()) if path.exists() else {}
        path.write_text(json.dumps({**old, "margins_threshold_8": rows}, indent=1))
    if "sweep" not in a.parts:
        return
    prompts = [("code", p) for p in code_prompts(a.prompts)] + [("prose", p) for p in writing_prompts(a.prompts)]
    model.session().generate(prompts[0][1], max_tokens=8)                      # warm up
    result = {"bundle": str(model.bundle.path), "threads": a.threads, "max_tokens": a.max_tokens,
              "prompts": {"code": f"HumanEval 0..{a.prompts - 1}", "prose": f"writingbench 0..{a.prompts - 1}"},
              "runs": []}
    for label, specs in SWEEP.items():
        mode = "early-exit" if label == "early-exit" else "entropy"
        for spec in specs:
            t = time.time()
            r = evaluate(model, prompts, mode, spec, a.max_tokens)
            r["label"] = label
            result["runs"].append(r)
            print(f"{label:26s} T={spec.threshold:<4} " + "  ".join(
                f"{k}: agree {v['agreement']:.1%} ppl {v['perplexity']:.2f}/{v['plain_perplexity']:.2f} "
                f"{v['speedup']:.2f}x" for k, v in r["by_kind"].items()) + f"  ({time.time() - t:.0f} s)", flush=True)
            old = json.loads((out_dir / "lossy.json").read_text()) if (out_dir / "lossy.json").exists() else {}
            (out_dir / "lossy.json").write_text(json.dumps({**old, **result}, indent=1))
    plot(result, out_dir / "lossy.png")


def step_costs(model, rounds: int = 30) -> dict:
    """Milliseconds per call (median of `rounds`), each call undone before the next."""
    runner = model.session().backend
    runner.forward(model.encode_prompt("Write a story about the sea and a ship."))

    def median_ms(call) -> float:
        times = []
        for _ in range(rounds):
            n = runner.length
            t = time.perf_counter()
            call()
            times.append(time.perf_counter() - t)
            runner.truncate(n)
        return round(float(np.median(times)) * 1000, 3)

    hidden, _ = runner.layers([100])
    out = {"plain_step": median_ms(lambda: runner.forward([100])), "head": median_ms(lambda: runner.head(hidden))}
    for k in (2, 5, 9):
        out[f"catch_up_{k}_rows"] = median_ms(lambda: runner.head(runner.layers(list(range(100, 100 + k)))[0]))
    drafter = runner.drafter()
    if drafter is not None:
        state = np.zeros((1, 1, model.bundle.config.hidden), np.float32)
        out["draft_step"] = median_ms(lambda: drafter.step(state, [5]))
    return out


def plot(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    for ax, kind in zip(axes, ("code", "prose")):
        for label in dict.fromkeys(r["label"] for r in result["runs"]):
            rows = [r["by_kind"][kind] for r in result["runs"] if r["label"] == label]
            ax.plot([r["agreement"] for r in rows], [r["speedup"] for r in rows], "o-", label=label)
        ax.axhline(1.0, color="gray", lw=0.8)
        ax.axvline(0.95, color="gray", lw=0.8, ls="--")
        ax.set_title(f"{kind}: speed vs fidelity ({result['threads']} threads)")
        ax.set_xlabel("teacher-forced agreement with the full model")
    axes[0].set_ylabel("decode tok/s / plain decoding's (median over prompts)")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
