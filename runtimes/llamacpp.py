"""llama.cpp backend: plain decoding on the bundle's GGUF through llama-cpp-python, behind the same Runner
contract as the ONNX Runtime backend (runtimes/contract.py). Also the speed peer in the benchmarks.

`LlamaCppEngine` loads the GGUF once, into one llama.cpp context. Sessions take turns in it: before a
runner decodes, the context's previous owner's KV state is saved (`Llama.save_state`) and this runner's
is loaded (`Llama.load_state`). A switch between conversations therefore copies their KV state, which
costs little for a small model and nothing when one conversation runs at a time.
"""
from __future__ import annotations

import threading

import numpy as np

from edgedec.errors import BundleError, ContextOverflowError, ModeError
from edgedec.kvcache import KVConfig

from .draft_model import DraftModel, draft_bundle

# our cache types -> llama.cpp's (ggml_type): its own default is f16; int8/int4 are its q8_0/q4_0 blocks
# (32 values and one f16 scale: 8.5 and 4.5 bits a value), which need flash attention
GGML_TYPES = {"fp32": 0, "fp16": 1, "int8": 8, "int4": 2}
GGML_BYTES = {"fp32": 4.0, "fp16": 2.0, "int8": 34 / 32, "int4": 18 / 32}


def _llama_cpp():
    try:
        import llama_cpp
    except ImportError:
        raise ModeError("the llamacpp backend needs llama-cpp-python: pip install 'edgedec[llamacpp]'") from None
    return llama_cpp


class LlamaCppEngine:
    name = "llamacpp"

    def __init__(self, bundle, threads: int = 2, n_ctx: int = 2048, flash_attn: bool = True,
                 logits_all: bool = False, kv: KVConfig = KVConfig(), adapter: str | None = None):
        """adapter: the bundle's switchable LoRA to apply (its GGUF LoRA; merged adapters always apply)."""
        if bundle.gguf is None:
            raise BundleError(f"{bundle.path} has no GGUF (exported from a Hugging Face folder); "
                              "use the onnxruntime backend, or export from a .gguf file")
        if kv.evicts:
            raise ModeError("the llamacpp backend cannot evict from its cache here (llama-cpp-python's Llama "
                            "has no context shift); use --backend onnxruntime for $kv_window")
        if kv.type in ("int8", "int4") and not flash_attn:
            raise ModeError(f"llama.cpp's {kv.type} cache (q8_0/q4_0) needs flash attention")
        llama_cpp = _llama_cpp()
        self.llama_cpp = llama_cpp
        self.config = bundle.config
        self.n_ctx = n_ctx
        self.kv = kv
        c = self.config
        self.kv_bytes_per_token = 2 * c.n_layers * c.n_kv_heads * c.head_dim * GGML_BYTES[kv.type]
        self.logits_all = logits_all
        self.adapter = adapter
        loras = [a for a in bundle.manifest.adapters if a.merged or a.name == adapter]
        if len(loras) > 1:
            raise ModeError(f"the llamacpp backend applies one LoRA at a time, and this call needs "
                            f"{', '.join(a.name for a in loras)}; use the onnxruntime backend")
        self.llm = llama_cpp.Llama(model_path=str(bundle.gguf), n_ctx=n_ctx, n_threads=threads,
                                   n_threads_batch=threads, n_batch=512, flash_attn=flash_attn,
                                   logits_all=logits_all, type_k=GGML_TYPES[kv.type],
                                   type_v=GGML_TYPES[kv.type], verbose=False,
                                   lora_path=str(bundle.file(loras[0].gguf)) if loras else None)
        self.lock = threading.Lock()
        self.owner: LlamaCppRunner | None = None
        self._draft = (bundle, threads, n_ctx)
        self._draft_engine: LlamaCppEngine | None = None

    def draft_engine(self) -> "LlamaCppEngine | None":
        """The bundle's separate draft model on llama.cpp (its own context), loaded on first use."""
        bundle, threads, n_ctx = self._draft
        if self._draft_engine is None and bundle.manifest.draft_model is not None:
            draft = draft_bundle(bundle)
            if draft.gguf is None:
                raise ModeError(f"{draft.path}: the draft model has no GGUF (it came from a Hugging Face "
                                "folder); use the onnxruntime backend for $mode speculative")
            self._draft_engine = LlamaCppEngine(draft, threads, n_ctx)
        return self._draft_engine

    def runner(self, n_ctx: int | None = None, min_rows: int = 1) -> "LlamaCppRunner":
        n_ctx = n_ctx or self.n_ctx
        if not 1 <= n_ctx <= self.n_ctx:
            raise ModeError(f"$n_ctx {n_ctx} is out of range; this llama.cpp context holds 1..{self.n_ctx}")
        return LlamaCppRunner(self, n_ctx)


