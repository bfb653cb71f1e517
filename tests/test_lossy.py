"""The lossy modes (early-exit, entropy switching) and the fidelity harness: their lossless limits, the
deferred cache fill, the rollback rule, the harness's arithmetic, and bad settings. Real model, real
prompts; the harness's arithmetic on a tiny model against the numpy reference."""
import numpy as np
import pytest

import edgedec
from edgedec.errors import EdgedecError, ModeError
from edgedec.evaluate import evaluate, read_prompts, teacher_forced
from edgedec.perplexity import log_softmax
from edgedec.strategies import EarlyExitConfig, EntropyConfig
from edgedec.strategies.rounds import entropy
from edgedec_tools.prompts import code_prompts, writing_prompts

from conftest import run_cli
from test_kv import _numpy_model

N_NEW = 40


@pytest.fixture(scope="module")
def exact_model(int4_bundle):
    return edgedec.load(int4_bundle, n_ctx=1024, exact=True)


@pytest.fixture(scope="module")
def prompts():
    return code_prompts(3) + writing_prompts(3)


@pytest.mark.parametrize("mode, spec", [("early-exit", EarlyExitConfig(threshold=0.0)),
                                        ("entropy", EntropyConfig(threshold=0.0)),
                                        ("entropy", EntropyConfig(threshold=0.0, exit_layer=12))])
def test_threshold_zero_is_plain_decoding(int4_bundle, prompts, mode, spec):
    """Never exit, never write with the small model: token for token plain decoding (one-row path)."""
    m = edgedec.load(int4_bundle, n_ctx=1024)
    for p in prompts:
        ids = m.encode_prompt(p)
        ref = m.session().generate(ids, max_tokens=N_NEW, ignore_eos=True)
        got = m.session().generate(ids, max_tokens=N_NEW, ignore_eos=True, mode=mode, spec=spec)
        assert got.tokens == ref.tokens
        assert got.sources == {"plain": N_NEW}


def entropy_outputs(m, prompts, spec) -> list:
    """(prompt ids, Result) of entropy decoding on each prompt, N_NEW tokens each."""
    return [(ids, m.session().generate(ids, max_tokens=N_NEW, ignore_eos=True, mode="entropy", spec=spec))
            for ids in map(m.encode_prompt, prompts)]


def disagreements_beyond_ties(judge, ids: list[int], tokens: list[int]) -> list[int]:
    """Positions where a token is not the full model's greedy choice, teacher-forced, and not within a
    numerical near-tie (top logit minus the token's < 1e-4) either."""
    judge.backend.truncate(0)
    logits = judge.backend.forward(ids + tokens, all_logits=True)[len(ids) - 1: -1]
    judge.backend.truncate(0)
    gaps = logits.max(-1) - logits[np.arange(len(tokens)), tokens]
    return np.flatnonzero(gaps >= 1e-4).tolist()


@pytest.mark.parametrize("exit_layer", [None, 24])
def test_strictest_rollback_keeps_only_the_full_models_choices(exact_model, prompts, exit_layer):
    """margin 0: every token kept is the full model's greedy choice at its position (teacher-forced), while
    the small model really wrote (and had tokens kept)."""
    judge = exact_model.session()
    kept = 0
    for ids, r in entropy_outputs(exact_model, prompts, EntropyConfig(threshold=8.0, margin=0.0,
                                                                      exit_layer=exit_layer)):
        assert disagreements_beyond_ties(judge, ids, r.tokens) == []
        kept += r.sources.get("small", 0)
    assert kept > 5


def test_loose_rollback_keeps_small_tokens_the_full_model_would_not_pick(exact_model, prompts):
    """The margin is what makes the mode lossy: a wide one keeps some tokens that are not the full
    model's greedy choice (so the strict test above is not passing trivially)."""
    judge = exact_model.session()
    disagree = 0
    for ids, r in entropy_outputs(exact_model, prompts, EntropyConfig(threshold=8.0, margin=20.0)):
        disagree += len(disagreements_beyond_ties(judge, ids, r.tokens))
        assert r.sources.get("small", 0) > 0
    assert disagree > 0


def test_deferred_fill_leaves_the_cache_of_a_plain_run(exact_model, int4_bundle):
    """Positions that exited early get their skipped layers' cache filled later; once filled, every layer's
    cache equals a plain run's over the same tokens."""
    m = exact_model
    s = m.session()
    r = s.generate(writing_prompts(1)[0], max_tokens=48, ignore_eos=True, mode="early-exit",
                   spec=EarlyExitConfig(threshold=2.0))
    exits = sum(v for k, v in r.sources.items() if k.startswith("exit@"))
    assert 5 < exits < 48 - 5                     # tokens exited, and later tokens went deep and filled them
    n = s.backend.length                          # what every layer holds; the session's context is cut to it
    assert n >= r.n_prompt_tokens + 47 - 8        # at most MAX_WAITING positions still wait at an exit
    fresh = edgedec.load(int4_bundle, n_ctx=1024, exact=True).session()
    fresh.backend.min_rows = 2
    fresh.backend.forward(s.context[:n])
    for layer in range(m.bundle.config.n_layers):
        for a, b in ((s.backend.cache.keys[layer], fresh.backend.cache.keys[layer]),
                     (s.backend.cache.values[layer], fresh.backend.cache.values[layer])):
            assert np.array_equal(a[:, :, :n], b[:, :, :n]), f"layer {layer} differs"
    # a later call in the same session re-reads what was never filled, and decodes as a fresh session does
    more = s.context + m.tokenizer.encode(" And then")
    assert s.generate(more, max_tokens=8).tokens == m.session().generate(more, max_tokens=8).tokens


