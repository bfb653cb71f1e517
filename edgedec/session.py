"""A Session is one conversation on a loaded Model: its token history, its KV cache (the backend's runner),
its path ledger and its stats. The weights belong to the Model and are shared; a session costs only its
cache.

    model = edgedec.load()
    alice, bob = model.session(), model.session()
    alice.generate(messages=[...]); bob.generate(messages=[...]); alice.generate(messages=[...])

Each call reuses the longest common prefix of the new context with what the session's cache holds, so a
chat turn prefills only the new message, never the history.

Threads. Sessions may be used from several threads at once, one thread per session: the model runs one
backend call at a time (its engine's lock), so concurrent sessions take turns call by call and share the
cores, and their outputs are exactly what each would give alone. A session is one conversation: asking it
for a second stream while its first is still open, from any thread, raises SessionBusyError.
"""
from __future__ import annotations

import resource
import threading
import time
from dataclasses import dataclass, field
from typing import Iterator

from .errors import EdgedecError, ModeError, Notice, SessionBusyError
from .kvcache import shared_prefix
from .sampling import Sampler, SamplerConfig
from .strategies import MODES, SpecStats
from .strategies.path import PathLedger, learn, plan_call
from .tokenizer import TextStream


@dataclass
class Response:
    """One streamed step: a token and the text it completes (may be '' mid-character)."""
    text: str
    token: int | None
    source: str                        # where the token came from: plain, verify, lookup, self@E (Step.origin)
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
    kv_bytes: int = 0                  # cache memory the conversation's positions occupy after this call
    kv_bytes_per_token: float = 0.0
    sources: dict[str, int] = field(default_factory=dict)   # origin -> tokens (Step.origin)
    notice: str | None = None
    speculation: dict | None = None    # speculative modes: acceptance_rate, n_verify_calls, ...

    @property
    def source_shares(self) -> dict[str, float]:
        n = sum(self.sources.values())
        return {k: v / n for k, v in self.sources.items()} if n else {}

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d.update(d.pop("speculation") or {})
        d["source_shares"] = self.source_shares
        return d


@dataclass(frozen=True)
class SessionStats:
    turns: int                       # calls that produced tokens
    context_tokens: int              # positions the cache holds
    n_ctx: int
    cache_bytes: int                 # memory the session's KV cache buffers hold now (allocated for n_ctx)
    kv_bytes: int                    # of which the positions held occupy
    kv_bytes_per_token: float
    evicted: int                     # positions dropped by eviction so far
    last: Result | None              # the last call's result
    speculation: dict | None         # the last speculative call's counters (SpecStats.to_dict)


