"""The llama architecture (SmolLM2, Llama 2/3, TinyLlama, ...): config and weight layout.

Weights use GGUF names everywhere inside edgedec, with shapes [out_features, in_features]:

    token_embd.weight        (vocab, hidden)         also the LM head when embeddings are tied
    blk.{i}.attn_norm.weight (hidden,)
    blk.{i}.attn_q.weight    (n_heads * head_dim, hidden)     rows permuted for interleaved rotary
    blk.{i}.attn_k.weight    (n_kv_heads * head_dim, hidden)  rows permuted for interleaved rotary
    blk.{i}.attn_v.weight    (n_kv_heads * head_dim, hidden)
    blk.{i}.attn_output.weight (hidden, n_heads * head_dim)
    blk.{i}.ffn_norm.weight  (hidden,)
    blk.{i}.ffn_gate.weight  (ffn, hidden)
    blk.{i}.ffn_up.weight    (ffn, hidden)
    blk.{i}.ffn_down.weight  (hidden, ffn)
    output_norm.weight       (hidden,)
    output.weight            (vocab, hidden)         absent when tied

Rotary embedding is *interleaved* (pairs (0,1), (2,3), ...), llama.cpp's "normal" rope mode. Hugging Face
checkpoints store Q/K for rotate-half rotary; `permute_qk` converts them, as llama.cpp's converter does.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import numpy as np

from edgedec.errors import UnsupportedModelError

NAME = "llama"
LAYER_WEIGHTS = ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
                 "ffn_norm", "ffn_gate", "ffn_up", "ffn_down")


@dataclass(frozen=True)
class LlamaConfig:
    n_layers: int        # transformer blocks
    hidden: int          # residual stream width
    n_heads: int         # query heads
    n_kv_heads: int      # key/value heads (GQA when < n_heads)
    head_dim: int        # per-head width
    ffn: int             # SwiGLU inner width
    vocab: int           # vocabulary size
    rms_eps: float       # RMSNorm epsilon
    rope_base: float     # rotary frequency base
    context: int         # trained context length
    tied_embeddings: bool  # LM head is token_embd.weight
    architecture: str = NAME

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "LlamaConfig":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})


def _plain_rope_only(scaling: str, plain: str) -> None:
    """Rope scaling changes the rotary frequencies, which the graphs do not implement: refuse it."""
    if scaling != plain:
        raise UnsupportedModelError(f"rope scaling '{scaling}' is not supported yet; supported: plain rotary "
                                    "embeddings (one rope base)")


def config_from_gguf(meta: dict, tensor_names: set[str]) -> LlamaConfig:
    """Build the config from GGUF metadata (`llama.*` keys)."""
    scaling = str(meta.get("llama.rope.scaling.type", "none"))
    if "rope_freqs.weight" in tensor_names:
        scaling = "per-frequency factors (rope_freqs)"
    _plain_rope_only(scaling, "none")
    hidden = int(meta["llama.embedding_length"])
    n_heads = int(meta["llama.attention.head_count"])
    return LlamaConfig(
        n_layers=int(meta["llama.block_count"]),
        hidden=hidden,
        n_heads=n_heads,
        n_kv_heads=int(meta.get("llama.attention.head_count_kv", n_heads)),
        head_dim=int(meta.get("llama.rope.dimension_count", hidden // n_heads)),
        ffn=int(meta["llama.feed_forward_length"]),
        vocab=int(meta.get("llama.vocab_size", len(meta.get("tokenizer.ggml.tokens", [])))),
        rms_eps=float(meta["llama.attention.layer_norm_rms_epsilon"]),
        rope_base=float(meta.get("llama.rope.freq_base", 10000.0)),
        context=int(meta["llama.context_length"]),
        tied_embeddings="output.weight" not in tensor_names,
    )


def config_from_hf(cfg: dict, tensor_names: set[str]) -> LlamaConfig:
    """Build the config from a Hugging Face `config.json` (LlamaForCausalLM). `tensor_names` are the
    checkpoint's tensors under their GGUF names. transformers 5 keeps rope_theta in `rope_parameters`,
    earlier versions at the top level (and scaling in `rope_scaling`)."""
    n_heads = int(cfg["num_attention_heads"])
    hidden = int(cfg["hidden_size"])
    rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    _plain_rope_only(rope.get("rope_type", rope.get("type", "default")), "default")
    return LlamaConfig(
        n_layers=int(cfg["num_hidden_layers"]),
        hidden=hidden,
        n_heads=n_heads,
        n_kv_heads=int(cfg.get("num_key_value_heads", n_heads)),
        head_dim=int(cfg.get("head_dim") or hidden // n_heads),
        ffn=int(cfg["intermediate_size"]),
        vocab=int(cfg["vocab_size"]),
        rms_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        rope_base=float(rope.get("rope_theta", cfg.get("rope_theta", 10000.0))),
        context=int(cfg.get("max_position_embeddings", 2048)),
        tied_embeddings="output.weight" not in tensor_names,
    )


_HF_LAYER = {
    "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
_HF_GLOBAL = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
              "lm_head.weight": "output.weight"}


def hf_tensor_name(name: str) -> str | None:
    """GGUF name for a Hugging Face tensor name, or None for tensors we do not use (rotary caches)."""
    if name in _HF_GLOBAL:
        return _HF_GLOBAL[name]
    m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)\.weight", name)
    if m and m.group(2) in _HF_LAYER:
        return f"blk.{m.group(1)}.{_HF_LAYER[m.group(2)]}.weight"
    return None


def permute_qk(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Reorder Q/K rows from rotate-half rotary (HF) to interleaved rotary (GGUF).

    Within each head, HF rows are [x0..x_{d/2-1}, y0..y_{d/2-1}]; interleaved wants [x0, y0, x1, y1, ...].
    """
    out, cols = w.shape
    return w.reshape(n_heads, 2, out // n_heads // 2, cols).swapaxes(1, 2).reshape(out, cols)
