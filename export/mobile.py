"""Mobile bundles (`edgedec export --target mobile`): what onnxruntime-android runs, and what it will cost.

A mobile bundle is an ordinary bundle made smaller and fixed for a phone:
- Its graphs are in ORT format with saved runtime optimizations, as onnxruntime's own converter makes them
  (`python -m onnxruntime.tools.convert_onnx_models_to_ort --optimization_style Runtime`): the basic
  optimizations applied, the rest recorded and replayed when a session sets
  session.enable_saved_runtime_optimizations=1. Nothing specific to the export machine's CPU is baked in.
- The phone's KV cache type is built into the segment graphs (export/kv.py `cache_variant`), because an
  ORT-format graph cannot be rewritten when it loads: int8, a quarter of fp32's bytes (its perplexity cost is
  in the README).
- All layers are one segment graph unless --cuts says otherwise, and that one graph holds the head as well
  (`fuse_head`): a phone makes one call a token, on one session and so one thread pool whose idle workers may
  spin (android_demo/engine/README.md). Its input `logits_rows` picks the rows the head scores, so a
  prefill chunk pays for one row of logits, not 256.
- What a phone does not run is left out: the GGUF (llama.cpp) and trained drafts (self-speculation).
- Prompts are read `prefill_chunk` (256) tokens per call, in Python and in the phone engine alike: the
  activations of one long call are what a phone runs out of memory on.
- A size report goes into the manifest: the bundle's MB, and the expected peak RSS at 2k and 8k positions:
  what the graphs and runtime take once loaded and through one prefill chunk (measured here, with edgedec's
  own runtime in a child process, above the interpreter's baseline) plus the cache's bytes for that many
  positions. It is an estimate: the phone's allocator and ONNX Runtime build differ.
"""
from __future__ import annotations

import dataclasses
import json
import platform
import subprocess
import sys
from pathlib import Path

import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from edgedec import manifest as mf
from edgedec.errors import EdgedecError

from .kv import bytes_per_token, cache_variant, load_ranges

CACHE = "int8"
PREFILL_CHUNK = 256     # tokens per prefill call: bounds the activations a long prompt would need at once
RSS_AT = (2048, 8192)
TARGETS = ("desktop", "mobile")


def check_target(target: str, lora: list[str], merge: bool, draft_model: str | None) -> None:
    if target not in TARGETS:
        raise EdgedecError(f"--target {target} is unknown; choose one of {', '.join(TARGETS)}")
    if target == "mobile" and ((lora and not merge) or draft_model):
        raise EdgedecError("--target mobile bundles hold the base model only: the phone engine switches no "
                           "adapters and runs no draft model; merge adapters (--merge) or drop --lora/--draft")


def to_mobile(tmp: Path, manifest: mf.Manifest, files) -> mf.Manifest:
    """Turn the bundle being written in `tmp` into a mobile one; `files(tmp)` lists its files for the manifest."""
    ranges = load_ranges(tmp / manifest.kv.file)
    head = onnx.load(str(tmp / manifest.head.file))
    fused = len(manifest.segments) == 1
    segments = []
    for seg in manifest.segments:
        graph = cache_variant(onnx.load(str(tmp / seg.file)), CACHE, ranges, positions=False)
        segments.append(dataclasses.replace(seg, file=_to_ort(fuse_head(graph, head) if fused else graph,
                                                              tmp / seg.file)))
    if fused:
        _remove_onnx(tmp / manifest.head.file)
        head = mf.Graph(segments[0].file)
    else:
        head = mf.Graph(_to_ort(head, tmp / manifest.head.file))
    for d in manifest.drafts:
        for name in (d.file, d.file + ".data", d.vocab_file):
            (tmp / name).unlink(missing_ok=True)
    if manifest.gguf is not None:
        (tmp / manifest.gguf.file).unlink()
    manifest = dataclasses.replace(manifest, segments=segments, head=head, drafts=[], gguf=None, files=files(tmp))
    report = mf.Mobile(cache=CACHE, bundle_mb=round(sum(f.bytes for f in manifest.files.values()) / 1e6, 1),
                       loaded_rss_mb=0.0, rss_mb={}, measured_on="", prefill_chunk=PREFILL_CHUNK, fused=fused)
    mf.write(tmp, dataclasses.replace(manifest, mobile=report))      # (what the measurement loads)
    rss = _loaded_rss_mb(tmp)
    per_token = bytes_per_token(CACHE, manifest.config.n_layers, manifest.config.n_kv_heads,
                                manifest.config.head_dim)
    report = dataclasses.replace(
        report, loaded_rss_mb=round(rss, 1), rss_mb={str(n): round(rss + per_token * n / 1e6, 1) for n in RSS_AT},
        measured_on=f"{platform.machine()}, onnxruntime {ort.__version__}, edgedec's Python runtime")
    manifest = dataclasses.replace(manifest, mobile=report)
    mf.write(tmp, manifest)
    return manifest


