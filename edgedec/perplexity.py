"""Perplexity of running text, in non-overlapping windows of `window` tokens (each scored from scratch)."""
from __future__ import annotations

import time

import numpy as np

from .errors import EdgedecError


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def token_nll(runner, ids: list[int], window: int, chunk: int | None = None):
    """Negative log-likelihood of every token after the first of each window, and the argmax predictions.
    runner: a backend runner (runtimes/contract.py); its cache is emptied before each window and after.
    chunk: feed each window in pieces of this many tokens, so that most tokens read their context from the
    cache as in decoding (a whole-window prefill may attend to its own fresh keys and values instead)."""
    nll, pred = [], []
    for s in range(0, len(ids) - 1, window):
        part = ids[s:s + window]
        if len(part) < 2:
            break
        runner.truncate(0)
        step = chunk or len(part)
        logits = np.concatenate([runner.forward(part[i:i + step], all_logits=True)        # [n, V]
                                 for i in range(0, len(part), step)])
        lp = log_softmax(logits[:-1])
        nll.extend(-lp[np.arange(len(part) - 1), part[1:]])
        pred.extend(logits[:-1].argmax(-1))
    runner.truncate(0)
    return np.array(nll), np.array(pred)


def perplexity(model, text: str, window: int = 512, chunk: int | None = None) -> dict:
    if window < 2 or (window > model.n_ctx and not model.kv.evicts):
        raise EdgedecError(f"$window must be in 2..{model.n_ctx} (the context; raise $n_ctx for more, or set "
                           "$kv_window to score longer windows with eviction)")
    ids = model.tokenizer.encode(text)
    if len(ids) < 2:
        raise EdgedecError("the file has fewer than 2 tokens; nothing to score")
    t = time.perf_counter()
    session = model.session()
    nll, _ = token_nll(session.backend, ids, window, chunk)
    session.reset()
    dt = time.perf_counter() - t
    return {"perplexity": float(np.exp(nll.mean())), "n_tokens": int(len(ids)), "n_scored": int(len(nll)),
            "window": window, "n_windows": -(-(len(ids) - 1) // window), "tok_s": len(ids) / dt}
