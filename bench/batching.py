"""Many requests at once: batched decoding throughput, the server under load, and the batch job.

    python bench/batching.py -o bench/results/batch-YYYYMMDD [--parts throughput,server,job] [-n 64]

throughput  B = 1, 2, 4, 8, 16 sequences (HumanEval and writingbench prompts, alternating) decoded together
            by one Batcher, 64 tokens each past the end of the answer. Aggregate tok/s = new tokens / wall
            time (prefill included), next to single-sequence plain decoding of the same prompts (edgedec,
            one-row kernels) and llama.cpp (same GGUF, same threads) serving them one after another, and
            llama.cpp batching them itself (one llama_batch with a seq_id per sequence). Also
            the decode rate alone: B tokens per batched step, over the steps where all B sequences decode,
            against single-sequence decode tok/s. The engines take turns within each round; medians over
            rounds.
server      `edgedec serve --slots 8` on 127.0.0.1; 1, 4 and 8 concurrent streaming clients, each sending
            requests one after another for a fixed count: time to first token (p50, p95) and tok/s per
            stream (median).
job         `edgedec batch` on 200 prompts (32 tokens each): throughput; then the same job killed with
            SIGKILL mid-run and run again: the output must hold each of the 200 ids exactly once.
Writes batch.json and batch.png.
"""
import argparse
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

import edgedec
from edgedec.batching import Request
from edgedec_tools.prompts import code_prompts, writing_prompts


def prompts(n: int) -> list[str]:
    code, prose = code_prompts(n), writing_prompts(n)
    return [p for pair in zip(code, prose) for p in pair][:n]


class LlamaBatch:
    """llama.cpp's own multi-sequence batching (llama-cpp-python's low-level API: one `llama_batch` with a
    seq_id per sequence, `llama_decode` once per step), greedy, on the same GGUF and threads."""

    def __init__(self, gguf: str, threads: int, slots: int, n_ctx: int = 1024):
        import llama_cpp
        from llama_cpp import Llama
        self.lib = llama_cpp
        self.llm = Llama(model_path=gguf, n_ctx=256, n_threads=threads, verbose=False)   # holds the weights
        cp = llama_cpp.llama_context_default_params()
        cp.n_ctx, cp.n_batch, cp.n_ubatch, cp.n_seq_max = slots * n_ctx, n_ctx, 512, slots
        cp.n_threads = cp.n_threads_batch = threads
        self.ctx = llama_cpp.llama_init_from_model(self.llm.model, cp)
        self.vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(self.llm.model))
        self.batch = llama_cpp.llama_batch_init(n_ctx, 0, slots)

    def _decode(self, items) -> None:
        b = self.batch
        b.n_tokens = len(items)
        for i, (token, pos, seq, logits) in enumerate(items):
            b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = token, pos, 1, logits
            b.seq_id[i][0] = seq
        if self.lib.llama_decode(self.ctx, b) != 0:
            raise RuntimeError("llama_decode failed")

    def _argmax(self, i: int) -> int:
        return int(np.argmax(np.ctypeslib.as_array(self.lib.llama_get_logits_ith(self.ctx, i), shape=(self.vocab,))))

    def run(self, prompts_ids: list[list[int]], n_new: int) -> tuple[int, float, float]:
        """Prefill each prompt as its own sequence, then n_new - 1 batched steps: (tokens, seconds end to end,
        decode tok/s)."""
        self.lib.llama_memory_clear(self.lib.llama_get_memory(self.ctx), True)
        t0 = time.perf_counter()
        last, lens = [], []
        for seq, ids in enumerate(prompts_ids):
            self._decode([(t, j, seq, j == len(ids) - 1) for j, t in enumerate(ids)])
            last.append(self._argmax(len(ids) - 1))
            lens.append(len(ids))
        t1 = time.perf_counter()
        for _ in range(n_new - 1):
            self._decode([(last[s], lens[s], s, True) for s in range(len(last))])
            last = [self._argmax(s) for s in range(len(last))]
            lens = [n + 1 for n in lens]
        t2 = time.perf_counter()
        n = len(last) * (n_new - 1)
        return n + len(last), t2 - t0, n / (t2 - t1)

    def close(self) -> None:
        self.lib.llama_batch_free(self.batch)
        self.lib.llama_free(self.ctx)