def _to_ort(model: onnx.ModelProto, path: Path) -> str:
    """Save `model` (its weights read from beside `path`) as `path` with suffix .ort; remove the ONNX files."""
    target = path.with_suffix(".ort")
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.use_per_session_threads = False      # (export has made ONNX Runtime's global thread pool by now)
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(target)
    so.add_session_config_entry("session.save_model_format", "ORT")
    so.add_session_config_entry("optimization.minimal_build_optimizations", "save")
    so.add_session_config_entry("session.model_external_initializers_file_folder_path", str(path.parent))
    ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    _remove_onnx(path)
    return target.name


def _remove_onnx(path: Path) -> None:
    path.unlink()
    path.with_name(path.name + ".data").unlink(missing_ok=True)


def fuse_head(segment: onnx.ModelProto, head: onnx.ModelProto) -> onnx.ModelProto:
    """One graph of all the layers and the head: the segment's inputs plus `logits_rows` (int64 [R], rows of
    this call), its present_* outputs, and `logits` [1, R, V] for those rows only (no hidden_out)."""
    g, h = segment.graph, head.graph
    clash = ({i.name for i in g.initializer} & {i.name for i in h.initializer}) | \
        ({n.name for n in g.node} & {n.name for n in h.node})
    assert not clash, f"segment and head share names: {sorted(clash)[:5]}"
    rows = helper.make_node("Gather", ["hidden_out", "logits_rows"], ["hidden"], "/head/rows/Gather", axis=1)
    vocab = h.output[0].type.tensor_type.shape.dim[2].dim_value
    graph = helper.make_graph(
        list(g.node) + [rows] + list(h.node), g.name + "_head",
        list(g.input) + [helper.make_tensor_value_info("logits_rows", TensorProto.INT64, ["R"])],
        [o for o in g.output if o.name != "hidden_out"] +
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, "R", vocab])],
        list(g.initializer) + list(h.initializer), value_info=list(g.value_info))
    opsets = {o.domain: o.version for o in list(segment.opset_import) + list(head.opset_import)}
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()],
                              producer_name=segment.producer_name)
    model.ir_version = segment.ir_version
    return model


_CHILD = """
import json, sys
def rss(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
import numpy, onnxruntime, edgedec
before = rss("VmRSS:")
model = edgedec.load(sys.argv[1], verify=False)
ids = model.tokenizer.encode("Hello, how are you today? " * 100)[:int(sys.argv[2]) + 8]
model.generate(ids, max_tokens=8)     # (a whole prefill chunk, then decoding: the activations' peak)
print(json.dumps({"mb": rss("VmHWM:") - before}))
"""


def _loaded_rss_mb(bundle: Path) -> float:
    """Peak RSS (MB) that loading the bundle, reading a prompt of one prefill chunk and decoding a few tokens
    adds above the interpreter's."""
    if not Path("/proc/self/status").exists():
        raise EdgedecError("--target mobile measures memory through /proc, which this system lacks; "
                           "export on Linux")
    out = subprocess.run([sys.executable, "-c", _CHILD, str(bundle), str(PREFILL_CHUNK)], capture_output=True,
                         text=True)
    if out.returncode != 0:
        raise EdgedecError(f"the mobile bundle did not load for its size report: {out.stderr.strip()[-300:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["mb"]
