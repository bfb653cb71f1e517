"""LoRA adapters: read them (PEFT folders, GGUF LoRA files), check them against the model, merge them, and
write them for both runtimes (ONNX Runtime adapter files, GGUF LoRA files for llama.cpp).

An adapter moves a linear's weight W [out, in] by  scale * B @ A,  with A [r, in], B [out, r] and
scale = alpha / r (rsLoRA: alpha / sqrt(r)). Inside edgedec, weights have GGUF names and GGUF row order, so
B of attn_q and attn_k gets the rows of a PEFT adapter permuted for interleaved rotary (models/llama.py
`permute_qk`), exactly as llama.cpp's converter permutes them; a GGUF LoRA already has that order.

In the graphs (export/graphs.py) a switchable adapter is a low-rank path beside each targeted linear:
    y = MatMulNBits(x) + (x @ lora_a) @ lora_b        lora_a = A^T [in, r],  lora_b = scale * B^T [r, out]
Q, K and V are one packed linear, as are gate and up: their paths stack the adapters' A matrices and put
the B matrices on a block diagonal, so one adapter file feeds one MatMul pair per linear.
"""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgedec.errors import AdapterError
from edgedec.models import architecture

# PEFT module name -> GGUF weight name (blk.{i}.<name>.weight)
MODULES = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
           "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down"}
# the graphs' linears and the weights each packs, in order (export/graphs.py decoder_layer)
PACKED = {"attn_qkv": ("attn_q", "attn_k", "attn_v"), "attn_output": ("attn_output",),
          "ffn_gate_up": ("ffn_gate", "ffn_up"), "ffn_down": ("ffn_down",)}
_PEFT_KEY = re.compile(r"layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)\.lora_([AB])(?:\.\w+)?\.weight$")


@dataclass
class Adapter:
    name: str
    source: str
    scale: float
    pairs: dict[str, tuple[np.ndarray, np.ndarray]]   # GGUF weight name -> (A [r, in], B [out, r]), float32

    @property
    def rank(self) -> int:
        return max(a.shape[0] for a, _ in self.pairs.values())

    @property
    def modules(self) -> list[str]:
        names = {w.split(".")[2] for w in self.pairs}
        return [m for m, g in MODULES.items() if g in names]

    @property
    def layers(self) -> list[int]:
        return sorted({int(w.split(".")[1]) for w in self.pairs})

    def delta(self, weight: str) -> np.ndarray | None:
        """scale * B @ A for GGUF weight `weight`, or None if the adapter leaves it alone."""
        if weight not in self.pairs:
            return None
        a, b = self.pairs[weight]
        return (self.scale * (b.astype(np.float64) @ a.astype(np.float64))).astype(np.float32)


def parse_spec(spec: str) -> tuple[Path, str]:
    """'PATH[=NAME]' -> (path, name); the name defaults to the folder's or file's name."""
    path, _, name = spec.partition("=")
    p = Path(path).expanduser()
    name = name or (p.stem if p.suffix == ".gguf" else p.name)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise AdapterError(f"adapter name '{name}' must be letters, digits, '.', '_' or '-'; name it with PATH=NAME")
    return p, name


def read_adapter(spec: str, config) -> Adapter:
    """The adapter at 'PATH[=NAME]' (a PEFT folder or a GGUF LoRA file), checked against `config`."""
    path, name = parse_spec(spec)
    if not path.exists():
        raise AdapterError(f"{path}: no such adapter; pass a PEFT folder (adapter_config.json and "
                           "adapter_model.safetensors) or a GGUF LoRA file")
    adapter = _read_peft(path, name, config) if path.is_dir() else _read_gguf(path, name, config)
    check(adapter, config)
    return adapter


