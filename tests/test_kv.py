"""Compressed KV caches: the storage format, eviction against the numpy reference, trim, and fidelity on the
real model (export/kv.py, edgedec/kvcache.py)."""
import numpy as np
import pytest

import edgedec
from edgedec.errors import EdgedecError
from edgedec.export.kv import MARGIN, QMAX, dequantize, quantize, scales
from edgedec.kvcache import KVConfig
from edgedec.runtimes.numpy_ref import NumpyLlama


@pytest.mark.parametrize("kv", ["int8", "int4"])
def test_round_trip_within_half_a_step(kv):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, 50, 64)).astype(np.float32) * rng.uniform(0.1, 5, (1, 3, 1, 64))
    scale = scales(kv, np.abs(x).max(2, keepdims=True), "k") / MARGIN[kv][0]
    back = dequantize(quantize(x, kv, scale), kv, scale)
    assert np.all(np.abs(back - x) <= scale / 2 + 1e-6)
    big = dequantize(quantize(3 * x, kv, scale), kv, scale)            # beyond the range: clamped, not wrapped
    top = scale * QMAX[kv]
    assert np.all((big >= -top - scale - 1e-6) & (big <= top + 1e-6))
    assert np.all(np.where(3 * x > top, big, top) == top)


@pytest.mark.parametrize("kv", ["int8", "int4"])
def test_our_format_is_what_the_kernel_stores(tiny, kv):
    """The cache GroupQueryAttention writes equals quantize() of the fp32 cache, give or take one step
    where a value sits on a rounding boundary."""
    _, _, root = tiny
    ids = list(range(3, 60))
    ref = edgedec.load(root / "bundle", n_ctx=64).session().backend
    ref.forward(ids)
    q = edgedec.load(root / "bundle", n_ctx=64, kv=kv).session().backend
    q.forward(ids)
    for i in range(ref.config.n_layers):
        scale = q.engine.k_scales[i][None, :, None, :]
        mine = dequantize(quantize(ref.cache.keys[i][:, :, :len(ids)], kv, scale), kv, scale)
        theirs = dequantize(q.cache.keys[i][:, :, :len(ids)], kv, scale)
        assert np.mean(np.abs(mine - theirs) <= scale * 1.01) > 0.98


def _numpy_model(tiny):
    src, _, _ = tiny
    names = list(src.tensor_types)
    return NumpyLlama(src.config, {n: src.tensor(n).astype(np.float64) for n in names})


def _evict_side_by_side(tiny, n_tokens: int):
    """Feed n_tokens through an evicting cache (2 sinks, window 10, 48 slots) and through the full-precision
    reference, which drops the same positions (and renumbers them when the runtime shifts its positions);
    returns the worst logit difference and the runner."""
    _, _, root = tiny
    runner = edgedec.load(root / "bundle", n_ctx=48, kv_window=10, kv_sinks=2).session().backend
    ref = _numpy_model(tiny)
    ids = np.random.default_rng(1).integers(0, 400, size=n_tokens).tolist()
    worst, shifts = 0.0, 0
    for s in range(0, len(ids), 3):
        shift, dropped = (runner.cache.shift, runner.cache.dropped) if runner.cache else (0, 0)
        got = runner.forward(ids[s:s + 3], all_logits=True)
        d = runner.cache.dropped - dropped
        if d:
            ref.drop(2 + shift, 2 + shift + d)              # slots 2..2+d held positions 2+shift..
            if runner.cache.shift == 0:                       # positions ran into the rotary table's end
                ref.move(2, -(shift + d))
                shifts += 1
        worst = max(worst, np.abs(got - ref.forward(ids[s:s + 3])).max())
    return worst, shifts, runner


def test_eviction_keeps_positions_absolute(tiny):
    """Over 120 tokens the logits are those of the reference with the evicted positions masked out and every
    position keeping its number."""
    worst, shifts, runner = _evict_side_by_side(tiny, 120)
    assert runner.cache.dropped > 60 and runner.cache.shift == runner.cache.dropped and shifts == 0
    assert worst < 1e-3, worst


def test_positions_shift_back_at_the_end_of_the_rotary_table(tiny):
    """Past the model's context (256 here) the kept keys are rotated back, as llama.cpp's context shift:
    the logits stay those of the reference with the same positions renumbered."""
    worst, shifts, runner = _evict_side_by_side(tiny, 450)
    assert shifts >= 1 and runner.cache.dropped > 300
    assert worst < 1e-3, worst


