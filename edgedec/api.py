"""The Python API the CLI, a server or an app call: load a bundle, then generate or stream.

    model = edgedec.load("~/.cache/edgedec/SmolLM2-135M-Instruct-int4")
    result = model.generate("Write a haiku about rain", max_tokens=64)
    for r in model.stream_generate(messages=[{"role": "user", "content": "Hi"}]):
        print(r.text, end="")

The model keeps its KV cache between calls and reuses the longest common prefix of the new context, so a
chat turn prefills only the new message, never the history.
"""
from __future__ import annotations

import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from .bundle import default_bundle_path, read_manifest
from .errors import EdgedecError, ModeError
from .sampling import Sampler, SamplerConfig
from .strategies import SPECULATIVE, STRATEGIES, SpecConfig, SpecStats
from .strategies.policy import PathLedger
from .strategies.speculative import replay_lookup
from .tokenizer import StreamDecoder, Tokenizer

BACKENDS = ("onnxruntime", "llamacpp")


@dataclass
class Response:
    """One streamed step: a token and the text it completes (may be '' mid-character)."""
    text: str
    token: int | None
    source: str
    n_prompt_tokens: int
    n_new_tokens: int
    prefill_tok_s: float
    decode_tok_s: float
    finish_reason: str | None = None   # "stop" (eos or stop string), "length" (max tokens), "context" (full)
    notice: str | None = None          # something the user should know (e.g. the prompt was truncated)


@dataclass
class Result:
    text: str
    tokens: list[int]
    n_prompt_tokens: int
    n_new_tokens: int
    prefill_tok_s: float
    decode_tok_s: float
    finish_reason: str
    peak_rss_mb: float
    sources: dict[str, int] = field(default_factory=dict)
    notice: str | None = None
    speculation: dict | None = None    # speculative modes: acceptance_rate, n_verify_calls, ...

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d.update(d.pop("speculation") or {})
        return d


def load(bundle: str | Path | None = None, backend: str = "onnxruntime", threads: int = 2,
         n_ctx: int = 2048, verify: bool = True, exact: bool | None = None) -> "Model":
    return Model(bundle, backend=backend, threads=threads, n_ctx=n_ctx, verify=verify, exact=exact)