def _read_peft(path: Path, name: str, config) -> Adapter:
    from .sources import _read_safetensor, _safetensors_index
    cfg_file = path / "adapter_config.json"
    if not cfg_file.exists():
        raise AdapterError(f"{path} has no adapter_config.json; a PEFT adapter folder holds adapter_config.json "
                           "and adapter_model.safetensors (save it with model.save_pretrained)")
    try:
        cfg = json.loads(cfg_file.read_text())
    except ValueError:
        raise AdapterError(f"{cfg_file} is not valid JSON; save the adapter again") from None
    if cfg.get("peft_type", "LORA") != "LORA" or cfg.get("use_dora"):
        kind = "DoRA" if cfg.get("use_dora") else cfg.get("peft_type")
        raise AdapterError(f"{path} is a {kind} adapter; edgedec takes plain LoRA adapters")
    targets = cfg.get("target_modules") or []
    targets = [targets] if isinstance(targets, str) else targets
    unknown = [t for t in targets if t not in MODULES] + list(cfg.get("modules_to_save") or [])
    if unknown:
        raise AdapterError(f"{path} targets {', '.join(unknown)}, which edgedec does not know; "
                           f"it takes LoRA on {', '.join(MODULES)}")
    unsupported = [k for k in ("alpha_pattern", "fan_in_fan_out", "lora_bias", "layer_replication",
                               "trainable_token_indices") if cfg.get(k)]
    if unsupported:
        raise AdapterError(f"{path} uses {', '.join(unsupported)}, which edgedec does not support; merge it "
                           "with PEFT (merge_and_unload) and export the merged model")
    weights = path / "adapter_model.safetensors"
    if not weights.exists():
        raise AdapterError(f"{path} has no adapter_model.safetensors; save the adapter with "
                           "save_pretrained(safe_serialization=True)")
    tensors: dict[tuple[int, str], dict[str, np.ndarray]] = {}
    for key, entry in _safetensors_index(weights).items():
        m = _PEFT_KEY.search(key)
        if not m or m.group(2) not in MODULES:
            raise AdapterError(f"{weights}: tensor {key} is not a LoRA weight of a module edgedec knows "
                               f"({', '.join(MODULES)})")
        tensors.setdefault((int(m.group(1)), m.group(2)), {})[m.group(3)] = _read_safetensor(entry)
    arch = architecture(config.architecture)
    pairs = {}
    for (layer, module), ab in sorted(tensors.items()):
        if set(ab) != {"A", "B"}:
            raise AdapterError(f"{weights}: layer {layer} {module} has lora_{next(iter(ab))} without its pair; "
                               "save the adapter again")
        b = ab["B"]
        if module in ("q_proj", "k_proj") and b.shape[0] % config.head_dim == 0:
            b = arch.permute_qk(b, b.shape[0] // config.head_dim)
        pairs[f"blk.{layer}.{MODULES[module]}.weight"] = (ab["A"], b)
    if not pairs:
        raise AdapterError(f"{weights} holds no LoRA weights; save the adapter again")
    rank = int(cfg.get("r", max(a.shape[0] for a, _ in pairs.values())))
    alpha = float(cfg.get("lora_alpha", rank))
    scale = alpha / (rank ** 0.5 if cfg.get("use_rslora") else rank)
    return Adapter(name, str(path), scale, pairs)


def _read_gguf(path: Path, name: str, config) -> Adapter:
    import gguf
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise AdapterError(f"{path} is neither a PEFT folder nor a GGUF LoRA file; pass one of those")
    try:
        reader = gguf.GGUFReader(str(path))
        meta = {k: f.contents() for k, f in reader.fields.items() if k.startswith(("general.", "adapter."))}
    except Exception as e:
        raise AdapterError(f"{path} is a corrupt or truncated GGUF ({type(e).__name__}); copy the file again") from None
    if meta.get("general.type") != "adapter" or meta.get("adapter.type") != "lora":
        raise AdapterError(f"{path} is a GGUF model, not a LoRA adapter (general.type is "
                           f"{meta.get('general.type', 'missing')}); pass a GGUF LoRA file")
    if meta.get("general.architecture") != config.architecture:
        raise AdapterError(f"{path} is an adapter for {meta.get('general.architecture')}, and this model is "
                           f"{config.architecture}; use an adapter trained for this model")
    tensors = {}
    for t in reader.tensors:
        data = gguf.quants.dequantize(t.data, t.tensor_type)
        tensors[t.name] = np.ascontiguousarray(data, np.float32)
    pairs = {}
    for key in tensors:
        if key.endswith(".lora_a"):
            weight = key.removesuffix(".lora_a")
            if weight + ".lora_b" not in tensors:
                raise AdapterError(f"{path}: {key} has no matching lora_b; convert the adapter again")
            pairs[weight] = (tensors[key], tensors[weight + ".lora_b"])
    if not pairs:
        raise AdapterError(f"{path} holds no lora_a/lora_b tensors; convert the adapter again")
    rank = max(a.shape[0] for a, _ in pairs.values())
    return Adapter(name, str(path), float(meta.get("adapter.lora.alpha", rank)) / rank, pairs)


def check(adapter: Adapter, config) -> None:
    """Every pair fits a weight of this model: known weight, [r, in] and [out, r], r no larger than the layer."""
    shapes = _weight_shapes(config)
    for weight, (a, b) in adapter.pairs.items():
        if weight not in shapes:
            raise AdapterError(f"adapter {adapter.name} targets {weight}, which this {config.n_layers}-layer model "
                               "does not have; use an adapter trained for this model")
        out, inp = shapes[weight]
        if a.ndim != 2 or b.ndim != 2 or a.shape[1] != inp or b.shape[0] != out or a.shape[0] != b.shape[1]:
            raise AdapterError(f"adapter {adapter.name}: {weight} has A {list(a.shape)} and B {list(b.shape)}, but "
                               f"this model's weight is [{out}, {inp}] (hidden size {config.hidden}); "
                               "use an adapter trained for this model")
        if a.shape[0] > min(out, inp):
            raise AdapterError(f"adapter {adapter.name}: rank {a.shape[0]} on {weight} is larger than the layer "
                               f"({out}x{inp}); a LoRA's rank must be at most {min(out, inp)}")


def _weight_shapes(config) -> dict[str, tuple[int, int]]:
    q, kv, h, f = config.n_heads * config.head_dim, config.n_kv_heads * config.head_dim, config.hidden, config.ffn
    per = {"attn_q": (q, h), "attn_k": (kv, h), "attn_v": (kv, h), "attn_output": (h, q),
           "ffn_gate": (f, h), "ffn_up": (f, h), "ffn_down": (h, f)}
    return {f"blk.{i}.{n}.weight": s for i in range(config.n_layers) for n, s in per.items()}


# ---------------------------------------------------------------- merged weights

def merged(src, adapters: list[Adapter]):
    """A copy of Source `src` whose weights have the adapters added (W + scale * B @ A)."""
    loaders = dict(src._loaders)
    for weight in {w for a in adapters for w in a.pairs}:
        base = loaders[weight]
        loaders[weight] = lambda base=base, weight=weight: base() + sum(
            d for d in (a.delta(weight) for a in adapters) if d is not None)
    return dataclasses.replace(src, _loaders=loaders)


# ---------------------------------------------------------------- graph inputs and files

def input_names(linear: str) -> tuple[str, str]:
    """The graph inputs of a linear's low-rank path (linear: its weight name, e.g. blk.3.attn_qkv.weight)."""
    stem = linear.removesuffix(".weight")
    return f"{stem}.lora_a", f"{stem}.lora_b"


def graph_linears(adapters: list[Adapter]) -> set[str]:
    """The graphs' linears (blk.{i}.attn_qkv.weight, ...) that need a low-rank path for these adapters."""
    out = set()
    for a in adapters:
        for weight in a.pairs:
            _, layer, name, _ = weight.split(".")
            out |= {f"blk.{layer}.{p}.weight" for p, parts in PACKED.items() if name in parts}
    return out


def parameters(adapter: Adapter, config) -> dict[str, np.ndarray]:
    """The adapter as the graphs' inputs: for each packed linear it touches, lora_a [in, R] (the A matrices
    stacked, transposed) and lora_b [R, out] (scale * B^T on the block diagonal), R = the ranks' sum."""
    shapes = _weight_shapes(config)
    out = {}
    for linear in sorted(graph_linears([adapter])):
        _, layer, packed, _ = linear.split(".")
        parts = [f"blk.{layer}.{n}.weight" for n in PACKED[packed]]
        rows = [shapes[p][0] for p in parts]
        ranks = [adapter.pairs[p][0].shape[0] if p in adapter.pairs else 0 for p in parts]
        a_t = np.zeros((shapes[parts[0]][1], sum(ranks)), np.float32)
        b_t = np.zeros((sum(ranks), sum(rows)), np.float32)
        r0 = c0 = 0
        for p, r, n in zip(parts, ranks, rows):
            if r:
                a, b = adapter.pairs[p]
                a_t[:, r0:r0 + r] = a.T
                b_t[r0:r0 + r, c0:c0 + n] = adapter.scale * b.T
            r0, c0 = r0 + r, c0 + n
        out[input_names(linear)[0]], out[input_names(linear)[1]] = a_t, b_t
    return out


def write_ort(adapter: Adapter, config, path: Path) -> None:
    """An ONNX Runtime adapter file (ort.AdapterFormat) with the graphs' lora_a/lora_b inputs."""
    import onnxruntime as ort
    fmt = ort.AdapterFormat()
    fmt.set_adapter_version(1)
    fmt.set_model_version(1)
    arrays = parameters(adapter, config)       # kept alive until written: OrtValues only borrow the memory
    fmt.set_parameters({k: ort.OrtValue.ortvalue_from_numpy(v) for k, v in arrays.items()})
    fmt.export_adapter(str(path))


def write_gguf(adapter: Adapter, config, path: Path) -> None:
    """A GGUF LoRA that stock llama.cpp loads (--lora FILE): general.type adapter, adapter.lora.alpha, tensors
    <weight>.lora_a [r, in] and <weight>.lora_b [out, r] in GGUF row order, float32."""
    import gguf
    w = gguf.GGUFWriter(str(path), config.architecture)
    w.add_string("general.type", "adapter")
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", adapter.scale * adapter.rank)
    w.add_string("general.name", adapter.name)
    for weight, (a, b) in sorted(adapter.pairs.items()):
        if a.shape[0] != adapter.rank:
            raise AdapterError(f"adapter {adapter.name} has ranks that differ between layers; llama.cpp's LoRA "
                               "format takes one alpha, so merge it instead (--merge)")
        w.add_tensor(f"{weight}.lora_a", np.ascontiguousarray(a, np.float32))
        w.add_tensor(f"{weight}.lora_b", np.ascontiguousarray(b, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
