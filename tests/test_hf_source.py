"""Hugging Face folder sources: a tiny random llama saved by transformers itself, exported in every quant mode
and checked against transformers' own forward pass.

Odd sizes on purpose (hidden 80, ffn 144: not multiples of the 32-wide quantization block), an untied LM
head, a rope_theta that is not the default (transformers 5 writes it under `rope_parameters`), and linear weights put on a 4-bit grid per block of 32 (as a Q4_1 GGUF stores them), so the exact
int4 path with its block-sum correction and padding runs as well as the re-quantizing one.
"""
import numpy as np
import pytest

import edgedec
from edgedec.export.bundle_writer import export_bundle

from conftest import random_llama, save_hf

PROMPT = [1, 504, 2714, 314, 260, 8421, 30, 216, 9, 4218, 2, 17, 5, 3]


def _on_4bit_grid(w):
    """Each row's blocks of 32 (the last one may be shorter) become lo + d * q, q in 0..15."""
    out = w.clone()
    for s in range(0, w.shape[1], 32):
        b = w[:, s:s + 32]
        lo, hi = b.min(1, keepdim=True).values, b.max(1, keepdim=True).values
        d = (hi - lo) / 15
        out[:, s:s + 32] = lo + d * ((b - lo) / d).round()
    return out


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory, int4_bundle):
    model = random_llama(vocab_size=49152, hidden_size=80, intermediate_size=144, num_hidden_layers=3,
                         num_attention_heads=5, num_key_value_heads=1, max_position_embeddings=512,
                         rope_theta=50000.0, tie_word_embeddings=False)
    import torch
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("proj.weight"):
                p.copy_(_on_4bit_grid(p))
    d = tmp_path_factory.mktemp("hf") / "tiny-llama"
    save_hf(model, d, int4_bundle)
    with torch.no_grad():
        ref = model(torch.tensor([PROMPT])).logits[0].numpy()
    return d, ref


@pytest.mark.parametrize("quant, tol, min_agree", [("fp32", 1e-3, 1.0), ("int8", 0.05, 0.85),
                                                   ("int4", 0.05, 0.85)])
def test_hf_folder_export_matches_transformers(hf_folder, tmp_path, quant, tol, min_agree):
    folder, ref = hf_folder
    bundle, manifest = export_bundle(folder, tmp_path / quant, quant=quant, cuts="1")
    assert manifest.gguf is None and manifest.config.tied_embeddings is False
    m = edgedec.load(bundle, n_ctx=64)
    got = m.backend.forward(PROMPT, all_logits=True)
    rel = np.abs(got - ref).max() / np.abs(ref).max()
    agree = (got.argmax(-1) == ref.argmax(-1)).mean()
    print(f"{quant}: max relative difference {rel:.2e}, top-1 agreement {agree:.0%}")
    assert rel < tol and agree >= min_agree