def peak_rss_mb() -> float:
    """Peak RSS of this process (VmHWM; ru_maxrss would include a forking parent's peak)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Session:
    def __init__(self, model):
        self.model = model
        self.backend = model.engine.runner(model.n_ctx)   # this conversation's runner: its KV cache
        self.backend.use_adapter(model.adapter)
        self.context: list[int] = []     # tokens whose KV the runner holds: context[:backend.length]
        self.paths = PathLedger()
        self.last_stats: SpecStats | None = None
        self.last_result: Result | None = None
        self.turns = 0
        self._streaming = threading.Lock()

    @property
    def stats(self) -> SessionStats:
        b = self.backend
        return SessionStats(self.turns, b.length, self.model.n_ctx, b.cache_bytes, b.kv_bytes,
                            self.model.kv_bytes_per_token, b.evicted, self.last_result,
                            self.last_stats.to_dict() if self.last_stats else None)

    def reset(self) -> None:
        """Forget the conversation and free its KV cache (the next call allocates a fresh one)."""
        self.backend.release()
        self.context = []

    close = reset

    def _reuse_prefix(self, ids: list[int]) -> list[int]:
        """Keep the cached prefix that `ids` shares; return the tokens still to feed (at least one)."""
        self.backend.truncate(shared_prefix(self.context[: self.backend.length], ids))
        n = self.backend.length          # less than the shared prefix when it ends among evicted positions
        self.context = list(ids)
        return ids[n:]

    def _fit(self, ids: list[int], max_tokens: int) -> tuple[list[int], Notice | None]:
        """The prompt, cut to its last tokens when it does not fit the context, and what was done."""
        n_ctx = self.model.n_ctx
        room = n_ctx - 1
        if len(ids) <= room or self.model.kv.evicts:
            return ids, None
        keep = max(1, room - min(max_tokens, room // 2))
        return ids[-keep:], Notice(f"the prompt has {len(ids)} tokens but the context holds {n_ctx}; "
                                   f"kept its last {keep} tokens (raise $n_ctx to keep more)")

    def stream_generate(self, prompt: str | list[int] | None = None, *, messages: list[dict] | None = None,
                        system: str | None = None, chat: bool = True, max_tokens: int = 256,
                        sampler: SamplerConfig | None = None, stop: tuple[str, ...] = (),
                        mode: str = "plain", spec=None, ignore_eos: bool = False,
                        adapter=...) -> Iterator[Response]:
        """Stream the answer to a prompt (raw text or token ids) or a message list, token by token.

        mode: plain, self-spec or lookup; spec: that mode's config (PlainConfig, SelfSpecConfig,
        LookupConfig), by default the bundle's tuned one. ignore_eos: go on to max_tokens past the model's
        end of turn (endurance runs, as llama.cpp's --ignore-eos). adapter: the bundle's switchable LoRA
        adapter to run with, None for the base model (default: the model's, `load(adapter=...)`); changing
        it drops the cached conversation, since the cache holds the other adapter's keys and values."""
        model = self.model
        adapter = model.adapter if adapter is ... else model.check_adapter(adapter)
        if mode not in MODES:
            raise ModeError(f"$mode '{mode}' is not available; modes: {', '.join(MODES)}")
        if not isinstance(self.backend, MODES[mode].needs):
            hint = getattr(self.backend, "layered_hint", f"use the onnxruntime backend for {mode}")
            raise ModeError(f"the {self.backend.name} backend cannot run $mode {mode} here; it runs: plain ({hint})")
        spec = spec if spec is not None else model.default_config(mode)
        if not isinstance(spec, MODES[mode].config):
            raise ModeError(f"$mode {mode} takes a {MODES[mode].config.__name__}, not a {type(spec).__name__}")
        spec.check(model.bundle.config.n_layers, model.bundle.cuts)
        if max_tokens < 1:
            raise EdgedecError("$max_tokens must be at least 1")
        ids = list(prompt) if isinstance(prompt, list) else model.encode_prompt(prompt, messages, system, chat)
        return self._stream(ids, max_tokens, Sampler(sampler or SamplerConfig()), tuple(stop), mode, spec,
                            ignore_eos, adapter)

    def _stream(self, ids, max_tokens, sample, stop, mode, spec, ignore_eos, adapter) -> Iterator[Response]:
        if not self._streaming.acquire(blocking=False):
            raise SessionBusyError("this session is still streaming its previous answer; finish or close that "
                                   "stream first, or use model.session() for another conversation")
        try:
            if adapter != self.backend.adapter:      # the cache holds the other adapter's keys and values
                self.backend.use_adapter(adapter)
                self.backend.truncate(0)
                self.context = []
            yield from self._decode(ids, max_tokens, sample, stop, mode, spec, ignore_eos)
        finally:
            self._streaming.release()

    def _decode(self, ids, max_tokens, sample, stop, mode, spec, ignore_eos) -> Iterator[Response]:
        plan = plan_call(self.paths, self.backend, mode, getattr(spec, "adaptive", False), self.model.exact)
        self.backend.min_rows = plan.min_rows
        stats = SpecStats(path=plan.path)
        if mode != "plain":
            self.last_stats = stats
        ids, notice = self._fit(ids, max_tokens)
        n_ctx, eos = self.model.n_ctx, (() if ignore_eos else self.model.tokenizer.eos_ids)
        evicted = self.backend.evicted
        n_prompt, history = len(ids), list(ids)
        stream = TextStream(self.model.tokenizer, stop)
        t0 = time.perf_counter()
        t_first = now = None
        n_new = 0
        steps = MODES[plan.strategy].run(self.backend, self._reuse_prefix(ids), sample, history,
                                         spec if plan.strategy == mode else None, stats)
        try:
            for step in steps:
                now = time.perf_counter()
                if t_first is None:
                    t_first = now
                n_new += 1
                self.context.append(step.token)
                prefill = n_prompt / max(t_first - t0, 1e-9)
                decode = (n_new - 1) / (now - t_first) if n_new > 1 else 0.0
                stopped = stream.push(step.token, eos=step.token in eos)
                finish = "stop" if stopped else None
                if finish is None and n_new >= max_tokens:
                    finish = "length"
                elif finish is None and self.backend.length + 1 >= n_ctx and not self.model.kv.evicts:
                    finish, notice = "context", Notice(f"the context ({n_ctx} tokens) is full; raise $n_ctx, "
                                                       "set $kv_window to evict, or reset the conversation")
                if not evicted and self.backend.evicted:
                    evicted, kv = 1, self.model.kv
                    notice = notice or Notice(f"the context ({n_ctx} tokens) filled: from now on the model sees "
                                              f"the first {kv.sinks} tokens and the last {kv.window} or more")
                text = stream.take(final=finish is not None, stopped=stopped)
                yield Response(text, step.token, step.origin, n_prompt, n_new, prefill, decode, finish, notice)
                notice = None
                if finish is not None:
                    return
        finally:
            steps.close()
            self.context = self.context[: self.backend.length]
            self.turns += n_new > 0
            if plan.path == "plain" and mode != "plain":
                stats.n_plain_steps = max(n_new - 1, 0)
            if n_new > 8:
                learn(self.paths, plan, mode, (n_new - 1) / (now - t_first), stats, history, n_prompt,
                      getattr(spec, "ngram_max", 8))

    def generate(self, prompt=None, **kw) -> Result:
        """The whole answer at once: stream_generate's arguments, one Result."""
        text, tokens, last, sources = [], [], None, {}
        notice = None
        for r in self.stream_generate(prompt, **kw):
            text.append(r.text)
            tokens.append(r.token)
            sources[r.source] = sources.get(r.source, 0) + 1
            notice = notice or r.notice
            last = r
        speculation = self.last_stats.to_dict() if kw.get("mode", "plain") != "plain" else None
        self.last_result = Result("".join(text), tokens, last.n_prompt_tokens, last.n_new_tokens,
                                  last.prefill_tok_s, last.decode_tok_s, last.finish_reason, peak_rss_mb(),
                                  self.backend.kv_bytes, self.model.kv_bytes_per_token, sources, notice,
                                  speculation)
        return self.last_result

