"""llama.cpp backend: plain decoding on the bundle's GGUF through llama-cpp-python, behind the same
forward / length / truncate interface as the ONNX Runtime backend. Also the speed peer in `bench`."""
from __future__ import annotations

import numpy as np

from edgedec.errors import BundleError, ContextOverflowError, ModeError


def _llama_cpp():
    try:
        import llama_cpp
    except ImportError:
        raise ModeError("the llamacpp backend needs llama-cpp-python: pip install 'edgedec[llamacpp]'") from None
    return llama_cpp


class LlamaCppModel:
    name = "llamacpp"
    modes = ("plain",)

    def __init__(self, bundle, threads: int = 2, n_ctx: int = 2048, flash_attn: bool = True,
                 logits_all: bool = False):
        if bundle.gguf is None:
            raise BundleError(f"{bundle.path} has no GGUF (exported from a Hugging Face folder); "
                              "use --backend onnxruntime, or export from a .gguf file")
        llama_cpp = _llama_cpp()
        self.config = bundle.config
        self.n_ctx = n_ctx
        self.logits_all = logits_all
        self.llm = llama_cpp.Llama(model_path=str(bundle.gguf), n_ctx=n_ctx, n_threads=threads,
                                   n_threads_batch=threads, n_batch=512, flash_attn=flash_attn,
                                   logits_all=logits_all, verbose=False)

    @property
    def length(self) -> int:
        return self.llm.n_tokens

    def truncate(self, n: int) -> None:
        if n < self.llm.n_tokens:
            self.llm.n_tokens = n   # Llama.eval() removes cached positions >= n_tokens before decoding

    def forward(self, tokens, all_logits: bool = False) -> np.ndarray:
        tokens = [int(t) for t in tokens]
        if self.llm.n_tokens + len(tokens) > self.n_ctx:
            raise ContextOverflowError(f"{self.llm.n_tokens + len(tokens)} positions do not fit the "
                                       f"{self.n_ctx}-token context; use /reset, a shorter prompt, or a larger --ctx")
        start = self.llm.n_tokens
        self.llm.eval(tokens)
        if self.logits_all:
            rows = self.llm.scores[start:self.llm.n_tokens] if all_logits else self.llm.scores[self.llm.n_tokens - 1:]
            return np.array(rows[: self.llm.n_tokens - start], np.float32)
        if all_logits:
            raise ModeError("logits for every position need LlamaCppModel(..., logits_all=True)")
        # without logits_all, llama-cpp-python keeps only the last position's logits in the context
        last = np.ctypeslib.as_array(self.llm._ctx.get_logits(), shape=(self.config.vocab,))
        return last.astype(np.float32)[None, :]
