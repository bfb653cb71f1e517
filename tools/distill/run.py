"""`edgedec-distill`: teacher data, training, and the acceptance report for one design.

    edgedec-distill [BUNDLE] [--design feature|exit] [--exit-layer 6] [--data FILE ...] [--steps N] [--resume]
                    [--out DIR]

Writes DIR/teacher.npz (made once, reused), DIR/<design>/checkpoint.pt, DIR/<design>/report.json with
the validation acceptance before and after training, and (feature design) DIR/feature/<model>.draft.npz,
the file `edgedec export --draft FILE` puts into a bundle (export/drafts.py).
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np

from edgedec.errors import EdgedecError


def _torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        raise EdgedecError("distill needs torch: pip install 'edgedec[train]'") from None


def read_texts(files: list[str]) -> list[str]:
    """--data files: UTF-8 running text, one document each; a missing or empty one is an error."""
    texts = []
    for f in files:
        p = Path(f).expanduser()
        if not p.is_file():
            raise EdgedecError(f"--data {p}: no such file; pass UTF-8 text files of real text to train on")
        text = p.read_text(encoding="utf-8", errors="replace")
        if not text.strip():
            raise EdgedecError(f"--data {p} is empty; pass a file with text in it, or leave it out")
        texts.append(text)
    return texts


def teacher_data(model, path: Path, exits: list[int], extra: list[str], progress) -> dict:
    from . import data
    texts = read_texts(extra)
    names = np.array([str(Path(f).expanduser().resolve()) for f in extra])
    if path.exists():
        arrays = dict(np.load(path))
        if sorted(arrays.pop("extra", np.array([])).tolist()) != sorted(names.tolist()):
            raise EdgedecError(f"{path} was made from other --data files; use another --out, or remove it to "
                               "collect the teacher data again")
        return arrays
    docs, kinds = data.prompt_documents(model, 124, 200, progress=progress)
    more, more_kinds = data.more_documents(model, progress=progress)
    docs, kinds = docs + more, kinds + more_kinds
    texts = [d[:20000] for d in data.text_documents(model, data.shakespeare_texts(6) + texts)]
    arrays = data.collect(model, docs + texts, kinds + ["text"] * len(texts), exits, window=1024,
                          progress=progress)
    arrays["extra"] = names
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)
    return arrays


def main(a) -> None:
    _torch()
    import edgedec
    from edgedec.cli import ensure_default_bundle, progress_bar
    from edgedec.export.sources import load_source

    from .train import DistillConfig, evaluate, new_draft, save_report, summary, train, weights
    bundle = ensure_default_bundle(a.bundle)
    model = edgedec.load(bundle, n_ctx=1024)
    cfg = DistillConfig(design=a.design, exit_layer=a.exit_layer, steps=a.steps, vocab_size=a.vocab)
    cfg.check(model.bundle.cuts)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    data = teacher_data(model, out / "teacher.npz", [c for c in model.bundle.cuts[:-1] if c <= 12], a.data,
                        progress_bar)
    if cfg.design == "exit" and f"exit_{cfg.exit_layer}" not in data:
        raise EdgedecError(f"{out / 'teacher.npz'} has no hidden states for exit layer {cfg.exit_layer}; "
                           "remove it to collect them again")
    src = load_source(model.bundle.gguf or model.bundle.manifest.model.source)
    before = evaluate(new_draft(data, src, cfg), data, cfg)
    draft = train(data, src, cfg, out / cfg.design, resume=a.resume, progress=progress_bar)
    seconds = draft.train_seconds
    after = evaluate(draft, data, cfg)
    save_report(out / cfg.design / "report.json", cfg, before, after, seconds, int(len(data["ids"])))
    if cfg.design == "feature":
        from edgedec.export.drafts import model_fingerprint
        from .data import SOURCES
        path = out / cfg.design / f"{re.sub(r'[^A-Za-z0-9.]+', '-', model.bundle.manifest.model.name)}.draft.npz"
        meta = {"design": cfg.design, "model": model.bundle.manifest.model.name,
                "fingerprint": model_fingerprint(src),
                "data": list(SOURCES) + [f"--data {Path(f).name}" for f in a.data],
                "data_tokens": int(len(data["ids"])), "steps": cfg.steps, "train_seconds": round(seconds, 1),
                "acceptance": {"before": summary(before), "after": summary(after)}}
        weights(draft, meta).save(path)
        print(f"draft written to {path}; put it into a bundle with: edgedec export --draft {path}", file=sys.stderr)
    for name in after:
        b, f = before[name], after[name]
        print(f"{cfg.design} {name}: top-1 {b['top1']:.3f} -> {f['top1']:.3f}"
              + (f", chained {b['chained']:.3f} -> {f['chained']:.3f}" if "chained" in f else ""), file=sys.stderr)
    print(out / cfg.design / "report.json")
