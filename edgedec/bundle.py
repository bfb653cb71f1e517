"""The bundle: a directory with a versioned manifest `edgedec.json` and the files it names.

    edgedec.json        the manifest (edgedec/manifest.py: typed, versioned, JSON Schema in
                        edgedec/bundle.schema.json)
    tokenizer.json      Hugging Face `tokenizers` file
    layers_A_B.onnx     + .data: the graph for layers [A, B) (the first also embeds tokens)
    head.onnx           + .data: final norm + LM head
    model.gguf          the source GGUF, for the llama.cpp backend (absent for Hugging Face sources)

`read_bundle` validates the manifest and every file it lists on load, and raises `BundleError` with the
fix in the message.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from . import manifest as mf
from .errors import BundleError, ModeError
from .manifest import Manifest, Segment  # noqa: F401  (Segment: re-exported for backends)


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
class Bundle:
    path: Path
    manifest: Manifest

    @property
    def config(self):
        return self.manifest.config

    @property
    def segments(self) -> list[Segment]:
        return self.manifest.segments

    @property
    def cuts(self) -> list[int]:
        return self.manifest.cuts

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def gguf(self) -> Path | None:
        g = self.manifest.gguf
        return self.path / g.file if g else None

    def save_defaults(self, **changes) -> "Bundle":
        """Store tuned settings (e.g. self_spec=SelfSpecDefaults(...)) in the manifest; returns the new Bundle."""
        new = mf.with_defaults(self.manifest, **changes)
        mf.write(self.path, new)
        return Bundle(self.path, new)


def require_cut(layer: int, cuts: list[int]) -> None:
    """An exit layer must be inside the model and where a segment graph ends (not the last cut, the layer
    count)."""
    n_layers = cuts[-1]
    if not 1 <= layer <= n_layers - 1:
        raise ModeError(f"$exit_layer {layer} is out of range: this model has {n_layers} layers, so the exit "
                        f"layer must be in 1..{n_layers - 1}")
    if layer not in cuts[:-1]:
        raise ModeError(f"$exit_layer {layer} is not a cut of this bundle (cuts: {', '.join(map(str, cuts[:-1]))}); "
                        f"pick one of them, or export again with $cuts including {layer}")


def read_bundle(path: str | os.PathLike, verify_checksums: bool = True) -> Bundle:
    p = Path(path).expanduser()
    if not p.exists():
        raise BundleError(f"{p}: no such bundle; create it with 'edgedec export -o {p}'")
    if not (p / mf.FILENAME).is_file():
        raise BundleError(f"{p} is not an edgedec bundle (no {mf.FILENAME}); create one with 'edgedec export'")
    m = mf.read(p)
    for name, meta in m.files.items():
        f = p / name
        if not f.is_file():
            raise BundleError(f"{p} is missing {name}; export the bundle again")
        if f.stat().st_size != meta.bytes:
            raise BundleError(f"{p}/{name} has {f.stat().st_size} bytes, the manifest says {meta.bytes}; "
                              "the bundle is damaged, export it again")
        if verify_checksums and sha256(f) != meta.sha256:
            raise BundleError(f"{p}/{name} does not match its checksum in {mf.FILENAME}; "
                              "the bundle is damaged, export it again")
    for name in [s.file for s in m.segments] + [m.head.file, m.tokenizer.file]:
        if name not in m.files:
            raise BundleError(f"{p}: {name} is not listed with a checksum in {mf.FILENAME}; export the bundle again")
    if not m.segments or m.segments[0].start != 0 or m.cuts[-1] != m.config.n_layers or any(
            a.end != b.start for a, b in zip(m.segments, m.segments[1:])):
        raise BundleError(f"{p}: the segments do not cover layers 0..{m.config.n_layers} in order; "
                          "export the bundle again")
    return Bundle(p, m)
