"""LoRA adapters: switched at run time, merged at export, and run by llama.cpp from our GGUF LoRA.

Oracles: transformers + peft (their own LoRA forward) on a tiny random llama and on the real model with the
trained adapter in models/adapters/pydoc; llama.cpp loading the GGUF LoRA the exporter writes.
"""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import edgedec
from edgedec.export.bundle_writer import export_bundle
from edgedec.perplexity import token_nll

from conftest import random_llama, run_cli, save_hf

ADAPTER = Path(__file__).resolve().parents[1] / "models" / "adapters" / "pydoc"
MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def held_out_text() -> str:
    """The adapter's held-out text (tools/train_lora.py): every 10th topic of Python's reference docs."""
    from pydoc_data.topics import topics
    return "\n\n".join(topics[k] for i, k in enumerate(sorted(topics)) if i % 10 == 0)


def zero_adapter(folder: Path) -> Path:
    """The trained adapter with every B set to zero (a PEFT folder)."""
    from safetensors.numpy import load_file, save_file
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(ADAPTER / "adapter_config.json", folder)
    tensors = load_file(ADAPTER / "adapter_model.safetensors")
    save_file({k: np.zeros_like(v) if "lora_B" in k else v for k, v in tensors.items()},
              folder / "adapter_model.safetensors")
    return folder


@pytest.fixture(scope="module")
def lora_bundles(tmp_path_factory, gguf_path):
    """fp32 switchable, fp32 merged, int4 switchable (the trained adapter and a zero one)."""
    root = tmp_path_factory.mktemp("lora")
    zero = zero_adapter(root / "zero")
    spec = f"{ADAPTER}=pydoc"
    return {
        "fp32": export_bundle(gguf_path, root / "fp32", quant="fp32", draft=None, lora=[spec])[0],
        "fp32-merged": export_bundle(gguf_path, root / "merged", quant="fp32", draft=None, lora=[spec],
                                     merge=True)[0],
        "int4": export_bundle(gguf_path, root / "int4", draft=None, lora=[spec, f"{zero}=zero"])[0],
    }


def test_no_adapter_and_a_zero_adapter_leave_logits_bit_identical(lora_bundles, int4_bundle, running_text):
    base = edgedec.load(int4_bundle)
    ids = base.tokenizer.encode(running_text)[:300]
    want = base.backend.forward(ids, all_logits=True)
    for adapter in (None, "zero"):
        got = edgedec.load(lora_bundles["int4"], adapter=adapter).backend.forward(ids, all_logits=True)
        assert np.array_equal(got, want), adapter
    moved = edgedec.load(lora_bundles["int4"], adapter="pydoc").backend.forward(ids, all_logits=True)
    assert np.abs(moved - want).max() > 0.1


def test_switching_at_run_time_equals_merging(lora_bundles):
    switched = edgedec.load(lora_bundles["fp32"], adapter="pydoc")
    merged = edgedec.load(lora_bundles["fp32-merged"])
    ids = switched.tokenizer.encode(held_out_text()[:2000])
    a = switched.backend.forward(ids, all_logits=True)
    b = merged.backend.forward(ids, all_logits=True)
    assert np.abs(a - b).max() / np.abs(b).max() < 1e-4


def test_switching_between_calls_drops_the_other_adapters_cache(lora_bundles):
    model = edgedec.load(lora_bundles["int4"])
    session = model.session()
    prompt = "Explain what a Python decorator does."
    fresh = {name: model.session().generate(prompt, max_tokens=24, adapter=name).tokens for name in (None, "pydoc")}
    assert fresh[None] != fresh["pydoc"]
    for name in ("pydoc", None, "pydoc"):             # same prompt: the cached prefix must not be reused
        assert session.generate(prompt, max_tokens=24, adapter=name).tokens == fresh[name]


def test_adapter_matches_transformers_peft(lora_bundles, gguf_path):
    torch = pytest.importorskip("torch", reason="oracle extra: pip install 'edgedec[oracle]'")
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    base = transformers.AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name,
                                                             dtype=torch.float32)
    ref_model = peft.PeftModel.from_pretrained(base, str(ADAPTER)).eval()
    ours = edgedec.load(lora_bundles["fp32"], adapter="pydoc")
    ids = ours.tokenizer.encode(held_out_text()[:1500])
    with torch.no_grad():
        ref = ref_model(torch.tensor([ids])).logits[0].numpy()
    got = ours.backend.forward(ids, all_logits=True)
    assert np.abs(got - ref).max() / np.abs(ref).max() < 1e-3


def test_peft_adapter_on_a_hugging_face_source_matches_peft(tmp_path, int4_bundle):
    """A tiny random llama from a Hugging Face folder (q/k rows permuted on the way in) with a random LoRA
    on every module: our switched and merged bundles against peft's own forward."""
    torch = pytest.importorskip("torch", reason="oracle extra: pip install 'edgedec[oracle]'")
    peft = pytest.importorskip("peft")
    model = random_llama(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=True)
    save_hf(model, tmp_path / "hf", int4_bundle)
    lora = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, target_modules=MODULES, lora_dropout=0.0))
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    lora.save_pretrained(tmp_path / "adapter")
    ids = list(range(100, 140))
    with torch.no_grad():
        ref = lora(torch.tensor([ids])).logits[0].numpy()
    for merge in (False, True):
        bundle, _ = export_bundle(tmp_path / "hf", tmp_path / f"b{merge}", quant="fp32", cuts="1",
                                  lora=[f"{tmp_path / 'adapter'}=rand"], merge=merge)
        got = edgedec.load(bundle, n_ctx=256, adapter=None if merge else "rand").backend.forward(ids, all_logits=True)
        assert np.abs(got - ref).max() / np.abs(ref).max() < 1e-4, f"merge={merge}"


