"""Layouts for the switchable LoRA path: which one reads least and runs fastest.

    python bench/lora_paths.py -o bench/results/lora-20261204 [--rounds 15] [--threads 2] [--parts segment,decode]

Needs bench/lora.py's bundles (~/.cache/edgedec/bench-lora). The exporter's layout (export/lora.py) is
- blockdiag: one path per packed linear: (x @ lora_a) @ lora_b with the parts' A matrices stacked and their
  B matrices on a block diagonal (zeros included).
The others are made here by rewriting its graphs and adapters (every part of a packed linear has one rank):
- per_weight: one path per weight, the packed parts' outputs concatenated: no zeros, more nodes;
- int8_b: per_weight with lora_b as int8 per output column, through com.microsoft DynamicQuantizeMatMul (lossy);
- fp16: per_weight with both matrices fp16 and Casts around them (lossy).

- segment: one decode step of one segment graph (layers 6-12; one token, 100 cached positions), IO-bound,
  with the rank-16 adapter, against the plain segment of the default bundle; rounds alternate the variants.
  Reports ms per step, the adapter's MB for those 6 layers, and the median per-round ratio plain/variant.
- decode: whole-model decoding, blockdiag against per_weight (a rewritten copy of the whole bundle), with no
  adapter, the trained rank-8 one and the rank-16 one: bench's `paired` rounds (llama.cpp, each runner,
  llama.cpp again), 128 tokens; medians of per-round ratios to the default bundle.
Writes lora_paths-{threads}t.json (a later run replaces only the parts it ran) and a .png beside it.
"""
import argparse
import dataclasses
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import edgedec
import edgedec.bundle
from edgedec import manifest as mf
from edgedec.export.bundle_writer import _files
from edgedec.bundle import home
from edgedec.cli import ensure_default_bundle
from edgedec_tools.bench import paired

SEGMENT = "layers_6_12.onnx"
PARTS = {"attn_qkv": ("attn_q", "attn_k", "attn_v"), "ffn_gate_up": ("ffn_gate", "ffn_up")}
DTYPES = {np.dtype("float32"): TensorProto.FLOAT, np.dtype("int8"): TensorProto.INT8,
          np.dtype("float16"): TensorProto.FLOAT16}


def widths(config) -> dict[str, int]:
    """Output width of each weight."""
    q, kv = config.n_heads * config.head_dim, config.n_kv_heads * config.head_dim
    return {"attn_q": q, "attn_k": kv, "attn_v": kv, "attn_output": config.hidden, "ffn_gate": config.ffn,
            "ffn_up": config.ffn, "ffn_down": config.hidden}


def per_weight(params: dict, config) -> dict:
    """The exporter's stacked/block-diagonal parameters, split per weight (equal ranks within a linear)."""
    out = {}
    for name, a in params.items():
        if not name.endswith(".lora_a"):
            continue
        stem = name.removesuffix(".lora_a")
        b = params[stem + ".lora_b"]
        _, layer, linear = stem.split(".")
        parts = PARTS.get(linear, (linear,))
        r = a.shape[1] // len(parts)
        c0 = 0
        for j, part in enumerate(parts):
            width = widths(config)[part] if len(parts) > 1 else b.shape[1]
            out[f"blk.{layer}.{part}.lora_a"] = np.ascontiguousarray(a[:, j * r:(j + 1) * r])
            out[f"blk.{layer}.{part}.lora_b"] = np.ascontiguousarray(b[j * r:(j + 1) * r, c0:c0 + width])
            c0 += width
        assert c0 == b.shape[1], f"{stem}: parts do not tile the block diagonal"
    return out


def one_path(kind: str, x: str, stem: str, a, b, out: str):
    """Nodes and feeds for (x @ a) @ b into `out`."""
    low, name_a, name_b = f"{out}/low", f"{stem}.lora_a", f"{stem}.lora_b"
    if kind == "fp16":
        return ([helper.make_node("Cast", [x], [f"{out}/x16"], to=TensorProto.FLOAT16),
                 helper.make_node("MatMul", [f"{out}/x16", name_a], [low]),
                 helper.make_node("MatMul", [low, name_b], [f"{out}/up16"]),
                 helper.make_node("Cast", [f"{out}/up16"], [out], to=TensorProto.FLOAT)],
                {name_a: a.astype(np.float16), name_b: b.astype(np.float16)})
    nodes, feeds = [helper.make_node("MatMul", [x, name_a], [low])], {name_a: a}
    if kind == "int8_b":
        scale = (np.abs(b).max(0) / 127 + 1e-12).astype(np.float32)
        feeds[name_b], feeds[f"{name_b}.scale"] = np.round(b / scale).astype(np.int8), scale
        nodes.append(helper.make_node("DynamicQuantizeMatMul", [low, name_b, f"{name_b}.scale"], [out],
                                      domain="com.microsoft"))
    else:
        feeds[name_b] = b
        nodes.append(helper.make_node("MatMul", [low, name_b], [out]))
    return nodes, feeds


