"""Our graphs against references: the numpy spec (fp32), the fp32 bundle (int4 perplexity), and golden output."""
import numpy as np
import pytest

import edgedec
from edgedec.export.sources import load_source
from edgedec.perplexity import token_nll
from edgedec.runtimes.numpy_ref import NumpyLlama

PROMPT_IDS = [1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 28, 1073, 416, 339, 724, 346, 47]


def test_fp32_graphs_match_numpy_reference(gguf_path, fp32_bundle):
    src = load_source(gguf_path)
    ref = NumpyLlama(src.config, {n: src.tensor(n) for n in src._loaders})
    model = edgedec.load(fp32_bundle)
    ours = model.backend.forward(PROMPT_IDS, all_logits=True)
    theirs = ref.forward(PROMPT_IDS)
    assert np.abs(ours - theirs).max() / np.abs(theirs).max() < 1e-4
    for chunk in ([42], [7, 8, 9], [1000]):                       # decode steps and a chunk after the cache
        ours, theirs = model.backend.forward(chunk, all_logits=True), ref.forward(chunk)
        assert np.abs(ours - theirs).max() / np.abs(theirs).max() < 1e-4


def test_int4_keeps_gguf_weights_exactly(int4_bundle):
    """SmolLM2's GGUF is Q4_1 + Q8_0: the int4 bundle re-encodes every block without rounding."""
    errors = edgedec.load(int4_bundle).bundle.manifest.quant.errors
    assert len(errors) == 30 * 4 + 2            # qkv, o, gate|up, down per layer; embedding, head
    assert max(e.max_abs for e in errors.values()) < 1e-5


def test_int4_perplexity_within_3_percent_of_fp32(int4_bundle, fp32_bundle, running_text):
    ppl = {}
    for name, b in (("int4", int4_bundle), ("fp32", fp32_bundle)):
        m = edgedec.load(b)
        ids = m.tokenizer.encode(running_text)
        assert len(ids) >= 2000
        nll, _ = token_nll(m.backend, ids, window=512)
        ppl[name] = float(np.exp(nll.mean()))
    assert ppl["int4"] / ppl["fp32"] < 1.03, ppl


GOLDEN_PROMPT = "What is the capital of Germany?"
GOLDEN = "The capital of Germany is Berlin."


def test_golden_greedy_output(int4_bundle):
    r = edgedec.load(int4_bundle).generate(GOLDEN_PROMPT, max_tokens=40)
    assert r.text == GOLDEN
    assert r.finish_reason == "stop"


def test_cached_decode_equals_fresh_prefill(fp32_bundle):
    """Tokens decoded one at a time through the cache equal the argmax of one fresh prefill of them all."""
    m = edgedec.load(fp32_bundle)
    r = m.generate("Write a short poem about the sea.", max_tokens=24)
    ids = m.encode_prompt("Write a short poem about the sea.") + r.tokens[:-1]
    m.reset()
    fresh = m.backend.forward(ids, all_logits=True)
    assert list(fresh[-len(r.tokens):].argmax(-1)) == r.tokens
