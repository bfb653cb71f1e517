"""The generation API: chat cache reuse, stop strings, streaming text, sampling, the llama.cpp backend."""
import numpy as np
import pytest

import edgedec
from edgedec.sampling import SamplerConfig, probabilities
from edgedec.tokenizer import StreamDecoder


def test_chat_turns_equal_full_history_rerun(fp32_bundle):
    """A multi-turn session (KV kept across turns) gives the tokens of re-running the whole history.

    On fp32, where batched and single-token passes agree to ~1e-6; int4's MatMulNBits rounds its int8
    activations differently for one row than for many (see README, known limits)."""
    m = edgedec.load(fp32_bundle)
    msgs, replies = [], []
    for q in ["What is the capital of France?", "And of Italy?", "Which of the two is larger?"]:
        msgs.append({"role": "user", "content": q})
        before = m.backend.length
        r = m.generate(messages=msgs, max_tokens=40)
        if len(msgs) > 1:
            assert r.n_prompt_tokens - before < 40  # only the new turn was prefilled, not the history
        replies.append(r.tokens)
        msgs.append({"role": "assistant", "content": r.text})
    fresh = edgedec.load(fp32_bundle)
    assert fresh.generate(messages=msgs[:-1], max_tokens=40).tokens == replies[-1]


def test_stop_string_and_max_tokens(int4_bundle):
    m = edgedec.load(int4_bundle)
    r = m.generate("Count from 1 to 20, separated by commas.", max_tokens=60, stop=("5",))
    assert r.finish_reason == "stop" and "5" not in r.text and "4" in r.text
    r = m.generate("Tell me a long story.", max_tokens=7)
    assert r.finish_reason == "length" and r.n_new_tokens == 7


def test_stream_never_splits_a_character(int4_bundle):
    m = edgedec.load(int4_bundle)
    text = "Ünïcödé — 日本語のテキスト 🙂🚀 ok"
    ids = m.tokenizer.encode(text)
    dec = StreamDecoder(m.tokenizer)
    pieces = [dec.push(i) for i in ids] + [dec.flush()]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)
    assert any(len(m.tokenizer.decode([i])) and "\ufffd" in m.tokenizer.decode([i]) for i in ids)  # real splits


def test_seeded_sampling_is_reproducible(int4_bundle):
    m = edgedec.load(int4_bundle)
    cfg = SamplerConfig(temperature=0.8, top_k=40, top_p=0.95, min_p=0.02, seed=7)
    a = m.generate("Write a sentence about cats.", max_tokens=16, sampler=cfg).tokens
    m.reset()
    b = m.generate("Write a sentence about cats.", max_tokens=16, sampler=cfg).tokens
    assert a == b


def test_sampling_filters():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    p = probabilities(logits, SamplerConfig(temperature=1.0, top_k=2))
    assert np.allclose(p, [0.625, 0.375, 0, 0])
    p = probabilities(logits, SamplerConfig(temperature=1.0, top_p=0.7))
    assert np.allclose(p, [0.625, 0.375, 0, 0])
    p = probabilities(logits, SamplerConfig(temperature=1.0, min_p=0.2))   # keeps p >= 0.1
    assert np.allclose(p, np.array([0.5, 0.3, 0.15, 0]) / 0.95)
    p = probabilities(logits, SamplerConfig(temperature=1.0, repetition_penalty=2.0), history=[0])
    assert p[0] < 0.5


def test_llamacpp_backend_generates_same_greedy_start(int4_bundle):
    pytest.importorskip("llama_cpp")
    ours = edgedec.load(int4_bundle).generate("What is the capital of Germany?", max_tokens=8)
    peer = edgedec.load(int4_bundle, backend="llamacpp").generate("What is the capital of Germany?", max_tokens=8)
    assert peer.text == ours.text