def throughput(bundle, threads: int, n_new: int, rounds: int, out: dict) -> None:
    ours = edgedec.load(bundle, threads=threads, n_ctx=1024)
    peer = edgedec.load(bundle, backend="llamacpp", threads=threads, n_ctx=1024)
    rows = out.setdefault("throughput", {})
    for b in (1, 2, 4, 8, 16):
        ps = prompts(b)
        ids = [ours.encode_prompt(p) for p in ps]
        got = {"batched": [], "batched, decode steps only": [], "edgedec one at a time": [],
               "edgedec decode only": [], "llama.cpp one at a time": [], "llama.cpp batched": [],
               "llama.cpp batched, decode only": []}
        lb = LlamaBatch(str(ours.bundle.file(ours.bundle.manifest.gguf.file)), threads, b)
        for _ in range(rounds):
            batcher = ours.batcher(slots=b)
            t = time.perf_counter()
            for i in ids:
                batcher.submit(Request(prompt=i, max_tokens=n_new, ignore_eos=True))
            n, full_steps, full_time = 0, 0, 0.0
            while not batcher.idle:
                decoding = len(batcher.rows) == b and all(tk.logits is not None for tk in batcher.rows)
                t1 = time.perf_counter()
                k = len(batcher.step())
                if decoding and k == b:               # a step of every sequence decoding, no prompt in it
                    full_steps, full_time = full_steps + 1, full_time + time.perf_counter() - t1
                n += k
            got["batched"].append(n / (time.perf_counter() - t))
            got["batched, decode steps only"].append(b * full_steps / full_time)
            for name, model in (("edgedec one at a time", ours), ("llama.cpp one at a time", peer)):
                s = model.session()
                t, n, rates = time.perf_counter(), 0, []
                for i in ids:
                    r = s.generate(i, max_tokens=n_new, ignore_eos=True)
                    n += r.n_new_tokens
                    rates.append(r.decode_tok_s)
                got[name].append(n / (time.perf_counter() - t))
                if model is ours:
                    got["edgedec decode only"].append(float(np.median(rates)))
                s.reset()
            n, seconds, decode = lb.run(ids, n_new)
            got["llama.cpp batched"].append(n / seconds)
            got["llama.cpp batched, decode only"].append(decode)
        lb.close()
        rows[str(b)] = {k: float(np.median(v)) for k, v in got.items()}
        rows[str(b)]["batched / edgedec one at a time"] = float(np.median(
            [x / y for x, y in zip(got["batched"], got["edgedec one at a time"])]))
        rows[str(b)]["decode: batched / single sequence"] = float(np.median(
            [x / y for x, y in zip(got["batched, decode steps only"], got["edgedec decode only"])]))
        print(f"B={b}: " + ", ".join(f"{k} {v:.1f}" for k, v in rows[str(b)].items()), flush=True)


