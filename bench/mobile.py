"""The mobile bundle (edgedec export --target mobile) here: speed and peak RSS under Node and Python, the
bytes a decode step reads, and what those bytes suggest for a phone.

    python bench/mobile.py -o bench/results/mobile-YYYYMMDD [--contexts 0,2000] [--rounds 5] [--runs 3]
                           [--parts speed,lookup]

- bytes per token: what one decode step reads: the weights of every MatMulNBits and Gemm (and the norms), from
  the bundle's graphs, and the int8 cache at that context. The embedding table and rotary tables are read
  one row at a time and are left out.
- speed and peak RSS at each context (0 = a short chat prompt; N = N tokens of text, then 64 new ones):
  the Node engine (android_demo/engine `npm run bench`, onnxruntime-node) and the Python runtime, each in a
  child process of its own, 2 threads. Each round runs both (which goes first alternates), each child the
  median of its runs; reported: each runtime's median over the rounds, and the median of the rounds'
  Node / Python ratios (this machine's speed drifts by 20-30% over minutes). Peak RSS is the child's high-water mark (Node's
  resourceUsage().maxRSS; /proc VmHWM for Python), interpreter included.
- a phone estimate: tok/s if decoding were limited by memory bandwidth alone, at the bandwidths listed
  (assumed sustained CPU bandwidth of phone memory, not measured here), next to the GB/s this machine's
  Node run reads at. An upper bound: a phone core may run out of compute first. Labelled an estimate.
- lookup: the Node engine's lookup decoding against its plain decoding on the same prompts (HumanEval code
  and writingbench prose, 6 each, 96 tokens, greedy, each prompt with both modes in turn, 2 rounds): median
  decode tok/s, the median per-prompt ratio, and the share of tokens lookup drafts gave.
Writes mobile.json (a later run replaces only the parts it ran) and mobile.png.
"""
import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx

from edgedec.bundle import home, read_bundle
from edgedec.cli import default_source, ensure_default_bundle
from edgedec.export.bundle_writer import export_bundle
from edgedec.export.kv import bytes_per_token

ENGINE = Path(__file__).resolve().parents[1] / "android_demo" / "engine"
PHONE_GB_S = (8, 15, 30)     # assumed sustained CPU memory bandwidth: older LPDDR4X, LPDDR5, recent LPDDR5X
READ_WHOLE = {"MatMulNBits", "Gemm", "SimplifiedLayerNormalization", "SkipSimplifiedLayerNormalization"}


def weight_bytes_per_token(desktop: Path) -> float:
    """Bytes of initializers read whole by a decode step (same weights as the mobile bundle's .ort graphs)."""
    b = read_bundle(desktop, verify_checksums=False)
    total = 0
    for name in [s.file for s in b.segments] + [b.manifest.head.file]:
        model = onnx.load(str(desktop / name))
        sizes = {t.name: int(np.prod(t.dims)) * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
                 for t in model.graph.initializer}
        for node in model.graph.node:
            if node.op_type in READ_WHOLE:
                total += sum(sizes.pop(i, 0) for i in node.input)
    return float(total)


_PYTHON = """
import json, statistics, sys
import edgedec
def hwm():
    return next(int(l.split()[1]) / 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:"))
bundle, context, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
m = edgedec.load(bundle, threads=2)
text = "Write a short story about a lighthouse keeper."
prompt = m.tokenizer.encode(text * (context // 5 + 1))[:context] if context else text
rs = [m.session().generate(prompt, max_tokens=64, ignore_eos=True) for _ in range(runs)]
print(json.dumps({"decode_tok_s": statistics.median(r.decode_tok_s for r in rs), "peak_rss_mb": hwm()}))
"""


