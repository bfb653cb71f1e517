"""Continuous batching: many requests decoded together on one model, one graph call per step.

    batcher = model.batcher(slots=8)
    ticket = batcher.submit(Request(prompt="Name three rivers", max_tokens=64))
    while not batcher.idle:
        for event in batcher.step():        # one token for every sequence that is decoding
            print(event.ticket.id, event.text, event.finish_reason)

Each `step()`:
  1. admits waiting requests into free rows and prefills up to `prefill_chunk` prompt tokens, across as
     many of them as that covers (one call per prompt piece), so requests that arrive together start
     decoding together, and a long prompt never stalls the others for long;
  2. runs one batched decoding step for every sequence whose prompt is in (runtimes/ort_batch.py);
  3. samples each sequence's next token with its own sampler, checks its own stop strings and token limit,
     and frees the rows of finished and cancelled sequences.

Rows 0..d-1 hold the decoding sequences and row d the one being prefilled; when a sequence leaves, the
last decoding one moves into its row, so a step always reads a contiguous block of rows. Each sequence's
greedy output is its solo plain output (one-row kernels), token for token. Plain decoding only; the cache
types of the KV issue work, eviction and the speculative and lossy modes do not (they are per sequence).
"""
from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from .errors import EdgedecError
from .sampling import Sampler, SamplerConfig
from .tokenizer import TextStream


@dataclass
class Request:
    prompt: str | list[int] | None = None        # raw text (chat-formatted unless chat=False) or token ids
    messages: list[dict] | None = None
    system: str | None = None
    chat: bool = True
    max_tokens: int = 256
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False
    id: Any = None


def chat_messages(value) -> list[dict] | None:
    """A request's "messages" as [{role, content}] (extra fields dropped), or None when it is not a
    non-empty list of objects with string role and content."""
    if not (isinstance(value, list) and value and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in value)):
        return None
    return [{"role": m["role"], "content": m["content"]} for m in value]


def stop_strings(value) -> tuple[str, ...] | None:
    """A request's "stop" (absent, one string or a list of strings) as a tuple, or None when malformed."""
    stop = (value,) if isinstance(value, str) else (value or ())
    if not isinstance(stop, (list, tuple)) or not all(isinstance(s, str) for s in stop):
        return None
    return tuple(stop)


@dataclass
class Ticket:
    """A submitted request and what it has produced so far."""
    request: Request
    id: Any
    ids: list[int]                               # the prompt's tokens
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: str | None = None             # stop, length, context, cancelled
    # decoding state
    row: int | None = None
    fed: int = 0                                 # prompt tokens prefilled so far
    sampler: Sampler | None = None
    stream: TextStream | None = None
    history: list[int] = field(default_factory=list)
    logits: Any = None                           # the next token's logits, once the prompt is in

    @property
    def done(self) -> bool:
        return self.finish_reason is not None


@dataclass
class Event:
    ticket: Ticket
    token: int
    text: str
    finish_reason: str | None


