"""A mobile bundle's one graph of every layer and the head (export/mobile.py `fuse_head`), run as a Runner;
and `CachedRunner`, what it shares with OrtRunner.

One call a token: the graph reads the new tokens, writes their keys and values in place (each layer's buffer
bound as both past and present, as OrtRunner does), and returns logits only for the rows `logits_rows` picks.
It is a Runner, not a LayeredRunner: the layers and the head cannot run apart, so the modes that need them
apart (self-spec, lookup, early exit, entropy) are refused with `layered_hint`.

Rows are padded as OrtRunner pads them (`min_rows`), and the head is asked for the same rows OrtRunner's
head would read, padding included, so both give the same logits bit for bit.
"""
from __future__ import annotations

import numpy as np
import onnxruntime as ort

from edgedec.errors import ContextOverflowError, ModeError
from edgedec.kvcache import KVCache


def bind_cache(io, cache: KVCache, start: int, end: int) -> None:
    """Bind layers [start, end)'s key and value buffers as both their past inputs and present outputs."""
    for i in range(start, end):
        k = ort.OrtValue.ortvalue_from_numpy(cache.keys[i])
        v = ort.OrtValue.ortvalue_from_numpy(cache.values[i])
        io.bind_ortvalue_input(f"past_key_{i}", k)
        io.bind_ortvalue_input(f"past_value_{i}", v)
        io.bind_ortvalue_output(f"present_key_{i}", k)
        io.bind_ortvalue_output(f"present_value_{i}", v)


def bind_positions(io) -> tuple[np.ndarray, np.ndarray]:
    """Bind seqlens_k [1] and total_seq_len [] as arrays the caller sets in place before each run."""
    seqlens, total = np.zeros(1, np.int32), np.zeros((), np.int32)
    io.bind_ortvalue_input("seqlens_k", ort.OrtValue.ortvalue_from_numpy(seqlens))
    io.bind_ortvalue_input("total_seq_len", ort.OrtValue.ortvalue_from_numpy(total))
    return seqlens, total


def padded(a: np.ndarray, rows: int, axis: int = 0) -> np.ndarray:
    """`a` with its last entry along `axis` repeated up to `rows` entries (unchanged when it has as many)."""
    n = a.shape[axis]
    if n >= rows:
        return a
    last = np.take(a, [n - 1], axis=axis)
    return np.concatenate([a, np.repeat(last, rows - n, axis=axis)], axis=axis)


class CachedRunner:
    """What the ONNX Runtime runners share: the context check, and what they tell about their KV cache,
    `self.cache` (None until the first call and after release)."""
    name = "onnxruntime"
    row_paths = (1, 2)

    def __init__(self, engine, n_ctx: int, min_rows: int = 1):
        cfg = engine.config
        if not 1 <= n_ctx <= cfg.context:
            raise ModeError(f"$n_ctx {n_ctx} is out of range; this model supports 1..{cfg.context}")
        self.engine = engine
        self.config = cfg
        self.n_ctx = n_ctx
        self.min_rows = min_rows
        self.adapter: str | None = None
        self.cache: KVCache | None = None

    def _new_cache(self) -> KVCache:
        cfg = self.config
        # one spare slot per padding row: a padded call writes past the last real position
        return KVCache(cfg.n_layers, cfg.n_kv_heads, cfg.head_dim, self.n_ctx + 1, self.engine.kv,
                       self.engine.k_scales, rope_limit=cfg.context, rope_base=cfg.rope_base)

    def _check_fits(self, past: int, n: int) -> None:
        if past + n > self.n_ctx:
            raise ContextOverflowError(f"{past + n} positions do not fit the {self.n_ctx}-token context; "
                                       "reset the conversation, shorten the prompt, or raise $n_ctx")

    @property
    def length(self) -> int:
        return self.cache.length if self.cache is not None else 0

    @property
    def cache_bytes(self) -> int:
        return self.cache.nbytes if self.cache is not None else 0

    @property
    def evicted(self) -> int:
        """Positions dropped by eviction so far in this conversation."""
        return self.cache.dropped if self.cache is not None else 0

    @property
    def kv_bytes(self) -> int:
        """Bytes of cache the positions held now occupy (the buffers are allocated for n_ctx)."""
        cfg = self.config
        return self.cache.bytes_in_use(cfg.n_layers, cfg.n_kv_heads, cfg.head_dim) if self.cache is not None else 0


class OrtFusedRunner(CachedRunner):
    layered_hint = ("this mobile bundle runs every layer and the head as one graph; export it with --cuts, or "
                    "without --target mobile")

    def use_adapter(self, name: str | None) -> None:
        if name is not None:
            raise ModeError("a mobile bundle switches no adapters; export with --lora ADAPTER --merge")

    def draft_model(self) -> None:
        return None

    def _bind(self) -> None:
        self.cache = self._new_cache()
        self._io = self.engine.sessions[0].io_binding()
        self._seqlens, self._total = bind_positions(self._io)
        bind_cache(self._io, self.cache, 0, self.config.n_layers)

    def forward(self, tokens, all_logits: bool = False) -> np.ndarray:
        """Logits [S, V] of new tokens (all_logits), or [1, V] of the last; read prefill_chunk tokens a call."""
        tokens = np.asarray(tokens, np.int64)
        chunk = self.engine.prefill_chunk or max(len(tokens), 1)
        logits = [self._call(tokens[s:s + chunk], all_logits) for s in range(0, len(tokens), chunk)]
        return np.concatenate(logits) if all_logits else logits[-1]

    def _call(self, tokens: np.ndarray, every_row: bool) -> np.ndarray:
        """One graph call on new tokens: the logits of every row, or of the last one."""
        if self.cache is None:
            self._bind()
        n, rows = len(tokens), max(len(tokens), self.min_rows)
        past = self.cache.offset[0]
        self._check_fits(past, n)
        scored = np.arange(n) if every_row else np.array([n - 1])
        pick = padded(scored, self.min_rows)
        self.cache.make_room(rows)
        io = self._io
        with self.engine.lock:
            io.bind_cpu_input("input_ids", padded(tokens, rows).reshape(1, rows))
            io.bind_cpu_input("logits_rows", pick)
            self._seqlens[0], self._total[()] = past + rows - 1, past + rows
            out = ort.OrtValue.ortvalue_from_shape_and_type([1, len(pick), self.config.vocab], np.float32)
            io.bind_ortvalue_output("logits", out)
            self.engine.sessions[0].run_with_iobinding(io)
            self.cache.advance(0, self.config.n_layers, n)
        return out.numpy()[0, :len(scored)]

    def truncate(self, n: int) -> None:
        if self.cache is not None:
            self.cache.truncate(n)

    def release(self) -> None:
        self.cache = None
        self._io = None
