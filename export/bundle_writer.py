"""Write a bundle atomically: everything goes into a temporary sibling directory, which is renamed into
place only when complete. An interrupted export (Ctrl-C, error, kill) leaves no half-written bundle; a
stale temporary directory from a killed export is removed by the next export to the same place.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

from edgedec import manifest as mf
from edgedec.bundle import read_bundle, sha256
from edgedec.errors import EdgedecError
from edgedec.models.known import shipped_draft

from .draft_model import FOLDER as DRAFT_FOLDER
from .draft_model import draft_source
from .drafts import check_model, load_draft, model_fingerprint, write_draft
from .calibration import linear_input_means
from .mobile import check_target, to_mobile
from .lora import graph_linears, merged, read_adapter, write_gguf, write_ort
from .graphs import CALIBRATED, QUANTS, base_quant, build_head, build_segment, head_quant
from .kv_calibration import FILE as KV_FILE
from .kv_calibration import STDLIB, calibrate, read_text, stdlib_text
from .sources import load_source


def default_cuts(n_layers: int) -> list[int]:
    """Segment ends: every 6 layers, so self-speculation and early exit can stop at 6, 12, 18, 24."""
    return sorted(set(list(range(6, n_layers, 6)) + [n_layers]))


def parse_cuts(text: str | None, n_layers: int) -> list[int]:
    if not text:
        return default_cuts(n_layers)
    try:
        cuts = sorted({int(c) for c in text.split(",") if c.strip()} | {n_layers})
    except ValueError:
        raise EdgedecError(f"$cuts '{text}' is not a comma-separated list of layer numbers, e.g. 6,12,18") from None
    if cuts[0] < 1 or cuts[-1] > n_layers:
        raise EdgedecError(f"$cuts must lie in 1..{n_layers - 1} for this {n_layers}-layer model")
    return cuts


FOUR_BIT = {"Q4_0", "Q4_1", "Q4_K"}


def export_bundle(source, out: str | Path, quant: str = "int4", cuts: str | None = None,
                  progress: Callable[[str, int, int], None] | None = None,
                  draft: str | Path | None = "auto", kv_text: str | Path | None = None,
                  lora: list[str] = (), merge: bool = False,
                  draft_model: str | None = None, target: str = "desktop") -> tuple[Path, mf.Manifest]:
    """Export `source` (path) to bundle directory `out`. Returns (bundle path, manifest).

    draft: a trained draft file (export/drafts.py) to include; "auto" includes the one shipped for this
    model (models/drafts), if there is one; None includes none. kv_text: a text file to calibrate the
    int8/int4 KV caches on (default: text from Python's standard library, export/kv_calibration.py).
    lora: LoRA adapters, 'PATH[=NAME]' (PEFT folders or GGUF LoRA files, export/lora.py): switchable at run
    time, or with `merge` folded into the weights. draft_model: a separate draft model for `--mode
    speculative` (a GGUF, a Hugging Face folder, or truncate:E; export/draft_model.py), exported into the
    bundle's draft/ folder as a bundle of its own. target: desktop, or mobile (ORT-format graphs with the
    phone's cache type built in, no GGUF or drafts, and a size report; export/mobile.py)."""
    if quant not in QUANTS:
        raise EdgedecError(f"$quant {quant} is not supported; choose one of {', '.join(QUANTS)}")
    check_target(target, lora, merge, draft_model)
    src = load_source(source)
    cfg = src.config
    if quant in CALIBRATED and not FOUR_BIT & set(src.tensor_types.values()):
        raise EdgedecError(f"$quant {quant} re-fits 4-bit GGUF blocks (Q4_0, Q4_1, Q4_K), and {src.name} has none; "
                           "choose int4, int8 or fp32")
    if target == "mobile" and cuts is None:
        cuts = str(cfg.n_layers)       # one segment: fewer calls a token, and its workers may spin (android_demo)
    cut_list = parse_cuts(cuts, cfg.n_layers)
    fingerprint = model_fingerprint(src)
    adapters = [read_adapter(spec, cfg) for spec in lora]
    if len({a.name for a in adapters}) < len(adapters):
        raise EdgedecError("two adapters have the same name; name them with --lora PATH=NAME")
    weights = None
    if target == "mobile":
        draft = None
    elif draft == "auto":
        draft = shipped_draft(fingerprint)
    if draft is not None:
        weights = load_draft(draft)
        check_model(weights, src, str(draft))
    kv = (read_text(kv_text), str(kv_text)) if kv_text is not None else (stdlib_text(), STDLIB)
    out = Path(out).expanduser().resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        progress = progress or (lambda *a: None)
        work = tmp / ".work"                # a truncated draft's GGUF, until draft/ holds its copy
        work.mkdir()
        second = draft_source(draft_model, src, work) if draft_model else None   # (before the long part)
        manifest = _write(src, tmp, quant, cut_list, progress, fingerprint, weights, kv, adapters, merge)
        if second is not None:
            manifest = _add_draft_model(tmp, manifest, second, draft_model, quant, kv, progress)
        if target == "mobile":
            progress("mobile: ORT format, size report", 1, 1)
            manifest = to_mobile(tmp, manifest, _files)
        shutil.rmtree(work)
        _ordinary_permissions(tmp)
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out, manifest


def _write(src, tmp: Path, quant: str, cuts: list[int], progress, fingerprint: str, draft, kv,
           adapters, merge: bool) -> mf.Manifest:
    cfg = src.config
    base = src
    if merge and adapters:
        src = merged(src, adapters)
    switchable = frozenset() if merge else graph_linears(adapters)
    starts = [0] + cuts[:-1]
    steps = len(cuts) + 5
    errors: dict[str, dict] = {}
    segments = []
    means = None
    if quant in CALIBRATED:
        means = linear_input_means(src, kv[0], lambda done, total: progress(f"calibration {done}/{total}", 0, steps))
    for n, (a, b) in enumerate(zip(starts, cuts)):
        progress(f"layers {a}-{b - 1}", n, steps)
        model, errs = build_segment(src, a, b, quant, cfg.context, means, switchable)
        name = f"layers_{a}_{b}.onnx"
        _save(model, tmp / name)
        errors.update(errs)
        segments.append(mf.Segment(a, b, name))
    progress("head", len(cuts), steps)
    model, errs = build_head(src, quant)
    _save(model, tmp / "head.onnx")
    errors.update(errs)

    drafts = []
    if draft is not None:
        progress("draft", len(cuts) + 1, steps)
        drafts.append(write_draft(src, draft, tmp, base_quant(quant), _save))
    progress("tokenizer", len(cuts) + 2, steps)
    (tmp / "tokenizer.json").write_text(src.tokenizer.json)
    gguf = None
    if src.gguf_path is not None:
        progress("gguf", len(cuts) + 3, steps)
        shutil.copyfile(src.gguf_path, tmp / "model.gguf")
        gguf = mf.Gguf("model.gguf", str(src.gguf_path))

    entries = [_write_adapter(a, cfg, tmp, merge, base.gguf_path is not None) for a in adapters]
    worst = max(errors.items(), key=lambda kv: kv[1]["rel_rms"], default=(None, {}))
    manifest = mf.Manifest(
        format=mf.FORMAT,
        version=mf.FORMAT_VERSION,
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        model=mf.ModelInfo(src.name, str(src.path), _type_counts(src), fingerprint),
        config=cfg,
        segments=segments,
        head=mf.Graph("head.onnx"),
        quant=mf.Quant(mode=quant, head=head_quant(quant), block_size=32,
                       accuracy_level=4 if quant != "fp32" else None,
                       worst=mf.WorstTensor(worst[0], **worst[1]),
                       errors={k: mf.TensorError(**v) for k, v in errors.items()},
                       calibration=kv[1] if means is not None else None),
        tokenizer=mf.TokenizerInfo(file="tokenizer.json", bos_id=src.tokenizer.bos_id,
                                   eos_ids=list(src.tokenizer.eos_ids), add_bos=src.tokenizer.add_bos),
        chat_template=src.chat_template,
        gguf=gguf,
        drafts=drafts,
        adapters=entries,
        files=_files(tmp),
    )
    mf.write(tmp, manifest)
    progress("kv calibration", len(cuts) + 4, steps)
    k, v, n = calibrate(read_bundle(tmp, verify_checksums=False), kv[0])
    np.savez(tmp / KV_FILE, k=k, v=v)
    manifest = dataclasses.replace(manifest, kv=mf.KVRanges(KV_FILE, kv[1], n), files=_files(tmp))
    mf.write(tmp, manifest)
    progress("done", steps, steps)
    return manifest


def _add_draft_model(tmp: Path, manifest: mf.Manifest, draft, spec: str, quant: str, kv, progress) -> mf.Manifest:
    """Export `draft` into tmp/draft/ as a bundle of its own; the target's manifest points to it."""
    folder = tmp / DRAFT_FOLDER
    folder.mkdir()
    label = lambda what, i, n: progress(f"draft: {what}", i, n)  # noqa: E731
    inner = _write(draft, folder, base_quant(quant), default_cuts(draft.config.n_layers), label,
                   model_fingerprint(draft), None, kv, [], False)
    entry = mf.DraftModel(DRAFT_FOLDER, draft.name, spec, draft.config.n_layers, inner.gguf is not None)
    manifest = dataclasses.replace(manifest, draft_model=entry)
    mf.write(tmp, manifest)
    return manifest


def _write_adapter(a, cfg, tmp: Path, merged: bool, gguf: bool) -> mf.Adapter:
    """The adapter's files: an ONNX Runtime adapter (switchable only) and a GGUF LoRA (with a GGUF)."""
    ort_file = None if merged else f"adapter.{a.name}.onnx_adapter"
    gguf_file = f"adapter.{a.name}.gguf" if gguf else None
    if ort_file:
        write_ort(a, cfg, tmp / ort_file)
    if gguf_file:
        write_gguf(a, cfg, tmp / gguf_file)
    return mf.Adapter(a.name, merged, ort_file, gguf_file, a.rank, a.scale, a.modules, len(a.layers), a.source)


def _files(tmp: Path) -> dict[str, mf.FileEntry]:
    """The bundle's files and checksums (a draft model's folder is a bundle with its own)."""
    return {f.name: mf.FileEntry(f.stat().st_size, sha256(f)) for f in sorted(tmp.iterdir())
            if f.is_file() and f.name != mf.FILENAME}


def _save(model: onnx.ModelProto, path: Path) -> None:
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=path.name + ".data", size_threshold=1024)


def _type_counts(src) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in src.tensor_types.values():
        counts[t] = counts.get(t, 0) + 1
    return counts


def _ordinary_permissions(tmp: Path) -> None:
    """mkdtemp makes the directory private (0700), and onnx writes external data as 0600; a finished bundle
    is an ordinary folder, readable as the umask allows (like any file the user writes)."""
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)
    for f in tmp.rglob("*"):
        f.chmod((0o777 if f.is_dir() else 0o666) & ~umask)


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Rename tmp -> out; an existing bundle at `out` is replaced only once the new one is complete."""
    if out.exists():
        if not (out / mf.FILENAME).exists():
            raise EdgedecError(f"{out} exists and is not an edgedec bundle; choose another output folder or remove it")
        old = out.with_name(f".{out.name}.old-{int(time.time())}")
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)
