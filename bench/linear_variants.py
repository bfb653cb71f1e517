"""How much does one exact-int4 linear layer cost in ONNX Runtime, per way of writing it? Random Q4_1-like
weights (K = N = 576, 16 layers chained in one session so that per-run overhead spreads out), one row.

    strip      MatMulNBits alone (what a GGUF Q4_1 block would need if its min were a multiple of d)
    gemm       + block sums (0/1 MatMulNBits) + Gemm(block_sums, residual, y): what the bundles run
    matmuladd  + block sums + MatMul + Add
    reducesum  block sums by Reshape + ReduceSum instead, + Gemm
    floatzp    MatMulNBits with a float zero point: exact in one node, but a slow path in ORT

    python bench/linear_variants.py [--rows 1] [--kinds strip,gemm,...]
"""
import argparse
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edgedec.export.graphs import BLOCK, MS
from edgedec.export.quant import pack_nibbles

K = N = 576
NB = K // BLOCK
LAYERS = 16
KINDS = ("strip", "gemm", "matmuladd", "reducesum", "floatzp")


def graph(kind: str, rng) -> bytes:
    nodes, inits = [], []

    def init(name, a):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(a), name))
        return name

    ones = np.zeros((NB, NB, BLOCK), np.uint8)
    ones[np.arange(NB), np.arange(NB)] = 1
    sums = [init("bs.q", pack_nibbles(ones)), init("bs.s", np.ones((NB, NB), np.float32)),
            init("bs.z", pack_nibbles(np.zeros((NB, NB), np.uint8)))]
    x = "x"
    for i in range(LAYERS):
        ins = [x, init(f"q{i}", pack_nibbles(rng.integers(0, 16, (N, NB, BLOCK)).astype(np.uint8))),
               init(f"s{i}", (rng.random((N, NB)) * 0.01).astype(np.float32))]
        if kind == "floatzp":
            ins.append(init(f"z{i}", (rng.random((N, NB)) * 15).astype(np.float32)))
        y = f"y{i}"
        nodes.append(helper.make_node("MatMulNBits", ins, [y], domain=MS, K=K, N=N, bits=4, block_size=BLOCK,
                                      accuracy_level=4))
        if kind in ("gemm", "matmuladd", "reducesum"):
            r = init(f"r{i}", (rng.standard_normal((NB, N)) * 0.005).astype(np.float32))
            if kind == "reducesum":
                nodes.append(helper.make_node("Reshape", [x, init(f"shape{i}", np.array([-1, NB, BLOCK]))], [f"xb{i}"]))
                nodes.append(helper.make_node("ReduceSum", [f"xb{i}", init(f"axis{i}", np.array([-1]))], [f"b{i}"],
                                              keepdims=0))
            else:
                nodes.append(helper.make_node("MatMulNBits", [x, *sums], [f"b{i}"], domain=MS, K=K, N=NB, bits=4,
                                              block_size=BLOCK, accuracy_level=4))
            if kind == "matmuladd":
                nodes.append(helper.make_node("MatMul", [f"b{i}", r], [f"c{i}"]))
                nodes.append(helper.make_node("Add", [y, f"c{i}"], [f"o{i}"]))
            else:
                nodes.append(helper.make_node("Gemm", [f"b{i}", r, y], [f"o{i}"]))
            y = f"o{i}"
        x = y
    g = helper.make_graph(nodes, kind, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["S", K])],
                          [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["S", N])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid(MS, 1)])
    m.ir_version = 10
    return m.SerializeToString()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1)
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("-t", "--threads", type=int, default=2)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    ort.set_global_thread_pool_sizes(a.threads, 1)
    sessions = {}
    for kind in a.kinds.split(","):
        so = ort.SessionOptions()
        so.use_per_session_threads = False
        so.log_severity_level = 3
        sessions[kind] = ort.InferenceSession(graph(kind, rng), so, providers=["CPUExecutionProvider"])
    x = rng.standard_normal((a.rows, K)).astype(np.float32)
    times = {k: [] for k in sessions}
    for _ in range(7):                       # engines take turns, 7 timings of 200 runs each
        for kind, s in sessions.items():
            s.run(None, {"x": x})
            t = time.perf_counter()
            for _ in range(200):
                s.run(None, {"x": x})
            times[kind].append((time.perf_counter() - t) / 200 / LAYERS * 1e6)
    for kind, t in times.items():
        print(f"{kind:10s} {np.median(t):8.2f} us per linear ({a.rows} row{'s' * (a.rows > 1)})")


if __name__ == "__main__":
    main()
