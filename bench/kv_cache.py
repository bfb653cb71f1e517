"""The compressed KV caches measured: perplexity, bytes per token, decode speed at a long context next to
llama.cpp's own cache types, endurance with eviction, and how much the calibration text matters.

    python bench/kv_cache.py -o bench/results/kv-YYYYMMDD [--parts ppl,speed,endurance,calibration]

Perplexity is on King Lear (never a calibration text), fed in chunks of 32 tokens so that nearly every
token reads its context from the cache, as in decoding. Speed: one process, paired rounds; each round
prefills the same 4,000 tokens and times 48 greedy decode steps on every cache type of ours and of
llama.cpp (f16, q8_0, q4_0, flash attention), on the same GGUF and thread count. Writes kv.json and
kv.png (perplexity against bytes per token).
"""
import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

import edgedec
from edgedec.perplexity import perplexity
from edgedec_tools.bench import time_backend
from edgedec_tools.prompts import lear

TYPES = ("fp32", "fp16", "int8", "int4")
LLAMA = {"fp16": "f16", "int8": "q8_0", "int4": "q4_0"}


def ppl_part(bundle, text: str, out: dict) -> None:
    rows = out.setdefault("perplexity", {})
    for window, types in ((512, TYPES), (2048, TYPES), (8192, ("fp32", "int8", "int4"))):
        for kv in types:
            m = edgedec.load(bundle, kv=kv, n_ctx=max(window, 2048))
            r = perplexity(m, text, window=window, chunk=32)
            rows[f"{kv}@{window}"] = {"perplexity": r["perplexity"], "n_scored": r["n_scored"],
                                      "bytes_per_token": m.kv_bytes_per_token}
            print(kv, window, f"{r['perplexity']:.3f}", flush=True)
    # eviction: 4,096-token windows through a 1,024-slot cache keeping 4 sinks and the last 512 positions
    for kv in ("fp32", "int8"):
        m = edgedec.load(bundle, kv=kv, n_ctx=1024, kv_window=512, kv_sinks=4)
        r = perplexity(m, text, window=4096, chunk=32)
        full = perplexity(edgedec.load(bundle, kv=kv, n_ctx=4096), text, window=4096, chunk=32)
        rows[f"{kv}@4096 window 512 + 4 sinks"] = {"perplexity": r["perplexity"], "full_cache": full["perplexity"]}
        print(kv, "evicting", f"{r['perplexity']:.3f}", "full", f"{full['perplexity']:.3f}", flush=True)


def speed_part(bundle, text: str, out: dict, rounds: int, context: int = 4000, n_new: int = 48) -> None:
    ours = {kv: edgedec.load(bundle, kv=kv, n_ctx=context + n_new + 8).backend for kv in TYPES}
    peers = {kv: edgedec.load(bundle, backend="llamacpp", kv=kv, n_ctx=context + n_new + 8).backend
             for kv in LLAMA}
    ids = edgedec.load(bundle).tokenizer.encode(text * 3)[:context]
    runs = {f"edgedec {kv}": [] for kv in ours} | {f"llama.cpp {LLAMA[kv]}": [] for kv in peers}
    for _ in range(rounds):
        for kv, b in ours.items():
            runs[f"edgedec {kv}"].append(time_backend(b, ids, n_new)[1])
        for kv, b in peers.items():
            runs[f"llama.cpp {LLAMA[kv]}"].append(time_backend(b, ids, n_new)[1])
        print({k: round(v[-1], 1) for k, v in runs.items()}, flush=True)
    base = np.array(runs["edgedec fp32"])
    out["speed"] = {"context": context, "n_new": n_new, "rounds": rounds,
                    "tok_s_median": {k: float(np.median(v)) for k, v in runs.items()},
                    "ratio_to_edgedec_fp32_median": {k: float(np.median(np.array(v) / base)) for k, v in runs.items()}}