def _peak_rss_mb() -> float:
    """Peak RSS of this process (VmHWM; ru_maxrss would include a forking parent's peak)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Model:
    def __init__(self, bundle=None, backend: str = "onnxruntime", threads: int = 2, n_ctx: int = 2048,
                 verify: bool = True, exact: bool | None = None):
        """exact: run every ONNX call on the many-row kernel path (see runtimes/onnxruntime.py), so that
        one-token steps and batched verification agree bit for bit. None (auto): a speculative call either
        speculates on that path or, when what earlier calls measured says it would lose, decodes plainly
        on one-row kernels (`PathLedger`); from a cold cache, either way the call's output is token for token
        that of one of the two plain paths."""
        if threads < 1:
            raise EdgedecError("--threads must be at least 1")
        self.bundle = read_manifest(bundle or default_bundle_path(), verify_checksums=verify)
        self.tokenizer = Tokenizer(self.bundle)
        if backend == "onnxruntime":
            from edgedec.runtimes.onnxruntime import OrtModel
            self.backend = OrtModel(self.bundle, threads=threads, n_ctx=n_ctx, min_rows=2 if exact else 1)
        elif backend == "llamacpp":
            from edgedec.runtimes.llamacpp import LlamaCppModel
            self.backend = LlamaCppModel(self.bundle, threads=threads, n_ctx=n_ctx)
        else:
            raise ModeError(f"backend '{backend}' is unknown; choose one of {', '.join(BACKENDS)}")
        self.backend_name = backend
        self.exact = exact
        self.paths = PathLedger()
        self.n_ctx = n_ctx
        self.last_stats: SpecStats | None = None
        self.context: list[int] = []   # tokens whose KV the backend holds: context[:backend.length]

    # ------------------------------------------------------------ prompt handling

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

    def reset(self) -> None:
        self.backend.truncate(0)
        self.context = []

    def _reuse_prefix(self, ids: list[int]) -> list[int]:
        """Keep the cached prefix that `ids` shares; return the tokens still to feed (at least one)."""
        cached = self.context[: self.backend.length]
        n = 0
        limit = min(len(cached), len(ids) - 1)          # always feed >= 1 token to get fresh logits
        while n < limit and cached[n] == ids[n]:
            n += 1
        self.backend.truncate(n)
        self.context = list(ids)
        return ids[n:]

    # ------------------------------------------------------------ generation

    def stream_generate(self, prompt: str | list[int] | None = None, *, messages: list[dict] | None = None,
                        system: str | None = None, chat: bool = True, max_tokens: int = 256,
                        sampler: SamplerConfig | None = None, stop: tuple[str, ...] = (),
                        mode: str = "plain", spec: SpecConfig | None = None) -> Iterator[Response]:
        if mode not in STRATEGIES:
            raise ModeError(f"mode '{mode}' is not available; modes: {', '.join(STRATEGIES)}")
        if mode != "plain" and self.backend_name != "onnxruntime":
            raise ModeError(f"the {self.backend_name} backend cannot run --mode {mode}; it runs: plain "
                            f"(use --backend onnxruntime for {', '.join(SPECULATIVE)})")
        spec = spec or self.default_spec()
        spec.check(self.bundle.config.n_layers, self.bundle.cuts)
        path = "plain"    # speculative modes: "speculate", or "plain" when the ledger says speculating would lose
        if mode in SPECULATIVE:
            path = self.paths.choose(mode) if self.exact is None and spec.adaptive else "speculate"
        if self.backend_name == "onnxruntime":
            self.backend.min_rows = 2 if (self.exact if self.exact is not None else path == "speculate") else 1
        stats = self.last_stats = SpecStats(path=path)
        if max_tokens < 1:
            raise EdgedecError("--max-tokens must be at least 1")
        ids = list(prompt) if isinstance(prompt, list) else self.encode_prompt(prompt, messages, system, chat)
        notice = None
        room = self.n_ctx - 1
        if len(ids) > room:
            keep = max(1, room - min(max_tokens, room // 2))
            notice = (f"the prompt has {len(ids)} tokens but the context holds {self.n_ctx}; "
                      f"kept its last {keep} tokens (raise --ctx to keep more)")
            ids = ids[-keep:]
        sample = Sampler(sampler or SamplerConfig())
        n_prompt = len(ids)
        history = list(ids)
        decoder = StreamDecoder(self.tokenizer)
        pending = ""                # text held back while it might be the start of a stop string
        t0 = time.perf_counter()
        t_first = None
        n_new = 0
        steps = STRATEGIES[mode if path == "speculate" else "plain"](self.backend, self._reuse_prefix(ids), sample,
                                                                     history, spec, stats)
        try:
            for step in steps:
                now = time.perf_counter()
                if t_first is None:
                    t_first = now
                n_new += 1
                self.context.append(step.token)
                prefill = n_prompt / max(t_first - t0, 1e-9)
                decode = (n_new - 1) / (now - t_first) if n_new > 1 else 0.0
                finish = None
                if step.token in self.tokenizer.eos_ids:
                    finish, piece = "stop", decoder.flush()
                else:
                    piece = decoder.push(step.token)
                pending += piece
                cut = _find_stop(pending, stop)
                if cut is not None:
                    pending, finish = pending[:cut], "stop"
                elif finish is None and n_new >= max_tokens:
                    finish = "length"
                elif finish is None and self.backend.length + 1 >= self.n_ctx:
                    finish, notice = "context", f"the context ({self.n_ctx} tokens) is full; raise --ctx or /reset"
                if finish is not None:
                    pending += decoder.flush() if finish != "stop" else ""
                    text, pending = pending, ""
                else:
                    hold = _stop_prefix_len(pending, stop)
                    text, pending = pending[: len(pending) - hold], pending[len(pending) - hold:]
                yield Response(text, step.token, step.source, n_prompt, n_new, prefill, decode, finish, notice)
                notice = None
                if finish is not None:
                    return
        finally:
            steps.close()
            self.context = self.context[: self.backend.length]
            if path == "plain" and mode in SPECULATIVE:
                stats.n_plain_steps = max(n_new - 1, 0)
            if n_new > 8 and self.backend_name == "onnxruntime" and self.exact is None:
                rate = (n_new - 1) / (now - t_first)
                if path == "speculate":
                    self.paths.observe_speculation(mode, rate, stats.t_plain, stats.row_cost)
                elif mode in SPECULATIVE:
                    replayed = replay_lookup(history, n_prompt, self.paths.row_cost, ngram_max=spec.ngram_max)
                    self.paths.observe_plain(mode, rate, replayed)
                else:
                    self.paths.observe_plain(None, rate)

    def generate(self, prompt=None, **kw) -> Result:
        text, tokens, last, sources = [], [], None, {}
        notice = None
        for r in self.stream_generate(prompt, **kw):
            text.append(r.text)
            tokens.append(r.token)
            sources[r.source] = sources.get(r.source, 0) + 1
            notice = notice or r.notice
            last = r
        speculation = self.last_stats.to_dict() if kw.get("mode", "plain") != "plain" else None
        return Result("".join(text), tokens, last.n_prompt_tokens, last.n_new_tokens, last.prefill_tok_s,
                      last.decode_tok_s, last.finish_reason, _peak_rss_mb(), sources, notice, speculation)

    def default_spec(self) -> SpecConfig:
        """The bundle's tuned speculation settings (`edgedec tune`), else the built-in defaults."""
        tuned = self.bundle.manifest.get("defaults", {}).get("self-spec", {})
        return SpecConfig(**{k: v for k, v in tuned.items() if k in SpecConfig.__dataclass_fields__})


def _find_stop(text: str, stops) -> int | None:
    hits = [text.find(s) for s in stops if s and s in text]
    return min(hits) if hits else None


def _stop_prefix_len(text: str, stops) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of a stop string."""
    best = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:n]):
                best = n
                break
    return best
