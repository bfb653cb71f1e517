"""Self-speculative and lookup decoding are lossless: same greedy tokens as plain decoding, same sampling
distribution, same cache after a rejected draft. Real model, real prompts (HumanEval, writingbench)."""
import json

import numpy as np
import pytest

import edgedec
from edgedec.sampling import Sampler, SamplerConfig
from edgedec.strategies import LookupConfig, SelfSpecConfig, SpecStats, self_spec
from edgedec.strategies.cost import CostModel
from edgedec.strategies.lookup import propose, replay_lookup
from edgedec.strategies.path import MARGIN, PathLedger
from edgedec_tools.prompts import code_prompts, writing_prompts

from conftest import assert_same_distribution, run_cli, sample_second_tokens

N_NEW = 32
SETTINGS = [  # (mode, config): three fixed (E, k), the trained draft, lookup on and off, the adaptive defaults
    ("self-spec", SelfSpecConfig(exit_layer=6, k_max=2, lookup=False, adaptive=False, threshold=0.0)),
    ("self-spec", SelfSpecConfig(k_max=4, lookup=False, adaptive=False, threshold=0.0)),     # trained draft
    ("self-spec", SelfSpecConfig(exit_layer=12, k_max=4, lookup=True, adaptive=False)),
    ("self-spec", SelfSpecConfig(exit_layer=24, k_max=3, lookup=True, adaptive=False)),
    ("self-spec", SelfSpecConfig()),
    ("lookup", LookupConfig()),
]


@pytest.fixture(scope="module")
def exact_model(int4_bundle):
    return edgedec.load(int4_bundle, n_ctx=1024, exact=True)


def top2_gap(model, ids: list[int]) -> float:
    """The full model's top-2 logit gap for the token after `ids` (plain, exact path)."""
    model.reset()
    logits = model.backend.forward(ids)[-1]
    model.default_session.context = list(ids)
    a, b = np.sort(logits)[-2:]
    return float(b - a)


def assert_same_tokens(model, prompt_ids, ref, got, label):
    """Equality, unless the first divergence is a numerical near-tie of the full model (gap < 1e-4)."""
    if got == ref:
        return
    i = next(j for j, (a, b) in enumerate(zip(ref, got)) if a != b) if any(
        a != b for a, b in zip(ref, got)) else min(len(ref), len(got))
    gap = top2_gap(model, prompt_ids + ref[:i])
    assert gap < 1e-4, f"{label}: diverges at new token {i} ({ref[i:i + 3]} vs {got[i:i + 3]}), top-2 gap {gap:.3g}"


@pytest.mark.parametrize("kind", ["code", "prose"])
def test_greedy_speculation_equals_plain(exact_model, kind):
    prompts = code_prompts(20) if kind == "code" else writing_prompts(20)
    assert len(prompts) == 20
    m = exact_model
    totals = {}
    for prompt in prompts:
        ids = m.encode_prompt(prompt)
        ref = m.generate(ids, max_tokens=N_NEW).tokens
        for mode, spec in SETTINGS:
            r = m.generate(ids, max_tokens=N_NEW, mode=mode, spec=spec)
            assert_same_tokens(m, ids, ref, r.tokens, f"{mode} {spec}")
            t = totals.setdefault((mode, getattr(spec, "exit_layer", None), getattr(spec, "k_max", None),
                                   getattr(spec, "lookup", None)), [0, 0])
            t[0] += r.speculation["n_verify_calls"]
            t[1] += sum(r.speculation["accepted"].values())
    print(f"\n{kind}: (mode, E, k) -> [verify calls, accepted drafts] over 20 prompts: {totals}")
    assert sum(t[1] for t in totals.values()) > 0       # speculation really ran and accepted something


def test_full_depth_draft_is_always_accepted(exact_model):
    """With E = L the draft is the full model: every drafted token passes."""
    m = exact_model
    L = m.bundle.config.n_layers
    m.reset()
    stats = SpecStats()
    spec = SelfSpecConfig(exit_layer=L, k_max=4, lookup=False, adaptive=False, threshold=0.0)
    ids = m.encode_prompt(code_prompts(1)[0])
    steps = self_spec(m.backend, ids, Sampler(SamplerConfig()), list(ids), spec, stats)
    tokens = [next(steps).token for _ in range(40)]
    steps.close()
    assert stats.drafted["self"] >= 36 and stats.accepted["self"] == stats.drafted["self"]
    m.reset()
    assert m.generate(ids, max_tokens=40).tokens == tokens


