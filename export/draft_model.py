"""Separate draft models for two-model speculative decoding (`--mode speculative`).

A draft is a smaller model with the target's tokenizer: a GGUF file, a Hugging Face folder, or
`truncate:E`, the target's own first E layers plus its final norm and head, written as a GGUF of its own
(the target's tensors for those layers, bytes unchanged, and `block_count` = E). Stock llama.cpp takes that
file as its draft model (`llama-speculative -m model.gguf -md draft/model.gguf`).

The draft is exported into the target's bundle as a bundle of its own, in the folder `draft/`, so it has
the same graphs, checks and backends as any bundle; the target's manifest points to it (`draft_model`).
"""
from __future__ import annotations

import json
from pathlib import Path

from edgedec.errors import SourceError

from .sources import load_source

FOLDER = "draft"


def truncate_gguf(gguf_path: Path, layers: int, out: Path) -> None:
    """Write the first `layers` layers of the GGUF at `gguf_path` (with its embedding, final norm and head)
    to `out`, a GGUF llama.cpp loads as a model of its own."""
    import gguf
    reader = gguf.GGUFReader(str(gguf_path))
    arch = str(reader.fields["general.architecture"].contents())
    count_key = f"{arch}.block_count"
    n = int(reader.fields[count_key].contents())
    if not 1 <= layers < n:
        raise SourceError(f"--draft truncate:{layers} must keep 1..{n - 1} of the target's {n} layers")
    writer = gguf.GGUFWriter(str(out), arch)
    for field in reader.fields.values():
        if field.name == "general.architecture" or field.name.startswith("GGUF."):
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        value = layers if field.name == count_key else field.contents()
        if field.name == "general.name":
            value = f"{value} (first {layers} layers)"
        writer.add_key_value(field.name, value, kind, sub_type=sub)
    kept = [t for t in reader.tensors if not t.name.startswith("blk.") or int(t.name.split(".")[1]) < layers]
    for t in kept:
        writer.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for t in kept:
        writer.write_tensor_data(t.data, tensor_endianess=reader.endianess)
    writer.close()


def draft_source(spec: str, target, work: Path):
    """The draft named by `spec` (a path, or truncate:E of `target`), checked against the target's
    tokenizer. A truncated draft's GGUF is written into `work`."""
    if spec.startswith("truncate:"):
        try:
            layers = int(spec.removeprefix("truncate:"))
        except ValueError:
            raise SourceError(f"--draft {spec}: E must be a layer count, e.g. truncate:6") from None
        if target.gguf_path is None:
            raise SourceError("--draft truncate:E cuts the target's GGUF, and this target is a Hugging Face "
                              "folder; export from a .gguf file, or pass a draft model")
        path = work / f"{target.gguf_path.stem}-first{layers}.gguf"
        truncate_gguf(target.gguf_path, layers, path)
        draft = load_source(path)
    else:
        draft = load_source(spec)
    check_tokenizers(draft, target)
    return draft


def check_tokenizers(draft, target) -> None:
    """A draft proposes token ids the target verifies: both must read and write text with the same tokens."""
    a, b = _vocab(draft), _vocab(target)
    if a != b or draft.config.vocab != target.config.vocab:
        raise SourceError(f"the draft {draft.name} has a different tokenizer from {target.name} "
                          f"({len(a)} tokens against {len(b)}{', same size but other tokens' if len(a) == len(b) else ''}); "
                          "a draft must share the target's tokenizer")


def _vocab(src) -> dict:
    return json.loads(src.tokenizer.json)["model"]["vocab"]