def endurance_part(bundle, out: dict, n: int = 20000) -> None:
    """One greedy stream of n tokens past the end of the answer, evicting to 4 sinks + 1,024 positions.
    RSS at 2k, 10k and 20k tokens; the peak (VmHWM) is this process's, so run `--parts endurance` on its
    own to read it."""
    m = edgedec.load(bundle, kv_window=1024, kv_sinks=4)
    s = m.session()
    marks, t0 = {}, time.perf_counter()
    for i, r in enumerate(s.stream_generate("Tell me a very long story about a lighthouse keeper.",
                                            max_tokens=n, ignore_eos=True), 1):
        if i in (2000, 10000, n):
            status = dict(line.split(":", 1) for line in open("/proc/self/status") if line.startswith("Vm"))
            marks[i] = {"rss_mb": int(status["VmRSS"].split()[0]) / 1024, "peak_rss_mb": int(status["VmHWM"].split()[0]) / 1024,
                        "tok_s": i / (time.perf_counter() - t0), "evicted": s.backend.evicted,
                        "kv_bytes": s.backend.kv_bytes}
            print(i, marks[i], flush=True)
    out["endurance"] = {"tokens": n, "kv_window": 1024, "kv_sinks": 4, "n_ctx": m.n_ctx, "finish": r.finish_reason,
                        "marks": marks}


def calibration_part(bundle, text: str, out: dict, work: Path) -> None:
    """int8/int4 perplexity (2,048-token windows) with ranges calibrated on three different texts."""
    from edgedec.export.bundle_writer import export_bundle
    from edgedec_tools.distill.data import shakespeare_texts
    from edgedec_tools.prompts import writing_prompts
    texts = {"stdlib (default)": None,
             "shakespeare, other plays": "\n\n".join(shakespeare_texts(3))[:40000],
             "writingbench prompts": "\n\n".join(writing_prompts(40, max_chars=3000))}
    rows = out.setdefault("calibration", {})
    for name, calib in texts.items():
        path = bundle
        if calib is not None:
            work.mkdir(parents=True, exist_ok=True)
            f = work / "calib.txt"
            f.write_text(calib)
            path = export_bundle(edgedec.load(bundle).bundle.manifest.model.source, work / "calib-bundle", kv_text=f)[0]
        for kv in ("int8", "int4"):
            r = perplexity(edgedec.load(path, kv=kv), text, window=2048, chunk=32)
            rows[f"{name}: {kv}"] = r["perplexity"]
            print(name, kv, f"{r['perplexity']:.3f}", flush=True)


def plot(out: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for window in (512, 2048, 8192):
        pts = [(v["bytes_per_token"], v["perplexity"], k.split("@")[0]) for k, v in out["perplexity"].items()
               if k.endswith(f"@{window}")]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=f"{window}-token windows")
            for x, y, name in pts:
                ax.annotate(name, (x, y), fontsize=7)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("KV cache bytes per token")
    ax.set_ylabel("perplexity (King Lear)")
    ax.set_title("SmolLM2-135M-Instruct int4: KV cache type")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-o", "--out", required=True)
    ap.add_argument("--bundle", default=None)
    ap.add_argument("--parts", default="ppl,speed,endurance,calibration")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--chars", type=int, default=30000, help="King Lear characters for perplexity")
    a = ap.parse_args()
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    bundle = a.bundle or edgedec.load().bundle.path
    text = lear(a.chars)
    result_file = out_dir / "kv.json"
    out = json.loads(result_file.read_text()) if result_file.exists() else {}
    out["bytes_per_token"] = {kv: edgedec.load(bundle, kv=kv).kv_bytes_per_token for kv in TYPES}
    parts = a.parts.split(",")
    runs = {"ppl": lambda: ppl_part(bundle, text, out), "speed": lambda: speed_part(bundle, text, out, a.rounds),
            "endurance": lambda: endurance_part(bundle, out),
            "calibration": lambda: calibration_part(bundle, text, out, Path(tempfile.mkdtemp(prefix="kv-calibration-")))}
    for part in parts:
        runs[part]()
        result_file.write_text(json.dumps(out, indent=1))     # after each part: a long run keeps what it has
    if "perplexity" in out:
        plot(out, out_dir / "kv.png")
    print(result_file)


if __name__ == "__main__":
    main()
