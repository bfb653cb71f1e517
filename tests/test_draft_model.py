"""Separate draft models: `export --draft` (truncate:E, a Hugging Face folder), `--mode speculative` on both
backends, and the truncated draft as a GGUF stock llama.cpp loads."""
import json
import shutil

import numpy as np
import pytest

import edgedec
from edgedec.errors import ModeError
from edgedec.export.bundle_writer import export_bundle
from edgedec.strategies import SpeculativeConfig

from conftest import assert_same_distribution, random_llama, run_cli, sample_second_tokens, save_hf

PROMPTS = ["Write a short story about a lighthouse keeper who finds a message in a bottle.",
           "def quicksort(arr):\n    ",
           "List three facts about Mars.",
           "Explain what a hash table is to a ten-year-old.",
           "<|im_start|>user\nTranslate 'good morning' into French and Spanish.<|im_end|>\n<|im_start|>assistant\n"]


@pytest.fixture(scope="module")
def spec_bundle(tmp_path_factory, gguf_path):
    return export_bundle(gguf_path, tmp_path_factory.mktemp("spec") / "b", draft=None, draft_model="truncate:6")[0]


def test_truncated_draft_is_a_bundle_and_a_gguf_llamacpp_loads(spec_bundle):
    llama_cpp = pytest.importorskip("llama_cpp", reason="llamacpp extra")
    m = edgedec.load(spec_bundle)
    entry = m.bundle.manifest.draft_model
    assert entry.n_layers == 6 and entry.source == "truncate:6" and entry.gguf
    draft = edgedec.load(spec_bundle / entry.folder)
    assert draft.bundle.config.n_layers == 6
    llm = llama_cpp.Llama(model_path=str(spec_bundle / entry.folder / "model.gguf"), n_ctx=256, verbose=False)
    assert llm.metadata["llama.block_count"] == "6"
    ids = m.tokenizer.encode("The capital of France is")
    llm.eval(ids)
    ours = draft.backend.forward(ids)[-1]
    theirs = np.ctypeslib.as_array(llama_cpp.llama_get_logits(llm.ctx), shape=(m.bundle.config.vocab,))
    assert int(np.argmax(ours)) == int(np.argmax(theirs))
    out = run_cli("info", spec_bundle)
    assert "draft model" in out.stdout and "6 layers" in out.stdout


def test_two_model_speculation_is_token_identical_to_plain_exact(spec_bundle):
    m = edgedec.load(spec_bundle, exact=True)
    drafted = 0
    for p in PROMPTS:
        want = m.session().generate(p, max_tokens=48, mode="plain").tokens
        r = m.session().generate(p, max_tokens=48, mode="speculative")
        assert r.tokens == want, p
        drafted += r.speculation["drafted"].get("draft", 0)
    assert drafted > 0                                     # the draft model did propose


def test_speculation_on_llamacpp_with_the_draft_gguf(spec_bundle):
    pytest.importorskip("llama_cpp", reason="llamacpp extra")
    m = edgedec.load(spec_bundle, backend="llamacpp")
    same = 0
    for p in PROMPTS[:3]:
        want = m.session().generate(p, max_tokens=40, mode="plain").tokens
        r = m.session().generate(p, max_tokens=40, mode="speculative")
        assert r.speculation["drafted"].get("draft", 0) > 0
        same += r.tokens == want
    assert same >= 2          # llama.cpp's batched rows may round apart from its one-token steps


def test_speculative_sampling_distribution_matches_plain(spec_bundle):
    """Chi-square homogeneity test (alpha = 0.001) of the second generated token (the first one a draft-model
    round produces: accepted draft or resampled residual) against plain sampling, 400 runs each."""
    m = edgedec.load(spec_bundle, exact=True)
    ids = m.encode_prompt("Write one word that describes the sea.")
    spec = SpeculativeConfig(k_max=2, lookup=False, adaptive=False, threshold=0.0)
    plain = sample_second_tokens(m, ids, "plain", 400)
    assert_same_distribution(plain, sample_second_tokens(m, ids, "speculative", 400, spec))


def test_a_bundle_without_a_draft_model_names_the_fix(int4_bundle):
    with pytest.raises(ModeError, match="--draft"):
        edgedec.load(int4_bundle).session().generate("hi", max_tokens=2, mode="speculative")


def _tiny_draft(folder, int4_bundle):
    model = random_llama(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         tie_word_embeddings=True)
    return save_hf(model, folder, int4_bundle)


def test_a_hugging_face_draft_is_lossless(tmp_path, gguf_path, int4_bundle):
    draft = _tiny_draft(tmp_path / "draft", int4_bundle)
    bundle, _ = export_bundle(gguf_path, tmp_path / "b", quant="fp32", draft=None, draft_model=str(draft))
    m = edgedec.load(bundle, exact=True)
    assert m.bundle.manifest.draft_model.gguf is False
    want = m.session().generate(PROMPTS[1], max_tokens=24).tokens
    assert m.session().generate(PROMPTS[1], max_tokens=24, mode="speculative").tokens == want


def test_a_draft_with_another_vocabulary_is_refused(tmp_path, gguf_path, int4_bundle):
    draft = _tiny_draft(tmp_path / "draft", int4_bundle)
    tok = json.loads((draft / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    word = next(w for w, i in vocab.items() if i == 1000)
    vocab["zzz_not_" + word] = vocab.pop(word)
    (draft / "tokenizer.json").write_text(json.dumps(tok))
    out = run_cli("export", gguf_path, "-o", tmp_path / "b", "--quant", "fp32", "--draft", draft)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "tokenizer" in lines[0], out.stderr
    assert not (tmp_path / "b").exists()
    shutil.rmtree(draft)


def test_bad_truncation_is_one_line(tmp_path, gguf_path):
    for spec in ("truncate:0", "truncate:30", "truncate:x"):
        out = run_cli("export", gguf_path, "-o", tmp_path / "b", "--draft", spec)
        assert out.returncode == 1 and len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert "truncate" in out.stderr
        assert not (tmp_path / "b").exists()
