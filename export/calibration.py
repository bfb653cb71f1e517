"""Calibration text statistics for re-quantizing 4-bit GGUF blocks without the exact correction.

A GGUF Q4_1 block is w = min + d * q. MatMulNBits keeps d and q but only an integer zero point, so each
block moves by its offset r = min + zp * d (|r| <= d/2), and a linear's output row n moves by
sum_b r[n, b] * S_b(x), where S_b(x) is the sum of the input over block b (export/quant.py). The exact
bundle adds that back with a small Gemm per linear; the calibrated one adds back its mean instead, as the
matmul's bias: sum_b r[n, b] * E[S_b(x)], measured here on real text. The bias is free inside MatMulNBits.

The statistics are the mean block sums of every linear's input (attn_in: Q, K and V; attn_out: O;
ffn_in: gate and up; ffn_mid: down), read from the numpy reference running the source's own weights over
the calibration text: by default text every Python ships (export/kv_calibration.py), never the text the
README scores perplexity on.
"""
from __future__ import annotations

import numpy as np

from edgedec.errors import EdgedecError
from edgedec.runtimes.numpy_ref import NumpyLlama

from .quant import BLOCK

MIN_TOKENS = 512          # below this the means are noise (one window)
TOKENS = 2048             # what is read of the text: 4 windows
WINDOW = 512


def linear_input_means(src, text: str, progress=lambda done, total: None) -> dict[tuple[int, str], np.ndarray]:
    """(layer, input name) -> mean over the first TOKENS tokens of `text` of the input's block sums [K/32],
    float64. Every position counts, the attention sink at the start of each window included."""
    from tokenizers import Tokenizer
    ids = Tokenizer.from_str(src.tokenizer.json).encode(text, add_special_tokens=False).ids
    ids = [t for t in ids if t < src.config.vocab][:TOKENS]     # (ids the embedding has)
    if len(ids) < MIN_TOKENS:
        raise EdgedecError(f"the calibration text has {len(ids)} tokens; calibrating needs at least {MIN_TOKENS}, "
                           "give a longer text")
    names = [n for n in src.tensor_types if n.startswith("blk.") or n in ("token_embd.weight", "output_norm.weight")]
    weights = {n: src.tensor(n) for n in names}
    sums: dict[tuple[int, str], np.ndarray] = {}
    count = 0

    def tap(i, name, x):
        k = x.shape[1]
        x = np.pad(x, ((0, 0), (0, -k % BLOCK)))
        s = x.reshape(len(x), -1, BLOCK).sum((0, 2))
        sums[i, name] = sums.get((i, name), 0) + s

    windows = [ids[s:s + WINDOW] for s in range(0, len(ids), WINDOW) if len(ids[s:s + WINDOW]) >= 2]
    for n, window in enumerate(windows):
        NumpyLlama(src.config, weights).forward(window, tap=tap)        # a fresh cache per window
        count += len(window)
        progress(n + 1, len(windows))
    return {key: v / count for key, v in sums.items()}