class LlamaCppRunner:
    name = "llamacpp"
    row_paths = (1,)      # llama.cpp's batched and one-token calls are its own business: one path here
    min_rows = 1

    def __init__(self, engine: LlamaCppEngine, n_ctx: int):
        self.engine = engine
        self.config = engine.config
        self.n_ctx = n_ctx
        self._length = 0
        self._state = None      # this runner's saved KV state while another runner owns the context
        self._draft_model: DraftModel | None = None

    def draft_model(self) -> DraftModel | None:
        """The bundle's separate draft model for this conversation (None without one)."""
        if self._draft_model is None:
            self._draft_model = DraftModel.of(self.engine, self.n_ctx)
        return self._draft_model

    def _all_logits(self, tokens: list[int]) -> np.ndarray:
        """Logits for every new position without the context's logits_all buffer ([n_ctx, vocab] floats
        for the whole context): each batch asks llama.cpp for every row's logits, as Llama.eval does with
        logits_all (llama-cpp-python's own batch and context objects; the version is pinned)."""
        llm, rows = self.engine.llm, []
        llm._ctx.kv_cache_seq_rm(-1, llm.n_tokens, -1)
        for i in range(0, len(tokens), llm.n_batch):
            batch = tokens[i:i + llm.n_batch]
            llm._batch.set_batch(batch=batch, n_past=llm.n_tokens, logits_all=True)
            llm._ctx.decode(llm._batch)
            rows.append(np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(len(batch), self.config.vocab)).copy())
            llm.input_ids[llm.n_tokens:llm.n_tokens + len(batch)] = batch
            llm.n_tokens += len(batch)
        self._length = llm.n_tokens
        return np.concatenate(rows).astype(np.float32)

    @property
    def adapter(self) -> str | None:
        return self.engine.adapter

    def use_adapter(self, name: str | None) -> None:
        if name != self.engine.adapter:
            loaded = self.engine.adapter or "none"
            raise ModeError(f"the llamacpp backend applies its LoRA when the model loads ({loaded} here); load "
                            f"with $adapter {name or 'none'}, or use the onnxruntime backend")

    def _activate(self) -> None:
        """Make the shared context hold this runner's KV state (call with the engine's lock held)."""
        e = self.engine
        if e.owner is not self:
            if e.owner is not None:
                e.owner._state = e.llm.save_state() if e.owner._length else None
            if self._state is not None:
                e.llm.load_state(self._state)
                self._state = None
            e.owner = self
        e.llm.n_tokens = self._length   # Llama.eval() drops cached positions >= n_tokens before decoding

    @property
    def length(self) -> int:
        return self._length

    @property
    def cache_bytes(self) -> int:
        """K and V for the positions held, in llama.cpp's cache type (the context's buffers are shared by all
        runners)."""
        return self.kv_bytes

    evicted = 0           # this backend never evicts (LlamaCppEngine refuses a window)

    @property
    def kv_bytes(self) -> int:
        return int(self._length * self.engine.kv_bytes_per_token)

    def truncate(self, n: int) -> None:
        self._length = min(self._length, n)

    def release(self) -> None:
        self._length, self._state = 0, None
        if self._draft_model is not None:
            self._draft_model.release()

    def forward(self, tokens, all_logits: bool = False) -> np.ndarray:
        tokens = [int(t) for t in tokens]
        if self._length + len(tokens) > self.n_ctx:
            raise ContextOverflowError(f"{self._length + len(tokens)} positions do not fit the {self.n_ctx}-token "
                                       "context; reset the conversation, shorten the prompt, or raise $n_ctx")
        llm = self.engine.llm
        with self.engine.lock:
            self._activate()
            start = self._length
            if all_logits and not self.engine.logits_all:
                return self._all_logits(tokens)
            llm.eval(tokens)
            self._length = llm.n_tokens
            if self.engine.logits_all:
                first = start if all_logits else self._length - 1
                return np.array(llm.scores[first:self._length], np.float32)
            # without logits_all, llama.cpp keeps only the last position's logits
            last = self.engine.llama_cpp.llama_get_logits(llm.ctx)
            return np.ctypeslib.as_array(last, shape=(self.config.vocab,)).astype(np.float32)[None, :]
