"""How well does each draft agree with the full model? The acceptance table for issue 15, on the held-out
documents of an `edgedec-distill` run (every 10th document; code and prose prompts with the model's own
greedy continuations).

    python bench/draft_acceptance.py [BUNDLE] --out distill     # after edgedec-distill --out distill
    python bench/draft_acceptance.py [BUNDLE] --out distill --draft-file A.draft.npz [--draft-file B...]

Rows: the untrained exits (the model's own head on the hidden state after layer E, full vocabulary and the
8,192-token reduced head), and each trained design found in --out (its report.json holds the numbers the
training run measured, before and after), or each --draft-file, evaluated here on this --out's held-out
documents (so drafts trained on different data are compared on the same text). `top1` is the share of positions where the draft's token is the
full model's greedy token; `chained` (feature drafter) is the per-token acceptance drafting 4 tokens in a
row from its own hidden states. Writes <out>/acceptance.json and prints a markdown table.
"""
import argparse
import json
from pathlib import Path

import numpy as np

import edgedec
from edgedec.export.sources import load_source
from edgedec_tools.distill.train import documents, frequent_vocab, split

KINDS = {0: "code", 1: "prose"}


def untrained_exits(data, src, vocab) -> dict:
    """top-1 agreement of head(norm(h_E)) with the model, per exit and kind, full and reduced head."""
    embed = src.tensor("token_embd.weight")
    norm, eps = src.tensor("output_norm.weight"), src.config.rms_eps
    reduced = embed[vocab]
    spans, (_, val) = documents(data), split(data)
    rows = {}
    for key in sorted(k for k in data if k.startswith("exit_")):
        for kind, name in KINDS.items():
            idx = np.concatenate([np.arange(*spans[d]) for d in val if int(data["kind"][d]) == kind])
            h = data[key][idx].astype(np.float32)
            h = h / np.sqrt((h * h).mean(-1, keepdims=True) + eps) * norm
            want = data["teacher"][idx]
            full = (h @ embed.T).argmax(-1)
            small = vocab[(h @ reduced.T).argmax(-1)]
            rows.setdefault(f"untrained exit {key[5:]}", {})[name] = {
                "top1": float((full == want).mean()), "top1_reduced_head": float((small == want).mean())}
    return rows


def evaluate_file(path: Path, data, src) -> dict:
    """A draft file's validation top-1 and chained acceptance on `data` (tools/distill/train.evaluate)."""
    from edgedec.export.drafts import load_draft
    from edgedec_tools.distill.train import DistillConfig, evaluate, from_weights
    w = load_draft(path)
    row = evaluate(from_weights(w, src), data, DistillConfig(vocab_size=len(w.vocab)))
    row["meta"] = {k: w.meta.get(k) for k in ("steps", "train_seconds", "data_tokens")}
    return row


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bundle", nargs="?")
    ap.add_argument("--out", default="distill")
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--draft-file", action="append", default=[], help="a draft file to evaluate (repeatable)")
    a = ap.parse_args()
    out = Path(a.out)
    data = dict(np.load(out / "teacher.npz"))
    model = edgedec.load(a.bundle, n_ctx=256)
    src = load_source(model.bundle.gguf or model.bundle.manifest.model.source)
    vocab = frequent_vocab(data, split(data)[0], a.vocab)
    coverage = float(np.isin(data["teacher"], vocab).mean())
    table = untrained_exits(data, src, vocab)
    for f in a.draft_file:
        table[f"draft file {Path(f).name}"] = evaluate_file(Path(f), data, src)
    for report in ([] if a.draft_file else sorted(out.glob("*/report.json"))):
        r = json.loads(report.read_text())
        c = r["config"]
        name = f"trained {c['design']}" + (f" (exit {c['exit_layer']})" if c["design"] == "exit" else "")
        table[name] = {k: v for k, v in r["after"].items() if k in KINDS.values()}
        table[name]["steps"], table[name]["train_seconds"] = c["steps"], r["train_seconds"]
    result = {"n_tokens": int(len(data["ids"])), "reduced_vocab": a.vocab, "reduced_vocab_coverage": coverage,
              "table": table}
    (out / "acceptance.json").write_text(json.dumps(result, indent=1))
    print(f"{len(data['ids'])} teacher tokens; the {a.vocab} most frequent tokens cover {coverage:.1%} of them\n")
    print("| draft | code top-1 | prose top-1 | code chained | prose chained |")
    print("|---|---|---|---|---|")
    for name, row in table.items():
        cells = [f"{row[k]['top1']:.3f}" if k in row else "" for k in ("code", "prose")]
        cells += [f"{row[k]['chained']:.3f}" if k in row and "chained" in row[k] else "" for k in ("code", "prose")]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
