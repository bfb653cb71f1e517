"""Trained drafts: the weights file `edgedec-distill` writes, its ONNX graph, and its place in a bundle.

A draft file (`*.draft.npz`) holds fp16 weights and a JSON record:
    fc                [H, 2H]   (feature design) mixes [embed(next token); hidden]
    layer.<name>      one llama decoder layer: attn_norm, attn_q, attn_k, attn_v, attn_output, ffn_norm,
                      ffn_gate, ffn_up, ffn_down
    vocab             int32 [N] the token ids its head keeps, most frequent first
    meta              JSON: design, model name and fingerprint, data sources, tokens, steps, seconds,
                      acceptance before and after training

The head itself is not stored: it is the model's own final norm and the rows `vocab` of its LM head, taken
from the model at export, so the file holds only the trained part.

The graph (feature design, EAGLE-style; tools/distill/designs.py has the torch twin):

    hidden [1,S,H] (after the last layer, pre-norm)   next_ids [1,S]
          └──────────────┐          ┌── Gather (the model's embedding, int8 rows)
                         ▼          ▼
                  Concat [embed; hidden] → fc → decoder layer (own KV cache: past_key_0/past_value_0)
                         ▼
          hidden_out [1,S,H]  (the predicted next hidden state of each row)
                         ▼ last row only
          final norm → reduced head (int8, N rows) → logits [1,1,N]
"""
from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from edgedec import manifest as mf
from edgedec.errors import EdgedecError

from .graphs import Builder, _embedding, _model, _rope_cache, decoder_layer, head_quant

LAYER_NAMES = ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up",
               "ffn_down")


def model_fingerprint(src) -> str:
    """What ties a draft to its model: a hash of the token embedding as the source stores it (float32)."""
    return hashlib.sha256(np.ascontiguousarray(src.tensor("token_embd.weight"), np.float32).tobytes()).hexdigest()[:16]


@dataclass
class DraftWeights:
    design: str
    fc: np.ndarray | None
    layer: dict[str, np.ndarray]
    vocab: np.ndarray
    meta: dict

    def save(self, path: Path) -> None:
        """Write atomically (a temporary file renamed into place)."""
        arrays = {f"layer.{k}": v.astype(np.float16) for k, v in self.layer.items()}
        if self.fc is not None:
            arrays["fc"] = self.fc.astype(np.float16)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, vocab=self.vocab.astype(np.int32), meta=np.array(json.dumps(self.meta)), **arrays)
        tmp.replace(path)


