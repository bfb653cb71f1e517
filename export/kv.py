"""Compressed KV caches inside GroupQueryAttention: the cache types, their scales, and the graph variants
that read them.

ONNX Runtime's CPU GroupQueryAttention stores and reads the cache itself in any of these types:

    fp32   4 bytes a value (the graphs as exported)
    fp16   2 bytes a value
    int8   1 byte a value: round(x / scale), clamped to -128..127
    int4   half a byte: round(x / scale) clamped to -8..7, plus 8, two to a byte (even index in the low nibble)

The scales are static graph inputs, one per channel (`[1, kv_heads, 1, head_dim]`, per layer, for K and V
apart): symmetric, the channel's largest magnitude seen on calibration text over the code's largest value.
K is cached after rotary, so its calibration reads the rotated keys, as the kernel stores them.

A variant graph is the exported segment graph with each GroupQueryAttention node told the cache type (its
`k_quant_type`/`kv_cache_bit_width` attributes and scale inputs) and, for evicting caches, fed explicit
`position_ids`: after eviction a cache slot is no longer the token's position. The variants are made when
a bundle is loaded; the bundle holds only the exported graphs and the calibrated ranges (`kv_ranges.npz`).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgedec.errors import EdgedecError

KV_TYPES = ("fp32", "fp16", "int8", "int4")
QMAX = {"int8": 127, "int4": 7}
_ELEM = {"fp32": TensorProto.FLOAT, "fp16": TensorProto.FLOAT16, "int8": TensorProto.INT8, "int4": TensorProto.UINT8}
_NUMPY = {"fp32": np.float32, "fp16": np.float16, "int8": np.int8, "int4": np.uint8}
POSITION_IDS, K_SCALE, V_SCALE = 9, 12, 13     # GroupQueryAttention input slots


def check_kv(kv: str) -> str:
    if kv not in KV_TYPES:
        raise EdgedecError(f"$kv '{kv}' is not a cache type; choose one of {', '.join(KV_TYPES)}")
    return kv


def cache_dtype(kv: str):
    return _NUMPY[kv]


def cache_width(kv: str, head_dim: int) -> int:
    """Elements in the cache's last dimension (int4 packs two values in one uint8)."""
    return head_dim // 2 if kv == "int4" else head_dim


def bytes_per_token(kv: str, n_layers: int, n_kv_heads: int, head_dim: int) -> int:
    return 2 * n_layers * n_kv_heads * cache_width(kv, head_dim) * np.dtype(_NUMPY[kv]).itemsize


# range multipliers (K, V), chosen on King Lear perplexity with 2,048-token windows (bench/kv_cache.py):
# values seen on new text exceed the calibration text's ranges (a margin pays at 8 bits), while 4 bits are
# too coarse to cover the rare large key (clipping pays there)
MARGIN = {"int8": (1.0, 2.0), "int4": (0.6, 1.0)}


def scales(kv: str, ranges: np.ndarray, part: str) -> np.ndarray:
    """Per-channel scales of the `part` ("k" or "v") cache from calibrated magnitudes (any shape); a
    channel never seen non-zero gets a tiny scale, not a zero one."""
    margin = MARGIN[kv][part == "v"]
    return (np.maximum(ranges * margin, 1e-6) / QMAX[kv]).astype(np.float32)


def cache_variant(model: onnx.ModelProto, kv: str, ranges: dict[int, tuple[np.ndarray, np.ndarray]] | None,
                  positions: bool) -> onnx.ModelProto:
    """A copy of segment graph `model` whose attention keeps a `kv` cache, and takes `position_ids` [1, S]
    when `positions`. ranges: layer -> (K, V) magnitudes [kv_heads, head_dim], needed for int8 and int4."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    for node in g.node:
        if node.op_type != "GroupQueryAttention":
            continue
        layer = int(node.input[3].rsplit("_", 1)[1])            # past_key_<i>
        ins = list(node.input) + [""] * (14 - len(node.input))
        if positions:
            ins[POSITION_IDS] = "position_ids"
        if kv in QMAX:
            if ranges is None or layer not in ranges:
                raise EdgedecError(f"the bundle has no calibrated KV ranges for layer {layer}; "
                                   "export it again to use $kv int8 or int4")
            k, v = ranges[layer]
            ins[K_SCALE] = _init(g, f"kv.k_scale.{layer}", scales(kv, k, "k")[None, :, None, :])
            ins[V_SCALE] = _init(g, f"kv.v_scale.{layer}", scales(kv, v, "v")[None, :, None, :])
            node.attribute.extend([helper.make_attribute("k_quant_type", "PER_CHANNEL"),
                                   helper.make_attribute("v_quant_type", "PER_CHANNEL"),
                                   helper.make_attribute("kv_cache_bit_width", 4 if kv == "int4" else 8)])
        while ins and ins[-1] == "":
            ins.pop()
        del node.input[:]
        node.input.extend(ins)
    for vi in list(g.input) + list(g.output):
        if vi.name.startswith(("past_", "present_")):
            t = vi.type.tensor_type
            t.elem_type = _ELEM[kv]
            t.shape.dim[3].dim_value = cache_width(kv, t.shape.dim[3].dim_value)
    if positions:
        g.input.append(helper.make_tensor_value_info("position_ids", TensorProto.INT64, [1, "S"]))
    return m


def _init(g, name: str, array: np.ndarray) -> str:
    g.initializer.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
    return name


def quantize(x: np.ndarray, kv: str, scale: np.ndarray) -> np.ndarray:
    """The kernel's storage format for float values x [..., head_dim] (the round trip's reference)."""
    if kv not in QMAX:
        return x.astype(_NUMPY[kv])
    q = np.clip(np.rint(x / scale), -QMAX[kv] - 1, QMAX[kv])
    if kv == "int8":
        return q.astype(np.int8)
    u = (q + 8).astype(np.uint8)
    return u[..., 0::2] | (u[..., 1::2] << 4)


def dequantize(c: np.ndarray, kv: str, scale: np.ndarray) -> np.ndarray:
    """Float values [..., head_dim] from a cache in the kernel's format."""
    if kv not in QMAX:
        return c.astype(np.float32)
    if kv == "int8":
        return c.astype(np.float32) * scale
    q = np.empty(c.shape[:-1] + (c.shape[-1] * 2,), np.float32)
    q[..., 0::2], q[..., 1::2] = (c & 15).astype(np.float32) - 8, (c >> 4).astype(np.float32) - 8
    return q * scale


def load_ranges(path) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """A bundle's calibrated ranges (export/kv_calibration.py): layer -> (K, V) [kv_heads, head_dim]."""
    with np.load(path) as z:
        return {i: (z["k"][i], z["v"][i]) for i in range(z["k"].shape[0])}
