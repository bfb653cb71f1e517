"""Distillation (edgedec-distill): the torch draft layer is the model's own layer, training on a tiny random
model's predictions raises the draft's acceptance, and an interrupted run resumes to the same weights."""
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="train extra: pip install 'edgedec[train]'")

import edgedec  # noqa: E402
from edgedec.export.sources import load_source  # noqa: E402
from edgedec.runtimes.numpy_ref import NumpyLlama  # noqa: E402
from edgedec_tools.distill.designs import Layer, rms_norm  # noqa: E402
from edgedec_tools.distill.train import DistillConfig, evaluate, new_draft, train  # noqa: E402


def test_draft_layer_is_the_models_layer(gguf_path):
    """A torch Layer built from block 0 gives the numpy reference's logits after one layer."""
    src = load_source(gguf_path)
    c = src.config
    names = ["token_embd.weight", "output_norm.weight"] + [f"blk.0.{n}.weight" for n in Layer.NAMES]
    ids = [1, 504, 2714, 314, 260, 8421, 30]
    want = NumpyLlama(c, {n: src.tensor(n) for n in names}).forward(ids, last_layer=1)
    emb = torch.tensor(src.tensor("token_embd.weight"))
    x = Layer(c, src, 0)(emb[ids][None], torch.arange(len(ids))[None])
    got = (rms_norm(x, torch.tensor(src.tensor("output_norm.weight")), c.rms_eps) @ emb.T)[0].detach().numpy()
    assert np.abs(got - want).max() / np.abs(want).max() < 1e-5


def small(**kw):
    """A short run. Hard targets: a random model's next-token distributions are nearly flat, so its greedy
    token is the only signal worth learning in 150 steps (soft targets are for real models)."""
    return DistillConfig(**{"steps": 150, "batch": 4, "seq": 64, "lr": 3e-3, "vocab_size": 256, "soft": False,
                            "checkpoint_every": 20, "eval_positions": 20, **kw})


@pytest.mark.parametrize("design, lr, unroll", [("feature", 3e-3, 1), ("feature", 3e-3, 2), ("exit", 1e-3, 1)])
def test_distillation_lowers_validation_loss(tiny, design, lr, unroll):
    """On held-out documents. The feature drafter starts from nothing and must rise well above chance
    (trained one step at a time; trained two steps in a row, the default, it learns more slowly in 150
    steps and must at least lower its loss); the exit adapter starts as the model's own next layer, which
    already agrees with the model on most of this tiny model's tokens, and must not lose that."""
    src, arrays, root = tiny
    cfg = small(design=design, exit_layer=2, lr=lr, unroll=unroll)
    before = evaluate(new_draft(arrays, src, cfg), arrays, cfg)
    after = evaluate(train(arrays, src, cfg, root / f"{design}-{unroll}"), arrays, cfg)
    print(f"\n{design} unroll {unroll}: {before} -> {after}")
    for kind in ("code", "prose"):
        assert after[kind]["ce"] < before[kind]["ce"] - 0.1
        if design == "exit":
            assert after[kind]["top1"] > before[kind]["top1"] - 0.03
        elif unroll == 1:
            assert after[kind]["top1"] > before[kind]["top1"] + 0.15


def test_interrupted_distillation_resumes_to_the_same_weights(tiny, tmp_path):
    src, arrays, _ = tiny
    cfg = small(steps=40)
    whole = train(arrays, src, cfg, tmp_path / "whole")
    train(arrays, src, cfg, tmp_path / "cut", until=20)                     # stopped after step 20
    resumed = train(arrays, src, cfg, tmp_path / "cut", resume=True)
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_distill_bad_input(tiny):
    src, arrays, root = tiny
    with pytest.raises(edgedec.EdgedecError, match="design 'medusa' is unknown"):
        small(design="medusa").check([2, 4])
    with pytest.raises(edgedec.EdgedecError, match="exit_layer 3 is not a cut"):
        small(design="exit", exit_layer=3).check([2, 4])
