"""The KV cache: one preallocated buffer per layer, a write offset per layer, and optional eviction.

    keys[i], values[i]: [1, n_kv_heads, max_len, width] in the cache type's dtype (export/kv.py: fp32,
                        fp16, int8, or int4 packed two to a byte), which GroupQueryAttention reads and
                        writes in place
    offset[i]:          how many slots of layer i are valid

Layers keep separate offsets because self-speculation runs the first layers ahead of the rest.
`truncate(length)` drops positions past `length` in every layer by moving offsets; a rejected draft costs
nothing, because the next step overwrites those slots in place.

Eviction (`KVConfig.window`): when a write would not fit, `evict` keeps the first `sinks` slots (attention
sinks, StreamingLLM) and the last `window` positions, moving those down over the dropped ones, and the
buffer then fills again: like llama.cpp's context shift, the copy happens once per freed block, not per
token. Rotary positions stay absolute: slot j >= sinks holds position j + shift, passed to the graphs as
`position_ids`. Only when positions would run past the model's rotary table (its trained context) are the
kept keys rotated back by `shift` (`rotate_keys`), so that positions restart right after the sinks.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgedec.export.kv import (KV_TYPES, bytes_per_token, cache_dtype, cache_width, check_kv, dequantize,
                               quantize)

from .errors import ContextOverflowError, EdgedecError

ROOM = 32     # slots an evicting cache must keep free beyond sinks + window: a draft round, a prefill chunk


def shared_prefix(cached: list[int], ids: list[int]) -> int:
    """How many leading positions a cache holding `cached` can keep for the context `ids`: their common
    prefix, leaving at least one token of `ids` to feed (its logits come from that call)."""
    n = min(len(cached), len(ids) - 1)
    if cached[:n] == ids[:n]:                 # the usual case (one more turn), compared in one C loop
        return n
    return next(i for i, (a, b) in enumerate(zip(cached, ids)) if a != b)


def cache_type(manifest, asked: str | None) -> str:
    """The cache type to run: `asked`, or the bundle's own (fp32; a mobile bundle's graphs have theirs built in,
    export/mobile.py, and run no other)."""
    built_in = manifest.mobile.cache if manifest.mobile else None
    if asked is None:
        return built_in or "fp32"
    if built_in and asked != built_in:
        raise EdgedecError(f"this mobile bundle's graphs have the {built_in} KV cache built in and run no other; "
                           f"drop $kv, or export without --target mobile for $kv {asked}")
    return asked


@dataclass(frozen=True)
class KVConfig:
    """type: fp32, fp16, int8 or int4. window: evict down to the first `sinks` and the last `window`
    positions when the cache is full (None: never evict; a full cache is an error)."""
    type: str = "fp32"
    window: int | None = None
    sinks: int | None = None

    def check(self, n_ctx: int) -> "KVConfig":
        check_kv(self.type)
        if self.window is None:
            if self.sinks is not None:
                raise EdgedecError("$kv_sinks needs $kv_window: sinks are what eviction keeps besides the window")
            return self
        sinks = 4 if self.sinks is None else self.sinks
        if self.window <= 0 or sinks < 0 or sinks >= self.window:
            raise EdgedecError(f"$kv_window {self.window} and $kv_sinks {sinks} are out of range: "
                               "they need 0 <= sinks < window, e.g. $kv_window 1024 $kv_sinks 4")
        if sinks + self.window + ROOM > n_ctx:
            raise EdgedecError(f"$kv_window {self.window} plus $kv_sinks {sinks} does not fit the {n_ctx}-token "
                               f"context with room to evict into; raise $n_ctx to at least "
                               f"{sinks + self.window + ROOM} or lower $kv_window")
        return KVConfig(self.type, self.window, sinks)

    @property
    def evicts(self) -> bool:
        return self.window is not None


class KVCache:
    def __init__(self, n_layers: int, n_kv_heads: int, head_dim: int, max_len: int, kv: KVConfig = KVConfig(),
                 k_scales: np.ndarray | None = None, rope_limit: int = 0, rope_base: float = 10000.0):
        """k_scales [n_layers, n_kv_heads, head_dim]: the int8/int4 key scales (for rotate_keys)."""
        shape = (1, n_kv_heads, max_len, cache_width(kv.type, head_dim))
        self.max_len, self.head_dim = max_len, head_dim
        self.kv = kv
        self.keys = [np.zeros(shape, cache_dtype(kv.type)) for _ in range(n_layers)]
        self.values = [np.zeros(shape, cache_dtype(kv.type)) for _ in range(n_layers)]
        self.offset = [0] * n_layers
        self.dropped = 0       # positions evicted so far
        self.shift = 0         # slot j >= sinks holds position j + shift
        self.k_scales = k_scales
        self.rope_limit, self.rope_base = rope_limit, rope_base

    @property
    def length(self) -> int:
        """Positions seen by *every* layer (evicted ones included): what the full model has read."""
        return min(self.offset) + self.dropped

    def advance(self, start: int, end: int, n: int) -> None:
        for i in range(start, end):
            self.offset[i] += n

    def truncate(self, length: int) -> None:
        """Forget positions from `length` on. Evicted positions cannot come back: a length inside them
        keeps only the sinks before them, and `length` then reads less than asked."""
        slot = length - self.dropped
        sinks = self.kv.sinks or 0
        if self.dropped and slot <= sinks:
            slot = min(length, sinks)
            self.dropped = self.shift = 0
        self.offset = [min(o, slot) for o in self.offset]

    def positions(self, slot: int, rows: int) -> np.ndarray:
        """position_ids [1, rows] of slots slot..slot+rows-1."""
        j = np.arange(slot, slot + rows, dtype=np.int64)
        return np.where(j >= (self.kv.sinks or 0), j + self.shift, j)[None]

    def make_room(self, rows: int) -> bool:
        """Evict if writing `rows` more slots into layer 0 would overflow; True when it did."""
        if self.offset[0] + rows <= self.max_len - 1:      # the last slot is the padding row's
            return False
        if not self.kv.evicts:
            return False
        sinks, keep = self.kv.sinks, self.kv.window
        d = min(self.offset) - sinks - keep
        if d <= 0 or self.offset[0] - d + rows > self.max_len - 1:
            raise ContextOverflowError(f"{rows} new positions do not fit the cache even after eviction; "
                                       "raise $n_ctx or lower $kv_window")
        for i, o in enumerate(self.offset):
            for buf in (self.keys[i], self.values[i]):
                buf[:, :, sinks:o - d] = buf[:, :, sinks + d:o].copy()
        self.offset = [o - d for o in self.offset]
        self.dropped += d
        self.shift += d
        if self.rope_limit and self.max_len + self.shift > self.rope_limit:
            self.rotate_keys(-self.shift)
            self.shift = 0
        return True

    def rotate_keys(self, delta: int) -> None:
        """Move the keys after the sinks by `delta` positions (rotary is a rotation: R(p + delta) =
        R(delta) R(p)), dequantizing and requantizing a quantized cache; as llama.cpp's K-shift."""
        sinks, d = self.kv.sinks, self.head_dim
        ang = delta * self.rope_base ** (-np.arange(0, d, 2) / d)
        cos, sin = np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)
        for i, buf in enumerate(self.keys):
            o = self.offset[i]
            scale = None if self.k_scales is None else self.k_scales[i][None, :, None, :]
            k = dequantize(buf[:, :, sinks:o], self.kv.type, scale)
            k0, k1 = k[..., 0::2].copy(), k[..., 1::2].copy()
            k[..., 0::2], k[..., 1::2] = k0 * cos - k1 * sin, k0 * sin + k1 * cos
            buf[:, :, sinks:o] = quantize(k, self.kv.type, scale)

    @property
    def nbytes(self) -> int:
        """Memory the buffers hold (allocated for max_len slots)."""
        return sum(a.nbytes for a in self.keys + self.values)

    def bytes_in_use(self, n_layers: int, n_kv_heads: int, head_dim: int) -> int:
        return max(self.offset) * bytes_per_token(self.kv.type, n_layers, n_kv_heads, head_dim)


__all__ = ["KVCache", "KVConfig", "KV_TYPES"]