def rewrite(model: onnx.ModelProto, kind: str, params: dict, config) -> tuple[onnx.ModelProto, dict]:
    """`model` with each linear's low-rank path in layout `kind` (not blockdiag), fed `params` (per weight).
    With params empty, the paths' inputs get empty defaults, as the exporter's do: an adapter file binds them."""
    g = model.graph
    paths = {n.name.split("/lora/")[0]: (n.input[0], n.input[1].removesuffix(".lora_a"))
             for n in g.node if n.name.endswith("/lora/A")}
    keep = [t for t in g.initializer if "lora" not in t.name]
    del g.initializer[:]
    g.initializer.extend(keep)
    nodes, feeds = [], {}
    for n in g.node:
        if "/lora/" in n.name and not n.name.endswith("/lora/Add"):
            continue
        if n.name.endswith("/lora/Add"):
            x, stem = paths[n.name.split("/lora/")[0]]
            _, layer, linear = stem.split(".")
            stems = [f"blk.{layer}.{p}" for p in PARTS.get(linear, (linear,))]
            ups = []
            for s in stems:
                a = params.get(f"{s}.lora_a", np.zeros((0, 0), np.float32))
                b = params.get(f"{s}.lora_b", np.zeros((0, 0), np.float32))
                out = f"{n.input[1]}/{s}" if len(stems) > 1 else n.input[1]
                more, f = one_path(kind, x, s, a, b, out)
                nodes += more
                feeds.update(f)
                ups.append(out)
            if len(ups) > 1:
                nodes.append(helper.make_node("Concat", ups, [n.input[1]], axis=-1))
        nodes.append(n)
    del g.node[:]
    g.node.extend(nodes)
    inputs = [i for i in g.input if "lora" not in i.name]
    if params:
        inputs += [helper.make_tensor_value_info(k, DTYPES[v.dtype], list(v.shape)) for k, v in feeds.items()]
    else:     # (empty defaults: [K, 0] and [0, N]; the widths come from the original's value infos)
        k_of = {i.name.removesuffix(".lora_a"): i.type.tensor_type.shape.dim[0].dim_value for i in model.graph.input
                if i.name.endswith(".lora_a")}
        for name in feeds:
            stem, ab = name.rsplit(".", 1)
            _, layer, weight = stem.split(".")
            linear = next((p for p, parts in PARTS.items() if weight in parts), weight)
            k, n = k_of[f"blk.{layer}.{linear}"], widths(config)[weight]
            shape, empty = ([k, "lora_rank"], (k, 0)) if ab == "lora_a" else (["lora_rank", n], (0, n))
            inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
            g.initializer.append(numpy_helper.from_array(np.zeros(empty, np.float32), name))
    del g.input[:]
    g.input.extend(inputs)
    return model, feeds


def _adapter_params(path: Path) -> dict:
    fmt = ort.AdapterFormat.read_adapter(str(path))
    return {k: v.numpy().copy() for k, v in fmt.get_parameters().items()}


def _session(graph, feeds: dict, threads: int):
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.log_severity_level = threads, 3
    s = ort.InferenceSession(str(graph), so, providers=["CPUExecutionProvider"])
    io, keep = s.io_binding(), []
    for i in s.get_inputs():
        v = feeds.get(i.name)
        if v is None:
            v = {"input_ids": np.array([[5]], np.int64), "seqlens_k": np.array([100], np.int32),
                 "total_seq_len": np.array(101, np.int32),
                 "hidden_in": np.zeros((1, 1, 576), np.float32)}.get(i.name, np.zeros((1, 3, 256, 64), np.float32))
        keep.append(np.ascontiguousarray(v))
        io.bind_cpu_input(i.name, keep[-1])
    for i in s.get_overridable_initializers():       # (the exporter's low-rank inputs, empty by default)
        if i.name in feeds:
            keep.append(ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(feeds[i.name])))
            io.bind_ortvalue_input(i.name, keep[-1])
    for o in s.get_outputs():
        io.bind_output(o.name)

    def run(n: int) -> float:
        t = time.perf_counter()
        for _ in range(n):
            s.run_with_iobinding(io)
        return (time.perf_counter() - t) / n * 1e3
    return run, (s, io, keep)


