"""The bundle manifest, `edgedec.json`: typed, versioned, and read and written by this module only.

    Manifest            format, version, created, model, config, segments, head, quant, tokenizer,
                        chat_template, gguf, drafts, kv, draft_model, mobile, adapters, defaults, files

Reading checks every field's type against the dataclasses below and names the first field that is wrong
(`segments[1].end should be an integer, got "12"`). The same dataclasses produce the JSON Schema
(draft 2020-12) that runtimes in other languages validate against: `schema()`, kept in the repository as
`edgedec/bundle.schema.json` (regenerate it with `python -m edgedec.manifest > edgedec/bundle.schema.json`;
a test checks that the two agree).

Versions: FORMAT_VERSION is what export writes. A bundle from MIN_VERSION up loads; an older one gets an
error saying to export it again; a newer one, to upgrade edgedec. Fields this version does not know are
kept out of the typed object and ignored, so a newer minor addition never breaks an older reader.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from edgedec.models.llama import LlamaConfig

from .errors import BundleError

FORMAT = "edgedec-bundle"
FORMAT_VERSION = 1     # what this edgedec writes
MIN_VERSION = 1        # the oldest it reads
FILENAME = "edgedec.json"


def _doc(text: str, **kw):
    """A field with a description for the schema (and a default, if given)."""
    return field(metadata={"doc": text}, **kw)


@dataclass(frozen=True)
class ModelInfo:
    name: str
    source: str = _doc("path of the GGUF file or Hugging Face folder it was exported from")
    source_types: dict[str, int] = _doc("tensor type -> count in the source", default_factory=dict)
    fingerprint: str | None = _doc("hash of the token embedding: what ties a trained draft to this model",
                                   default=None)


@dataclass(frozen=True)
class Segment:
    start: int = _doc("first layer")
    end: int = _doc("one past the last layer")
    file: str = _doc("ONNX graph for layers [start, end); the first segment also embeds tokens")


@dataclass(frozen=True)
class Graph:
    file: str


@dataclass(frozen=True)
class TensorError:
    max_abs: float
    mean_abs: float
    rel_rms: float = _doc("rms of the weight error over the weights' rms")


@dataclass(frozen=True)
class WorstTensor:
    tensor: str | None = None
    max_abs: float | None = None
    mean_abs: float | None = None
    rel_rms: float | None = None


@dataclass(frozen=True)
class Quant:
    mode: str = _doc("int4, int4-calibrated, int4-mixed, int8 or fp32")
    head: str = _doc("the LM head's quantization")
    block_size: int
    accuracy_level: int | None = _doc("MatMulNBits accuracy_level (4: int8 activations); null for fp32")
    worst: WorstTensor = _doc("the tensor with the largest relative error")
    errors: dict[str, TensorError] = _doc("measured error of every quantized tensor")
    calibration: str | None = _doc("the text int4-calibrated and int4-mixed biases were fitted on", default=None)


@dataclass(frozen=True)
class TokenizerInfo:
    file: str = _doc("a Hugging Face tokenizers file")
    bos_id: int | None
    eos_ids: list[int]
    add_bos: bool


@dataclass(frozen=True)
class Gguf:
    file: str = _doc("the source GGUF, for the llama.cpp backend")
    source: str


@dataclass(frozen=True)
class Draft:
    name: str
    design: str = _doc('"feature": EAGLE-style, drafts from the last hidden state (export/drafts.py)')
    file: str = _doc("its ONNX graph: hidden, next_ids, its own KV cache -> hidden_out, logits over `vocab_size`")
    vocab_size: int = _doc("rows of its reduced head (the model's most frequent tokens)")
    vocab_file: str = _doc("int32 [vocab_size] .npy: the token id of each row of its head")
    model: str = _doc("the model it was trained for")
    fingerprint: str = _doc("that model's fingerprint (ModelInfo.fingerprint)")
    data: list[str] = _doc("the training data's sources")
    data_tokens: int = _doc("teacher tokens trained on")
    steps: int
    train_seconds: float
    acceptance: dict[str, dict[str, float]] = _doc('validation acceptance, "before" and "after" training')


@dataclass(frozen=True)
class DraftModel:
    folder: str = _doc("a bundle of its own inside this one")
    name: str
    source: str = _doc("what export --draft named: a GGUF, a Hugging Face folder, or truncate:E")
    n_layers: int
    gguf: bool = _doc("whether it has a GGUF (the llama.cpp backend's speculative decoding needs one)")


@dataclass(frozen=True)
class Adapter:
    name: str
    merged: bool = _doc("folded into the graphs' weights at export (--merge): always on, not switchable")
    file: str | None = _doc("ONNX Runtime adapter file (ort.AdapterFormat): the graphs' lora_a/lora_b inputs; "
                            "null when merged")
    gguf: str | None = _doc("the same adapter as a GGUF LoRA for llama.cpp; null without a GGUF")
    rank: int
    scale: float = _doc("alpha / rank (rsLoRA: alpha / sqrt(rank))")
    modules: list[str] = _doc("the modules it changes (q_proj, ...)")
    layers: int = _doc("how many layers it changes")
    source: str = _doc("the PEFT folder or GGUF LoRA it was read from")


@dataclass(frozen=True)
class KVRanges:
    file: str = _doc("float32 .npz: `k` and `v` [n_layers, n_kv_heads, head_dim], each cache channel's largest "
                     "magnitude on the calibration text (keys after rotary); the int8/int4 caches' scales")
    text: str = _doc("the calibration text's source")
    tokens: int = _doc("calibration tokens read")


@dataclass(frozen=True)
class Mobile:
    cache: str = _doc("the KV cache type built into the segment graphs (ORT-format graphs take no load-time "
                      "variants)")
    bundle_mb: float = _doc("the bundle's size")
    loaded_rss_mb: float = _doc("peak RSS that loading the bundle and reading a prompt of prefill_chunk tokens "
                                "added, measured at export")
    rss_mb: dict[str, float] = _doc("expected peak RSS (MB) at a context of N positions: loaded_rss_mb plus the "
                                    "cache's bytes; an estimate")
    measured_on: str = _doc("where loaded_rss_mb was measured")
    prefill_chunk: int = _doc("prompts are read this many tokens per graph call, which bounds the activations' "
                              "memory (a phone's runtime does the same)", default=256)
    fused: bool = _doc("the one segment graph holds the head too (head.file is that graph): it takes logits_rows "
                       "(int64 [R], the rows to score) and returns logits [1, R, V] and no hidden_out",
                       default=False)


@dataclass(frozen=True)
class TuneRecord:
    tok_s: float
    plain_exact_tok_s: float
    threads: int
    time: str


@dataclass(frozen=True)
class SelfSpecDefaults:
    exit_layer: int | None = None
    k_max: int | None = None
    threshold: float | None = None
    tuned: TuneRecord | None = _doc("what the tune sweep measured", default=None)


@dataclass(frozen=True)
class Defaults:
    self_spec: SelfSpecDefaults | None = field(default=None, metadata={"json": "self-spec",
                                                                       "doc": "the tuned self-spec setting"})


@dataclass(frozen=True)
class FileEntry:
    bytes: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    format: str = _doc(f'always "{FORMAT}"')
    version: int = _doc("format version")
    created: str = _doc("UTC time of the export, ISO 8601")
    model: ModelInfo
    config: LlamaConfig = _doc("the architecture's hyperparameters")
    segments: list[Segment] = _doc("layer ranges in order, covering 0..n_layers")
    head: Graph = _doc("final norm + LM head graph")
    quant: Quant
    tokenizer: TokenizerInfo
    chat_template: str | None = _doc("Jinja2 chat template; null means ChatML")
    gguf: Gguf | None = _doc("null when the source was a Hugging Face folder")
    drafts: list[Draft] = _doc("trained drafts; self-spec uses the first", default_factory=list)
    kv: KVRanges | None = _doc("calibrated KV cache ranges for int8/int4 caches (export/kv.py)", default=None)
    draft_model: DraftModel | None = _doc("a separate draft model for --mode speculative", default=None)
    mobile: Mobile | None = _doc("set for --target mobile bundles: ORT-format graphs with saved runtime "
                                 "optimizations (load with session.enable_saved_runtime_optimizations=1), "
                                 "the cache type built in, and a size report (export/mobile.py)", default=None)
    adapters: list[Adapter] = _doc("LoRA adapters, merged or switchable (export/lora.py)", default_factory=list)
    defaults: Defaults = _doc("settings tuned on a device", default_factory=Defaults)
    files: dict[str, FileEntry] = _doc("every file of the bundle but this one, with size and sha256",
                                       default_factory=dict)

    @property
    def cuts(self) -> list[int]:
        """Layer indices where a segment ends, the layer count included: [c1, ..., L]."""
        return [s.end for s in self.segments]

    def to_dict(self) -> dict:
        return _to_json(self)


# ---------------------------------------------------------------- reading and writing

def read(bundle_dir: Path) -> Manifest:
    """The manifest of `bundle_dir`, checked field by field; BundleError names the first problem."""
    path = bundle_dir / FILENAME
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise BundleError(f"{path} is corrupt ({e}); export the bundle again") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        got = data.get("format") if isinstance(data, dict) else None
        raise BundleError(f"{bundle_dir} has format '{got}', not {FORMAT}; export the bundle again")
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise BundleError(f"{path}: 'version' should be an integer, got {_show(version)}; export the bundle again")
    if version > FORMAT_VERSION:
        raise BundleError(f"{bundle_dir} is bundle format version {version}, newer than this edgedec reads "
                          f"(version {FORMAT_VERSION}); upgrade edgedec (pip install -U edgedec)")
    if version < MIN_VERSION:
        raise BundleError(f"{bundle_dir} is bundle format version {version}, older than this edgedec reads "
                          f"({MIN_VERSION}..{FORMAT_VERSION}); export it again")
    try:
        return _from_json(Manifest, data, "")
    except _FieldError as e:
        raise BundleError(f"{path}: {e}; export the bundle again") from None


def write(bundle_dir: Path, manifest: Manifest) -> None:
    """Write edgedec.json atomically (a temporary file renamed over the old one)."""
    path = bundle_dir / FILENAME
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest.to_dict(), indent=1))
    os.replace(tmp, path)


def with_defaults(manifest: Manifest, **changes) -> Manifest:
    """A copy whose `defaults` has these fields replaced (e.g. self_spec=SelfSpecDefaults(...))."""
    return dataclasses.replace(manifest, defaults=dataclasses.replace(manifest.defaults, **changes))


# ---------------------------------------------------------------- typed JSON, driven by the dataclasses

class _FieldError(Exception):
    pass


def _json_name(f: dataclasses.Field) -> str:
    return f.metadata.get("json", f.name)


def _is_optional(f: dataclasses.Field) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


def _show(value) -> str:
    kind = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "an object", type(None): "null"}.get(type(value), type(value).__name__)
    text = json.dumps(value) if not isinstance(value, (dict, list)) else ""
    return f"{text} ({kind})" if text else kind


_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "a boolean", list: "a list", dict: "an object"}


def _from_json(tp, value, where: str):
    """`value` converted to type `tp`, or _FieldError naming `where`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _from_json(inner, value, where)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise _FieldError(f"'{where or 'the manifest'}' should be an object, got {_show(value)}")
        hints = typing.get_type_hints(tp)
        kw = {}
        for f in dataclasses.fields(tp):
            key = _json_name(f)
            sub = f"{where}.{key}" if where else key
            if key in value:
                kw[f.name] = _from_json(hints[f.name], value[key], sub)
            elif not _is_optional(f):
                raise _FieldError(f"'{sub}' is missing")
        return tp(**kw)
    if origin is list:
        if not isinstance(value, list):
            raise _FieldError(f"'{where}' should be a list, got {_show(value)}")
        return [_from_json(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise _FieldError(f"'{where}' should be an object, got {_show(value)}")
        return {k: _from_json(args[1], v, f"{where}.{k}") for k, v in value.items()}
    ok = {int: lambda v: isinstance(v, int) and not isinstance(v, bool),
          float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          str: lambda v: isinstance(v, str), bool: lambda v: isinstance(v, bool),
          list: lambda v: isinstance(v, list), dict: lambda v: isinstance(v, dict)}[tp]
    if not ok(value):
        raise _FieldError(f"'{where}' should be {_NAMES[tp]}, got {_show(value)}")
    return float(value) if tp is float else value


def _to_json(value):
    if dataclasses.is_dataclass(value):   # an optional field left unset is left out, as version 1 wrote it
        return {_json_name(f): _to_json(getattr(value, f.name)) for f in dataclasses.fields(value)
                if not (getattr(value, f.name) is None and f.default is None)}
    if isinstance(value, list):
        return [_to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_json(v) for k, v in value.items()}
    return value


def _schema(tp, defs: dict) -> dict:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [_schema(a, defs) for a in args]}
    if dataclasses.is_dataclass(tp):
        name = tp.__name__
        if name not in defs:
            defs[name] = {}
            hints = typing.get_type_hints(tp)
            props = {}
            for f in dataclasses.fields(tp):
                props[_json_name(f)] = {**_schema(hints[f.name], defs),
                                        **({"description": f.metadata["doc"]} if "doc" in f.metadata else {})}
            defs[name] = {"type": "object", "properties": props,
                          "required": [_json_name(f) for f in dataclasses.fields(tp) if not _is_optional(f)]}
        return {"$ref": f"#/$defs/{name}"}
    if origin is list:
        return {"type": "array", "items": _schema(args[0], defs)}
    if origin is dict:
        return {"type": "object", "additionalProperties": _schema(args[1], defs)}
    return {"type": {int: "integer", float: "number", str: "string", bool: "boolean", list: "array",
                     dict: "object", type(None): "null"}[tp]}


def schema() -> dict:
    """The JSON Schema (draft 2020-12) of edgedec.json at FORMAT_VERSION."""
    defs: dict = {}
    _schema(Manifest, defs)
    root = defs.pop("Manifest")
    root["properties"]["format"]["const"] = FORMAT
    root["properties"]["version"].update(minimum=MIN_VERSION, maximum=FORMAT_VERSION)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"https://edgedec.dev/schema/bundle-v{FORMAT_VERSION}.json",
            "title": "edgedec bundle manifest (edgedec.json)", **root, "$defs": defs}


if __name__ == "__main__":
    json.dump(schema(), sys.stdout, indent=1)
    sys.stdout.write("\n")
