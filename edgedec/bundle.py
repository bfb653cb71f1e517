"""The bundle: a directory with a versioned manifest `edgedec.json` and the files it names.

    edgedec.json        format, version, model config, segments (layer ranges) and head graph files,
                        quantization (mode and measured error per tensor), tokenizer, chat template,
                        GGUF, drafts/adapters, tuned defaults, and a sha256 + size for every file
    tokenizer.json      Hugging Face `tokenizers` file
    layers_A_B.onnx     + .data: the graph for layers [A, B) (the first also embeds tokens)
    head.onnx           + .data: final norm + LM head
    model.gguf          the source GGUF, for the llama.cpp backend (absent for Hugging Face sources)

`read_manifest` validates everything on load and raises `BundleError` with the fix in the message.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import BundleError

FORMAT = "edgedec-bundle"
VERSION = 1
MANIFEST = "edgedec.json"


def home() -> Path:
    """Where default bundles live: $EDGEDEC_HOME, else ~/.cache/edgedec."""
    return Path(os.environ.get("EDGEDEC_HOME") or Path.home() / ".cache" / "edgedec").expanduser()


def default_bundle_path() -> Path:
    return home() / "SmolLM2-135M-Instruct-int4"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class Segment:
    start: int   # first layer
    end: int     # one past the last layer
    file: str    # graph file name inside the bundle


@dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: dict

    @property
    def config(self):
        from edgedec.models import architecture
        arch = architecture(self.manifest["config"]["architecture"])
        return arch.LlamaConfig.from_dict(self.manifest["config"])

    @property
    def segments(self) -> list[Segment]:
        return [Segment(s["start"], s["end"], s["file"]) for s in self.manifest["segments"]]

    @property
    def cuts(self) -> list[int]:
        """Layer indices where a segment ends, the last layer count included: [c1, ..., L]."""
        return [s.end for s in self.segments]

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def gguf(self) -> Path | None:
        g = self.manifest.get("gguf")
        return self.path / g["file"] if g else None


def read_manifest(path: str | os.PathLike, verify_checksums: bool = True) -> Bundle:
    p = Path(path).expanduser()
    if not p.exists():
        raise BundleError(f"{p}: no such bundle; create it with 'edgedec export -o {p}'")
    if not (p / MANIFEST).is_file():
        raise BundleError(f"{p} is not an edgedec bundle (no {MANIFEST}); create one with 'edgedec export'")
    try:
        m = json.loads((p / MANIFEST).read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise BundleError(f"{p / MANIFEST} is corrupt ({e}); export the bundle again") from None
    if m.get("format") != FORMAT:
        raise BundleError(f"{p} has format '{m.get('format')}', not {FORMAT}; export the bundle again")
    if not isinstance(m.get("version"), int) or m["version"] > VERSION:
        raise BundleError(f"{p} is bundle format version {m.get('version')}, newer than this edgedec reads "
                          f"(version {VERSION}); upgrade edgedec (pip install -U edgedec)")
    for name, meta in m.get("files", {}).items():
        f = p / name
        if not f.is_file():
            raise BundleError(f"{p} is missing {name}; export the bundle again")
        if f.stat().st_size != meta["bytes"]:
            raise BundleError(f"{p}/{name} has {f.stat().st_size} bytes, the manifest says {meta['bytes']}; "
                              "the bundle is damaged, export it again")
        if verify_checksums and sha256(f) != meta["sha256"]:
            raise BundleError(f"{p}/{name} does not match its checksum in {MANIFEST}; "
                              "the bundle is damaged, export it again")
    named = [s["file"] for s in m["segments"]] + [m["head"]["file"], m["tokenizer"]["file"]]
    for name in named:
        if name not in m.get("files", {}):
            raise BundleError(f"{p}: {name} is not listed with a checksum in {MANIFEST}; export the bundle again")
    return Bundle(p, m)
