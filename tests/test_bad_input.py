"""Every user mistake gets one line naming the problem and the fix: no traceback, nothing left on disk."""
import json
import os
import shutil

import pytest

from conftest import run_cli


def one_line_error(proc, *words):
    assert proc.returncode == 1, proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("edgedec: error:"), proc.stderr
    assert "Traceback" not in proc.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def no_partial(dirpath):
    leftovers = [p for p in dirpath.parent.iterdir() if p.name.startswith(f".{dirpath.name}.")]
    assert not dirpath.exists() and not leftovers


def test_missing_path(tmp_path):
    out = tmp_path / "b"
    one_line_error(run_cli("export", tmp_path / "nope.gguf", "-o", out), "no such file")
    no_partial(out)


def test_not_a_gguf(tmp_path):
    f = tmp_path / "notes.gguf"
    f.write_text("hello, not a model")
    out = tmp_path / "b"
    one_line_error(run_cli("export", f, "-o", out), "not a GGUF")
    no_partial(out)


def test_truncated_gguf(tmp_path, gguf_path):
    f = tmp_path / "cut.gguf"
    with open(gguf_path, "rb") as src:
        f.write_bytes(src.read(gguf_path.stat().st_size // 2))
    out = tmp_path / "b"
    one_line_error(run_cli("export", f, "-o", out), "truncated")
    no_partial(out)


def test_unsupported_architecture(tmp_path):
    import gguf
    import numpy as np
    f = tmp_path / "mamba.gguf"
    w = gguf.GGUFWriter(str(f), "mamba")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    out = tmp_path / "b"
    one_line_error(run_cli("export", f, "-o", out), "mamba", "supported: llama")
    no_partial(out)


def test_hf_folder_of_unsupported_architecture(tmp_path):
    d = tmp_path / "gemma"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "gemma3"}))
    (d / "model.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    one_line_error(run_cli("export", d, "-o", tmp_path / "b"), "gemma3", "supported: llama")


def test_gguf_with_rope_scaling(tmp_path):
    import gguf
    import numpy as np
    f = tmp_path / "scaled.gguf"
    w = gguf.GGUFWriter(str(f), "llama")
    w.add_block_count(1)
    w.add_embedding_length(64)
    w.add_head_count(4)
    w.add_feed_forward_length(128)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_context_length(128)
    w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
    w.add_tensor("token_embd.weight", np.zeros((4, 64), np.float32))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    one_line_error(run_cli("export", f, "-o", tmp_path / "b"), "rope scaling 'linear' is not supported")
    no_partial(tmp_path / "b")


def test_hf_folder_with_rope_scaling(tmp_path):
    d = tmp_path / "llama31"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({
        "model_type": "llama", "num_attention_heads": 4, "hidden_size": 64, "num_hidden_layers": 1,
        "intermediate_size": 128, "vocab_size": 32, "rope_scaling": {"rope_type": "llama3", "factor": 8.0}}))
    (d / "model.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    one_line_error(run_cli("export", d, "-o", tmp_path / "b"), "rope scaling 'llama3' is not supported")
    no_partial(tmp_path / "b")


@pytest.fixture
def bundle_copy(tmp_path, int4_bundle):
    dst = tmp_path / "bundle"
    shutil.copytree(int4_bundle, dst)
    return dst


def test_bundle_missing_graph(bundle_copy):
    (bundle_copy / "layers_6_12.onnx").unlink()
    one_line_error(run_cli("generate", bundle_copy, "-p", "hi"), "missing layers_6_12.onnx", "export")


def test_bundle_checksum_mismatch(bundle_copy):
    with open(bundle_copy / "head.onnx.data", "r+b") as f:
        f.seek(1000)
        f.write(b"\xff\xfe\xfd")
    one_line_error(run_cli("generate", bundle_copy, "-p", "hi"), "checksum", "export")


def test_bundle_newer_version(bundle_copy):
    m = json.loads((bundle_copy / "edgedec.json").read_text())
    m["version"] = 99
    (bundle_copy / "edgedec.json").write_text(json.dumps(m))
    one_line_error(run_cli("generate", bundle_copy, "-p", "hi"), "version 99", "upgrade")


def test_prompt_longer_than_context_is_truncated_and_said(int4_bundle):
    p = run_cli("generate", int4_bundle, "--ctx", "64", "-n", "4", "--json", "-p", "word " * 200)
    assert p.returncode == 0, p.stderr
    assert "note: the prompt has" in p.stderr and "kept its last" in p.stderr
    assert json.loads(p.stdout)["n_prompt_tokens"] < 64


def test_bad_options(int4_bundle):
    one_line_error(run_cli("generate", int4_bundle, "-p", "hi", "--top-p", "0"), "--top-p")
    one_line_error(run_cli("generate", int4_bundle, "-p", "hi", "--ctx", "100000"), "--ctx")
    one_line_error(run_cli("generate", int4_bundle, "-p", "hi", "--backend", "tpu"), "backend")
    one_line_error(run_cli("export", "-o", "/tmp/x", "--quant", "int3"), "--quant")


def test_bad_calibrated_exports(tmp_path, tiny):
    """int4-calibrated/-mixed re-fit 4-bit GGUF blocks: a float source has none; a calibration text under
    512 tokens is too short to fit on. Nothing is left on disk."""
    one_line_error(run_cli("export", tiny[2] / "hf", "-o", tmp_path / "a", "--quant", "int4-calibrated"),
                   "int4-calibrated", "4-bit GGUF", "int4, int8 or fp32")
    no_partial(tmp_path / "a")
    short = tmp_path / "short.txt"
    short.write_text("the quick brown fox jumps over the lazy dog. " * 30)
    one_line_error(run_cli("export", "-o", tmp_path / "b", "--quant", "int4-mixed", "--calibration-text", short),
                   "calibration text", "at least 512")
    no_partial(tmp_path / "b")


def test_bad_speculation_options(int4_bundle):
    gen = ("generate", int4_bundle, "-p", "hi", "-n", "4")
    one_line_error(run_cli(*gen, "--mode", "self-spec", "--exit-layer", "0"), "1..29")
    one_line_error(run_cli(*gen, "--mode", "self-spec", "--exit-layer", "30"), "1..29")
    one_line_error(run_cli(*gen, "--mode", "self-spec", "--exit-layer", "7"), "not a cut", "6, 12, 18, 24", "--cuts")
    one_line_error(run_cli(*gen, "--mode", "self-spec", "--draft-len", "0"), "--draft-len")
    one_line_error(run_cli(*gen, "--mode", "lookup", "--draft-len", "-2"), "--draft-len")
    one_line_error(run_cli(*gen, "--mode", "self-spec", "--backend", "llamacpp"), "llamacpp", "plain")
    one_line_error(run_cli(*gen, "--mode", "warp"), "warp", "self-spec")


def test_interrupted_export_leaves_nothing(tmp_path, gguf_path):
    """Ctrl-C an export midway (once its temporary folder exists): no bundle and no temporary folder left,
    and the export says it was interrupted. The child gets Ctrl-C's default handling whatever the test
    process inherited (an ignored SIGINT would be inherited and the export could not be interrupted)."""
    import signal
    import subprocess
    import sys
    import time
    out = tmp_path / "b"
    proc = subprocess.Popen([sys.executable, "-m", "edgedec.cli", "export", str(gguf_path), "-o", str(out)],
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not [p for p in tmp_path.iterdir() if p.name.startswith(".b.tmp")] and time.time() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.2)
    time.sleep(3)                                             # well inside the export (it takes ~50 s)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err, err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".b.tmp")]


def test_bundle_is_an_ordinary_folder(int4_bundle):
    """The export's private temporary directory (0700, data files 0600) becomes a folder with the
    permissions the user's umask gives any new file, like the GGUF it came from."""
    umask = os.umask(0)
    os.umask(umask)
    assert int4_bundle.stat().st_mode & 0o777 == 0o777 & ~umask
    assert {f.stat().st_mode & 0o777 for f in int4_bundle.iterdir()} == {0o666 & ~umask}