@pytest.mark.parametrize("kv,window", [("int8", None), ("fp32", 10), ("int8", 10)])
def test_trim_gives_the_state_of_a_plain_run(tiny, kv, window):
    """Truncating a cache (quantized, evicting) and going on equals a fresh run over the same tokens."""
    _, _, root = tiny
    model = edgedec.load(root / "bundle", n_ctx=48, kv=kv, kv_window=window)
    rng = np.random.default_rng(2)
    a, b, c = (rng.integers(0, 400, size=n).tolist() for n in (70 if window else 30, 6, 5))
    one, two = model.session().backend, model.session().backend
    one.forward(a)
    one.forward(b)
    one.truncate(len(a) + 2)
    got = one.forward(c, all_logits=True)
    two.forward(a)
    two.forward(b[:2])
    want = two.forward(c, all_logits=True)
    assert one.length == two.length == len(a) + 2 + len(c)
    assert one.cache.dropped == two.cache.dropped == (50 if window else 0)
    np.testing.assert_array_equal(got, want)


def test_truncating_into_evicted_positions_keeps_the_sinks(tiny):
    _, _, root = tiny
    runner = edgedec.load(root / "bundle", n_ctx=48, kv_window=10, kv_sinks=2).session().backend
    runner.forward(list(range(5, 105)))
    assert runner.cache.dropped > 0
    runner.truncate(20)
    assert runner.length == 2 and runner.cache.dropped == 0


def test_kv_reporting_and_bytes_per_token(tiny):
    _, _, root = tiny
    per = {kv: edgedec.load(root / "bundle", n_ctx=48, kv=kv).kv_bytes_per_token for kv in ("fp32", "int8", "int4")}
    assert per["fp32"] == 4 * per["int8"] == 8 * per["int4"]
    s = edgedec.load(root / "bundle", n_ctx=48, kv="int8").session()
    r = s.generate(list(range(3, 13)), max_tokens=4, ignore_eos=True)
    assert r.n_new_tokens == 4 and r.kv_bytes == s.backend.length * per["int8"]


@pytest.mark.parametrize("kw,words", [
    (dict(kv="int3"), ["kv", "int3", "fp32, fp16, int8, int4"]),
    (dict(kv_window=0), ["kv_window 0", "sinks < window"]),
    (dict(kv_window=8, kv_sinks=-1), ["kv_sinks -1"]),
    (dict(kv_window=8, kv_sinks=8), ["sinks < window"]),
    (dict(kv_window=40), ["does not fit", "n_ctx"]),
    (dict(kv_sinks=4), ["kv_sinks needs"]),
])
def test_bad_kv_settings_are_refused(tiny, kw, words):
    _, _, root = tiny
    with pytest.raises(EdgedecError) as e:
        edgedec.load(root / "bundle", n_ctx=48, **kw)
    for w in words:
        assert w in str(e.value), str(e.value)


def test_kv_config_defaults_sinks():
    assert KVConfig("fp32", 100).check(2048).sinks == 4


# ------------------------------------------------------------------ the real model

def _kl(a: np.ndarray, b: np.ndarray) -> float:
    la, lb = (x - np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True)) - x.max(-1, keepdims=True)
              for x in (a.astype(np.float64), b.astype(np.float64)))
    return float((np.exp(la) * (la - lb)).sum(-1).mean())


@pytest.mark.slow
def test_int8_cache_logits_stay_close(int4_bundle, running_text):
    """Decoding 200 tokens of King Lear one at a time (every step reads the cache), int8 against fp32
    caches. Measured: top-1 agreement 93.5%, mean |logit difference| 0.25, KL 0.0084 nats; for scale, the
    same fp32 cache on the many-row kernels: 96.5%, 0.17, 0.0041."""
    ids = edgedec.load(int4_bundle).tokenizer.encode(running_text)[:200]
    logits = {}
    for kv in ("fp32", "int8"):
        runner = edgedec.load(int4_bundle, kv=kv).session().backend
        logits[kv] = np.concatenate([runner.forward([t]) for t in ids])
    a, b = logits["fp32"], logits["int8"]
    assert np.mean(a.argmax(-1) == b.argmax(-1)) >= 0.90
    assert np.abs(a - b).mean() < 0.4
    assert _kl(a, b) < 0.015


@pytest.mark.slow
def test_speculation_on_an_int8_cache_is_lossless(int4_bundle):
    from edgedec_tools.prompts import code_prompts, writing_prompts
    model = edgedec.load(int4_bundle, kv="int8", exact=True)
    for prompt in code_prompts(3) + writing_prompts(3, max_chars=400):
        plain = model.session().generate(prompt, max_tokens=40, mode="plain").tokens
        spec = model.session().generate(prompt, max_tokens=40, mode="self-spec").tokens
        assert spec == plain


@pytest.mark.slow
def test_chat_goes_on_past_a_full_context(int4_bundle):
    """`chat` evicts by default: with a 128-token context, four turns run to the end, and it says so once."""
    from conftest import run_cli
    turns = "\n".join(["Tell me about the history of bicycles in three sentences."] * 4) + "\n/stats\n/exit\n"
    p = run_cli("chat", int4_bundle, "--ctx", "128", "-n", "40", input=turns)
    assert p.returncode == 0, p.stderr
    assert p.stderr.count("filled: from now on the model sees the first 4 tokens") == 1, p.stderr
    assert "evicted" in p.stderr and "Traceback" not in p.stderr
