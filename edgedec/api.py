"""The Python API the CLI, a server or an app call: load a bundle once, then talk to it in sessions.

    model = edgedec.load("~/.cache/edgedec/SmolLM2-135M-Instruct-int4")
    chat = model.session()                    # one conversation: its KV cache, history and stats
    for r in chat.stream_generate(messages=[{"role": "user", "content": "Hi"}]):
        print(r.text, end="")
    model.generate("Write a haiku about rain", max_tokens=64)   # the model's default session

A Model holds what is loaded once: the graphs and weights (the backend's engine) and the tokenizer. A
Session (session.py) holds one conversation; many can live on one Model, and each costs only its KV
cache. `Model.generate`, `stream_generate`, `reset` and `backend` act on a default session.
"""
from __future__ import annotations

from pathlib import Path

from .bundle import default_bundle_path, read_bundle
from .errors import AdapterError, EdgedecError, ModeError
from .kvcache import KVConfig, cache_type
from .session import Response, Result, Session, SessionStats  # noqa: F401  (the records)
from .strategies import MODES
from .tokenizer import Tokenizer

BACKENDS = ("onnxruntime", "llamacpp")


def load(bundle: str | Path | None = None, backend: str = "onnxruntime", threads: int = 2,
         n_ctx: int = 2048, verify: bool = True, exact: bool | None = None, kv: str | None = None,
         kv_window: int | None = None, kv_sinks: int | None = None, adapter: str | None = None) -> "Model":
    """Load a bundle (default: the default model's) on a backend. See `Model`."""
    return Model(bundle, backend=backend, threads=threads, n_ctx=n_ctx, verify=verify, exact=exact, kv=kv,
                 kv_window=kv_window, kv_sinks=kv_sinks, adapter=adapter)


def _engine(bundle, backend: str, threads: int, n_ctx: int, kv: KVConfig, adapter: str | None):
    if backend == "onnxruntime":
        from edgedec.runtimes.onnxruntime import OrtEngine
        return OrtEngine(bundle, threads=threads, kv=kv)
    if backend == "llamacpp":
        from edgedec.runtimes.llamacpp import LlamaCppEngine
        return LlamaCppEngine(bundle, threads=threads, n_ctx=n_ctx, kv=kv, adapter=adapter)
    raise ModeError(f"$backend '{backend}' is unknown; choose one of {', '.join(BACKENDS)}")


class Model:
    def __init__(self, bundle=None, backend: str = "onnxruntime", threads: int = 2, n_ctx: int = 2048,
                 verify: bool = True, exact: bool | None = None, kv: str | None = None, kv_window: int | None = None,
                 kv_sinks: int | None = None, adapter: str | None = None):
        """adapter: the switchable LoRA adapter sessions use unless a call names another (`adapters` lists
        them; the llama.cpp backend applies it when it loads and cannot switch). n_ctx: positions each session's cache holds. kv: the cache type (fp32, fp16, int8, int4; None:
        fp32, or the one a mobile bundle's graphs hold);
        kv_window, kv_sinks: when the cache is full, keep its first kv_sinks (default 4) and last kv_window
        positions, and go on (kvcache.py). exact: the row path of speculative calls
        (strategies/path.py): True always speculates with every step on the many-row kernels, so that
        one-token steps and batched verification agree bit for bit; False speculates with plain steps on
        one-row kernels; None (auto) lets each session decide per call from what it measured."""
        if threads < 1:
            raise EdgedecError("$threads must be at least 1")
        self.bundle = read_bundle(bundle or default_bundle_path(), verify_checksums=verify)
        self.kv = KVConfig(cache_type(self.bundle.manifest, kv), kv_window, kv_sinks).check(n_ctx)
        self.tokenizer = Tokenizer(self.bundle)
        self.adapters = [a.name for a in self.bundle.manifest.adapters if not a.merged]
        self.adapter = self.check_adapter(adapter)
        self.engine = _engine(self.bundle, backend, threads, n_ctx, self.kv, self.adapter)
        self.backend_name = backend
        self.n_ctx = n_ctx
        self.exact = exact
        self._default: Session | None = None
        self.engine.runner(n_ctx)        # check n_ctx against the model now, not at the first session

    def check_adapter(self, name: str | None) -> str | None:
        """`name` if the bundle has that switchable adapter (None: the base model), else a one-line error."""
        if name is None or name in self.adapters:
            return name
        merged = [a.name for a in self.bundle.manifest.adapters if a.merged]
        has = ", ".join(self.adapters) if self.adapters else "none"
        extra = f" ({', '.join(merged)} is merged into the weights: always on)" if merged else ""
        raise AdapterError(f"$adapter '{name}' is not in this bundle; its switchable adapters: {has}{extra}. "
                           "Add one with edgedec export --lora PATH=NAME")

    @property
    def kv_bytes_per_token(self) -> float:
        """Cache bytes one position takes with this model's cache type."""
        return self.engine.kv_bytes_per_token

    def session(self) -> Session:
        """A new conversation on this model, with an empty KV cache."""
        return Session(self)

    def batcher(self, slots: int = 8, n_ctx: int | None = None, prefill_chunk: int = 256):
        """Many requests decoded together, one graph call per step (edgedec/batching.py); each row holds
        `n_ctx` positions (default: the model's)."""
        from .batching import Batcher
        return Batcher(self, slots, n_ctx, prefill_chunk)

    @property
    def default_session(self) -> Session:
        if self._default is None:
            self._default = Session(self)
        return self._default

    # the default session, for one-conversation use
    def generate(self, prompt=None, **kw) -> Result:
        return self.default_session.generate(prompt, **kw)

    def stream_generate(self, prompt=None, **kw):
        return self.default_session.stream_generate(prompt, **kw)

    def reset(self) -> None:
        self.default_session.reset()

    @property
    def backend(self):
        """The default session's runner (runtimes/contract.py)."""
        return self.default_session.backend

    def encode_prompt(self, prompt: str | None = None, messages: list[dict] | None = None,
                      system: str | None = None, chat: bool = True) -> list[int]:
        """Token ids for a raw prompt (chat-formatted as one user turn when `chat`) or a message list."""
        if messages is None:
            if prompt is None:
                raise EdgedecError("nothing to generate from: give a prompt or messages")
            if not chat:
                return self.tokenizer.encode(prompt)
            messages = ([{"role": "system", "content": system}] if system else []) + \
                [{"role": "user", "content": prompt}]
        return self.tokenizer.encode(self.tokenizer.render_chat(messages))

    def default_config(self, mode: str):
        """The mode's config: the bundle's tuned settings (`edgedec-tune`) where it has them, else the
        built-in defaults."""
        if mode not in MODES:
            raise ModeError(f"$mode '{mode}' is not available; modes: {', '.join(MODES)}")
        cls = MODES[mode].config
        if mode == "self-spec" and self.bundle.manifest.defaults.self_spec is not None:
            tuned = self.bundle.manifest.defaults.self_spec
            return cls(**{k: getattr(tuned, k) for k in ("exit_layer", "k_max", "threshold")
                          if getattr(tuned, k) is not None})
        return cls()
