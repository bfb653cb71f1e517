"""Trained drafts in bundles: the exported graph computes what the torch draft computes, the runtime's
draft rounds are lossless, and bad draft files get one-line errors. Tiny random model (the `tiny` fixture)
here; the real model's shipped draft is checked for greedy identity and sampling in test_speculative.py."""
import json
import shutil

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch", reason="train extra: pip install 'edgedec[train]'")

import edgedec  # noqa: E402
from edgedec.errors import BundleError, EdgedecError  # noqa: E402
from edgedec.export.bundle_writer import export_bundle  # noqa: E402
from edgedec.export.drafts import build_draft, load_draft, model_fingerprint  # noqa: E402
from edgedec.runtimes.onnxruntime import _session  # noqa: E402
from edgedec.runtimes.ort_draft import OrtDrafter  # noqa: E402
from edgedec.strategies import SelfSpecConfig  # noqa: E402
from edgedec_tools.distill.run import read_texts  # noqa: E402
from edgedec_tools.distill.train import DistillConfig, from_weights, train, weights  # noqa: E402


@pytest.fixture(scope="module")
def tiny_draft(tiny, tmp_path_factory):
    """A feature draft trained briefly on the tiny model, as a draft file, and the torch module."""
    src, arrays, _ = tiny
    cfg = DistillConfig(steps=60, batch=4, seq=64, lr=3e-3, vocab_size=256, checkpoint_every=60)
    root = tmp_path_factory.mktemp("tiny_draft")
    draft = train(arrays, src, cfg, root)
    path = root / "tiny.draft.npz"
    weights(draft, {"design": "feature", "model": src.name, "fingerprint": model_fingerprint(src)}).save(path)
    return draft, path


def test_exported_draft_graph_matches_its_torch_module(tiny, tiny_draft, tmp_path):
    """fp32 graph vs torch, within 1e-4: six rows in one call, then two rows one at a time through the
    draft's own KV cache (OrtDrafter), against torch on all eight rows at once."""
    src, arrays, _ = tiny
    w = load_draft(tiny_draft[1])
    draft = from_weights(w, src)     # the torch module with the file's (fp16-rounded) weights
    model, _ = build_draft(src, w, "fp32", 256)
    onnx.save_model(model, str(tmp_path / "draft.onnx"))
    drafter = OrtDrafter(_session(tmp_path / "draft.onnx", 2, "CPUExecutionProvider"), w.vocab, src.config, 256)
    h = arrays["final"][:8].astype(np.float32)[None]
    ids = arrays["ids"][1:9].astype(np.int64)
    with torch.no_grad():
        want_h, _ = draft(torch.tensor(h), torch.tensor(ids)[None], torch.arange(8)[None])
        want_logits = [draft(torch.tensor(h[:, :n]), torch.tensor(ids[:n])[None], torch.arange(n)[None],
                             last=True)[1][0, -1].numpy() for n in (6, 7, 8)]
    got_h, got_logits = [], []
    for rows in (slice(0, 6), slice(6, 7), slice(7, 8)):
        out, logits = drafter.step(h[:, rows], ids[rows].tolist())
        got_h.append(out)
        got_logits.append(logits)
    got_h = np.concatenate(got_h, axis=1)
    scale = np.abs(want_h.numpy()).max()
    assert np.abs(got_h - want_h.numpy()).max() / scale < 1e-4
    for got, want in zip(got_logits, want_logits):
        assert np.abs(got - want).max() < 1e-4


@pytest.fixture(scope="module")
def tiny_bundle_with_draft(tiny, tiny_draft, tmp_path_factory):
    _, _, root = tiny
    out = tmp_path_factory.mktemp("tiny_with_draft") / "bundle"
    bundle, manifest = export_bundle(root / "hf", out, quant="fp32", cuts="2", draft=tiny_draft[1])
    assert manifest.drafts[0].fingerprint == manifest.model.fingerprint
    return bundle


def test_trained_draft_rounds_equal_plain_greedy(tiny_bundle_with_draft):
    m = edgedec.load(tiny_bundle_with_draft, n_ctx=256, exact=True)
    rng = np.random.default_rng(1)
    spec = SelfSpecConfig(k_max=4, lookup=False, adaptive=False, threshold=0.0)
    drafted = 0
    for _ in range(8):
        ids = rng.integers(0, 400, size=int(rng.integers(5, 40))).tolist()
        ref = m.generate(ids, max_tokens=40).tokens
        m.reset()
        r = m.generate(ids, max_tokens=40, mode="self-spec", spec=spec)
        m.reset()
        assert r.tokens == ref
        drafted += r.speculation["drafted"].get("draft", 0)
    assert drafted > 100                          # the trained draft really drafted


def test_draft_follows_a_multi_turn_session(tiny_bundle_with_draft):
    """Turns reuse the cache; the draft keeps reading the model's states across them and stays lossless."""
    m = edgedec.load(tiny_bundle_with_draft, n_ctx=256, exact=True)
    spec = SelfSpecConfig(k_max=3, lookup=False, adaptive=False, threshold=0.0)
    s, plain = m.session(), m.session()
    ids = [5, 17, 99, 3]
    for turn in range(3):
        a = s.generate(ids, max_tokens=20, mode="self-spec", spec=spec).tokens
        b = plain.generate(ids, max_tokens=20).tokens
        assert a == b, f"turn {turn}"
        ids = ids + a + [7 + turn, 11]


def test_bad_draft_files(tiny, tiny_draft, gguf_path, tmp_path):
    _, _, root = tiny
    with pytest.raises(EdgedecError, match="no such draft file"):
        load_draft(tmp_path / "missing.draft.npz")
    cut = tmp_path / "cut.draft.npz"
    cut.write_bytes(tiny_draft[1].read_bytes()[:5000])
    with pytest.raises(EdgedecError, match="not a complete draft file"):
        load_draft(cut)
    with pytest.raises(EdgedecError, match="was trained for .* not .*edgedec-distill"):
        export_bundle(gguf_path, tmp_path / "real", draft=tiny_draft[1])
    assert not (tmp_path / "real").exists()


def test_bundle_whose_draft_is_for_another_model(tiny_bundle_with_draft, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle_with_draft, copy)
    m = json.loads((copy / "edgedec.json").read_text())
    m["drafts"][0]["fingerprint"] = "0123456789abcdef"
    (copy / "edgedec.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="draft was trained for"):
        edgedec.load(copy)


def test_distill_data_files(tmp_path):
    with pytest.raises(EdgedecError, match="no such file"):
        read_texts([str(tmp_path / "nope.txt")])
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(EdgedecError, match="is empty"):
        read_texts([str(tmp_path / "empty.txt")])
    (tmp_path / "ok.txt").write_text("Some real text.")
    assert read_texts([str(tmp_path / "ok.txt")]) == ["Some real text."]
