"""Batched decoding on ONNX Runtime: B sequences, one graph call per decoding step.

The engine's segment graphs in their batched form (export/batching.py) run on one KV cache buffer per
layer, [slots, kv_heads, n_ctx + 1, d], one row per sequence, with a length per row. Two calls:

    prefill(slot, tokens)   one sequence's new tokens, on its own cache row (a [1, ...] view of the buffer),
                            in chunks of at least two rows
    step(tokens)            one new token for each of the first n rows, in one call of every segment

Sequences live in rows 0..n-1 (the scheduler moves the last one into a row that frees up, `move`), so a
step binds a contiguous [n, ...] view and reads nothing it does not need.

Numerics. GroupQueryAttention refuses several tokens per sequence when the batch has more than one, so a
step gives each sequence one row: the one-row attention path. A batched step is bit for bit a solo
one-row step (`OrtRunner` with min_rows=1, i.e. plain decoding without --exact), whatever the batch, and a
prefill in chunks of two or more rows is bit for bit a whole prefill. So each sequence's greedy output in
a batch is its solo plain output (tests/test_batch.py).
"""
from __future__ import annotations

import numpy as np
import onnxruntime as ort

from edgedec.errors import ContextOverflowError


class OrtBatchRunner:
    name = "onnxruntime"

    def __init__(self, engine, slots: int, n_ctx: int, adapter: str | None = None):
        """adapter: the bundle's switchable LoRA adapter every row runs with (None: the base model)."""
        cfg = engine.config
        self.engine, self.config, self.slots, self.n_ctx = engine, cfg, slots, n_ctx
        self.adapter = adapter
        self.sessions = engine.batch_sessions()
        shape = (slots, cfg.n_kv_heads, n_ctx + 1, engine.cache_width)
        self.keys = [np.zeros(shape, engine.cache_dtype) for _ in range(cfg.n_layers)]
        self.values = [np.zeros(shape, engine.cache_dtype) for _ in range(cfg.n_layers)]
        self.lengths = np.zeros(slots, np.int64)
        self._io: dict = {}
        self._head_io = engine.head.io_binding()

    def prefill(self, slot: int, tokens: list[int], chunk: int = 256) -> np.ndarray:
        """Feed one sequence's new tokens (after what its row holds); the last token's logits [V]."""
        if self.lengths[slot] + len(tokens) > self.n_ctx:
            raise ContextOverflowError(f"{self.lengths[slot] + len(tokens)} positions do not fit the "
                                       f"{self.n_ctx}-token context; shorten the prompt or raise $n_ctx")
        pieces = [tokens[s:s + chunk] for s in range(0, len(tokens), chunk)]
        if len(pieces) > 1 and len(pieces[-1]) == 1:       # no one-row chunk: it would round differently
            pieces[-2:] = [pieces[-2] + pieces[-1]]
        for piece in pieces:
            hidden = self._run(slot, slot + 1, np.asarray(piece, np.int64).reshape(1, -1))
        return self._head(hidden.numpy()[:, -1:])[0]

    def step(self, tokens: list[int]) -> np.ndarray:
        """One token for each of rows 0..n-1 (n = len(tokens)); their next-token logits [n, V]."""
        n = len(tokens)
        if np.any(self.lengths[:n] + 1 > self.n_ctx):
            raise ContextOverflowError(f"a sequence would pass the {self.n_ctx}-token context; stop it first")
        return self._head(self._run(0, n, np.asarray(tokens, np.int64).reshape(n, 1)))

    def truncate(self, slot: int, n: int) -> None:
        self.lengths[slot] = min(self.lengths[slot], n)

    def move(self, src: int, dst: int) -> None:
        """Copy row src's cache and length into row dst (src's row is free afterwards)."""
        n = int(self.lengths[src])
        for buf in self.keys + self.values:
            buf[dst, :, :n] = buf[src, :, :n]
        self.lengths[dst], self.lengths[src] = n, 0

    def _bindings(self, lo: int, hi: int) -> list:
        """Per segment, an IO binding with rows lo..hi-1 of every layer's cache bound as both past and
        present; made once per row range (a decoding step's range changes only when sequences come or go)."""
        key = (lo, hi)
        if key not in self._io:
            ios = []
            for seg, sess in zip(self.engine.segments, self.sessions):
                io = sess.io_binding()
                for i in range(seg.start, seg.end):
                    for kind, bufs in (("key", self.keys), ("value", self.values)):
                        v = ort.OrtValue.ortvalue_from_numpy(bufs[i][lo:hi])
                        io.bind_ortvalue_input(f"past_{kind}_{i}", v)
                        io.bind_ortvalue_output(f"present_{kind}_{i}", v)
                ios.append(io)
            self.engine.bind_adapter(ios, self.adapter)
            self._io[key] = ios
        return self._io[key]

    def _run(self, lo: int, hi: int, ids: np.ndarray):
        """All segments on rows lo..hi-1 with input ids [hi-lo, S]: the last hidden state [1, rows, H]."""
        s = ids.shape[1]
        seqlens = (self.lengths[lo:hi] + s - 1).astype(np.int32)
        total = np.array(int(seqlens.max()) + 1, np.int32)
        out = None
        with self.engine.lock:
            for seg, sess, io in zip(self.engine.segments, self.sessions, self._bindings(lo, hi)):
                if seg.start == 0:
                    io.bind_cpu_input("input_ids", ids)
                else:
                    io.bind_ortvalue_input("hidden_in", out)
                io.bind_cpu_input("seqlens_k", seqlens)
                io.bind_cpu_input("total_seq_len", total)
                out = ort.OrtValue.ortvalue_from_shape_and_type([1, ids.size, self.config.hidden], np.float32)
                io.bind_ortvalue_output("hidden_out", out)
                sess.run_with_iobinding(io)
        self.lengths[lo:hi] += s
        return out

    def _head(self, hidden) -> np.ndarray:
        return self.engine.run_head(self._head_io, hidden)
