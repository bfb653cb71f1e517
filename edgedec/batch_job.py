"""`edgedec batch INPUT.jsonl -o OUTPUT.jsonl`: an offline job over many prompts, resumable.

Input, one JSON object per line:   {"id": ..., "messages": [...]}  or  {"id": ..., "prompt": "..."}
    optional: max_tokens, temperature, top_p, top_k, min_p, repetition_penalty, seed, stop (str or list)
Output, one line per request:      {"id", "text", "prompt_tokens", "completion_tokens", "finish_reason"}

Resuming. The output is only ever appended to, a whole line per write (O_APPEND, one write call), so a
run killed at any moment (Ctrl-C, kill -9) leaves whole lines, plus at most one torn last line. A new run
drops a torn last line, skips every id the output already holds, and does the rest: the requests in flight
when the first run died are the only work lost. Bad input lines (not JSON, no id, a duplicate id, bad
fields) go to the errors file (OUTPUT.errors.jsonl) with their line number and reason, and the run goes on;
a request that cannot run (a prompt longer than the context) gets an output line with "error".

Workers. `--workers W --slots B` runs W processes, each with its own loaded model and a batch of B rows
(runtimes/ort_batch.py), taking every W-th pending request; the threads are shared out between them.

Ray. `--ray [ADDRESS]` runs the same job on a Ray cluster (a local one when no address is given): Ray Data
with a pool of W actors, each loading the model once and decoding blocks of requests in its own batch.
The driver reads the input and appends the answers to the same output as they come back, so resuming
works the same way. Every node must see the bundle at the same path.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from .batching import Request, chat_messages, stop_strings
from .errors import EdgedecError
from .sampling import SamplerConfig

SAMPLING = {"temperature": float, "top_p": float, "top_k": int, "min_p": float, "repetition_penalty": float,
            "seed": int}


def parse_line(line: str, n: int) -> dict:
    """One input line as {"id", "request": kwargs for batching.Request}; EdgedecError naming the line."""
    try:
        d = json.loads(line)
    except ValueError as e:
        raise EdgedecError(f"line {n}: not JSON ({e.msg})") from None
    if not isinstance(d, dict) or "id" not in d:
        raise EdgedecError(f"line {n}: needs an object with an \"id\"")
    if ("messages" in d) == ("prompt" in d):
        raise EdgedecError(f"line {n}: give exactly one of \"messages\" and \"prompt\"")
    if "prompt" in d and not isinstance(d["prompt"], str):
        raise EdgedecError(f"line {n}: \"prompt\" must be a string")
    messages = chat_messages(d["messages"]) if "messages" in d else None
    if "messages" in d and messages is None:
        raise EdgedecError(f"line {n}: \"messages\" must be a list of {{\"role\", \"content\"}} strings")
    sampler = {}
    try:
        for k, kind in SAMPLING.items():
            if d.get(k) is not None:
                sampler[k] = kind(d[k])
        max_tokens = int(d.get("max_tokens", 256))
    except (TypeError, ValueError):
        raise EdgedecError(f"line {n}: a sampling field or max_tokens is not a number") from None
    stop = stop_strings(d.get("stop"))
    if max_tokens < 1 or stop is None:
        raise EdgedecError(f"line {n}: max_tokens must be at least 1 and stop a string or a list of strings")
    try:
        cfg = SamplerConfig(**sampler)                    # checks its ranges
    except EdgedecError as e:
        raise EdgedecError(f"line {n}: {e}") from None
    return {"id": d["id"], "request": dict(prompt=d.get("prompt"), messages=messages,
                                           max_tokens=max_tokens, sampler=cfg, stop=stop, id=d["id"])}


def done_ids(output: Path) -> set:
    """The ids the output holds; a torn last line (a killed run's) is cut off the file first."""
    if not output.exists():
        return set()
    data = output.read_bytes()
    keep = data if data.endswith(b"\n") or not data else data[: data.rfind(b"\n") + 1]
    ids = set()
    lines = keep.decode(errors="replace").splitlines()
    for i, line in enumerate(lines):
        try:
            ids.add(_key(json.loads(line)["id"]))
        except (ValueError, KeyError, TypeError):
            if i == len(lines) - 1:              # torn mid-line but ending in a newline: cut it too
                keep = keep[: keep.rstrip(b"\n").rfind(b"\n") + 1]
                break
            raise EdgedecError(f"{output} line {i + 1} is not an output line of this tool; "
                               "give a new output path") from None
    if len(keep) != len(data):
        with open(output, "r+b") as f:
            f.truncate(len(keep))
    return ids


def _key(v) -> str:
    return json.dumps(v, sort_keys=True)


def read_input(input_path: Path) -> str:
    try:
        return input_path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise EdgedecError(f"cannot read {input_path} ({getattr(e, 'strerror', None) or e}); give a readable "
                           "JSONL file") from None


def read_jobs(text: str, done: set) -> tuple[list[dict], list[dict], int]:
    """(pending jobs, bad lines {line, reason}, jobs already done) from the input file's text."""
    jobs, bad, seen, skipped = [], [], set(), 0
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            job = parse_line(line, n)
        except EdgedecError as e:
            bad.append({"line": n, "reason": str(e)})
            continue
        key = _key(job["id"])
        if key in seen:
            bad.append({"line": n, "reason": f"line {n}: id {job['id']!r} appears earlier in the input"})
            continue
        seen.add(key)
        if key in done:
            skipped += 1
        else:
            jobs.append(job)
    return jobs, bad, skipped


def append_line(fd: int, obj: dict) -> None:
    """One whole line, one write call on an O_APPEND descriptor: never interleaved, never half there."""
    data = (json.dumps(obj, ensure_ascii=False) + "\n").encode()
    os.write(fd, data)


def open_output(path: Path) -> int:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as e:
        raise EdgedecError(f"cannot write {path} ({e.strerror}); give a writable output path") from None


def work(model, jobs: list[dict], output: Path, slots: int, n_ctx: int | None, progress=None) -> dict:
    """Decode `jobs` on `model` in a batch of `slots` rows, appending each finished one to `output`."""
    fd = open_output(output)
    batcher = model.batcher(slots=slots, n_ctx=n_ctx)
    queue = list(reversed(jobs))
    tokens, finished, t0 = 0, 0, time.perf_counter()
    try:
        while queue or not batcher.idle:
            while queue and len(batcher.waiting) < slots:
                job = queue.pop()
                try:
                    batcher.submit(Request(**job["request"]))
                except EdgedecError as e:                   # e.g. a prompt longer than the context
                    append_line(fd, {"id": job["id"], "error": str(e), "finish_reason": "error"})
                    finished += 1
            for ev in batcher.step():
                tokens += 1
                if ev.finish_reason is not None:
                    t = ev.ticket
                    append_line(fd, {"id": t.id, "text": t.text, "prompt_tokens": len(t.ids),
                                     "completion_tokens": len(t.tokens), "finish_reason": t.finish_reason})
                    finished += 1
                    if progress:
                        progress(finished, tokens, time.perf_counter() - t0)
    finally:
        os.close(fd)
    return {"requests": finished, "tokens": tokens, "seconds": time.perf_counter() - t0}


def _worker(args) -> dict:
    bundle, backend, threads, kv, jobs, output, slots, n_ctx = args
    from .api import load
    model = load(bundle, backend=backend, threads=threads, n_ctx=n_ctx or 2048, kv=kv)
    return work(model, jobs, Path(output), slots, n_ctx)


def run(bundle, input_path, output, *, workers: int = 1, slots: int = 8, threads: int = 2, n_ctx: int | None = None,
        backend: str = "onnxruntime", kv: str | None = None, load=None, progress=None, pending=None,
        ray: str | None | bool = False, log=sys.stderr) -> dict:
    """The whole job (see the module docstring): what was done, skipped and refused. ray: False for
    local processes, else a Ray address (None: a local Ray instance, or the one already initialised)."""
    input_path, output = Path(input_path).expanduser(), Path(output).expanduser()
    if workers < 1 or slots < 1:
        raise EdgedecError("--workers and --slots must be at least 1")
    text = read_input(input_path)                             # readable, and the output writable,
    os.close(open_output(output))                             # before anything is loaded
    jobs, bad, skipped = read_jobs(text, done_ids(output))
    errors = output.with_name(output.name.removesuffix(".jsonl") + ".errors.jsonl")
    if bad:                                                   # this run's bad lines (a rerun rewrites the file)
        errors.unlink(missing_ok=True)
        fd = open_output(errors)
        for b in bad:
            append_line(fd, b)
        os.close(fd)
        print(f"{len(bad)} bad input lines skipped; see {errors}", file=log)
    summary = {"pending": len(jobs), "skipped_done": skipped, "bad_lines": len(bad)}
    if pending:
        pending(len(jobs))
    if not jobs:
        return {**summary, "requests": 0, "tokens": 0, "seconds": 0.0}
    if ray is not False:
        return {**summary, **run_ray(ray, bundle, jobs, output, slots, max(1, threads // workers), n_ctx, kv,
                                     workers, progress)}
    if workers == 1:
        model = load()
        return {**summary, **work(model, jobs, output, slots, n_ctx, progress)}
    import multiprocessing as mp
    per = max(1, threads // workers)
    shares = [jobs[i::workers] for i in range(workers)]
    with mp.get_context("spawn").Pool(workers) as pool:
        parts = pool.map(_worker, [(bundle, backend, per, kv, s, str(output), slots, n_ctx) for s in shares if s])
    return {**summary, "requests": sum(p["requests"] for p in parts), "tokens": sum(p["tokens"] for p in parts),
            "seconds": max(p["seconds"] for p in parts)}


def run_ray(address: str | None, bundle, jobs: list[dict], output: Path, slots: int, threads: int,
            n_ctx: int | None, kv: str, actors: int, progress=None) -> dict:
    """The pending jobs through Ray Data: an actor pool of `actors` models, answers appended as they come."""
    import ray
    if not ray.is_initialized():
        if address and address != "auto":
            _check_reachable(address)
        try:
            ray.init(address=address, logging_level="ERROR", log_to_driver=False)
        except Exception as e:                                # ConnectionError, or Ray's own
            raise EdgedecError(f"cannot join the Ray cluster at {address or 'a new local instance'} "
                               f"({str(e).splitlines()[0][:120]}); check the address (ray start --head "
                               "prints it)") from None
    rows = [{"job": json.dumps({"id": j["id"], **{k: v for k, v in j["request"].items() if k != "sampler"},
                                "sampler": j["request"]["sampler"].__dict__})} for j in jobs]
    import logging
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    ray.data.DataContext.get_current().enable_progress_bars = False
    pool = ray.data.ActorPoolStrategy(size=actors) if hasattr(ray.data, "ActorPoolStrategy") else None
    blocks = max(1, -(-len(rows) // (slots * 4)))           # blocks of about one batch's worth of requests
    ds = ray.data.from_items(rows, override_num_blocks=blocks).map_batches(
        _RayDecoder, fn_constructor_args=(str(bundle), threads, n_ctx, kv, slots), batch_size=slots * 4,
        num_cpus=threads, **({"concurrency": actors} if pool is None else {"compute": pool}))
    fd = open_output(output)
    done, tokens, t0 = 0, 0, time.perf_counter()
    try:
        for row in ds.iter_rows():
            obj = json.loads(row["answer"])
            append_line(fd, obj)
            done += 1
            tokens += obj.get("completion_tokens", 0)
            if progress:
                progress(done, tokens, time.perf_counter() - t0)
    finally:
        os.close(fd)
    return {"requests": done, "tokens": tokens, "seconds": time.perf_counter() - t0}


def _check_reachable(address: str) -> None:
    import socket
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=3).close()
    except (OSError, ValueError):
        raise EdgedecError(f"the Ray cluster at {address} does not answer; check the address (HOST:PORT, as "
                           "'ray start --head' prints it) and that the cluster is up") from None


class _RayDecoder:
    """A Ray Data actor: one loaded model; decodes a block of requests in one batch."""

    def __init__(self, bundle: str, threads: int, n_ctx: int | None, kv: str, slots: int):
        from .api import load
        self.model = load(bundle, threads=threads, n_ctx=n_ctx or 2048, kv=kv)
        self.slots = slots

    def __call__(self, batch: dict) -> dict:
        batcher = self.model.batcher(slots=self.slots)
        tickets, answers = [], []
        for line in batch["job"]:
            d = json.loads(str(line))
            d["sampler"] = SamplerConfig(**d["sampler"])
            try:
                tickets.append(batcher.submit(Request(**d)))
            except EdgedecError as e:
                answers.append({"id": d["id"], "error": str(e), "finish_reason": "error"})
        while not batcher.idle:
            batcher.step()
        answers += [{"id": t.id, "text": t.text, "prompt_tokens": len(t.ids), "completion_tokens": len(t.tokens),
                     "finish_reason": t.finish_reason} for t in tickets]
        return {"answer": [json.dumps(a, ensure_ascii=False) for a in answers]}