def load_draft(path: str | Path) -> DraftWeights:
    """Read a draft file, with one-line errors for a missing, corrupt or incomplete one."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise EdgedecError(f"{p}: no such draft file; train one with edgedec-distill, or leave out $draft")
    try:
        with np.load(p) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(str(arrays.pop("meta")))
        layer = {n: arrays.pop(f"layer.{n}").astype(np.float32) for n in LAYER_NAMES}
        fc = arrays.pop("fc").astype(np.float32) if "fc" in arrays else None
        vocab = arrays.pop("vocab").astype(np.int64)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise EdgedecError(f"{p} is not a complete draft file ({type(e).__name__}: {str(e)[:120]}); "
                           "train it again with edgedec-distill") from None
    if meta.get("design") != "feature" or fc is None:
        raise EdgedecError(f"{p} is a '{meta.get('design')}' draft; bundles take 'feature' drafts only")
    return DraftWeights("feature", fc, layer, vocab, meta)


def check_model(draft: DraftWeights, src, where: str) -> None:
    """A draft trained for another model is refused, naming both."""
    want, got = draft.meta.get("fingerprint"), model_fingerprint(src)
    cfg = src.config
    shapes_ok = draft.layer["attn_q"].shape == (cfg.hidden, cfg.hidden) and int(draft.vocab.max()) < cfg.vocab
    if want != got or not shapes_ok:
        raise EdgedecError(f"{where} was trained for {draft.meta.get('model', 'another model')} "
                           f"(fingerprint {want}), not {src.name} ({got}); train a draft for this model with "
                           "edgedec-distill, or leave out $draft")


def build_draft(src, draft: DraftWeights, quant: str, max_len: int) -> tuple[onnx.ModelProto, dict]:
    """The feature draft's graph (module docstring); weights quantized as the bundle's layers are, the head
    as the bundle's head is."""
    cfg = src.config
    b = Builder(quant)
    f32 = TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info("hidden", f32, [1, "S", cfg.hidden]),
              helper.make_tensor_value_info("next_ids", TensorProto.INT64, [1, "S"]),
              helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, [1]),
              helper.make_tensor_value_info("total_seq_len", TensorProto.INT32, [])]
    outputs = [helper.make_tensor_value_info("hidden_out", f32, [1, "S", cfg.hidden]),
               helper.make_tensor_value_info("logits", f32, [1, 1, len(draft.vocab)])]
    cos, sin = _rope_cache(cfg, max_len)
    b.init("rope.cos", cos)
    b.init("rope.sin", sin)
    emb = _embedding(b, src, "next_ids")
    h = b.node("Reshape", ["hidden", b.const("shape.rows", np.array([-1, cfg.hidden]))], "/draft/hidden/Reshape")[0]
    x = b.node("Concat", [emb, h], "/draft/Concat", axis=1)[0]
    x = b.linear(x, draft.fc, "/draft/fc", "draft.fc.weight")
    pending, residual = decoder_layer(b, cfg, lambda n: draft.layer[n], 0, "/draft/layer", "draft.layer", x, None,
                                      inputs, outputs)
    out = b.node("Add", [pending, residual], "/draft/residual/Add")[0]
    b.node("Reshape", [out, b.const("shape.hidden_out", np.array([1, -1, cfg.hidden]))], "/draft/hidden_out/Reshape")
    b.nodes[-1].output[0] = "hidden_out"
    last = b.node("Slice", [out, b.const("last.start", np.array([-1])), b.const("last.end", np.array([2 ** 62])),
                            b.const("axis.0", np.array([0]))], "/draft/LastRow")[0]
    normed = b.node("SimplifiedLayerNormalization", [last, b.init("output_norm", src.tensor("output_norm.weight"))],
                    "/draft/norm", axis=-1, epsilon=cfg.rms_eps)[0]
    head = src.tensor("token_embd.weight" if cfg.tied_embeddings else "output.weight")[draft.vocab]
    b.quant = head_quant(quant)
    logits = b.linear(normed, head, "/draft/head", "draft.head.weight")
    b.node("Reshape", [logits, b.const("shape.logits", np.array([1, 1, -1]))], "/draft/logits/Reshape")
    b.nodes[-1].output[0] = "logits"
    graph = helper.make_graph(b.nodes, "draft_feature", inputs, outputs, b.inits)
    return _model(graph), b.errors


def write_draft(src, draft: DraftWeights, folder: Path, quant: str, save, name: str = "draft") -> mf.Draft:
    """Build the draft's graph into `folder` (a bundle being written) with `save(model, path)`; returns
    its manifest entry."""
    model, _ = build_draft(src, draft, quant, src.config.context)
    save(model, folder / f"{name}.onnx")
    np.save(folder / f"{name}.vocab.npy", draft.vocab.astype(np.int32))
    m = draft.meta
    return mf.Draft(name=name, design=draft.design, file=f"{name}.onnx", vocab_size=len(draft.vocab),
                    vocab_file=f"{name}.vocab.npy",
                    model=m.get("model", src.name), fingerprint=m.get("fingerprint", ""),
                    data=list(m.get("data", [])), data_tokens=int(m.get("data_tokens", 0)),
                    steps=int(m.get("steps", 0)), train_seconds=float(m.get("train_seconds", 0.0)),
                    acceptance={k: {kk: float(vv) for kk, vv in v.items()}
                                for k, v in m.get("acceptance", {}).items()})