def test_cache_after_rejection_equals_plain_cache(exact_model, int4_bundle):
    m = exact_model
    m.reset()
    r = m.generate(writing_prompts(1)[0], max_tokens=24, mode="self-spec",
                   spec=SelfSpecConfig(exit_layer=6, k_max=4, lookup=False, adaptive=False, threshold=0.0))
    assert sum(r.speculation["accepted"].values()) < r.speculation["n_verify_calls"] * 3   # rejections happened
    n = m.backend.length
    fresh = edgedec.load(int4_bundle, n_ctx=1024, exact=True)
    fresh.backend.min_rows = 2
    fresh.backend.forward(m.default_session.context[:n])
    assert fresh.backend.length == n
    for layer in range(m.bundle.config.n_layers):
        for a, b in ((m.backend.cache.keys[layer], fresh.backend.cache.keys[layer]),
                     (m.backend.cache.values[layer], fresh.backend.cache.values[layer])):
            assert np.array_equal(a[:, :, :n], b[:, :, :n]), f"layer {layer} differs"


def test_default_bundle_ships_the_trained_draft(exact_model):
    d = exact_model.bundle.manifest.drafts
    assert d and d[0].design == "feature" and d[0].fingerprint == exact_model.bundle.manifest.model.fingerprint
    assert exact_model.backend.drafter() is not None


@pytest.mark.parametrize("drafter", ["exit 6", "trained draft"])
def test_sampling_distribution_matches_plain(exact_model, drafter):
    """Chi-square homogeneity test (alpha = 0.001) of the second generated token (the first one produced by
    a speculative round: accepted draft or resampled residual) against plain sampling, 600 runs each."""
    m = exact_model
    m.reset()
    ids = m.encode_prompt("Write one word that describes the sea.")
    spec = SelfSpecConfig(exit_layer=6 if drafter == "exit 6" else None, k_max=2, lookup=False, adaptive=False,
                          threshold=0.0)
    plain = sample_second_tokens(m, ids, "plain", 600)
    assert_same_distribution(plain, sample_second_tokens(m, ids, "self-spec", 600, spec))


def test_generate_json_reports_speculation(int4_bundle):
    proc = run_cli("generate", int4_bundle, "-p", "def add(a, b):", "--raw", "-n", "24", "--mode", "lookup",
                   "--json")
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    for key in ("acceptance_rate", "mean_accepted_per_verify", "n_verify_calls", "drafted", "accepted"):
        assert key in d
    assert d["n_new_tokens"] == 24


def test_tune_stores_the_best_setting(int4_bundle, tmp_path):
    """A one-exit sweep on real prompts; the winner becomes the bundle's default and the bundle still loads."""
    import shutil

    from edgedec.manifest import SelfSpecDefaults
    from edgedec_tools.tune import sweep
    copy = tmp_path / "bundle"
    shutil.copytree(int4_bundle, copy)
    m = edgedec.load(copy, exact=True)
    prompts = [m.encode_prompt(p) for p in code_prompts(1) + writing_prompts(1)]
    rows = sweep(m, prompts, exits=[24], draft_lens=(2, 3), thresholds=(0.0,), n_new=8)
    assert rows[0][0] == {"mode": "plain"} and len(rows) == 3 and all(rate > 0 for _, rate in rows)
    best = max(rows[1:], key=lambda r: r[1])[0]
    m.bundle.save_defaults(self_spec=SelfSpecDefaults(**{k: best[k] for k in ("exit_layer", "k_max", "threshold")}))
    spec = edgedec.load(copy).default_config("self-spec")
    assert (spec.exit_layer, spec.k_max, spec.threshold) == (24, best["k_max"], 0.0)


