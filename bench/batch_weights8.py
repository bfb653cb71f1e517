"""Issue 18's untried lever: the batched graphs' 4-bit weights as 8-bit MatMulNBits, same codes.

    python bench/batch_weights8.py [-o bench/results/batch-20261203/weights8.json]

Each 4-bit code c (default zero point 8) becomes the 8-bit code c + 120 (default zero point 128), so the
dequantized weights are the same numbers; only the kernel changes, at twice the weight bytes. Two batch
runners on the default bundle, one per form, take B = 8 one-token steps in alternation (paired, so the
machine's drift cancels); reports the median step time of each and the largest logit difference.
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np
from onnx import numpy_helper
from onnx.external_data_helper import load_external_data_for_model

import edgedec
import edgedec.runtimes.onnxruntime as ort_backend
from edgedec.export.batching import batch_variant
from edgedec.runtimes.ort_batch import OrtBatchRunner
from edgedec.bundle import default_bundle_path


def eight_bit(model, folder: str):
    load_external_data_for_model(model, folder)
    inits = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        attrs = {a.name: a for a in node.attribute}
        if node.op_type != "MatMulNBits" or attrs["bits"].i != 4 or "BlockSums" in node.name:
            continue
        if len(node.input) > 3 and node.input[3]:
            raise SystemExit(f"{node.name} has zero points; this bench takes the default (exact) bundle")
        packed = numpy_helper.to_array(inits[node.input[1]])               # [N, blocks, 16]
        codes = np.stack([packed & 15, packed >> 4], -1).reshape(*packed.shape[:2], 32)
        inits[node.input[1]].CopyFrom(numpy_helper.from_array((codes + 120).astype(np.uint8), node.input[1]))
        attrs["bits"].i = 8
    return model


def runner(bundle: str, slots: int, variant):
    ort_backend.batch_variant = variant
    model = edgedec.load(bundle, threads=2, n_ctx=512)
    r = OrtBatchRunner(model.engine, slots, 512)
    for s in range(slots):
        r.prefill(s, list(range(100 + s, 140 + s)))
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-o", "--out", default="bench/results/batch-20261203/weights8.json")
    ap.add_argument("--slots", type=int, default=8)
    ap.add_argument("--steps", type=int, default=60)
    args = ap.parse_args()
    bundle = str(default_bundle_path())
    four = runner(bundle, args.slots, batch_variant)
    eight = runner(bundle, args.slots, lambda g, cfg: eight_bit(batch_variant(g, cfg), bundle))
    times, diff = {"int4": [], "int8_codes": []}, 0.0
    tokens = [5] * args.slots
    for _ in range(args.steps):
        logits = []
        for name, r in (("int4", four), ("int8_codes", eight)):
            t = time.perf_counter()
            logits.append(r.step(tokens))
            times[name].append(time.perf_counter() - t)
        diff = max(diff, float(np.abs(logits[0] - logits[1]).max()))
    out = {name: {"median_step_ms": 1e3 * float(np.median(ts[5:]))} for name, ts in times.items()}
    out.update(slots=args.slots, steps=args.steps, speedup=out["int4"]["median_step_ms"] / out["int8_codes"]["median_step_ms"],
               max_abs_logit_diff=diff)
    print(json.dumps(out, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