def segment(bundle: Path, work: Path, rounds: int, threads: int) -> dict:
    config = edgedec.bundle.read_bundle(bundle, verify_checksums=False).config
    blockdiag = _adapter_params(bundle / "adapter.r16.onnx_adapter")
    split = per_weight(blockdiag, config)
    runs = {"plain": _session(ensure_default_bundle(None) / SEGMENT, {}, threads),
            "blockdiag": _session(bundle / SEGMENT, blockdiag, threads)}
    sizes = {"plain": 0.0, "blockdiag": sum(v.nbytes for k, v in blockdiag.items() if k.startswith(_SEG_LAYERS))}
    for kind in ("per_weight", "int8_b", "fp16"):
        model, feeds = rewrite(onnx.load(bundle / SEGMENT), kind, split, config)
        onnx.save(model, work / f"{kind}.onnx", save_as_external_data=True, location=f"{kind}.onnx.data")
        feeds = {k: v for k, v in feeds.items() if k.startswith(_SEG_LAYERS)}
        sizes[kind] = sum(v.nbytes for v in feeds.values())
        runs[kind] = _session(work / f"{kind}.onnx", feeds, threads)
    ms = {k: [] for k in runs}
    for _ in range(rounds):
        for k, (run, _) in runs.items():
            run(10)
            ms[k].append(run(100))
    plain = np.array(ms["plain"])
    return {k: {"ms_per_step_median": float(np.median(v)), "plain_over_this": float(np.median(plain / np.array(v))),
                "adapter_mb_per_6_layers": sizes[k] / 1e6} for k, v in ms.items()}


_SEG_LAYERS = tuple(f"blk.{i}." for i in range(6, 12))


def per_weight_bundle(bundle: Path, out: Path) -> Path:
    """A copy of `bundle` with per_weight graphs and adapter files."""
    config = edgedec.bundle.read_bundle(bundle, verify_checksums=False).config
    shutil.copytree(bundle, out)
    for graph in out.glob("layers_*.onnx"):
        model, _ = rewrite(onnx.load(graph), "per_weight", {}, config)
        graph.with_name(graph.name + ".data").unlink()
        onnx.save(model, graph, save_as_external_data=True, location=graph.name + ".data", size_threshold=1024)
    for adapter in out.glob("adapter.*.onnx_adapter"):
        arrays = per_weight(_adapter_params(adapter), config)
        fmt = ort.AdapterFormat()
        fmt.set_adapter_version(1)
        fmt.set_model_version(1)
        fmt.set_parameters({k: ort.OrtValue.ortvalue_from_numpy(v) for k, v in arrays.items()})
        fmt.export_adapter(str(adapter))
    mf.write(out, dataclasses.replace(mf.read(out), files=_files(out)))
    return out


def decode(bundle: Path, work: Path, rounds: int, threads: int) -> dict:
    base = edgedec.load(ensure_default_bundle(None), threads=threads)
    runners = {"default bundle": base.session().backend}
    for layout, path in (("blockdiag", bundle), ("per_weight", per_weight_bundle(bundle, work / "per_weight"))):
        model = edgedec.load(path, threads=threads, verify=False)
        for adapter in (None, "pydoc", "r16"):
            r = model.session().backend
            r.use_adapter(adapter)
            runners[f"{layout}, {adapter or 'no'} adapter"] = r
    peer = edgedec.load(ensure_default_bundle(None), backend="llamacpp", threads=threads).backend
    prompt = base.tokenizer.encode("Write a short story about a lighthouse keeper who finds a message in a bottle.")
    got = paired(runners, peer, prompt, 128, rounds)
    ref = np.array(got["default bundle"]["decode_ratio"])
    return {k: {"decode_tok_s_median": float(np.median(r["decode"])),
                "decode_vs_default_bundle": float(np.median(np.array(r["decode_ratio"]) / ref))} for k, r in got.items()}


def plot(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    parts = [p for p in ("segment", "decode") if p in result]
    fig, axes = plt.subplots(1, len(parts), figsize=(6 * len(parts), 3.5), squeeze=False)
    for ax, part in zip(axes[0], parts):
        v = result[part]["variants"]
        key = "plain_over_this" if part == "segment" else "decode_vs_default_bundle"
        ax.barh(list(v), [x[key] for x in v.values()])
        ax.axvline(0.85, color="red", ls="--", label="goal 0.85x (rank 16)")
        ax.set_xlabel("one segment's decode step: plain / variant" if part == "segment"
                      else "decode tok/s over the default bundle (paired medians)")
        ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-o", "--out", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--parts", default="segment,decode")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    bundle = home() / "bench-lora" / "int4-switch"
    path = a.out / f"lora_paths-{a.threads}t.json"
    result = json.loads(path.read_text()) if path.exists() else {}
    result.update({"segment_graph": SEGMENT, "threads": a.threads})
    work = Path(tempfile.mkdtemp(prefix="lora_paths-"))
    try:
        for part, fn in (("segment", segment), ("decode", decode)):
            if part in a.parts.split(","):
                result[part] = {"rounds": a.rounds if part == "segment" else max(3, a.rounds // 3),
                                "variants": fn(bundle, work, a.rounds if part == "segment" else max(3, a.rounds // 3),
                                               a.threads)}
                print(part, json.dumps(result[part], indent=1), flush=True)
    finally:
        shutil.rmtree(work)
    path.write_text(json.dumps(result, indent=1) + "\n")
    plot(result, path.with_suffix(".png"))


if __name__ == "__main__":
    main()