def python_run(bundle: Path, context: int, runs: int) -> dict:
    out = subprocess.run([sys.executable, "-c", _PYTHON, str(bundle), str(context), str(runs)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def node_run(bundle: Path, context: int, runs: int) -> dict:
    out = subprocess.run(["npm", "run", "--silent", "bench", "--", str(bundle), "--threads", "2",
                          "--context", str(context), "--runs", str(runs)],
                         cwd=ENGINE, capture_output=True, text=True, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return {"decode_tok_s": r["decode_tok_s"], "peak_rss_mb": r["peak_rss_mb"]}


def node_lookup(bundle: Path, prompts: list[str], work: Path) -> dict:
    path = work / "prompts.json"
    path.write_text(json.dumps(prompts))
    out = subprocess.run(["npm", "run", "--silent", "bench", "--", str(bundle), "--prompts", str(path), "--tokens", "96",
                          "--runs", "2"], cwd=ENGINE, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def plot(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    if "runs" not in result:
        return
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
    runs = result["runs"]
    labels = [f"{r['runtime']}, context {r['context']}" for r in runs]
    ax1.barh(labels, [r["decode_tok_s"] for r in runs])
    ax1.set_xlabel("decode tok/s here (2 threads)")
    ax2.barh(labels, [r["peak_rss_mb"] for r in runs])
    ax2.set_xlabel("peak RSS (MB), interpreter included")
    fig.suptitle(f"mobile bundle {result['bundle_mb']:.0f} MB; reads {result['weights_mb_per_token']:.0f} MB "
                 "of weights a token")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-o", "--out", type=Path, required=True)
    ap.add_argument("--contexts", default="0,2000")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--parts", default="speed,lookup")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    mobile = home() / "SmolLM2-135M-Instruct.Q4_1-int4-mobile"
    if not (mobile / "edgedec.json").exists():
        export_bundle(default_source(), mobile, target="mobile")
    m = read_bundle(mobile).manifest
    path = a.out / "mobile.json"
    result = json.loads(path.read_text()) if path.exists() else {}
    if "lookup" in a.parts.split(","):
        from edgedec_tools.prompts import code_prompts, writing_prompts
        with tempfile.TemporaryDirectory() as work:
            result["lookup"] = {name: node_lookup(mobile, prompts, Path(work)) for name, prompts in
                                (("code", code_prompts(6)), ("prose", writing_prompts(6, max_chars=600)))}
        print(json.dumps(result["lookup"], indent=1), flush=True)
    if "speed" not in a.parts.split(","):
        path.write_text(json.dumps(result, indent=1) + "\n")
        return
    weights = weight_bytes_per_token(ensure_default_bundle(None))
    kv_per_position = bytes_per_token(m.mobile.cache, m.config.n_layers, m.config.n_kv_heads, m.config.head_dim)
    runs, ratios = [], {}
    for context in map(int, a.contexts.split(",")):
        rounds = {"node": [], "python": []}
        for i in range(a.rounds):
            order = (("node", node_run), ("python", python_run))
            for runtime, fn in order if i % 2 == 0 else order[::-1]:
                rounds[runtime].append(fn(mobile, context, a.runs))
                print(runtime, context, json.dumps(rounds[runtime][-1]), flush=True)
        read = weights + kv_per_position * (context + 32)     # (the cache at the middle of the 64 new tokens)
        for runtime, rs in rounds.items():
            tok_s = float(np.median([r["decode_tok_s"] for r in rs]))
            runs.append({"runtime": runtime, "context": context, "decode_tok_s": tok_s,
                         "rounds_tok_s": [round(r["decode_tok_s"], 1) for r in rs],
                         "peak_rss_mb": max(r["peak_rss_mb"] for r in rs), "mb_read_per_token": read / 1e6,
                         "gb_s_read_here": tok_s * read / 1e9})
        per_round = [n["decode_tok_s"] / p["decode_tok_s"] for n, p in zip(rounds["node"], rounds["python"])]
        ratios[str(context)] = {"median": float(np.median(per_round)), "rounds": [round(x, 3) for x in per_round]}
        print(context, json.dumps(ratios[str(context)]), flush=True)
    estimate = []
    for context in map(int, a.contexts.split(",")):
        read = weights + kv_per_position * (context + 32)
        here = [r for r in runs if r["context"] == context and r["runtime"] == "node"][0]
        estimate.append({"context": context, "mb_read_per_token": read / 1e6,
                         "bound_tok_s": {str(gb): gb * 1e9 / read for gb in PHONE_GB_S}})
        estimate[-1]["node_here_gb_s"] = here["gb_s_read_here"]
    result |= {"bundle": str(mobile), "bundle_mb": m.mobile.bundle_mb, "cache": m.mobile.cache,
              "export_estimate_rss_mb": m.mobile.rss_mb, "weights_mb_per_token": weights / 1e6,
              "kv_bytes_per_position": kv_per_position, "runs": runs, "node_over_python": ratios,
              "phone_estimate": {"note": "an estimate: tok/s if decoding were bound by memory bandwidth alone, at "
                                         "assumed sustained bandwidths (GB/s) of phone memory; not measured",
                                 "per_context": estimate}}
    path.write_text(json.dumps(result, indent=1) + "\n")
    plot(result, a.out / "mobile.png")
    print(json.dumps(result["phone_estimate"], indent=1))


if __name__ == "__main__":
    main()