def test_path_ledger_speculates_only_when_the_gain_beats_the_exact_path_tax():
    ledger = PathLedger()
    assert ledger.choose("lookup") == "speculate"          # nothing measured yet: try speculating first
    ledger.observe_speculation("lookup", 90.0, 0.0125)     # 90 tok/s where a plain step took 12.5 ms: gain 1.125
    assert ledger.choose("lookup") == "plain"              # then measure one-row plain decoding
    ledger.observe_plain("lookup", 100.0, 1.1)             # 10 ms a step: the tax is 1.25; replayed gain 1.1
    assert [ledger.choose("lookup") for _ in range(5)] == ["plain"] * 5   # never tried just to find out
    ledger.observe_plain("lookup", 100.0, 1.6)             # a plain call whose output lookup would have sped up
    assert ledger.choose("lookup") == "speculate"
    ledger.observe_speculation("lookup", 120.0, 0.0125)    # gain 1.5: it keeps winning
    assert ledger.choose("lookup") == "speculate"
    assert ledger.choose("self-spec") == "speculate"       # each mode has its own estimate
    ledger.observe_speculation("lookup", 80.0, 0.0125)     # gain 1.0 < 1.25: the next call decodes plainly
    assert ledger.choose("lookup") == "plain"
    ledger.observe_plain("lookup", 100.0, 1.25 + MARGIN / 2)   # within noise of the tax: plain is the floor
    assert ledger.choose("lookup") == "plain"


def test_replayed_lookup_gain_counts_what_the_drafter_would_have_got():
    prompt = list(range(100, 160))
    assert replay_lookup(prompt + list(range(200, 260)), len(prompt), 0.2) == 1.0   # nothing repeats
    copy = replay_lookup(prompt + prompt, len(prompt), 0.2)      # the output repeats the prompt
    assert copy > 2.5                                               # long matches: several tokens per verify
    half = prompt + [t if i % 2 else 999 for i, t in enumerate(prompt)]   # every other token breaks the match
    assert 1.0 <= replay_lookup(half, len(prompt), 0.2) < copy


def test_lookup_proposal_and_its_match_length_set_how_far_to_verify():
    history = [5, 6, 7, 8, 9, 1, 2, 3, 6, 7, 8]
    assert propose(history, 2) == ([9, 1], 3)                  # "6 7 8" matched: what followed it
    assert propose(history + [4], 2) == ([], 0)                # 4 never occurred before
    assert propose([1, 2, 1, 3, 1], 3) == ([3, 1], 1)          # the most recent "1" wins
    costs = CostModel(n_layers=30, exits=[], k_max=8, free_rows=2, t_plain=0.01)
    short, long = costs.best_lookup(8, match_len=1)[1], costs.best_lookup(8, match_len=6)[1]
    assert 1 <= short < long                                   # priors: 1-token matches are right ~20%
    for _ in range(40):                                        # measured: long matches fail here
        costs.observe_lookup(6, 2, 0)
    assert costs.best_lookup(8, match_len=6)[1] < long
    assert costs.best_lookup(8, match_len=1)[1] == short       # the other lengths' estimates are their own


@pytest.mark.parametrize("path", ["plain", "speculate"])
def test_auto_call_equals_the_plain_path_it_took(exact_model, int4_bundle, path):
    """Without --exact/--no-exact a speculative call either decodes plainly on one-row kernels (token for
    token `plain`) or speculates on the many-row path (token for token `plain --exact`); it says which."""
    auto = edgedec.load(int4_bundle, n_ctx=1024)
    ids = auto.encode_prompt(code_prompts(1)[0])
    ref = (auto if path == "plain" else exact_model).generate(ids, max_tokens=N_NEW).tokens
    ledger = auto.default_session.paths
    ledger.t_one, ledger.t_exact = 0.01, 0.0125                               # the exact path's tax: 1.25
    ledger.gain["lookup"] = 2.0 if path == "speculate" else 1.0
    auto.reset()      # a fresh prefill, as `ref` had (a reused prefix feeds the last prompt token alone)
    r = auto.generate(ids, max_tokens=N_NEW, mode="lookup")
    assert r.speculation["path"] == path
    assert (r.speculation["n_verify_calls"] > 0) == (path == "speculate")
    assert_same_tokens(exact_model, ids, ref, r.tokens, f"auto, {path}")


@pytest.mark.parametrize("good", ["draft", "self"])
def test_cost_model_weighs_the_trained_draft_against_the_exits(good):
    """With a trained draft and exits both on offer, the round goes to whichever measured better."""
    c = CostModel(30, [6, 12], 4, free_rows=2, draft=True, t_plain=0.01, warmup=0)
    c.observe_draft("draft", 0.0004)
    c.observe_draft(6, 0.003)
    for _ in range(30):
        c.observe_accept("draft", 4, 3 if good == "draft" else 0)
        for e in (6, 12):
            c.observe_accept(e, 4, 3 if good == "self" else 0)
    assert c.choose(0, 0)[0] == good
