"""The KV cache: one preallocated buffer per layer and a write offset per layer.

    keys[i], values[i]: float32 [1, n_kv_heads, max_len, head_dim]   (what GroupQueryAttention reads/writes)
    offset[i]: how many positions of layer i are valid

Layers keep separate offsets because self-speculation runs the first layers ahead of the rest.
`truncate(length)` drops positions past `length` in every layer by moving offsets; a rejected draft costs
nothing, because the next step overwrites those slots in place. Nothing here copies the buffers.
"""
from __future__ import annotations

import numpy as np


class KVCache:
    def __init__(self, n_layers: int, n_kv_heads: int, head_dim: int, max_len: int):
        shape = (1, n_kv_heads, max_len, head_dim)
        self.max_len = max_len
        self.keys = [np.zeros(shape, np.float32) for _ in range(n_layers)]
        self.values = [np.zeros(shape, np.float32) for _ in range(n_layers)]
        self.offset = [0] * n_layers

    @property
    def length(self) -> int:
        """Positions valid in *every* layer: what the full model has seen."""
        return min(self.offset)

    def advance(self, start: int, end: int, n: int) -> None:
        for i in range(start, end):
            self.offset[i] += n

    def truncate(self, length: int) -> None:
        self.offset = [min(o, length) for o in self.offset]

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.keys + self.values)
