"""Exact, calibrated and mixed int4 bundles against llama.cpp on the same GGUF: speed and fidelity.

    python bench/requant.py -o bench/results/requant-YYYYMMDD [--rounds 8] [--chars 16000]

Bundles (exported once into ~/.cache/edgedec next to the default one):
    exact        the default: 4-bit GGUF blocks kept exactly (a small correction Gemm per linear)
    mixed        the exact correction on Q, K, V and gate/up only; O and down take the calibrated bias
    calibrated   no correction anywhere: integer zero points, plus the offsets' mean as a bias
                 (export/calibration.py, fitted on Python's standard-library text)

Speed: paired rounds in one process (llama.cpp, every bundle, llama.cpp again; each bundle's decode and
prefill tok/s over the mean of the two llama.cpp timings around it), 2 threads, medians of per-round ratios;
once after a short prompt (bench/compare_bundles.py's) and once after 300 tokens of prose.
Fidelity: perplexity on King Lear and on three other Shakespeare plays (never the calibration text), with
windows of 512 and 2,048, each over llama.cpp's on the same text; teacher-forced top-1 agreement with
llama.cpp on King Lear (512 windows). Peak RSS of a 512-token decode, each in its own process.
Writes requant.json and requant.png (speed against perplexity).
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np

import edgedec
from edgedec.bundle import default_bundle_path
from edgedec.cli import default_source, ensure_default_bundle
from edgedec.export.bundle_writer import export_bundle
from edgedec.perplexity import token_nll
from edgedec.runtimes.llamacpp import LlamaCppEngine
from edgedec_tools.bench import paired, peak_rss
from edgedec_tools.distill.data import shakespeare_texts
from edgedec_tools.prompts import lear

VARIANTS = {"exact": "int4", "mixed": "int4-mixed", "calibrated": "int4-calibrated"}


def bundles() -> dict[str, Path]:
    out = {"exact": ensure_default_bundle(None)}
    for name, quant in list(VARIANTS.items())[1:]:
        path = default_bundle_path().with_name(f"{default_source().stem}-{quant}")
        if not (path / "edgedec.json").exists():
            print(f"exporting {quant} to {path}", flush=True)
            export_bundle(default_source(), path, quant=quant, draft=None)
        out[name] = path
    return out


def speed(paths: dict, threads: int, rounds: int, n: int, prompt: str, length: int) -> dict:
    """Decode and prefill tok/s over llama.cpp's, after `length` tokens of `prompt`."""
    models = {k: edgedec.load(p, threads=threads) for k, p in paths.items()}
    peer = edgedec.load(paths["exact"], backend="llamacpp", threads=threads).backend
    prompt = models["exact"].tokenizer.encode(prompt)[:length]
    got = paired({k: m.backend for k, m in models.items()}, peer, prompt, n, rounds)
    return {k: {f"{part}_vs_llamacpp": float(np.median(r[f"{part}_ratio"])) for part in ("decode", "prefill")}
            for k, r in got.items()}


def fidelity(paths: dict, texts: dict, windows=(512, 2048)) -> dict:
    out = {}
    for window in windows:
        peer = LlamaCppEngine(edgedec.load(paths["exact"]).bundle, n_ctx=window, logits_all=True).runner()
        for text_name, text in texts.items():
            ids = edgedec.load(paths["exact"]).tokenizer.encode(text)
            ref_nll, ref_pred = token_nll(peer, ids, window)
            row = out.setdefault(f"{text_name}@{window}", {"llama.cpp": float(np.exp(ref_nll.mean()))})
            for name, path in paths.items():
                nll, pred = token_nll(edgedec.load(path, n_ctx=window).backend, ids, window)
                row[name] = float(np.exp(nll.mean()))
                row[f"{name}_vs_llamacpp"] = row[name] / row["llama.cpp"]
                if window == 512 and text_name == "King Lear":
                    row[f"{name}_top1_agreement"] = float((pred == ref_pred).mean())
            print(text_name, window, {k: round(v, 4) for k, v in row.items()}, flush=True)
    return out


def plot(out: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for name in VARIANTS:
        x = out["speed"][name]["decode_vs_llamacpp"]
        y = 100 * (out["fidelity"]["King Lear@2048"][f"{name}_vs_llamacpp"] - 1)
        ax.scatter(x, y)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 5))
    ax.axvline(1.1, ls="--", c="gray")
    ax.axhline(3, ls="--", c="gray")
    ax.set_xlabel("decode speed / llama.cpp (same GGUF, 2 threads)")
    ax.set_ylabel("perplexity vs llama.cpp, King Lear @2048 (%)")
    ax.set_title("int4 bundles: the correction's cost against its fidelity")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-o", "--out", default=f"bench/results/requant-{time.strftime('%Y%m%d')}")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("-n", type=int, default=64, help="decode steps per timing")
    ap.add_argument("--chars", type=int, default=16000, help="characters of each text scored")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = bundles()
    out = {"threads": a.threads, "calibration": edgedec.load(paths["calibrated"]).bundle.manifest.quant.calibration}
    # the short prompt is bench/compare_bundles.py's (the 0.89x / 1.14x); then 300 tokens of prose
    out["speed"] = speed(paths, a.threads, a.rounds, a.n, "def fibonacci(n):\n    ", 300)
    out["speed_after_300_tokens"] = speed(paths, a.threads, a.rounds, a.n, lear(2000), 300)
    print(json.dumps({k: out[k] for k in ("speed", "speed_after_300_tokens")}, indent=1), flush=True)
    out["rss_mb"] = {k: peak_rss(p, "onnxruntime", a.threads, 64) for k, p in paths.items()}
    out["rss_mb"]["llama.cpp"] = peak_rss(paths["exact"], "llamacpp", a.threads, 64)
    print(out["rss_mb"], flush=True)
    texts = {"King Lear": lear(a.chars), "three other plays": "\n\n".join(shakespeare_texts(3))[:a.chars]}
    out["fidelity"] = fidelity(paths, texts)
    (out_dir / "requant.json").write_text(json.dumps(out, indent=1))
    plot(out, out_dir / "requant.png")


if __name__ == "__main__":
    main()
