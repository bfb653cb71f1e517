"""LoRA adapters: what switching costs, what the low-rank path costs in decoding, and how merged, switched
and llama.cpp's own LoRA agree.

    python bench/lora.py -o bench/results/lora-YYYYMMDD [--rounds 5] [--parts switch,fidelity,decode]

Adapters: the trained one (models/adapters/pydoc: rank 8 on every attention and MLP linear, tools/train_lora.py)
and a random rank-16 one on the same linears (the speed goal's case). Bundles, exported into the output
edgedec's cache folder (~/.cache/edgedec/bench-lora): int4 and fp32, each switchable (both adapters) and merged (the trained one).

- switch: ms to switch a session's adapter between calls (binding the adapter's tensors), median of 200;
  and the first use of an adapter (reading its file).
- decode: paired rounds (bench's `paired`: llama.cpp, each runner, llama.cpp again), 2 threads, 128 tokens
  after a short prompt: the default bundle (no low-rank path), the switchable bundle with no adapter, with
  the trained adapter and with the rank-16 one; medians of per-round ratios to the default bundle.
- fidelity on the adapter's held-out text (every 10th topic of Python's reference docs, 2,048 tokens,
  windows of 512): perplexity of base, switched and merged, int4 and fp32; the largest logit difference
  between switched and merged; top-1 agreement of our int4 bundle with llama.cpp (same GGUF, our GGUF LoRA)
  with and without the adapter.
Writes lora.json and lora.png.
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np

import edgedec
from edgedec.bundle import home
from edgedec.cli import default_source, ensure_default_bundle
from edgedec.export.bundle_writer import export_bundle
from edgedec.perplexity import token_nll
from edgedec.runtimes.llamacpp import LlamaCppEngine
from edgedec_tools.bench import paired

ADAPTER = Path(__file__).resolve().parents[1] / "models" / "adapters" / "pydoc"
MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def held_out() -> str:
    from pydoc_data.topics import topics
    return "\n\n".join(topics[k] for i, k in enumerate(sorted(topics)) if i % 10 == 0)


def random_adapter(folder: Path, rank: int = 16) -> Path:
    """A PEFT folder: rank-`rank` LoRA on every linear of SmolLM2-135M, small random A and B."""
    from safetensors.numpy import save_file
    rng = np.random.default_rng(0)
    shapes = {"q_proj": (576, 576), "k_proj": (192, 576), "v_proj": (192, 576), "o_proj": (576, 576),
              "gate_proj": (1536, 576), "up_proj": (1536, 576), "down_proj": (576, 1536)}
    tensors = {}
    for i in range(30):
        for m, (out, inp) in shapes.items():
            kind = "self_attn" if m[0] in "qkvo" else "mlp"
            key = f"base_model.model.model.layers.{i}.{kind}.{m}"
            tensors[f"{key}.lora_A.weight"] = (rng.standard_normal((rank, inp)) * 0.02).astype(np.float32)
            tensors[f"{key}.lora_B.weight"] = (rng.standard_normal((out, rank)) * 0.002).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, folder / "adapter_model.safetensors")
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": rank, "lora_alpha": rank,
                                                            "target_modules": MODULES}))
    return folder


def export_all(work: Path) -> dict[str, Path]:
    r16 = random_adapter(work / "r16")
    out = {}
    for quant in ("int4", "fp32"):
        for kind, lora, merge in (("switch", [f"{ADAPTER}=pydoc", f"{r16}=r16"], False),
                                  ("merged", [f"{ADAPTER}=pydoc"], True)):
            path = work / f"{quant}-{kind}"
            if not (path / "edgedec.json").exists():
                print(f"exporting {path.name}", flush=True)
                export_bundle(default_source(), path, quant=quant, draft=None, lora=lora, merge=merge)
            out[f"{quant}-{kind}"] = path
    return out


def switch_cost(path: Path) -> dict:
    model = edgedec.load(path)
    runner = model.session().backend
    runner.forward([1, 2, 3])
    t = time.perf_counter()
    runner.use_adapter("pydoc")
    first = time.perf_counter() - t
    times = []
    for i in range(200):
        t = time.perf_counter()
        runner.use_adapter(("r16", "pydoc", None)[i % 3])
        times.append(time.perf_counter() - t)
    return {"switch_ms_median": 1e3 * float(np.median(times)), "switch_ms_max": 1e3 * float(np.max(times)),
            "first_use_ms": 1e3 * first}


def decode_speed(paths: dict, rounds: int, n_new: int = 128) -> dict:
    base = edgedec.load(ensure_default_bundle(None))
    lora = edgedec.load(paths["int4-switch"])
    runners = {"default bundle": base.session().backend}
    for adapter in (None, "pydoc", "r16"):
        r = lora.session().backend
        r.use_adapter(adapter)
        runners[f"switchable, {adapter or 'no'} adapter"] = r
    peer = edgedec.load(ensure_default_bundle(None), backend="llamacpp").backend
    prompt = base.tokenizer.encode("Write a short story about a lighthouse keeper who finds a message in a bottle.")
    got = paired(runners, peer, prompt, n_new, rounds)
    ref = np.array(got["default bundle"]["decode_ratio"])
    return {k: {"decode_tok_s_median": float(np.median(r["decode"])),
                "decode_vs_default_bundle": float(np.median(np.array(r["decode_ratio"]) / ref)),
                "decode_vs_llamacpp": float(np.median(r["decode_ratio"]))} for k, r in got.items()}


def fidelity(paths: dict, tokens: int = 2048) -> dict:
    text = held_out()
    out = {}
    for quant in ("int4", "fp32"):
        runs = {"base": (paths[f"{quant}-switch"], None), "switched": (paths[f"{quant}-switch"], "pydoc"),
                "merged": (paths[f"{quant}-merged"], None)}
        logits = {}
        for name, (path, adapter) in runs.items():
            model = edgedec.load(path, adapter=adapter)
            ids = model.tokenizer.encode(text)[:tokens]
            nll, _ = token_nll(model.backend, ids, 512)
            out[f"{quant} {name} perplexity"] = float(np.exp(nll.mean()))
            logits[name] = model.backend.forward(ids[:512], all_logits=True)
        diff = np.abs(logits["switched"] - logits["merged"]).max() / np.abs(logits["merged"]).max()
        out[f"{quant} switched vs merged max relative logit difference"] = float(diff)
        out[f"{quant} switched vs merged top-1 agreement"] = float(
            (logits["switched"].argmax(-1) == logits["merged"].argmax(-1)).mean())
    bundle = edgedec.load(paths["int4-switch"]).bundle
    for adapter in (None, "pydoc"):
        ours = edgedec.load(paths["int4-switch"], adapter=adapter)
        peer = LlamaCppEngine(bundle, logits_all=True, adapter=adapter).runner()
        ids = ours.tokenizer.encode(text)[:tokens]
        _, a = token_nll(ours.backend, ids, 512)
        _, b = token_nll(peer, ids, 512)
        out[f"llama.cpp top-1 agreement, {adapter or 'no'} adapter"] = float((a == b).mean())
    return out


def plot(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    if not {"decode", "fidelity"} <= set(result):
        return
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    names = list(result["decode"])
    ax1.barh(names, [result["decode"][n]["decode_vs_default_bundle"] for n in names])
    ax1.axvline(0.85, color="red", ls="--", label="goal 0.85x")
    ax1.set_xlabel("decode tok/s over the default bundle (int4, paired medians)")
    ax1.legend()
    ppl = {k.removesuffix(" perplexity"): v for k, v in result["fidelity"].items() if k.endswith("perplexity")}
    ax2.barh(list(ppl), list(ppl.values()))
    ax2.set_xlabel("perplexity, held-out Python reference docs")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-o", "--out", required=True)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--parts", default="switch,fidelity,decode", help="what to measure (a later run replaces "
                    "those parts of the results)")
    a = ap.parse_args()
    out = Path(a.out)
    paths = export_all(home() / "bench-lora")
    out.mkdir(parents=True, exist_ok=True)
    old = out / "lora.json"
    result = json.loads(old.read_text()) if old.exists() else {}
    parts = {"switch": lambda: switch_cost(paths["int4-switch"]), "fidelity": lambda: fidelity(paths),
             "decode": lambda: decode_speed(paths, a.rounds)}
    for name in a.parts.split(","):
        result[name] = parts[name]()
    result.update(threads=2, rounds=a.rounds)
    print(json.dumps(result, indent=1))
    (out / "lora.json").write_text(json.dumps(result, indent=1) + "\n")
    plot(result, out / "lora.png")


if __name__ == "__main__":
    main()
