"""`edgedec eval`: what a decoding mode costs in fidelity and gains in speed, against the full model's plain
greedy decoding on the same prompts, in one process.

For each prompt, plain decoding and the mode run in turn (paired, so the machine's drift cancels), then the
full model reads each output once, teacher-forced (one batched pass over prompt + output):

    agreement    the share of the mode's tokens that equal the full model's greedy choice at that position
                 (given the mode's own output before it)
    perplexity   exp(mean negative log-likelihood) of the mode's tokens under the full model, next to the
                 same for plain decoding's output
    speed        decode tokens per second of each, and the median over prompts of their ratio
    sources      the share of the mode's tokens from each source (plain, exit@E, small, verify, ...)

A lossless mode scores agreement 1 (up to numerical near-ties) and plain's perplexity.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .errors import EdgedecError
from .perplexity import log_softmax

# built-in prompts, when no --prompts file is given: code and prose
PROMPTS = [
    ("code", "Write a Python function that returns the n-th Fibonacci number iteratively."),
    ("code", "Write a Python function `is_palindrome(s)` that ignores case and punctuation."),
    ("code", "Write a JavaScript function that removes duplicate values from an array."),
    ("code", "Write a SQL query that lists the ten customers with the highest total order value."),
    ("prose", "Explain why the sky is blue to a ten-year-old."),
    ("prose", "Write a short story about a lighthouse keeper who finds a message in a bottle."),
    ("prose", "Give three tips for staying focused while working from home."),
    ("prose", "Describe the water cycle in one paragraph."),
]


def read_prompts(path: str | Path) -> list[tuple[str, str]]:
    """(kind, prompt) pairs from a file: JSON lines with a "prompt" (and optional "kind"), or one prompt
    per line."""
    p = Path(path).expanduser()
    try:
        lines = [line for line in p.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise EdgedecError(f"cannot read the prompts file {p} ({getattr(e, 'strerror', None) or e}); "
                           "give a text file with one prompt per line, or JSON lines") from None
    if not lines:
        raise EdgedecError(f"the prompts file {p} is empty; give one prompt per line, or JSON lines")
    if not lines[0].lstrip().startswith("{"):
        return [("file", line) for line in lines]
    out = []
    for n, line in enumerate(lines, 1):
        try:
            d = json.loads(line)
            out.append((str(d.get("kind", "file")), str(d["prompt"])))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise EdgedecError(f"{p}, line {n}: not a JSON object with a \"prompt\"; give JSON lines like "
                               '{"prompt": "...", "kind": "code"}, or one plain prompt per line') from None
    return out


def teacher_forced(runner, prompt: list[int], tokens: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """The full model over prompt + tokens: for each of `tokens`, whether it is the greedy choice there, and
    its negative log-likelihood. The runner's cache is emptied before and after."""
    runner.truncate(0)
    logits = runner.forward(prompt + tokens, all_logits=True)[len(prompt) - 1: -1]      # the rows before each
    runner.truncate(0)
    t = np.asarray(tokens)
    lp = log_softmax(logits)
    return logits.argmax(-1) == t, -lp[np.arange(len(t)), t]


def evaluate(model, prompts: list[tuple[str, str]], mode: str, spec=None, max_tokens: int = 96,
             ignore_eos: bool = True, progress=None) -> dict:
    """The mode against plain greedy decoding on each (kind, prompt) (a prompt: text, chat-formatted, or
    token ids; see the module docstring); one dict of totals, and the same per kind of prompt."""
    plain, lossy, judge = model.session(), model.session(), model.session()
    rows = []
    for i, (kind, text) in enumerate(prompts):
        ids = list(text) if isinstance(text, list) else model.encode_prompt(text)
        ref = plain.generate(ids, max_tokens=max_tokens, ignore_eos=ignore_eos)
        got = lossy.generate(ids, max_tokens=max_tokens, ignore_eos=ignore_eos, mode=mode, spec=spec)
        plain.reset()
        lossy.reset()
        agree, nll = teacher_forced(judge.backend, ids, got.tokens)
        _, ref_nll = teacher_forced(judge.backend, ids, ref.tokens)
        rows.append({"kind": kind, "agree": agree, "nll": nll, "ref_nll": ref_nll, "tok_s": got.decode_tok_s,
                     "plain_tok_s": ref.decode_tok_s, "sources": got.sources})
        if progress:
            progress(i + 1, len(prompts))
    judge.reset()
    out = {"mode": mode, "settings": _settings(spec or model.default_config(mode)), "max_tokens": max_tokens, **summarize(rows)}
    kinds = sorted({r["kind"] for r in rows})
    if len(kinds) > 1:
        out["by_kind"] = {k: summarize([r for r in rows if r["kind"] == k]) for k in kinds}
    return out


def summarize(rows: list[dict]) -> dict:
    agree = np.concatenate([r["agree"] for r in rows])
    nll, ref_nll = np.concatenate([r["nll"] for r in rows]), np.concatenate([r["ref_nll"] for r in rows])
    sources: dict[str, int] = {}
    for r in rows:
        for k, v in r["sources"].items():
            sources[k] = sources.get(k, 0) + v
    n = sum(sources.values()) or 1
    ratios = [r["tok_s"] / r["plain_tok_s"] for r in rows if r["plain_tok_s"] > 0]
    return {"prompts": len(rows), "tokens": int(len(agree)), "agreement": float(agree.mean()),
            "perplexity": float(np.exp(nll.mean())), "plain_perplexity": float(np.exp(ref_nll.mean())),
            "tok_s": float(np.median([r["tok_s"] for r in rows])),
            "plain_tok_s": float(np.median([r["plain_tok_s"] for r in rows])),
            "speedup": float(np.median(ratios)) if ratios else 0.0,
            "sources": {k: v / n for k, v in sorted(sources.items(), key=lambda kv: -kv[1])}}


def _settings(spec) -> dict:
    from dataclasses import asdict, is_dataclass
    return asdict(spec) if is_dataclass(spec) else {}
