"""What a backend provides: the contract the session and the decoding strategies are written against.

A backend comes in two parts, so that many conversations can share one loaded model:

    Engine   loaded once per Model: the graphs and weights. `engine.runner(n_ctx)` makes a Runner.
    Runner   one per Session: that conversation's KV cache, and the calls that read and write it.

Every Runner decodes (`forward`). A LayeredRunner can also run any range of whole layers and the head on
their own, which self-speculation, early exit and model switching need. The strategies ask for the
protocol they need and nothing else (`isinstance(runner, LayeredRunner)`), never for a backend by name.

Row paths. Some kernels round one row differently from several (ONNX Runtime's MatMulNBits and
GroupQueryAttention). `row_paths` lists the row counts a backend can pad every call to, and `min_rows`
is the one in use: 1 is the one-row path, 2 the many-row path on which a one-token step and a batched
verification agree bit for bit. A backend whose calls agree on every row count lists only (1,).

Threads. A Runner holds its engine's lock for each call, so one engine runs one call at a time, whichever
session makes it.
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

Hidden = Any   # a backend's hidden state [1, S, H]: a numpy array or the backend's own tensor type


@runtime_checkable
class Runner(Protocol):
    name: str                   # "onnxruntime", "llamacpp"
    config: Any                 # the architecture config (models.llama.LlamaConfig)
    n_ctx: int                  # positions the cache holds
    row_paths: tuple[int, ...]  # row counts every call can be padded to
    min_rows: int               # the row path in use: 1, or 2 for the many-row path

    @property
    def length(self) -> int:
        """Positions the cache holds for the full model."""

    @property
    def cache_bytes(self) -> int:
        """Memory this runner's cache holds now (0 after `release`)."""

    @property
    def kv_bytes(self) -> int:
        """Of which the positions held occupy (the engine's `kv_bytes_per_token` each)."""

    @property
    def evicted(self) -> int:
        """Positions dropped by eviction so far (edgedec.kvcache; 0 for a cache that never evicts)."""

    adapter: str | None         # the LoRA adapter the next call runs with (None: the base model)

    def use_adapter(self, name: str | None) -> None:
        """Run with the bundle's switchable adapter `name` from the next call on (the caller drops the
        cache, which holds the previous adapter's keys and values)."""

    def truncate(self, n: int) -> None:
        """Forget every position from n on."""

    def release(self) -> None:
        """Free the cache; the next call starts from an empty one."""

    def forward(self, tokens, all_logits: bool = False) -> np.ndarray:
        """Feed tokens after the cached ones; logits [S, V] with all_logits, else [1, V] for the last."""


@runtime_checkable
class LayeredRunner(Runner, Protocol):
    cuts: list[int]             # layer indices where a graph ends, the layer count last

    def layers(self, tokens=None, hidden: Hidden = None, start: int = 0, end: int | None = None,
               taps=()) -> tuple[Hidden, dict[int, np.ndarray]]:
        """Run layers [start, end) (on cuts) on new positions: tokens when start == 0, else `hidden` from
        the previous range. Returns the hidden state and, for each cut in `taps`, the state after it."""

    def head(self, hidden: Hidden) -> np.ndarray:
        """Logits [S, V] from a hidden state [1, S, H]."""

    def drafter(self) -> "Drafter | None":
        """The bundle's trained draft for this conversation, or None when the bundle has none."""


@runtime_checkable
class Drafter(Protocol):
    """A trained draft (export/drafts.py) bound to one runner: it is told every hidden state the full model
    computes, and the runner's `truncate` reaches it too."""
    vocab: np.ndarray           # its head's row -> token id

    def take_pending(self, tokens: list[int]) -> tuple[np.ndarray, list[int]]:
        """The true hidden states it has not read [1, m, H], and the token after each."""

    def step(self, hidden: np.ndarray, next_ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Read rows (h_i, x_(i+1)): predicted next states [1, S, H], logits over `vocab` for the last row."""

    def truncate(self, n: int) -> None:
        """Forget positions from n on (drafted ones included)."""


class Engine(Protocol):
    name: str
    config: Any
    kv: Any                       # the cache type and eviction (edgedec.kvcache.KVConfig)
    kv_bytes_per_token: float     # cache bytes one position takes

    def runner(self, n_ctx: int) -> Runner:
        """A fresh runner with an empty cache of n_ctx positions."""
