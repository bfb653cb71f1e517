"""A bundle's trained draft on ONNX Runtime (export/drafts.py has the graph): one conversation's draft
KV cache, and the full model's hidden states it has not read yet.

The draft reads pairs (h_i, x_(i+1)): the full model's last hidden state at position i and the token at
i + 1, and predicts h_(i+1) and the token after it. The runner reports every hidden state the full model
computes (`observe`), so the true states wait in `pending` until the next draft round feeds them in one
call; the states the draft predicts while drafting are dropped after the round (`truncate`), and the
verified ones arrive through `observe` like any others.

Positions. The draft's cache may start later than the conversation (it is made when self-spec first runs,
and a gap in what it observed restarts it): slot = position - origin. Rotary attention depends only on
relative positions, so a later origin changes nothing but how much context the draft sees.
"""
from __future__ import annotations

import numpy as np
import onnxruntime as ort

from edgedec.kvcache import KVCache


class OrtDrafter:
    def __init__(self, session: ort.InferenceSession, vocab: np.ndarray, config, n_ctx: int):
        self.session = session
        self.vocab = vocab                   # reduced head row -> token id
        self.config = config
        self.n_ctx = n_ctx
        self.cache: KVCache | None = None
        self.io = None
        self.origin = 0                      # conversation position of cache slot 0
        self.pending = np.zeros((0, config.hidden), np.float32)   # true states from position `fed` on

    @property
    def fed(self) -> int:
        """The first position whose true state the draft has not read."""
        return self.origin + (self.cache.offset[0] if self.cache is not None else 0)

    def observe(self, position: int, hidden: np.ndarray) -> None:
        """The full model's hidden states [S, H] for positions position..position+S-1."""
        if position > self.fed + len(self.pending) or position < self.fed:   # a gap, or a rewrite of read states
            self.reset(position)
        self.pending = np.concatenate([self.pending[: position - self.fed], np.asarray(hidden, np.float32)])

    def truncate(self, n: int) -> None:
        """Forget positions from n on."""
        if n < self.fed:
            if n <= self.origin:
                self.reset(n)
                return
            self.cache.truncate(n - self.origin)
            self.pending = self.pending[:0]
        else:
            self.pending = self.pending[: n - self.fed]

    def reset(self, origin: int = 0) -> None:
        self.origin = origin
        if self.cache is not None:
            self.cache.truncate(0)
        self.pending = self.pending[:0]

    def release(self) -> None:
        self.cache = self.io = None
        self.reset()

    def take_pending(self, tokens: list[int]) -> tuple[np.ndarray, list[int]]:
        """The pending states [1, m, H] and, for each, the next token (tokens[j] = the token at position j)."""
        f = self.fed
        h, self.pending = self.pending, self.pending[:0]
        return h[None], list(tokens[f + 1: f + 1 + len(h)])

    def step(self, hidden: np.ndarray, next_ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Feed rows (h_i, x_(i+1)) at the cache's end: the predicted next states [1, S, H] and the draft's
        logits over its vocabulary for the last row [N]."""
        if self.cache is None:
            self._bind()
        n, past = hidden.shape[1], self.cache.offset[0]    # positions stay below n_ctx (draft_round keeps k short)
        self.seqlens[0], self.total[()] = past + n - 1, past + n
        self.io.bind_cpu_input("hidden", np.ascontiguousarray(hidden, np.float32))
        self.io.bind_cpu_input("next_ids", np.asarray(next_ids, np.int64).reshape(1, -1))
        self.io.bind_output("hidden_out", "cpu")
        self.io.bind_output("logits", "cpu")
        self.session.run_with_iobinding(self.io)
        self.cache.advance(0, 1, n)
        out, logits = self.io.get_outputs()[2:]     # in binding order: present_key_0, present_value_0 first
        return out.numpy(), logits.numpy()[0, -1]

    def _bind(self) -> None:
        """Allocate the cache; bind its buffers as both past and present (written in place, as the
        runner's are) and the position inputs, once."""
        c = self.config
        self.cache = KVCache(1, c.n_kv_heads, c.head_dim, self.n_ctx + 1)
        self.io = self.session.io_binding()
        self.seqlens, self.total = np.zeros(1, np.int32), np.zeros((), np.int32)
        self.io.bind_ortvalue_input("seqlens_k", ort.OrtValue.ortvalue_from_numpy(self.seqlens))
        self.io.bind_ortvalue_input("total_seq_len", ort.OrtValue.ortvalue_from_numpy(self.total))
        for name, buf in (("key", self.cache.keys[0]), ("value", self.cache.values[0])):
            v = ort.OrtValue.ortvalue_from_numpy(buf)
            self.io.bind_ortvalue_input(f"past_{name}_0", v)
            self.io.bind_ortvalue_output(f"present_{name}_0", v)
