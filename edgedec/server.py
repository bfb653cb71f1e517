"""`edgedec serve`: an OpenAI-compatible HTTP server over one loaded model (Starlette on uvicorn).

    POST /v1/chat/completions   messages -> a reply; "stream": true sends server-sent events
    POST /v1/completions        prompt -> a continuation (no chat template); streams too
    GET  /v1/models             the one model served
    GET  /health                {"status": "ok"} and the queue's state

Every request joins one continuous batch (edgedec/batching.py), run by a single engine thread: the HTTP
handlers hand it requests and cancellations through a queue, and it hands tokens back to each request's
asyncio queue. A client that disconnects from a stream is cancelled, which frees its row at the next step.
At most `slots` requests decode and `queue` more wait; past that a request gets 503 at once. Bad JSON, bad
parameters and prompts longer than the context get 400 with an OpenAI-style error body, an unknown model
404, and with --api-key a request without "Authorization: Bearer KEY" 401. It listens on 127.0.0.1 unless
told otherwise.
"""
from __future__ import annotations

import asyncio
import json
import queue
import threading
import time
import uuid

from .batching import Request, chat_messages, stop_strings
from .errors import EdgedecError
from .sampling import SamplerConfig


def error(status: int, message: str, kind: str = "invalid_request_error", param: str | None = None,
          code: str | None = None):
    from starlette.responses import JSONResponse
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}}, status)


class Engine:
    """The engine thread: owns the Batcher; everything reaches it through `commands`."""

    def __init__(self, model, slots: int, n_ctx: int | None, queue_size: int):
        self.batcher = model.batcher(slots=slots, n_ctx=n_ctx)
        self.capacity = slots + queue_size
        self.commands: queue.Queue = queue.Queue()
        self.listeners: dict = {}                 # ticket -> (loop, asyncio.Queue)
        self.active = 0                           # submitted and not finished (read by handlers)
        self.lock = threading.Lock()
        threading.Thread(target=self._loop, daemon=True, name="edgedec-engine").start()

    def submit(self, request: Request, loop, out: asyncio.Queue):
        """Queue a request; False when the server is full. The ticket (or the EdgedecError that refused the
        request) comes back on `out` first, then its events."""
        with self.lock:
            if self.active >= self.capacity:
                return False
            self.active += 1
        self.commands.put(("submit", request, loop, out))
        return True

    def cancel(self, ticket) -> None:
        self.commands.put(("cancel", ticket, None, None))

    def _loop(self) -> None:
        while True:
            block = self.batcher.idle
            while True:
                try:
                    cmd, arg, loop, out = self.commands.get(block=block)
                except queue.Empty:
                    break
                block = False
                if cmd == "submit":
                    try:
                        ticket = self.batcher.submit(arg)
                    except EdgedecError as e:
                        self._finished()
                        loop.call_soon_threadsafe(out.put_nowait, e)
                        continue
                    self.listeners[ticket.id] = (loop, out)
                    loop.call_soon_threadsafe(out.put_nowait, ticket)
                else:
                    self.batcher.cancel(arg)
                    if self.listeners.pop(arg.id, None):
                        self._finished()
            for ev in self.batcher.step():
                loop, out = self.listeners.get(ev.ticket.id, (None, None))
                if out is None:
                    continue
                loop.call_soon_threadsafe(out.put_nowait, ev)
                if ev.finish_reason is not None:
                    del self.listeners[ev.ticket.id]
                    self._finished()

    def _finished(self) -> None:
        with self.lock:
            self.active -= 1


def parse_request(body: dict, chat: bool) -> Request:
    """An OpenAI request body as a batching.Request; EdgedecError (-> 400) naming the bad field."""
    def number(name, kind, lo=None, hi=None):
        v = body.get(name)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind is int and int(v) != v):
            raise EdgedecError(f"'{name}' must be {'an integer' if kind is int else 'a number'}")
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise EdgedecError(f"'{name}' {v} is out of range ({lo}..{hi})")
        return kind(v)

    if chat:
        prompt, messages = None, chat_messages(body.get("messages"))
        if messages is None:
            raise EdgedecError("'messages' must be a non-empty list of {role, content} objects with string content")
    else:
        prompt, messages = body.get("prompt"), None
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str) or not prompt:
            raise EdgedecError("'prompt' must be a non-empty string")
    stop = stop_strings(body.get("stop"))
    if stop is None or len(stop) > 4:
        raise EdgedecError("'stop' must be a string or a list of up to 4 strings")
    if body.get("n", 1) != 1:
        raise EdgedecError("'n' must be 1: one choice per request")
    max_tokens = number("max_completion_tokens", int, 1) or number("max_tokens", int, 1) or 256
    temperature = number("temperature", float, 0, 2)
    sampler = SamplerConfig(temperature=1.0 if temperature is None else temperature,
                            top_p=number("top_p", float, 0, 1) if body.get("top_p") is not None else 1.0,
                            seed=number("seed", int))
    return Request(prompt=prompt, messages=messages, chat=chat, max_tokens=max_tokens, sampler=sampler,
                   stop=stop)


