"""Model sources: a GGUF file or a Hugging Face folder, read without torch.

A `Source` gives the architecture config, the tokenizer metadata in GGUF form (tokens, merges, token types,
special ids, chat template) and weights by GGUF name, dequantized to float32 on demand (the int4
quantizer recognises blocks that were 4-bit and re-encodes them exactly).
"""
from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from edgedec.errors import SourceError, UnsupportedModelError
from edgedec.manifest import FILENAME as MANIFEST_FILE
from edgedec.models import architecture

from .tokenizer import TokenizerSpec, tokenizer_from_gguf, tokenizer_from_hf

GGUF_MAGIC = b"GGUF"


@dataclass
class Source:
    path: Path                       # the file or folder the user named
    config: object                   # the architecture's frozen config dataclass
    tokenizer: "TokenizerSpec"       # tokenizer.json text and special ids
    chat_template: str | None        # Jinja2 chat template, if the model has one
    gguf_path: Path | None           # a GGUF llama.cpp can load, if the source is one
    name: str                        # human-readable model name
    _loaders: dict[str, Callable[[], np.ndarray]] = field(repr=False, default_factory=dict)
    tensor_types: dict[str, str] = field(default_factory=dict)  # name -> source storage type (Q4_1, F32, ...)

    def tensor(self, name: str) -> np.ndarray:
        """Weight `name` as float32, shape [out, in] for matrices."""
        return self._loaders[name]()


def load_source(path: str | os.PathLike) -> Source:
    """Open a GGUF file or a Hugging Face folder, with a clear error for anything else."""
    p = Path(path).expanduser()
    if not p.exists():
        raise SourceError(f"{p}: no such file or folder; pass a .gguf file or a Hugging Face model folder")
    if p.is_dir():
        if (p / MANIFEST_FILE).exists():
            raise SourceError(f"{p} is already an edgedec bundle; pass it to 'edgedec chat' or 'generate'")
        return _load_hf(p)
    return _load_gguf(p)


# ---------------------------------------------------------------- GGUF

def _load_gguf(p: Path) -> Source:
    with open(p, "rb") as f:
        head = f.read(8)
    if head[:4] != GGUF_MAGIC:
        raise SourceError(f"{p} is not a GGUF file (no GGUF magic); pass a .gguf model file or a model folder")
    import gguf  # imported here: reading the magic must not depend on it

    try:
        reader = gguf.GGUFReader(str(p))
    except Exception as e:  # gguf-py raises assorted errors on truncated or corrupt files
        raise SourceError(f"{p} is a corrupt or truncated GGUF ({type(e).__name__}: {e}); "
                          "download or copy the file again") from None
    size = p.stat().st_size
    for t in reader.tensors:
        if t.data_offset + t.n_bytes > size:
            raise SourceError(f"{p} is truncated (tensor {t.name} runs past the end of the file); "
                              "download or copy the file again")

    meta = {}
    for key, fld in reader.fields.items():
        try:
            meta[key] = fld.contents()
        except Exception:
            continue
    arch_name = str(meta.get("general.architecture", "unknown"))
    arch = architecture(arch_name)
    tensors = {t.name: t for t in reader.tensors}
    config = arch.config_from_gguf(meta, set(tensors))

    def loader(t):
        def load():
            try:
                return np.ascontiguousarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)
            except NotImplementedError:
                raise UnsupportedModelError(
                    f"tensor {t.name} has type {t.tensor_type.name}, which gguf-py cannot dequantize; "
                    "re-quantize the GGUF to a common type such as Q8_0 or Q4_K") from None
        return load

    tok = {k.removeprefix("tokenizer.ggml."): v for k, v in meta.items() if k.startswith("tokenizer.ggml.")}
    if tok.get("model") != "gpt2":
        raise UnsupportedModelError(f"{p}: tokenizer model '{tok.get('model')}' is not supported; "
                                    "supported: gpt2 (byte-level BPE)")
    return Source(
        path=p, config=config, tokenizer=tokenizer_from_gguf(tok),
        chat_template=meta.get("tokenizer.chat_template"),
        gguf_path=p, name=str(meta.get("general.name", p.stem)),
        _loaders={n: loader(t) for n, t in tensors.items()},
        tensor_types={n: t.tensor_type.name for n, t in tensors.items()},
    )


# ---------------------------------------------------------------- Hugging Face folder

_ST_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}


def _safetensors_index(path: Path) -> dict[str, tuple[Path, str, list[int], int, int]]:
    """name -> (file, dtype, shape, begin, end) for one .safetensors file, read from its JSON header."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise SourceError(f"{path} is truncated; copy the model folder again")
        (n,) = struct.unpack("<Q", raw)
        try:
            header = json.loads(f.read(n))
        except (ValueError, UnicodeDecodeError):
            raise SourceError(f"{path} is not a valid safetensors file; copy the model folder again") from None
    base = 8 + n
    size = path.stat().st_size
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        if base + e > size:
            raise SourceError(f"{path} is truncated (tensor {name}); copy the model folder again")
        if info["dtype"] not in _ST_DTYPES:
            raise UnsupportedModelError(f"{path}: tensor {name} has dtype {info['dtype']}; "
                                        "supported: F32, F16, BF16")
        out[name] = (path, info["dtype"], info["shape"], base + b, base + e)
    return out


def _read_safetensor(entry) -> np.ndarray:
    path, dtype, shape, b, e = entry
    with open(path, "rb") as f:
        f.seek(b)
        a = np.frombuffer(f.read(e - b), dtype=_ST_DTYPES[dtype]).reshape(shape)
    if dtype == "BF16":
        return (a.astype(np.uint32) << 16).view(np.float32)
    return a.astype(np.float32)


def _load_hf(p: Path) -> Source:
    cfg_path = p / "config.json"
    files = sorted(p.glob("*.safetensors"))
    if not cfg_path.exists() or not files:
        raise SourceError(f"{p} is not a Hugging Face model folder (needs config.json and *.safetensors); "
                          "pass a .gguf file or such a folder")
    cfg = json.loads(cfg_path.read_text())
    arch_name = str(cfg.get("model_type", "unknown"))
    arch = architecture(arch_name)
    index = {}
    for f in files:
        index.update(_safetensors_index(f))
    names = {arch.hf_tensor_name(n): n for n in index}
    names.pop(None, None)
    config = arch.config_from_hf(cfg, set(names))

    def loader(gguf_name, hf_name):
        def load():
            w = _read_safetensor(index[hf_name])
            if gguf_name.endswith("attn_q.weight"):
                w = arch.permute_qk(w, config.n_heads)
            elif gguf_name.endswith("attn_k.weight"):
                w = arch.permute_qk(w, config.n_kv_heads)
            return np.ascontiguousarray(w)
        return load

    tok, template = tokenizer_from_hf(p)
    return Source(
        path=p, config=config, tokenizer=tok, chat_template=template, gguf_path=None,
        name=cfg.get("_name_or_path") or p.name,
        _loaders={g: loader(g, h) for g, h in names.items()},
        tensor_types={g: index[h][1] for g, h in names.items()},
    )
