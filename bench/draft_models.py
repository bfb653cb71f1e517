"""Two-model speculation with truncated drafts, next to self-spec and plain decoding, on both backends.

    python bench/draft_models.py -o bench/results/draft-models-YYYYMMDD [--runs 2] [--prompts 6]

Bundles (exported once into ~/.cache/edgedec/bench-draft): the default model with `--draft truncate:E`
for E = 6 and 12 (the model's first E layers plus its head, as a bundle inside the bundle and a GGUF).
Engines take turns prompt by prompt (tools/modes.py `measure_turns`: greedy, 96 new tokens, eos kept, 2
threads), on HumanEval code and writingbench prose prompts: llama.cpp plain and speculative (our loop on
llama.cpp, with the truncated GGUF as draft), edgedec plain and self-spec (the bundle's trained draft) and
speculative, each on the exact path (always speculate). Reports median tok/s over runs, ratios to edgedec
plain, and acceptance. Writes draft_models.json and draft_models.png.
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

from edgedec.api import load
from edgedec.bundle import home
from edgedec.cli import default_source
from edgedec.export.bundle_writer import export_bundle
from edgedec_tools.modes import measure_turns
from edgedec_tools.prompts import PROMPT_SETS

EXITS = (6, 12)


def bundles() -> dict[int, Path]:
    out = {}
    for e in EXITS:
        path = home() / "bench-draft" / f"truncate{e}"
        if not (path / "edgedec.json").exists():
            print(f"exporting {path}", file=sys.stderr)
            export_bundle(default_source(), path, draft_model=f"truncate:{e}")
        out[e] = path
    return out


def table(paths: dict) -> dict:
    first = paths[EXITS[0]]
    exact = load(first, exact=True)
    t = {"llama.cpp plain": (load(first, backend="llamacpp"), "plain", None),
         "edgedec plain (exact path)": (exact, "plain", None),
         "edgedec self-spec --exact (trained draft)": (exact, "self-spec", None)}
    for e, path in paths.items():
        t[f"edgedec speculative --exact, truncate:{e}"] = (load(path, exact=True), "speculative", None)
        t[f"llama.cpp speculative, truncate:{e}"] = (load(path, backend="llamacpp"), "speculative", None)
    return t


def plot(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    sets = list(result["sets"])
    fig, axes = plt.subplots(1, len(sets), figsize=(6 * len(sets), 4))
    for ax, s in zip(np.atleast_1d(axes), sets):
        ratio = result["sets"][s]["ratio_to_edgedec_plain"]
        ax.barh(list(ratio), list(ratio.values()), color="#3b7dd8")
        ax.axvline(1.0, color="gray", ls="--")
        ax.set_title(f"{s}: decode tok/s over edgedec plain (exact path)", fontsize=9)
        ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-o", "--out", required=True)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=6, help="prompts per set")
    ap.add_argument("--sets", default="code,prose", help="prompt sets to run (a later run adds to the results)")
    a = ap.parse_args()
    engines = table(bundles())
    tok = next(iter(engines.values()))[0]
    out = Path(a.out)
    old = out / "draft_models.json"
    result = json.loads(old.read_text()) if old.exists() else {"threads": 2, "runs": a.runs, "new_tokens": 96, "sets": {}}
    for name in a.sets.split(","):
        prompts_of = PROMPT_SETS[name]
        prompts = [tok.encode_prompt(p) for p in prompts_of(None)[:a.prompts]]
        runs = [measure_turns(engines, prompts) for _ in range(a.runs)]
        med = {n: float(np.median([r[n]["tok_s"] for r in runs])) for n in engines}
        base = med["edgedec plain (exact path)"]
        result["sets"][name] = {
            "median_tok_s": med, "ratio_to_edgedec_plain": {n: v / base for n, v in med.items()},
            "acceptance_rate": {n: runs[-1][n]["accepted"] / runs[-1][n]["drafted"] for n in engines
                                if runs[-1][n]["drafted"]}}
        print(name, json.dumps(result["sets"][name], indent=1), file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    (out / "draft_models.json").write_text(json.dumps(result, indent=1) + "\n")
    plot(result, out / "draft_models.png")


if __name__ == "__main__":
    main()