def server(bundle, threads: int, n_new: int, requests: int, out: dict) -> None:
    import httpx
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = subprocess.Popen([sys.executable, "-m", "edgedec.cli", "serve", str(bundle), "--port", str(port),
                          "--slots", "8", "--ctx", "1024", "-t", str(threads)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                httpx.get(url + "/health", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.5)
        model_id = httpx.get(url + "/v1/models").json()["data"][0]["id"]
        ps = prompts(16)
        rows = out.setdefault("server", {})
        for clients in (1, 4, 8):
            ttft, rates = [], []

            def client(k):
                for j in range(requests):
                    body = {"model": model_id, "max_tokens": n_new, "temperature": 0, "stream": True,
                            "messages": [{"role": "user", "content": ps[(k * requests + j) % len(ps)]}]}
                    t0 = time.perf_counter()
                    first, n = None, 0
                    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=600) as r:
                        for line in r.iter_lines():
                            if line.startswith("data: {") and '"content"' in line:
                                first = first or time.perf_counter()
                                n += 1
                    ttft.append(first - t0)
                    rates.append((n - 1) / max(time.perf_counter() - first, 1e-9))

            threads_ = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
            t = time.perf_counter()
            for th in threads_:
                th.start()
            for th in threads_:
                th.join()
            wall = time.perf_counter() - t
            rows[str(clients)] = {"ttft_p50_s": float(np.percentile(ttft, 50)),
                                  "ttft_p95_s": float(np.percentile(ttft, 95)),
                                  "tok_s_per_stream": float(np.median(rates)),
                                  "requests": len(ttft), "wall_s": wall}
            print(f"server, {clients} clients: {rows[str(clients)]}", flush=True)
    finally:
        p.terminate()
        p.wait()


def job(bundle, threads: int, work: Path, out: dict, n: int = 200, n_new: int = 32) -> None:
    ps = prompts(16)
    src = work / "jobs.jsonl"
    src.write_text("".join(json.dumps({"id": f"r{i}", "prompt": ps[i % len(ps)], "max_tokens": n_new}) + "\n"
                           for i in range(n)))
    cmd = lambda o: [sys.executable, "-m", "edgedec.cli", "batch", str(src), "-o", str(o),  # noqa: E731
                     "--bundle", str(bundle), "--slots", "8", "-t", str(threads)]
    whole = work / "whole.jsonl"
    r = subprocess.run(cmd(whole), capture_output=True, text=True, check=True)
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    killed = work / "killed.jsonl"
    p = subprocess.Popen(cmd(killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not killed.exists() or len(killed.read_text().splitlines()) < n // 3:
        time.sleep(0.2)
    p.send_signal(signal.SIGKILL)
    p.wait()
    at_kill = len(killed.read_text().splitlines())
    subprocess.run(cmd(killed), capture_output=True, text=True, check=True)
    ids = [json.loads(line)["id"] for line in killed.read_text().splitlines()]
    out["job"] = {"requests": n, "tokens": summary["tokens"], "seconds": summary["seconds"],
                  "tok_s": summary["tokens"] / summary["seconds"], "lines_at_kill": at_kill,
                  "lines_after_resume": len(ids), "unique_ids": len(set(ids)),
                  "same_text_as_uninterrupted": sorted(killed.read_text().splitlines())
                  == sorted(whole.read_text().splitlines())}
    print(f"job: {out['job']}", flush=True)


def plot(out: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    t = out.get("throughput")
    if not t:
        return
    bs = sorted(t, key=int)
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for name in ("batched", "batched, decode steps only", "edgedec one at a time", "edgedec decode only",
                 "llama.cpp one at a time", "llama.cpp batched", "llama.cpp batched, decode only"):
        ax.plot([int(b) for b in bs], [t[b][name] for b in bs], "o-", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("sequences")
    ax.set_ylabel("aggregate tok/s (new tokens / wall time)")
    ax.set_title(f"Many requests at once ({out['threads']} threads)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bundle", nargs="?")
    ap.add_argument("-o", "--out", default=f"bench/results/batch-{time.strftime('%Y%m%d')}")
    ap.add_argument("--parts", default="throughput,server,job")
    ap.add_argument("-n", type=int, default=64, help="new tokens per request")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=4, help="server: requests per client")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    from edgedec.cli import ensure_default_bundle
    bundle = ensure_default_bundle(a.bundle)
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "batch.json"
    out = json.loads(path.read_text()) if path.exists() else {}
    out["threads"] = a.threads
    if "throughput" in a.parts:
        throughput(bundle, a.threads, a.n, a.rounds, out)
        path.write_text(json.dumps(out, indent=1))
    if "server" in a.parts:
        server(bundle, a.threads, a.n, a.requests, out)
        path.write_text(json.dumps(out, indent=1))
    if "job" in a.parts:
        import tempfile
        with tempfile.TemporaryDirectory() as work:
            job(bundle, a.threads, Path(work), out)
        path.write_text(json.dumps(out, indent=1))
    plot(out, out_dir / "batch.png")


if __name__ == "__main__":
    main()
