"""Mobile bundles (edgedec export --target mobile, export/mobile.py): ORT-format graphs with the int8 cache
built in, run by the Python runtime here (the Node engine's run is in test_android_engine.py)."""
import json

import numpy as np
import pytest

import edgedec
from edgedec.errors import EdgedecError
from edgedec.export.bundle_writer import export_bundle

from conftest import run_cli


def test_mobile_bundle_holds_ort_graphs_and_a_size_report(mobile_bundle):
    m = json.loads((mobile_bundle / "edgedec.json").read_text())
    graphs = [s["file"] for s in m["segments"]] + [m["head"]["file"]]
    assert all(g.endswith(".ort") for g in graphs)
    assert not list(mobile_bundle.glob("*.onnx*")) and not list(mobile_bundle.glob("*.gguf"))
    assert m["gguf"] is None and m["drafts"] == []
    report = m["mobile"]
    assert report["cache"] == "int8"
    assert report["fused"] and len(m["segments"]) == 1 and m["head"]["file"] == m["segments"][0]["file"]
    on_disk = sum(p.stat().st_size for p in mobile_bundle.iterdir() if p.name != "edgedec.json") / 1e6
    assert report["bundle_mb"] == pytest.approx(on_disk, rel=0.01)
    per_token = 30 * 2 * 3 * 64          # int8 keys and values: n_layers * 2 * n_kv_heads * head_dim bytes
    assert report["rss_mb"]["2048"] == pytest.approx(report["loaded_rss_mb"] + per_token * 2048 / 1e6, abs=0.2)
    assert report["loaded_rss_mb"] > report["bundle_mb"] / 2      # the weights are really resident


def test_mobile_bundle_decodes_as_the_desktop_bundle_with_an_int8_cache(mobile_bundle, gguf_path, running_text,
                                                                        tmp_path):
    """Against a desktop bundle cut the same way (one segment: where segments end changes the rounding)."""
    desktop_path = export_bundle(gguf_path, tmp_path / "one-segment", cuts="30", draft=None)[0]
    mobile, desktop = edgedec.load(mobile_bundle), edgedec.load(desktop_path, kv="int8")
    assert mobile.kv.type == "int8"
    ids = mobile.tokenizer.encode(running_text)[:300]
    got = mobile.session().backend.forward(ids, all_logits=True)
    want = desktop.session().backend.forward(ids, all_logits=True)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(mobile.session().backend.forward(ids), want[-1:])     # the head on one row
    fused, cut = mobile.session().backend, desktop.session().backend
    fused.min_rows = cut.min_rows = 2             # the many-row path: every call padded to two rows
    for chunk in (ids[:7], ids[7:8], ids[8:9], ids[9:12]):
        np.testing.assert_array_equal(fused.forward(chunk), cut.forward(chunk))
        np.testing.assert_array_equal(fused.forward(chunk[:1], all_logits=True), cut.forward(chunk[:1], all_logits=True))
    prompt = "Write a haiku about the sea."
    assert mobile.generate(prompt, max_tokens=24).tokens == desktop.generate(prompt, max_tokens=24).tokens


def test_mobile_bundle_refuses_what_its_graphs_cannot_do(mobile_bundle):
    for args, says in ((["--kv", "fp32"], "int8 KV cache built in"), (["--kv-window", "256"], "cannot be rebuilt"),
                       (["--backend", "llamacpp"], "no GGUF"), (["--mode", "lookup"], "export it with --cuts")):
        p = run_cli("generate", mobile_bundle, "-p", "hi", "--max-tokens", "2", *args)
        assert p.returncode != 0 and says in p.stderr and "Traceback" not in p.stderr, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1, p.stderr


def test_mobile_export_refuses_adapters_and_draft_models(gguf_path, tmp_path):
    for kw in ({"lora": ["models/adapters/pydoc=pydoc"]}, {"draft_model": "truncate:6"}, {"target": "tablet"}):
        with pytest.raises(EdgedecError, match="--target"):
            export_bundle(gguf_path, tmp_path / "b", **{"target": "mobile", **kw})
        assert not (tmp_path / "b").exists() and not list(tmp_path.iterdir())
