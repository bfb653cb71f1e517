"""`edgedec-tune`: find this device's best self-speculation setting and store it in the bundle.

Sweeps exit layer (every cut) x draft length x draft-confidence threshold, with the adaptive fallback off
so each setting is measured as it is, on real code and prose prompts (greedy, exact path). The fastest
setting becomes the bundle's default (manifest `defaults["self-spec"]`, with the adaptive fallback on at
run time), written through the bundle's manifest module. A JSON file and a plot of tok/s across the sweep go
to --out (default bench/results, relative to the working directory).
"""
from __future__ import annotations

import itertools
import json
import sys
import time
from pathlib import Path

from edgedec.manifest import SelfSpecDefaults, TuneRecord
from edgedec.strategies import SelfSpecConfig

from .modes import measure
from .prompts import code_prompts, writing_prompts

DRAFT_LENS = (2, 4, 6)
THRESHOLDS = (0.0, 0.5)


def sweep(model, prompts, exits, draft_lens=DRAFT_LENS, thresholds=THRESHOLDS, n_new: int = 48, progress=None):
    """[(setting dict, tok/s)] for plain decoding (exact path) and every (E, k, threshold)."""
    grid = list(itertools.product(exits, draft_lens, thresholds))
    rows = [({"mode": "plain"}, measure(model, prompts, "plain", None, n_new)["tok_s"])]
    for i, (e, k, t) in enumerate(grid):
        if progress:
            progress(f"E={e} k={k} p={t}", i, len(grid))
        spec = SelfSpecConfig(exit_layer=e, k_max=k, threshold=t, adaptive=False)
        r = measure(model, prompts, "self-spec", spec, n_new)
        rows.append(({"exit_layer": e, "k_max": k, "threshold": t,
                      "acceptance_rate": r["accepted"] / max(r["drafted"], 1)}, r["tok_s"]))
    if progress:
        progress("done", len(grid), len(grid))
    return rows


def main(a) -> None:
    from edgedec.api import load
    from edgedec.cli import ensure_default_bundle, progress_bar
    bundle = ensure_default_bundle(a.bundle)
    model = load(bundle, threads=a.threads, n_ctx=2048, exact=True)
    prompts = [model.encode_prompt(p) for p in code_prompts(a.prompts) + writing_prompts(a.prompts)]
    exits = model.bundle.cuts[:-1]          # the last cut is the layer count
    rows = sweep(model, prompts, exits, n_new=a.max_tokens, progress=progress_bar)
    plain = rows[0][1]
    best, rate = max(rows[1:], key=lambda r: r[1])
    chosen = {k: best[k] for k in ("exit_layer", "k_max", "threshold")}
    model.bundle.save_defaults(self_spec=SelfSpecDefaults(**chosen, tuned=TuneRecord(
        rate, plain, a.threads, time.strftime("%Y-%m-%dT%H:%M:%S"))))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"tune-{time.strftime('%Y%m%d-%H%M%S')}"
    stem.with_suffix(".json").write_text(json.dumps({"plain_exact_tok_s": plain, "sweep": rows}, indent=1))
    _plot(rows, stem.with_suffix(".png"))
    print(f"best: exit layer {chosen['exit_layer']}, draft length {chosen['k_max']}, threshold "
          f"{chosen['threshold']}: {rate:.1f} tok/s against {plain:.1f} plain (exact path); saved as the "
          f"bundle's default", file=sys.stderr)
    print(f"wrote {stem}.json and {stem}.png")


def _plot(rows, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.6))
    plain = rows[0][1]
    labels = [f"E{r['exit_layer']} k{r['k_max']} p{r['threshold']}" for r, _ in rows[1:]]
    ax.bar(range(len(labels)), [v for _, v in rows[1:]], color="#3b7dd8")
    ax.axhline(plain, color="#999999", linestyle="--", label=f"plain {plain:.0f} tok/s")
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=6)
    ax.set_ylabel("tok/s")
    ax.set_title("self-spec sweep (lookup drafts on, adaptive fallback off)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
