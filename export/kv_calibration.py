"""Calibrating the int8/int4 KV caches' scales: each cache channel's largest magnitude on real text.

The text is one every Python ships, so export needs nothing downloaded: the language reference's prose
(`pydoc_data.topics`) and two modules' source, code with docstrings. `edgedec export --kv-text FILE`
calibrates on a text of the user's instead (bench/kv_cache.py measures how much the choice matters).
"""
from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np

from edgedec.errors import EdgedecError

STDLIB = "Python standard library: pydoc_data.topics (language reference prose), textwrap.py and argparse.py (code)"
FILE = "kv_ranges.npz"


def stdlib_text(chars: int = 24000) -> str:
    import argparse
    import textwrap
    try:
        from pydoc_data.topics import topics
        prose = "\n\n".join(topics[k] for k in sorted(topics))
    except ImportError:    # some distributions split pydoc_data off; the modules' docstrings are prose too
        prose = inspect.getsource(argparse)
    return prose[: chars // 2] + "\n\n" + (inspect.getsource(textwrap) + inspect.getsource(argparse))[: chars // 2]


def read_text(path: str | Path) -> str:
    p = Path(path).expanduser()
    try:
        text = p.read_text(errors="replace")
    except OSError as e:
        raise EdgedecError(f"cannot read the calibration text {p} ({e.strerror}); give a readable text file") from None
    if len(text.split()) < 200:
        raise EdgedecError(f"the calibration text {p} has under 200 words; give a longer real text")
    return text


def calibrate(bundle, text: str, window: int = 512, windows: int = 4) -> tuple[np.ndarray, np.ndarray, int]:
    """K and V magnitudes [n_layers, n_kv_heads, head_dim] over up to `windows` windows of `text`, read from
    the fp32 cache the bundle's own graphs write (keys: their rotary pairs' norms); and the tokens read."""
    from edgedec.runtimes.onnxruntime import OrtEngine
    from edgedec.tokenizer import Tokenizer

    cfg = bundle.config
    window = min(window, cfg.context)
    # (a model may use fewer ids than its tokenizer knows: keep those its embedding has)
    ids = [t for t in Tokenizer(bundle).encode(text) if t < cfg.vocab][: window * windows]
    runner = OrtEngine(bundle).runner(window)
    k = np.zeros((cfg.n_layers, cfg.n_kv_heads, cfg.head_dim), np.float32)
    v = np.zeros_like(k)
    for s in range(0, len(ids), window):
        chunk = ids[s:s + window]
        runner.truncate(0)
        runner.forward(chunk)
        n = len(chunk)
        for i in range(cfg.n_layers):
            k[i] = np.maximum(k[i], _pair_norms(runner.cache.keys[i][0, :, :n]).max(1))
            v[i] = np.maximum(v[i], np.abs(runner.cache.values[i][0, :, :n]).max(1))
    runner.release()
    return k, v, len(ids)


def _pair_norms(keys: np.ndarray) -> np.ndarray:
    """|(k[2j], k[2j+1])| in both channels of each rotary pair [..., head_dim]. Rotary turns each pair by an
    angle that grows with the position, so one channel reaches the pair's norm at some position: a range
    per channel read at the calibration text's positions (up to 512) would clip the keys of later
    positions, where low-frequency pairs have turned further (bench/README.md has the cost)."""
    norm = np.sqrt(keys[..., 0::2] ** 2 + keys[..., 1::2] ** 2)
    return np.repeat(norm, 2, axis=-1)