def build_app(model, model_id: str, slots: int = 8, n_ctx: int | None = None, queue_size: int = 32,
              api_key: str | None = None):
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    engine = Engine(model, slots, n_ctx, queue_size)

    def authorized(request) -> bool:
        return api_key is None or request.headers.get("authorization") == f"Bearer {api_key}"

    async def health(request):
        if not authorized(request):
            return error(401, "a valid API key is required (Authorization: Bearer KEY)", "authentication_error")
        return JSONResponse({"status": "ok", "active": engine.active, "capacity": engine.capacity})

    async def models(request):
        if not authorized(request):
            return error(401, "a valid API key is required (Authorization: Bearer KEY)", "authentication_error")
        return JSONResponse({"object": "list", "data": [{"id": model_id, "object": "model", "created": 0,
                                                          "owned_by": "edgedec"}]})

    async def complete(request, chat: bool):
        if not authorized(request):
            return error(401, "a valid API key is required (Authorization: Bearer KEY)", "authentication_error")
        try:
            body = json.loads(await request.body())
            if not isinstance(body, dict):
                raise ValueError
        except ValueError:
            return error(400, "the request body is not a JSON object")
        if body.get("model") not in (None, model_id):
            return error(404, f"model '{body.get('model')}' does not exist; this server has '{model_id}'",
                         param="model", code="model_not_found")
        try:
            req = parse_request(body, chat)
        except EdgedecError as e:
            return error(400, str(e))
        loop, out = asyncio.get_running_loop(), asyncio.Queue()
        if not engine.submit(req, loop, out):
            return error(503, f"the server is busy ({engine.capacity} requests in flight); retry later",
                         "server_error", code="overloaded")
        first = await out.get()
        if isinstance(first, EdgedecError):
            return error(400, str(first), code="context_length_exceeded" if "context" in str(first) else None)
        ticket, rid, created = first, ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex, int(time.time())
        if body.get("stream"):
            usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(_events(engine, ticket, out, rid, created, model_id, chat, usage),
                                     media_type="text/event-stream")
        try:
            while True:
                ev = await out.get()
                if ev.finish_reason is not None:
                    break
        except asyncio.CancelledError:
            engine.cancel(ticket)
            raise
        return JSONResponse(_body(ticket, rid, created, model_id, chat))

    async def chat_completions(request):
        return await complete(request, True)

    async def completions(request):
        return await complete(request, False)

    return Starlette(routes=[Route("/health", health), Route("/v1/models", models),
                             Route("/v1/chat/completions", chat_completions, methods=["POST"]),
                             Route("/v1/completions", completions, methods=["POST"])])


def _usage(t) -> dict:
    return {"prompt_tokens": len(t.ids), "completion_tokens": len(t.tokens),
            "total_tokens": len(t.ids) + len(t.tokens)}


def _finish(reason: str) -> str:
    return "length" if reason in ("length", "context") else "stop"


def _body(t, rid, created, model_id, chat) -> dict:
    choice = ({"index": 0, "message": {"role": "assistant", "content": t.text}} if chat else
              {"index": 0, "text": t.text, "logprobs": None})
    return {"id": rid, "object": "chat.completion" if chat else "text_completion", "created": created,
            "model": model_id, "choices": [{**choice, "finish_reason": _finish(t.finish_reason)}],
            "usage": _usage(t)}


async def _events(engine, ticket, out, rid, created, model_id, chat, include_usage):
    """Server-sent events: one chunk per piece of text, then the finish reason, [usage], [DONE]."""
    kind = "chat.completion.chunk" if chat else "text_completion"

    def chunk(delta_text, finish=None, first=False):
        if chat:
            delta = {"role": "assistant", "content": delta_text} if first else (
                {"content": delta_text} if delta_text else {})
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": delta_text, "logprobs": None, "finish_reason": finish}
        d = {"id": rid, "object": kind, "created": created, "model": model_id, "choices": [choice]}
        return f"data: {json.dumps(d)}\n\n"

    try:
        yield chunk("", first=True)
        while True:
            ev = await out.get()
            if ev.text:
                yield chunk(ev.text)
            if ev.finish_reason is not None:
                yield chunk("", _finish(ev.finish_reason))
                break
        if include_usage:
            d = {"id": rid, "object": kind, "created": created, "model": model_id, "choices": [],
                 "usage": _usage(ticket)}
            yield f"data: {json.dumps(d)}\n\n"
        yield "data: [DONE]\n\n"
    finally:
        if not ticket.done:                       # the client went away mid-stream
            engine.cancel(ticket)


def serve(model, model_id: str, host: str = "127.0.0.1", port: int = 8080, slots: int = 8,
          n_ctx: int | None = None, queue_size: int = 32, api_key: str | None = None, log=None) -> None:
    import socket

    import uvicorn
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as e:
        raise EdgedecError(f"cannot listen on {host}:{port} ({e.strerror}); pick another --port, or stop "
                           "what is using it") from None
    app = build_app(model, model_id, slots, n_ctx, queue_size, api_key)
    if log:
        log(f"edgedec serve: {model_id} on http://{host}:{port}/v1 ({slots} slots, queue {queue_size}"
            f"{', API key required' if api_key else ''})")
    uvicorn.run(app, host=host, port=port, log_level="warning")
