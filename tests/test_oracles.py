"""Independent implementations: Hugging Face transformers and llama.cpp, loading the same GGUF."""
import numpy as np
import pytest

import edgedec
from edgedec.perplexity import token_nll

PROMPTS = ["The quick brown fox jumps over the lazy dog. Then",
           "def fibonacci(n):\n    ",
           "<|im_start|>user\nName three rivers in Europe.<|im_end|>\n<|im_start|>assistant\n"]


@pytest.fixture(scope="module")
def hf_model(gguf_path):
    torch = pytest.importorskip("torch", reason="oracle extra: pip install 'edgedec[oracle]'")
    transformers = pytest.importorskip("transformers")
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, torch_dtype=torch.float32)
    model.eval()
    return model


def test_fp32_logits_match_transformers(hf_model, fp32_bundle):
    import torch
    ours = edgedec.load(fp32_bundle)
    for prompt in PROMPTS:
        ids = ours.tokenizer.encode(prompt)
        ours.reset()
        with torch.no_grad():
            out = hf_model(torch.tensor([ids]), use_cache=True)
        ref, past = out.logits[0].numpy(), out.past_key_values
        got = ours.backend.forward(ids, all_logits=True)
        assert np.abs(got - ref).max() / np.abs(ref).max() < 1e-3, prompt
        tok = int(ref[-1].argmax())
        for _ in range(32):                                         # cached decode steps
            with torch.no_grad():
                out = hf_model(torch.tensor([[tok]]), past_key_values=past, use_cache=True)
            ref, past = out.logits[0, -1].numpy(), out.past_key_values
            got = ours.backend.forward([tok])[-1]
            assert np.abs(got - ref).max() / np.abs(ref).max() < 1e-3, prompt
            tok = int(ref.argmax())


def _llamacpp_predictions(bundle, ids, window=512):
    from edgedec.runtimes.llamacpp import LlamaCppEngine
    peer = LlamaCppEngine(bundle, n_ctx=window, logits_all=True).runner()
    preds = []
    for s in range(0, len(ids) - 1, window):
        chunk = ids[s:s + window]
        if len(chunk) < 2:
            break
        peer.truncate(0)
        preds.extend(peer.forward(chunk, all_logits=True)[:-1].argmax(-1))
    return np.array(preds)


def _transformers_predictions(hf_model, ids, window=512):
    import torch
    preds = []
    for s in range(0, len(ids) - 1, window):
        chunk = ids[s:s + window]
        if len(chunk) < 2:
            break
        with torch.no_grad():
            preds.extend(hf_model(torch.tensor([chunk])).logits[0, :-1].argmax(-1).tolist())
    return np.array(preds)


def test_top1_agreement_with_llamacpp(hf_model, int4_bundle, fp32_bundle, running_text):
    """Teacher-forced top-1 agreement with llama.cpp on 2,000+ tokens of King Lear.

    The issue asks for >= 98%. The ceiling is llama.cpp's own rounding (8-bit activations, f16 KV cache):
    transformers in fp32, which no one here wrote, agrees with it on only ~96.4% of this text, and so does
    our fp32 bundle. So this asserts what quantization is responsible for: int4 loses at most 1 point of
    agreement against exact math (transformers, and our fp32 bundle), and stays >= 95%."""
    pytest.importorskip("llama_cpp", reason="llamacpp extra: pip install 'edgedec[llamacpp]'")
    agree = {}
    for name, b in (("int4", int4_bundle), ("fp32", fp32_bundle)):
        ours = edgedec.load(b, n_ctx=512)
        ids = ours.tokenizer.encode(running_text)
        assert len(ids) >= 2000
        _, pred = token_nll(ours.backend, ids, window=512)
        peer = _llamacpp_predictions(ours.bundle, ids)
        agree[name] = float((peer == pred).mean())
    agree["transformers"] = float((peer == _transformers_predictions(hf_model, ids)).mean())
    print(f"top-1 agreement with llama.cpp over {len(ids)} tokens: {agree}")
    assert agree["int4"] >= 0.95
    assert agree["int4"] >= max(agree["fp32"], agree["transformers"]) - 0.01


def test_tokenizer_matches_llamacpp(int4_bundle):
    llama_cpp = pytest.importorskip("llama_cpp")
    m = edgedec.load(int4_bundle)
    vocab = llama_cpp.Llama(model_path=str(m.bundle.gguf), vocab_only=True, verbose=False)
    for text in ["Hello world", "  two  spaces\tand tabs\n\nnew lines", "12345 + 678 = 13023",
                 "Ünïcödé — “quotes” 日本語 🙂", "<|im_start|>user\nhi<|im_end|>\n", "def f(x):\n    return x**2"]:
        assert m.tokenizer.encode(text) == vocab.tokenize(text.encode(), add_bos=False, special=True), text


@pytest.fixture(scope="module")
def calibrated_bundle(tmp_path_factory, gguf_path):
    from edgedec.export.bundle_writer import export_bundle
    return export_bundle(gguf_path, tmp_path_factory.mktemp("calibrated") / "b", quant="int4-calibrated", draft=None)[0]


def test_calibrated_bundle_against_llamacpp(calibrated_bundle, int4_bundle, running_text):
    """int4-calibrated drops the exact correction (export/calibration.py): faster, and measurably further
    from llama.cpp than the exact bundle. Measured on 16,000 characters of King Lear (bench/requant.py):
    top-1 agreement 67.0% (exact 95.8%), perplexity 1.20x llama.cpp's (exact 1.002x); on this shorter text,
    68.2% and 1.235x (exact 96.2%, 1.002x). Bounds: agreement >= 62%, perplexity <= 1.28x."""
    pytest.importorskip("llama_cpp", reason="llamacpp extra: pip install 'edgedec[llamacpp]'")
    manifest = edgedec.load(calibrated_bundle).bundle.manifest
    assert manifest.quant.mode == "int4-calibrated" and "standard library" in manifest.quant.calibration
    from edgedec.runtimes.llamacpp import LlamaCppEngine
    exact = edgedec.load(int4_bundle)
    ids = exact.tokenizer.encode(running_text)
    peer_nll, peer_pred = token_nll(LlamaCppEngine(exact.bundle, n_ctx=512, logits_all=True).runner(), ids, 512)
    got = {}
    for name, b in (("exact", int4_bundle), ("calibrated", calibrated_bundle)):
        nll, pred = token_nll(edgedec.load(b, n_ctx=512).backend, ids, window=512)
        got[name] = (float((pred == peer_pred).mean()), float(np.exp(nll.mean() - peer_nll.mean())))
    print(f"agreement with llama.cpp, perplexity / llama.cpp's: {got}")
    assert got["exact"][0] > got["calibrated"][0] >= 0.62
    assert got["exact"][1] < got["calibrated"][1] <= 1.28