def test_lossy_modes_run_on_an_int8_cache(int4_bundle):
    m = edgedec.load(int4_bundle, n_ctx=512, kv="int8")
    for mode, spec in (("early-exit", EarlyExitConfig(threshold=1.0)), ("entropy", EntropyConfig(threshold=3.0))):
        r = m.session().generate("Tell me about rivers.", max_tokens=24, ignore_eos=True, mode=mode, spec=spec)
        assert r.n_new_tokens == 24 and set(r.sources) - {"plain"}


def test_harness_numbers_match_a_hand_computed_case(tiny):
    """On a tiny random model: agreement and perplexity from the numpy reference by hand, and the
    harness's own arithmetic (a lossless mode scores agreement 1 and plain's perplexity)."""
    _, _, root = tiny
    m = edgedec.load(root / "bundle", n_ctx=256)
    prompt, tokens = [5, 17, 99, 3], [42, 7, 7, 300, 12, 1]
    agree, nll = teacher_forced(m.session().backend, prompt, tokens)
    ref = _numpy_model(tiny).forward(prompt + tokens)[len(prompt) - 1: -1]
    want_agree = ref.argmax(-1) == np.array(tokens)
    want_nll = -log_softmax(ref)[np.arange(len(tokens)), tokens]
    assert agree.tolist() == want_agree.tolist()
    assert np.allclose(nll, want_nll, atol=1e-3)

    res = evaluate(m, [("x", [5, 6, 7]), ("y", [9, 10])], "early-exit", EarlyExitConfig(threshold=0.0),
                   max_tokens=6)
    assert res["agreement"] == 1.0 and res["tokens"] == 12
    assert res["perplexity"] == pytest.approx(res["plain_perplexity"])
    assert res["sources"] == {"plain": 1.0} and set(res["by_kind"]) == {"x", "y"}


def test_entropy_helper():
    assert entropy(np.zeros(8, np.float32)) == pytest.approx(np.log(8))
    assert entropy(np.array([0.0, -200.0], np.float32)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("spec, words", [
    (EarlyExitConfig(threshold=-0.1), "out of range"),
    (EarlyExitConfig(threshold=40.0), "out of range"),
    (EarlyExitConfig(exit_layer=7), "cut"),
    (EntropyConfig(entropy_window=0), "at least 1 token"),
    (EntropyConfig(margin=-1.0), "0 or more"),
    (EntropyConfig(exit_layer=31), "out of range"),
])
def test_bad_settings_get_one_line(exact_model, spec, words):
    mode = "early-exit" if isinstance(spec, EarlyExitConfig) else "entropy"
    with pytest.raises(ModeError, match=words):
        exact_model.session().generate("hi", max_tokens=2, mode=mode, spec=spec)


def test_a_bundle_without_what_the_mode_needs_names_the_fix(tiny, tmp_path):
    from edgedec.export.bundle_writer import export_bundle
    _, _, root = tiny
    m = edgedec.load(root / "bundle", n_ctx=64)           # no trained draft
    with pytest.raises(ModeError, match="edgedec export --draft"):
        m.session().generate([5, 6, 7], max_tokens=2, mode="entropy")
    assert m.session().generate([5, 6, 7], max_tokens=2, mode="entropy",
                                spec=EntropyConfig(exit_layer=2)).n_new_tokens == 2
    shallow, _ = export_bundle(root / "hf", tmp_path / "b", quant="fp32", cuts="1")   # no cut past half depth
    with pytest.raises(ModeError, match="edgedec export --cuts"):
        edgedec.load(shallow, n_ctx=64).session().generate([5, 6, 7], max_tokens=2, mode="early-exit")


def test_cli_bad_input_is_one_line(int4_bundle, tmp_path):
    cases = [(["generate", "-p", "hi", "--mode", "entropy", "--entropy-window", "0"], "--entropy-window"),
             (["generate", "-p", "hi", "--mode", "early-exit", "--exit-threshold", "-1"], "--threshold"),
             (["generate", "-p", "hi", "--mode", "entropy", "--backend", "llamacpp"], "cannot run"),
             (["eval", "--mode", "entropy", "--prompts", str(tmp_path / "none.txt")], "cannot read")]
    for args, words in cases:
        r = run_cli(*args, str(int4_bundle))
        assert r.returncode == 1 and words in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_read_prompts(tmp_path):
    (tmp_path / "a.txt").write_text("first prompt\n\nsecond one\n")
    assert read_prompts(tmp_path / "a.txt") == [("file", "first prompt"), ("file", "second one")]
    (tmp_path / "b.jsonl").write_text('{"prompt": "p1", "kind": "code"}\n{"prompt": "p2"}\n')
    assert read_prompts(tmp_path / "b.jsonl") == [("code", "p1"), ("file", "p2")]
    (tmp_path / "c.jsonl").write_text('{"prompt": "p1"}\n{"text": 2}\n')
    with pytest.raises(EdgedecError, match="line 2"):
        read_prompts(tmp_path / "c.jsonl")


def test_eval_cli_reports_fidelity(int4_bundle, tmp_path):
    import json
    (tmp_path / "p.txt").write_text("Name three rivers.\ndef add(a, b):\n")
    r = run_cli("eval", str(int4_bundle), "--mode", "early-exit", "--exit-threshold", "1.0", "-n", "12",
                "--prompts", str(tmp_path / "p.txt"), "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["tokens"] == 24 and 0 <= d["agreement"] <= 1 and d["plain_perplexity"] > 0
    assert abs(sum(d["sources"].values()) - 1) < 1e-9
