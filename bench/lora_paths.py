"""Layouts for the switchable LoRA path, timed on one segment graph (layers 6-12) with the rank-16 adapter.

    python bench/lora_paths.py -o bench/results/lora-20261204 [--rounds 9] [--threads 2]

Needs bench/lora.py's bundles (~/.cache/edgedec/bench-lora). Each variant rewrites the low-rank nodes of the
switchable int4 segment and feeds the same adapter in its own layout:
- per_weight: what the exporter writes: each weight's (x @ lora_a) @ lora_b, packed parts concatenated;
- blockdiag: one path per packed linear: the A matrices stacked, the B matrices on a block diagonal (zeros
  included; what the exporter wrote before 2026-12-04);
- int8_b: per_weight with lora_b as int8 per output column, through com.microsoft DynamicQuantizeMatMul (lossy);
- fp16: per_weight with both matrices fp16 and Casts around them (lossy).
One decode step (one token, 100 cached positions), IO-bound inputs; rounds alternate the variants and the
plain segment of the default bundle. Reports ms per step, the adapter's MB, and the median per-round ratio of
plain over each variant (1.0 = free). Writes lora_paths-{threads}t.json.
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from edgedec.bundle import home
from edgedec.cli import ensure_default_bundle

SEGMENT = "layers_6_12.onnx"
DTYPES = {np.dtype("float32"): TensorProto.FLOAT, np.dtype("int8"): TensorProto.INT8,
          np.dtype("float16"): TensorProto.FLOAT16}


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


def linear_path(kind: str, x: str, stems: list[str], params: dict, out: str):
    """Nodes and feeds for one linear's low-rank output (its packed weights `stems`) into `out`."""
    pairs = [(params[f"{s}.lora_a"], params[f"{s}.lora_b"]) for s in stems]
    if kind == "blockdiag":
        a = np.concatenate([p[0] for p in pairs], axis=1)
        b = np.zeros((a.shape[1], sum(p[1].shape[1] for p in pairs)), np.float32)
        r0 = c0 = 0
        for pa, pb in pairs:
            b[r0:r0 + pb.shape[0], c0:c0 + pb.shape[1]] = pb
            r0, c0 = r0 + pb.shape[0], c0 + pb.shape[1]
        return one_path("fp32", x, stems[0] + "+", a, b, out)
    nodes, feeds, ups = [], {}, []
    for stem, (a, b) in zip(stems, pairs):
        more, f = one_path(kind, x, stem, a, b, f"{out}/{stem}" if len(stems) > 1 else out)
        nodes += more
        feeds.update(f)
        ups.append(more[-1].output[0])
    if len(ups) > 1:
        nodes.append(helper.make_node("Concat", ups, [out], axis=-1))
    return nodes, feeds


def variant(kind: str, bundle: Path, params: dict, work: Path) -> tuple[Path, dict]:
    m = onnx.load(bundle / SEGMENT)
    g = m.graph
    keep = [t for t in g.initializer if "lora" not in t.name]
    del g.initializer[:]
    g.initializer.extend(keep)
    paths = {}    # linear -> (x, weight stems)
    for n in g.node:
        if n.name.endswith("/A") and "/lora/" in n.name:
            linear = n.name.split("/lora/")[0]
            paths.setdefault(linear, (n.input[0], []))[1].append(n.input[1].removesuffix(".lora_a"))
    nodes, feeds = [], {}
    for n in g.node:
        if "/lora/" in n.name and not n.name.endswith("/lora/Add"):
            continue
        if n.name.endswith("/lora/Add"):
            x, stems = paths[n.name.split("/lora/")[0]]
            more, f = linear_path(kind, x, stems, params, n.input[1])
            nodes += more
            feeds.update(f)
        nodes.append(n)
    del g.node[:]
    g.node.extend(nodes)
    inputs = [i for i in g.input if "lora" not in i.name]
    inputs += [helper.make_tensor_value_info(k, DTYPES[v.dtype], list(v.shape)) for k, v in feeds.items()]
    del g.input[:]
    g.input.extend(inputs)
    path = work / f"{kind}.onnx"
    onnx.save(m, path, save_as_external_data=True, location=f"{kind}.onnx.data")
    return path, feeds


def step(graph: Path, feeds: dict, threads: int):
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
    for o in s.get_outputs():
        io.bind_output(o.name)

    def run(n: int) -> float:
        t = time.perf_counter()
        for _ in range(n):
            s.run_with_iobinding(io)
        return (time.perf_counter() - t) / n * 1e3
    return run, (s, io, keep)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-o", "--out", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    bundle = home() / "bench-lora" / "int4-switch"
    adapter = ort.AdapterFormat.read_adapter(str(bundle / "adapter.r16.onnx_adapter"))
    params = {k: v.numpy().copy() for k, v in adapter.get_parameters().items()}
    work = a.out / "graphs"
    work.mkdir(exist_ok=True)
    runs = {"plain": step(ensure_default_bundle(None) / SEGMENT, {}, a.threads)}
    sizes = {}
    for kind in ("per_weight", "blockdiag", "int8_b", "fp16"):
        path, feeds = variant(kind, bundle, params, work)
        sizes[kind] = sum(v.nbytes for v in feeds.values()) / 1e6
        runs[kind] = step(path, feeds, a.threads)
    ms = {k: [] for k in runs}
    for _ in range(a.rounds):
        for k, (run, _) in runs.items():
            run(10)
            ms[k].append(run(100))
    plain = np.array(ms["plain"])
    result = {k: {"ms_per_step_median": float(np.median(v)), "plain_over_this": float(np.median(plain / np.array(v))),
                  "adapter_mb_per_6_layers": sizes.get(k, 0.0)} for k, v in ms.items()}
    for p in work.iterdir():
        p.unlink()
    work.rmdir()
    (a.out / f"lora_paths-{a.threads}t.json").write_text(json.dumps({"segment": SEGMENT, "threads": a.threads,
                                                        "rounds": a.rounds, "variants": result}, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
