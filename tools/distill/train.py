"""Distillation: train a draft design on teacher data, with checkpoints, --resume, and validation
acceptance.

Batches are random crops of `seq` tokens from the training documents, drawn from a generator seeded by
(seed, step), so a run resumed from its checkpoint sees the same batches as one that never stopped and
ends at the same weights. Every 10th document is held out for validation.

Loss: cross-entropy of the draft's reduced-vocabulary logits against the full model's distribution over the
same tokens (`soft`; its greedy token otherwise), plus (`feature` design) `feature_weight` x SmoothL1 between
the draft's normalised hidden state and the model's. The `feature` design is trained as it drafts: with
`unroll` = 2 the draft's own predicted states are fed back in and the loss of that second step is added
(the "training-time test" of EAGLE-3 and HASS), since a chained draft sees its own states, not the model's.

Validation reports, on code and prose documents separately:
    top1     how often the draft's first token is the model's
    ce       cross-entropy against the model's token, where the reduced head has it
    chained  (`feature`) per-token acceptance when drafting k tokens in a row from the draft's own
             hidden states, on positions inside the model's own greedy continuations: accepted drafts
             over drafts checked, stopping at the first miss, as speculation does
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from edgedec.bundle import require_cut
from edgedec.errors import EdgedecError

from .designs import DESIGNS, Draft, rms_norm


@dataclass(frozen=True)
class DistillConfig:
    design: str = "feature"
    exit_layer: int = 6            # exit design: the cut the adapter sits on
    vocab_size: int = 8192         # rows of the reduced draft head
    steps: int = 900
    batch: int = 8
    seq: int = 256
    lr: float = 5e-4
    feature_weight: float = 1.0    # feature design only
    soft: bool = True              # targets: the model's distribution over the reduced head (else its token)
    unroll: int = 2                # feature design: draft steps trained in a row
    seed: int = 0
    checkpoint_every: int = 100
    eval_positions: int = 300      # chained-acceptance positions per kind
    chain: int = 4                 # tokens drafted in a row for the chained acceptance

    def check(self, cuts: list[int]) -> None:
        if self.design not in DESIGNS:
            raise EdgedecError(f"design '{self.design}' is unknown; designs: {', '.join(DESIGNS)}")
        if self.design == "exit":
            require_cut(self.exit_layer, cuts)


def documents(data) -> list[tuple[int, int]]:
    s = data["starts"]
    return list(zip(s[:-1].tolist(), s[1:].tolist()))


def split(data) -> tuple[list[int], list[int]]:
    n = len(data["starts"]) - 1
    val = [d for d in range(n) if d % 10 == 9]
    return [d for d in range(n) if d % 10 != 9], val


def frequent_vocab(data, docs: list[int], n: int) -> np.ndarray:
    """The n tokens the model predicts most often on the training documents, most frequent first."""
    spans = documents(data)
    teacher = np.concatenate([data["teacher"][a:b] for a, b in (spans[d] for d in docs)])
    counts = np.bincount(teacher, minlength=int(data["teacher"].max()) + 1)
    return np.argsort(-counts, kind="stable")[:n]


def batch(data, cfg: DistillConfig, docs: list[int], step: int):
    """A batch of crops: (hidden, next ids, positions, target hidden, target tokens), as tensors."""
    rng = np.random.default_rng([cfg.seed, step])
    spans = documents(data)
    shift = 1 if cfg.design == "feature" else 0
    rows = []                                           # (first position of the crop, of its document, length)
    for d in rng.choice(docs, size=cfg.batch):
        a, b = spans[d]
        n = min(cfg.seq, b - a - shift)
        rows.append((a + int(rng.integers(0, b - a - shift - n + 1)), a, n))
    T = min(n for _, _, n in rows)
    source = data["final"] if cfg.design == "feature" else data[f"exit_{cfg.exit_layer}"]
    take = lambda arr, off: np.stack([arr[s + off:s + off + T] for s, _, _ in rows])        # noqa: E731
    pos = np.stack([np.arange(s - a, s - a + T) for s, a, _ in rows])
    return (torch.tensor(take(source, 0).astype(np.float32)), torch.tensor(take(data["ids"], shift).astype(np.int64)),
            torch.tensor(pos), torch.tensor(take(data["final"], shift).astype(np.float32)),
            torch.tensor(take(data["teacher"], shift).astype(np.int64)))


def loss_fn(draft: Draft, cfg: DistillConfig, hidden, next_ids, pos, target_hidden, target_tokens):
    eps = draft.cfg.rms_eps
    total = 0.0
    for step in range(cfg.unroll if cfg.design == "feature" else 1):
        if step:                                 # feed the predicted states back, one position on
            hidden, next_ids, pos = r[:, :-1], next_ids[:, 1:], pos[:, 1:]
            target_hidden, target_tokens = target_hidden[:, 1:], target_tokens[:, 1:]
        r, logits = draft(hidden, next_ids, pos)
        target_normed = rms_norm(target_hidden, draft.norm, eps)
        if cfg.soft:
            teacher = torch.softmax(target_normed @ draft.head.T, dim=-1)
            per_position = -(teacher * torch.log_softmax(logits, dim=-1)).sum(-1)
        else:
            per_position = F.cross_entropy(logits.transpose(1, 2), draft.reduced(target_tokens), ignore_index=-100,
                                           reduction="none")
        if cfg.design == "feature" and cfg.feature_weight:
            feat = F.smooth_l1_loss(rms_norm(r, draft.norm, eps), target_normed, reduction="none").mean(-1)
            per_position = per_position + cfg.feature_weight * feat
        total = total + per_position.mean()
    return total


def new_draft(data, src, cfg: DistillConfig) -> Draft:
    """The untrained draft: its head keeps the tokens the model predicts most often on the training split."""
    return Draft(cfg.design, src.config, src, frequent_vocab(data, split(data)[0], cfg.vocab_size), cfg.exit_layer)


def train(data, src, cfg: DistillConfig, out: Path, resume: bool = False, progress=None,
          until: int | None = None) -> Draft:
    """Train (or continue training) `cfg.design` on `data`; checkpoints go to `out`. `until`: stop after
    that step (with a checkpoint), as an interrupted run would."""
    torch.manual_seed(cfg.seed)
    train_docs, _ = split(data)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "checkpoint.pt"
    draft = new_draft(data, src, cfg)
    opt = torch.optim.AdamW([p for p in draft.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=0.0)
    step, log, before = 0, [], 0.0
    if resume and ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        if state["config"] != asdict(cfg):
            raise EdgedecError(f"{ckpt} was written with other settings; start again without resume, "
                               "or use the same settings")
        draft.load_state_dict(state["draft"])
        opt.load_state_dict(state["optimizer"])
        step, log, before = state["step"], state["log"], state.get("seconds", 0.0)
    t0 = time.perf_counter()
    while step < min(cfg.steps, until or cfg.steps):
        for group in opt.param_groups:                       # linear warm-up, then cosine decay
            warm = min(1.0, (step + 1) / 50)
            group["lr"] = cfg.lr * warm * 0.5 * (1 + np.cos(np.pi * step / cfg.steps))
        loss = loss_fn(draft, cfg, *batch(data, cfg, train_docs, step))
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        log.append(loss.item())
        if step % cfg.checkpoint_every == 0 or step in (cfg.steps, until):
            torch.save({"config": asdict(cfg), "draft": draft.state_dict(), "optimizer": opt.state_dict(),
                        "step": step, "log": log, "seconds": before + time.perf_counter() - t0},
                       ckpt.with_suffix(".tmp"))
            ckpt.with_suffix(".tmp").replace(ckpt)
        if progress:
            progress(f"loss {np.mean(log[-20:]):.3f} ({(time.perf_counter() - t0) / max(len(log), 1):.2f} s/step)",
                     step, cfg.steps)
    draft.train_seconds = before + time.perf_counter() - t0     # this run and the ones it resumed
    return draft


@torch.no_grad()
def evaluate(draft: Draft, data, cfg: DistillConfig) -> dict:
    """Validation top-1 (and chained acceptance for `feature`), per document kind."""
    _, val_docs = split(data)
    spans = documents(data)
    result = {}
    for kind, name in ((0, "code"), (1, "prose"), (2, "text")):
        docs = [d for d in val_docs if int(data["kind"][d]) == kind]
        if not docs:
            continue
        hits = total = covered = 0
        ce = []
        for d in docs:
            a, b = spans[d]
            shift = 1 if cfg.design == "feature" else 0
            src = data["final"] if cfg.design == "feature" else data[f"exit_{cfg.exit_layer}"]
            h = torch.tensor(src[a:b - shift].astype(np.float32))[None]
            ids = torch.tensor(data["ids"][a + shift:b].astype(np.int64))[None]
            pos = torch.arange(b - a - shift)[None]
            _, logits = draft(h, ids, pos)
            want = torch.tensor(data["teacher"][a + shift:b].astype(np.int64))
            got = draft.vocab[logits[0].argmax(-1)]
            hits += int((got == want).sum())
            total += len(want)
            ce.append(F.cross_entropy(logits[0], draft.reduced(want), ignore_index=-100, reduction="sum"))
            covered += int((draft.reduced(want) >= 0).sum())
        result[name] = {"top1": hits / total, "ce": float(sum(ce)) / max(covered, 1), "tokens": total}
        if cfg.design == "feature" and kind != 2:
            result[name]["chained"] = chained(draft, data, docs, cfg)
    return result


def chained(draft: Draft, data, docs: list[int], cfg: DistillConfig) -> float:
    """Per-token acceptance drafting cfg.chain tokens in a row (module docstring)."""
    spans = documents(data)
    rng = np.random.default_rng(cfg.seed)
    ids, teacher, final = data["ids"], data["teacher"], data["final"]
    candidates = [(a, i) for d in docs for a, b in [spans[d]]
                  for i in range(a, b - cfg.chain - 1)
                  if all(ids[i + 1 + j] == teacher[i + j] for j in range(1, cfg.chain + 1))]
    if not candidates:
        return float("nan")
    picks = rng.choice(len(candidates), size=min(cfg.eval_positions, len(candidates)), replace=False)
    accepted = checked = 0
    for p in picks:
        a, i = candidates[p]
        h = torch.tensor(final[a:i + 1].astype(np.float32))[None]            # true states up to i
        nxt = torch.tensor(ids[a + 1:i + 2].astype(np.int64))[None]          # true tokens up to i + 1
        for j in range(cfg.chain):
            pos = torch.arange(h.shape[1])[None]
            r, logits = draft(h, nxt, pos, last=True)
            token = int(draft.vocab[logits[0, -1].argmax()])
            checked += 1
            if token != int(teacher[i + 1 + j]):
                break
            accepted += 1
            h = torch.cat([h, r[:, -1:]], dim=1)
            nxt = torch.cat([nxt, torch.tensor([[token]])], dim=1)
    return accepted / checked


def save_report(path: Path, cfg: DistillConfig, before: dict, after: dict, seconds: float, n_tokens: int) -> None:
    path.write_text(json.dumps({"config": asdict(cfg), "before": before, "after": after,
                                "train_seconds": seconds, "data_tokens": n_tokens}, indent=1))


def summary(result: dict) -> dict:
    """evaluate()'s result as flat numbers: {"code_top1": .., "code_chained": .., "prose_top1": .., ...}."""
    return {f"{kind}_{k}": round(float(v), 4) for kind, r in result.items() for k, v in r.items()
            if k in ("top1", "chained")}


def from_weights(w, src) -> Draft:
    """A torch feature draft holding a draft file's weights (the inverse of `weights`)."""
    draft = Draft("feature", src.config, src, w.vocab)
    with torch.no_grad():
        draft.fc.copy_(torch.tensor(w.fc))
        for n, v in w.layer.items():
            draft.layer.w[n].copy_(torch.tensor(v))
    return draft


def weights(draft: Draft, meta: dict):
    """The trained part of a feature draft as a draft file's contents (export/drafts.py)."""
    from edgedec.export.drafts import LAYER_NAMES, DraftWeights
    layer = {n: draft.layer.w[n].detach().numpy() for n in LAYER_NAMES}
    return DraftWeights(draft.design, draft.fc.detach().numpy(), layer, draft.vocab.numpy(), meta)