def test_gguf_lora_moves_llamacpp_as_ours(lora_bundles):
    pytest.importorskip("llama_cpp", reason="llamacpp extra")
    from edgedec.runtimes.llamacpp import LlamaCppEngine
    bundle = edgedec.load(lora_bundles["int4"]).bundle
    ids = edgedec.load(lora_bundles["int4"]).tokenizer.encode(held_out_text())[:800]
    logits = {}
    for adapter in (None, "pydoc"):
        logits["ours", adapter] = edgedec.load(bundle.path, adapter=adapter).backend.forward(ids, all_logits=True)
        logits["llama", adapter] = LlamaCppEngine(bundle, logits_all=True, adapter=adapter).runner().forward(
            ids, all_logits=True)
    ours = logits["ours", "pydoc"] - logits["ours", None]
    theirs = logits["llama", "pydoc"] - logits["llama", None]
    cosine = float((ours * theirs).sum() / np.sqrt((ours * ours).sum() * (theirs * theirs).sum()))
    agree = {a: float((logits["ours", a].argmax(-1) == logits["llama", a].argmax(-1)).mean()) for a in (None, "pydoc")}
    assert cosine > 0.9, cosine
    assert agree["pydoc"] > agree[None] - 0.02, agree


def test_adapter_lowers_perplexity_on_its_held_out_text(lora_bundles):
    text = held_out_text()
    nll = {}
    for adapter in (None, "pydoc"):
        model = edgedec.load(lora_bundles["int4"], adapter=adapter)
        ids = model.tokenizer.encode(text)[:1024]
        nll[adapter] = float(np.mean(token_nll(model.backend, ids, window=512)[0]))
    assert np.exp(nll["pydoc"]) < 0.95 * np.exp(nll[None]), nll


def test_a_gguf_lora_reads_back_as_the_peft_adapter(tmp_path, gguf_path):
    """LoRA in from GGUF: our GGUF LoRA (q/k rows in GGUF order, alpha) reads back as the same adapter."""
    from edgedec.export.lora import read_adapter, write_gguf
    from edgedec.export.sources import load_source
    config = load_source(gguf_path).config
    peft = read_adapter(f"{ADAPTER}=pydoc", config)
    write_gguf(peft, config, tmp_path / "pydoc.gguf")
    back = read_adapter(str(tmp_path / "pydoc.gguf"), config)
    assert back.name == "pydoc" and back.scale == peft.scale and back.pairs.keys() == peft.pairs.keys()
    for w, (a, b) in peft.pairs.items():
        assert np.array_equal(back.pairs[w][0], a) and np.array_equal(back.pairs[w][1], b), w


def test_info_lists_adapters(lora_bundles):
    out = run_cli("info", lora_bundles["int4"])
    assert out.returncode == 0, out.stderr
    assert "pydoc" in out.stdout and "zero" in out.stdout


# ---------------------------------------------------------------- bad input: one line each, nothing written

def _peft_folder(folder: Path, config: dict, tensors: dict) -> Path:
    from safetensors.numpy import save_file
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps(config))
    save_file(tensors, folder / "adapter_model.safetensors")
    return folder


def _export_fails(tmp_path, gguf_path, spec: str, *words: str) -> None:
    out = run_cli("export", gguf_path, "-o", tmp_path / "bundle", "--quant", "fp32", "--no-draft", "--lora", spec)
    assert out.returncode == 1, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgedec: error:"), out.stderr
    for w in words:
        assert w in lines[0], lines[0]
    assert not (tmp_path / "bundle").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".bundle")]


def test_adapter_for_another_hidden_size_is_refused(tmp_path, gguf_path):
    a = np.zeros((8, 960), np.float32)
    b = np.zeros((960, 8), np.float32)
    folder = _peft_folder(tmp_path / "big", {"peft_type": "LORA", "r": 8, "lora_alpha": 16,
                                             "target_modules": ["q_proj"]},
                          {"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": a,
                           "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": b})
    _export_fails(tmp_path, gguf_path, str(folder), "[8, 960]", "[576, 576]", "hidden size 576")


def test_unknown_target_module_is_refused(tmp_path, gguf_path):
    folder = _peft_folder(tmp_path / "emb", {"peft_type": "LORA", "r": 8, "target_modules": ["embed_tokens"]}, {})
    _export_fails(tmp_path, gguf_path, str(folder), "embed_tokens", "q_proj")


def test_missing_adapter_config_is_refused(tmp_path, gguf_path):
    (tmp_path / "noconf").mkdir()
    shutil.copy(ADAPTER / "adapter_model.safetensors", tmp_path / "noconf")
    _export_fails(tmp_path, gguf_path, str(tmp_path / "noconf"), "adapter_config.json")


def test_rank_larger_than_the_layer_is_refused(tmp_path, gguf_path):
    r = 600
    folder = _peft_folder(tmp_path / "wide", {"peft_type": "LORA", "r": r, "target_modules": ["q_proj"]},
                          {"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": np.zeros((r, 576), np.float32),
                           "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": np.zeros((576, r), np.float32)})
    _export_fails(tmp_path, gguf_path, str(folder), "rank 600", "larger than the layer")


def test_unknown_adapter_name_lists_the_bundles_adapters(lora_bundles):
    out = run_cli("generate", lora_bundles["int4"], "-p", "hi", "-n", "2", "--adapter", "nope")
    assert out.returncode == 1
    line = out.stderr.strip()
    assert "\n" not in line and "nope" in line and "pydoc" in line and "zero" in line, line