class Batcher:
    def __init__(self, model, slots: int = 8, n_ctx: int | None = None, prefill_chunk: int = 256):
        if slots < 1:
            raise EdgedecError(f"$slots {slots} is invalid: batch at least 1 sequence")
        self.model = model
        if not hasattr(model.engine, "batch_runner"):
            raise EdgedecError(f"the {model.backend_name} backend cannot decode batches; use the onnxruntime "
                               "backend")
        self.runner = model.engine.batch_runner(slots, n_ctx or model.n_ctx, model.adapter)
        self.n_ctx = self.runner.n_ctx
        self.slots = slots
        self.prefill_chunk = max(3, prefill_chunk)   # 3: a whole budget always makes progress
        self.waiting: deque[Ticket] = deque()
        self.rows: list[Ticket] = []             # rows 0..len-1; all decoding but possibly the last
        self._ids = itertools.count()

    @property
    def idle(self) -> bool:
        return not self.waiting and not self.rows

    def submit(self, request: Request) -> Ticket:
        """Queue a request; its prompt is checked and tokenized now (errors are the caller's)."""
        if request.max_tokens < 1:
            raise EdgedecError("$max_tokens must be at least 1")
        ids = (list(request.prompt) if isinstance(request.prompt, list) else
               self.model.encode_prompt(request.prompt, request.messages, request.system, request.chat))
        if len(ids) + 1 > self.n_ctx:
            raise EdgedecError(f"the prompt has {len(ids)} tokens but the context holds {self.n_ctx}; "
                               "shorten it or raise $n_ctx")
        ticket = Ticket(request, request.id if request.id is not None else next(self._ids), ids)
        self.waiting.append(ticket)
        return ticket

    def cancel(self, ticket: Ticket) -> None:
        """Stop a request (its client went away): its row is free from the next step on."""
        if not ticket.done:
            ticket.finish_reason = "cancelled"

    def step(self) -> list[Event]:
        """Admit and prefill (up to `prefill_chunk` prompt tokens), then one token for every decoding sequence:
        its events."""
        self._drop_finished()
        self._prefill()
        events = [self._emit(t) for t in self.rows if t.logits is not None and not t.done]
        self._drop_finished()
        decoding = [t for t in self.rows if t.logits is not None]
        if decoding:
            for t, logits in zip(decoding, self.runner.step([t.tokens[-1] for t in decoding])):
                t.logits = logits
        return events

    def _prefill(self) -> None:
        """Give waiting requests rows, and feed up to `prefill_chunk` prompt tokens: the rest of the prompt
        being prefilled, then the next waiting ones, while rows and the budget last."""
        budget = self.prefill_chunk
        while budget > 0:
            if not self.rows or self.rows[-1].logits is not None:      # no prompt half in: admit one
                if not self.waiting or len(self.rows) >= self.slots:
                    return
                t = self.waiting.popleft()
                if t.done:                            # cancelled while waiting
                    continue
                t.row, t.sampler = len(self.rows), Sampler(t.request.sampler)
                t.stream, t.history = TextStream(self.model.tokenizer, t.request.stop), list(t.ids)
                self.runner.truncate(t.row, 0)
                self.rows.append(t)
            t = self.rows[-1]
            left = len(t.ids) - t.fed
            n = min(budget, left)
            if left - n == 1:                         # never leave a one-token piece (it rounds differently)
                n -= 1
            if n < min(2, left):                      # nor feed one: the next step, with a whole budget, goes on
                return
            logits = self.runner.prefill(t.row, t.ids[t.fed:t.fed + n])
            t.fed += n
            budget -= n
            if t.fed == len(t.ids):
                t.logits = logits

    def _emit(self, t: Ticket) -> Event:
        """Sample t's next token from its logits; decide whether it finishes."""
        token = t.sampler(t.logits, t.history)
        t.history.append(token)
        t.tokens.append(token)
        eos = token in self.model.tokenizer.eos_ids and not t.request.ignore_eos
        stopped = t.stream.push(token, eos=eos)
        finish = "stop" if stopped else None
        if finish is None and len(t.tokens) >= t.request.max_tokens:
            finish = "length"
        elif finish is None and len(t.ids) + len(t.tokens) >= self.n_ctx:
            finish = "context"
        text = t.stream.take(final=finish is not None, stopped=stopped)
        t.text += text
        t.finish_reason = finish
        return Event(t, token, text, finish)

    def _drop_finished(self) -> None:
        """Free the rows of finished sequences: decoding sequences from further up move into the holes (one
        cache copy each), and the sequence being prefilled, always the last row, follows them down."""
        keep = [t for t in self.rows if not t.done]
        decoding = [t for t in keep if t.logits is not None]
        n = len(decoding)
        holes = [r for r in range(n) if self.rows[r].done]
        for t, hole in zip([t for t in decoding if t.row >= n], holes):
            self.runner.move(t.row, hole)
            t.row = hole
        for t in keep:
            if t.logits is None and t.row != n:       # the prefilling one (its row is past every hole)
                self.runner.move(t.row, n)
                t.row = n
        for t in self.rows:
            if t.done:
                t.row = None
        self.rows = sorted(keep, key=lambda t: t.row)

