"""`edgedec-bench`: prefill and decode tok/s of edgedec (ONNX Runtime) and llama.cpp on the same GGUF,
same threads, in one process; peak RSS of each in its own process. Writes bench-<time>.json and a PNG
plot to --out (default bench/results, relative to the working directory).

The two engines take turns, in alternating order (AB, BA, ...), so drift in the machine's speed hits both.
Reported: the ratio of the two medians, and the median of the per-run ratios (each run pairs the two
engines a few seconds apart), which is the steadier number on a shared machine."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

PROMPT = ("Explain how a bicycle works, covering the frame, the wheels, the chain, the gears and the brakes, "
          "and why riding one is good exercise. ") * 2

# VmHWM, not ru_maxrss: ru_maxrss survives fork+exec, so a child would report its parent's peak.
_RSS_CHILD = """
import json, sys
import edgedec
m = edgedec.load(sys.argv[1], backend=sys.argv[2], threads=int(sys.argv[3]), n_ctx=int(sys.argv[6]), kv=sys.argv[7])
r = m.generate(sys.argv[4], max_tokens=int(sys.argv[5]), chat=False)
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
print(json.dumps({"peak_rss_mb": int(hwm) / 1024}))
"""


def time_backend(backend, prompt_ids: list[int], n_new: int) -> tuple[float, float]:
    """Greedy decode n_new tokens (eos ignored) after a cold prefill on a runner (runtimes/contract.py);
    returns (prefill tok/s, decode tok/s)."""
    backend.truncate(0)
    t0 = time.perf_counter()
    logits = backend.forward(prompt_ids)
    t1 = time.perf_counter()
    tok = int(np.argmax(logits[-1]))
    for _ in range(n_new):
        tok = int(np.argmax(backend.forward([tok])[-1]))
    t2 = time.perf_counter()
    return len(prompt_ids) / (t1 - t0), n_new / (t2 - t1)


def paired(backends: dict, peer, prompt_ids: list[int], n_new: int, rounds: int) -> dict[str, dict[str, list[float]]]:
    """Rounds of: `peer`, every backend, `peer` again (time_backend each). Per backend: its prefill and
    decode tok/s per round, and each over the mean of the two peer timings around it (`*_ratio`)."""
    out = {k: {"prefill": [], "decode": [], "prefill_ratio": [], "decode_ratio": []} for k in backends}
    for _ in range(rounds):
        before = time_backend(peer, prompt_ids, n_new)
        now = {k: time_backend(b, prompt_ids, n_new) for k, b in backends.items()}
        after = time_backend(peer, prompt_ids, n_new)
        for k, speeds in now.items():
            for part, speed, b, a in zip(("prefill", "decode"), speeds, before, after):
                out[k][part].append(speed)
                out[k][f"{part}_ratio"].append(speed / ((b + a) / 2))
    return out


def peak_rss(bundle, backend, threads, n_new, ctx: int = 512, kv: str = "fp32") -> float:
    out = subprocess.run([sys.executable, "-c", _RSS_CHILD, str(bundle), backend, str(threads), PROMPT, str(n_new),
                          str(ctx), kv],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mb"]


def main(a) -> None:
    from edgedec.api import load
    from edgedec.cli import ensure_default_bundle

    bundle = ensure_default_bundle(a.bundle)
    kv, ctx = getattr(a, "kv", "fp32"), getattr(a, "ctx", 512)
    ours = load(bundle, threads=a.threads, n_ctx=ctx, kv=kv)
    peer = load(bundle, backend="llamacpp", threads=a.threads, n_ctx=ctx, kv=kv)
    ids = ours.tokenizer.encode(PROMPT)
    rows = {"edgedec": [], "llama.cpp": []}
    time_backend(ours.backend, ids, 8)           # warm-up both
    time_backend(peer.backend, ids, 8)
    for i in range(a.runs):
        order = (("edgedec", ours), ("llama.cpp", peer))
        for name, model in order if i % 2 == 0 else order[::-1]:
            rows[name].append(time_backend(model.backend, ids, a.max_tokens))
        print(f"run {i + 1}/{a.runs}: edgedec decode {rows['edgedec'][-1][1]:.1f} tok/s, "
              f"llama.cpp {rows['llama.cpp'][-1][1]:.1f} tok/s", file=sys.stderr)
    med = {k: {"prefill_tok_s": float(np.median([r[0] for r in v])), "decode_tok_s": float(np.median([r[1] for r in v]))}
           for k, v in rows.items()}
    for k, backend in (("edgedec", "onnxruntime"), ("llama.cpp", "llamacpp")):
        med[k]["peak_rss_mb"] = peak_rss(bundle, backend, a.threads, 32, ctx, kv)
    result = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "bundle": str(bundle), "threads": a.threads,
        "prompt_tokens": len(ids), "new_tokens": a.max_tokens, "runs": a.runs,
        "quant": ours.bundle.manifest.quant.mode, "kv": kv, "n_ctx": ctx, "llama_cpp": {"flash_attn": True},
        "median": med, "raw": rows,
        "ratio": {"decode": med["edgedec"]["decode_tok_s"] / med["llama.cpp"]["decode_tok_s"],
                  "prefill": med["edgedec"]["prefill_tok_s"] / med["llama.cpp"]["prefill_tok_s"],
                  "decode_paired": _paired(rows, 1), "prefill_paired": _paired(rows, 0),
                  "rss_delta_mb": med["edgedec"]["peak_rss_mb"] - med["llama.cpp"]["peak_rss_mb"]},
    }
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"bench-{time.strftime('%Y%m%d-%H%M%S')}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1))
    _plot(result, stem.with_suffix(".png"))
    r = result["ratio"]
    print(f"decode   edgedec {med['edgedec']['decode_tok_s']:.1f} tok/s, llama.cpp {med['llama.cpp']['decode_tok_s']:.1f}"
          f" -> {r['decode']:.2f}x (median of per-run ratios {r['decode_paired']:.2f}x)")
    print(f"prefill  edgedec {med['edgedec']['prefill_tok_s']:.0f} tok/s, llama.cpp {med['llama.cpp']['prefill_tok_s']:.0f}"
          f" -> {r['prefill']:.2f}x (median of per-run ratios {r['prefill_paired']:.2f}x)")
    print(f"peak RSS edgedec {med['edgedec']['peak_rss_mb']:.0f} MB, llama.cpp {med['llama.cpp']['peak_rss_mb']:.0f} MB")
    print(f"wrote {stem}.json and {stem}.png")


def _paired(rows: dict, i: int) -> float:
    """Median over runs of edgedec / llama.cpp for column i (0 prefill, 1 decode)."""
    return float(np.median([a[i] / b[i] for a, b in zip(rows["edgedec"], rows["llama.cpp"])]))


def _plot(result, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    names = list(result["median"])
    for ax, key, title in zip(axes, ("decode_tok_s", "prefill_tok_s"), ("decode", "prefill")):
        vals = [result["median"][n][key] for n in names]
        ax.bar(names, vals, color=["#3b7dd8", "#999999"])
        for i, v in enumerate(vals):
            ax.text(i, v, f"{v:.0f}", ha="center", va="bottom")
        ax.set_title(f"{title} tok/s (median of {result['runs']}, {result['threads']} threads)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
