"""ONNX graphs built straight from the weights, one per *segment* of layers, plus one for the LM head.

A bundle cut at points [c1, c2, ...] holds segments [0:c1], [c1:c2], ..., [cn:L]; the first one starts
with the token embedding. Any range of layers that starts and ends on a cut point runs as a chain of
segments, which is what self-speculation (draft with [0:E]) and early exit need.

Segment graph, for layers a..b-1 (each layer in ORT's fused contrib ops). Inside a segment activations
are 2-D [S, H] (only GroupQueryAttention wants [1, S, .]), so the exact-int4 correction below can be one
Gemm (y + block_sums @ residual) instead of MatMul + Add: measured ~7 us less per linear at one row.

    input_ids [1,S] ──Gather──┐   (first segment)    or   hidden_in [1,S,H]
                              ▼
         ┌──────────────── residual [S,H] ───────────────────────────────────┐
         │  SimplifiedLayerNorm / SkipSimplifiedLayerNorm (adds the residual)  │
         │  MatMulNBits(QKV packed) → GroupQueryAttention(rotary interleaved,  │
         │       past_key_i/past_value_i: shared buffers [1, kv, max_len, d])  │
         │  MatMulNBits(o) → SkipSimplifiedLayerNorm → MatMulNBits(gate|up) →  │
         │  Split → SiLU·Mul (SwiGLU) → MatMulNBits(down) → next layer's skip  │
         └────────────────────────────────────────────────────────────────────┘
                              ▼
                      hidden_out [1,S,H]

    head: hidden [1,S,H] → SimplifiedLayerNorm(output_norm) → MatMul(NBits) LM head → logits [1,S,V]

GroupQueryAttention writes the new keys/values into the cache buffer in place (past and present are bound
to the same memory) at positions seqlens_k+1-S .. seqlens_k, and applies rotary from those positions.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .lora import input_names
from .quant import (BLOCK, QuantError, drop_residual, fold_zero_points, pack_nibbles, quantize_int4,
                    quantize_int8, quantize_rows_int8)

OPSET = 21
MS = "com.microsoft"
QUANTS = ("int4", "int4-calibrated", "int4-mixed", "int8", "fp32")
# the calibrated int4 variants (export/calibration.py): the inputs whose linears keep the exact correction of
# 4-bit GGUF blocks; the others get the calibrated bias. Mixed keeps it on Q, K, V (V is the most sensitive
# linear) and gate/up (bench/README.md, "Re-quantizing")
CALIBRATED = {"int4-calibrated": frozenset(), "int4-mixed": frozenset({"attn_in", "ffn_in"})}


def base_quant(quant: str) -> str:
    """The weights' format: int4, int8 or fp32 (the int4 variants differ only in the correction)."""
    return "int4" if quant.startswith("int4") else quant


def head_quant(quant: str) -> str:
    """The LM head stays 8-bit in int4 bundles, as GGUF keeps token_embd at Q8_0: a 4-bit head costs
    SmolLM2 ~12% perplexity, an 8-bit one 0.3% (measured, see README)."""
    return "int8" if base_quant(quant) == "int4" else quant


@dataclass
class Builder:
    """Collects nodes and initializers; names are path-like: /model/layers.3/attn/qkv/MatMul."""
    quant: str
    nodes: list = field(default_factory=list)
    inits: list = field(default_factory=list)
    errors: dict[str, dict] = field(default_factory=dict)   # weight name -> QuantError.to_dict()
    block_sums: dict[str, str] = field(default_factory=dict)  # input name -> its per-block sums [S,K/32]
    consts: set[str] = field(default_factory=set)
    means: dict | None = None            # (layer, input) -> mean block sums, for calibrated linears
    exact_inputs: frozenset = frozenset()  # inputs whose linears keep the exact correction anyway
    lora: frozenset = frozenset()        # linears (weight names) that get a switchable low-rank path
    lora_inputs: list = field(default_factory=list)   # its graph inputs (value infos)

    def init(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def const(self, name: str, array: np.ndarray) -> str:
        """A small constant shared by name: added on first use."""
        if name not in self.consts:
            self.consts.add(self.init(name, array))
        return name

    def node(self, op: str, inputs: list[str], name: str, n_out: int = 1, domain: str = "", **attrs) -> list[str]:
        outs = [f"{name}/output_{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=name, domain=domain, **attrs))
        return outs

    def linear(self, x: str, w: np.ndarray, name: str, weight_name: str, reads: tuple[int, str] | None = None) -> str:
        """x [1,S,K] @ w[N,K]^T, w quantized per the builder's mode; records the quantization error.
        reads: (layer, input name) of x, for calibrated linears (export/calibration.py)."""
        n, k = w.shape
        if self.quant == "fp32":
            y = self.node("MatMul", [x, self.init(f"{name}.weight", w.T)], f"{name}/MatMul")[0]
            return self._lora(x, y, k, n, name, weight_name)
        residual = bias = None
        if self.quant == "int4":
            codes, scales, zp, residual, err = quantize_int4(w)
            bits = 4
            if residual is not None and self.means is not None and reads and reads[1] not in self.exact_inputs:
                bias, err = drop_residual(w, codes, scales, zp, residual, self.means[reads])
                residual = None
        else:
            codes, scales, zp, err = quantize_int8(w)
            bits = 8
        self.errors[weight_name] = err.to_dict()
        ins = [x, self.init(f"{name}.qweight", codes), self.init(f"{name}.scales", scales)]
        if residual is not None:
            # the correction below adds the zero point too: MatMulNBits with no zero-point input (8) runs
            # ~15% faster at one row (measured 31 vs 37 us for 576x1536; +6% decoding in a paired run)
            residual = fold_zero_points(scales, zp, residual)
        elif bits == 4:   # (int8 codes are centred on 128, the kernel's default zero point: none needed)
            ins.append(self.init(f"{name}.zero_points", zp))
        if bias is not None:
            ins += ["", self.init(f"{name}.bias", bias)]              # (input 4, g_idx, unused)
        # accuracy_level 4: activations are quantized to int8 inside the kernel (as llama.cpp does with Q8).
        y = self.node("MatMulNBits", ins, f"{name}/MatMulNBits", domain=MS,
                      K=k, N=n, bits=bits, block_size=BLOCK, accuracy_level=4)[0]
        if residual is not None:
            # exact 4-bit sources: y + block_sums(x) @ residual^T   ([S,K/32] @ [K/32,N] + [S,N], one Gemm)
            y = self.node("Gemm", [self._block_sums(x, k), self.init(f"{name}.residual", residual.T), y],
                          f"{name}/ResidualGemm")[0]
        return self._lora(x, y, k, n, name, weight_name)

    def _lora(self, x: str, y: str, k: int, n: int, name: str, weight_name: str) -> str:
        """y + (x @ lora_a) @ lora_b for a switchable adapter (export/lora.py). lora_a [K, r] and lora_b [r, N]
        are graph inputs whose defaults are empty ([K, 0], [0, N]): unbound, the path adds exact zeros."""
        if weight_name not in self.lora:
            return y
        a, b = input_names(weight_name)
        self.lora_inputs += [helper.make_tensor_value_info(a, TensorProto.FLOAT, [k, "lora_rank"]),
                             helper.make_tensor_value_info(b, TensorProto.FLOAT, ["lora_rank", n])]
        low = self.node("MatMul", [x, self.init(a, np.zeros((k, 0), np.float32))], f"{name}/lora/A")[0]
        up = self.node("MatMul", [low, self.init(b, np.zeros((0, n), np.float32))], f"{name}/lora/B")[0]
        return self.node("Add", [y, up], f"{name}/lora/Add")[0]

    def _block_sums(self, x: str, k: int) -> str:
        """Sum of x over each block of 32 along K ([S,K] -> [S,K/32]), shared by the linears reading x.

        One MatMulNBits whose 4-bit weights are 0/1 block indicators: like the main matmuls it quantizes x
        to int8 per block, so the sums are those of the quantized activations, as in llama.cpp's
        Q4_1 x Q8_1 dot product (the `s` field of a Q8_1 block). One node instead of Reshape + ReduceSum:
        measured +1.8% decoding speed in one paired run; perplexity and agreement with llama.cpp unchanged (README)."""
        if x not in self.block_sums:
            n_blocks = -(-k // BLOCK)
            ones = np.zeros((n_blocks, n_blocks, BLOCK), np.uint8)
            ones[np.arange(n_blocks), np.arange(n_blocks)] = 1
            ins = [x, self.const(f"block_sums.{k}.qweight", pack_nibbles(ones)),
                   self.const(f"block_sums.{k}.scales", np.ones((n_blocks, n_blocks), np.float32)),
                   self.const(f"block_sums.{k}.zero_points", pack_nibbles(np.zeros((n_blocks, n_blocks), np.uint8)))]
            self.block_sums[x] = self.node("MatMulNBits", ins, f"{x.rsplit('/output_', 1)[0]}/BlockSums", domain=MS,
                                           K=k, N=n_blocks, bits=4, block_size=BLOCK, accuracy_level=4)[0]
        return self.block_sums[x]


def _rope_cache(cfg, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    inv = cfg.rope_base ** (-np.arange(0, cfg.head_dim, 2, dtype=np.float64) / cfg.head_dim)
    ang = np.arange(max_len, dtype=np.float64)[:, None] * inv[None, :]     # [max_len, d/2]
    return np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)


def _embedding(b: Builder, src, ids: str) -> str:
    """input_ids [1,S] -> [S,H]."""
    w = src.tensor("token_embd.weight")                                    # [V, H]
    ids = b.node("Reshape", [ids, b.const("shape.flat", np.array([-1]))], "/model/embed/Flatten")[0]
    if b.quant == "fp32":
        return b.node("Gather", [b.init("embed.weight", w), ids], "/model/embed/Gather")[0]
    codes, scales, err = quantize_rows_int8(w)                             # [V,B*32] i8, [V,B]
    b.errors["token_embd.weight (embedding)"] = err.to_dict()
    n_blocks, hidden = scales.shape[1], w.shape[1]
    q = b.node("Gather", [b.init("embed.qweight", codes), ids], "/model/embed/GatherCodes")[0]    # [S,B*32]
    s = b.node("Gather", [b.init("embed.scales", scales), ids], "/model/embed/GatherScales")[0]  # [S,B]
    qf = b.node("Cast", [q], "/model/embed/Cast", to=TensorProto.FLOAT)[0]
    blocks = b.node("Reshape", [qf, b.const("embed.block_shape", np.array([-1, n_blocks, BLOCK]))],
                    "/model/embed/ToBlocks")[0]
    s4 = b.node("Unsqueeze", [s, b.const("axis.last", np.array([-1]))], "/model/embed/ScalesUnsqueeze")[0]
    deq = b.node("Mul", [blocks, s4], "/model/embed/Dequant")[0]
    rows = b.node("Reshape", [deq, b.const("embed.padded_rows", np.array([-1, n_blocks * BLOCK]))],
                  "/model/embed/FromBlocks")[0]
    if n_blocks * BLOCK == hidden:
        return rows
    return b.node("Slice", [rows, b.const("embed.slice_start", np.array([0])),
                            b.const("embed.slice_end", np.array([hidden])), b.const("axis.1", np.array([1]))],
                  "/model/embed/Unpad")[0]


def decoder_layer(b: Builder, cfg, w, i: int, p: str, tensor: str, residual: str, pending: str | None,
                  inputs: list, outputs: list) -> tuple[str, str]:
    """One llama layer: attention over the cache buffers past_key_i/past_value_i (added to `inputs`, and
    present_key_i/present_value_i to `outputs`), then SwiGLU. `w(name)` gives a weight (attn_q, ...);
    `pending` is the previous sublayer's output, not yet added to `residual`. Returns the new (pending,
    residual)."""
    f32 = TensorProto.FLOAT
    cache_shape = [1, cfg.n_kv_heads, "max_len", cfg.head_dim]
    # attention
    if pending is None:
        h = b.node("SimplifiedLayerNormalization", [residual, b.init(f"layers.{i}.attn_norm", w("attn_norm"))],
                   f"{p}/attn_norm", axis=-1, epsilon=cfg.rms_eps)[0]
    else:
        h, _, _, residual = b.node("SkipSimplifiedLayerNormalization",
                                   [pending, residual, b.init(f"layers.{i}.attn_norm", w("attn_norm"))],
                                   f"{p}/attn_norm", n_out=4, domain=MS, epsilon=cfg.rms_eps)
    qkv_w = np.concatenate([w("attn_q"), w("attn_k"), w("attn_v")], axis=0)
    qkv = b.linear(h, qkv_w, f"{p}/attn/qkv", f"{tensor}.attn_qkv.weight", (i, "attn_in"))
    pk, pv = f"past_key_{i}", f"past_value_{i}"
    inputs += [helper.make_tensor_value_info(pk, f32, cache_shape),
               helper.make_tensor_value_info(pv, f32, cache_shape)]
    axis0 = b.const("axis.0", np.array([0]))
    qkv = b.node("Unsqueeze", [qkv, axis0], f"{p}/attn/Unsqueeze")[0]                # [1,S,.] for GQA
    attn, k_out, v_out = b.node(
        "GroupQueryAttention", [qkv, "", "", pk, pv, "seqlens_k", "total_seq_len", "rope.cos", "rope.sin"],
        f"{p}/attn/GroupQueryAttention", n_out=3, domain=MS, num_heads=cfg.n_heads,
        kv_num_heads=cfg.n_kv_heads, do_rotary=1, rotary_interleaved=1, scale=float(cfg.head_dim ** -0.5))
    b.nodes[-1].output[1], b.nodes[-1].output[2] = f"present_key_{i}", f"present_value_{i}"
    outputs += [helper.make_tensor_value_info(f"present_key_{i}", f32, cache_shape),
                helper.make_tensor_value_info(f"present_value_{i}", f32, cache_shape)]
    attn = b.node("Squeeze", [attn, axis0], f"{p}/attn/Squeeze")[0]
    o = b.linear(attn, w("attn_output"), f"{p}/attn/o_proj", f"{tensor}.attn_output.weight", (i, "attn_out"))
    # feed-forward (SwiGLU)
    h, _, _, residual = b.node("SkipSimplifiedLayerNormalization",
                               [o, residual, b.init(f"layers.{i}.ffn_norm", w("ffn_norm"))],
                               f"{p}/ffn_norm", n_out=4, domain=MS, epsilon=cfg.rms_eps)
    # gate and up as one matmul (and one correction), then split: +4.6% decoding speed in one paired run
    gate_up = b.linear(h, np.concatenate([w("ffn_gate"), w("ffn_up")], axis=0), f"{p}/mlp/gate_up_proj",
                       f"{tensor}.ffn_gate_up.weight", (i, "ffn_in"))
    g, u = b.node("Split", [gate_up, b.const("split.ffn", np.array([cfg.ffn, cfg.ffn]))], f"{p}/mlp/Split",
                  n_out=2, axis=-1)
    sg = b.node("Sigmoid", [g], f"{p}/mlp/act/Sigmoid")[0]
    silu = b.node("Mul", [g, sg], f"{p}/mlp/act/Mul")[0]
    gu = b.node("Mul", [silu, u], f"{p}/mlp/Mul")[0]
    return b.linear(gu, w("ffn_down"), f"{p}/mlp/down_proj", f"{tensor}.ffn_down.weight", (i, "ffn_mid")), residual


def build_segment(src, start: int, end: int, quant: str, max_len: int,
                  means: dict | None = None, lora: frozenset = frozenset()) -> tuple[onnx.ModelProto, dict]:
    """Graph for layers [start, end). The first segment (start == 0) takes input_ids, others hidden_in.
    means: the calibration statistics, for int4-calibrated and int4-mixed (export/calibration.py).
    lora: the linears that get a switchable low-rank path (export/lora.py graph_linears)."""
    cfg = src.config
    b = Builder(base_quant(quant), means=means if quant in CALIBRATED else None,
                exact_inputs=CALIBRATED.get(quant, frozenset()), lora=frozenset(lora))
    f32 = TensorProto.FLOAT
    inputs = []
    if start == 0:
        inputs.append(helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, "S"]))
        residual = _embedding(b, src, "input_ids")
    else:
        inputs.append(helper.make_tensor_value_info("hidden_in", f32, [1, "S", cfg.hidden]))
        residual = b.node("Reshape", ["hidden_in", b.const("shape.rows", np.array([-1, cfg.hidden]))],
                          "/model/hidden_in/Reshape")[0]
    inputs += [helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, [1]),
               helper.make_tensor_value_info("total_seq_len", TensorProto.INT32, [])]
    outputs = [helper.make_tensor_value_info("hidden_out", f32, [1, "S", cfg.hidden])]
    cos, sin = _rope_cache(cfg, max_len)
    b.init("rope.cos", cos)
    b.init("rope.sin", sin)

    pending = None   # output of the previous sublayer, not yet added to the residual
    for i in range(start, end):
        pending, residual = decoder_layer(b, cfg, lambda n, i=i: src.tensor(f"blk.{i}.{n}.weight"), i,
                                          f"/model/layers.{i}", f"blk.{i}", residual, pending, inputs, outputs)
    inputs += b.lora_inputs
    out = b.node("Add", [pending, residual], "/model/residual/Add")[0]
    b.node("Reshape", [out, b.const("shape.hidden_out", np.array([1, -1, cfg.hidden]))], "/model/hidden_out/Reshape")
    b.nodes[-1].output[0] = "hidden_out"
    graph = helper.make_graph(b.nodes, f"layers_{start}_{end}", inputs, outputs, b.inits)
    return _model(graph), b.errors


def build_head(src, quant: str) -> tuple[onnx.ModelProto, dict]:
    """Final RMSNorm and LM head: hidden [1,S,H] -> logits [1,S,V] (tied to the embedding when the model is)."""
    cfg = src.config
    b = Builder(head_quant(quant))
    h = b.node("SimplifiedLayerNormalization", ["hidden", b.init("output_norm", src.tensor("output_norm.weight"))],
               "/model/norm", axis=-1, epsilon=cfg.rms_eps)[0]
    name = "token_embd.weight" if cfg.tied_embeddings else "output.weight"
    b.linear(h, src.tensor(name), "/lm_head", f"{name} (lm head)")
    b.nodes[-1].output[0] = "logits"
    graph = helper.make_graph(
        b.nodes, "head", [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, [1, "S", cfg.hidden])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, "S", cfg.vocab])], b.inits)
    return _model(graph), b.errors


def _model(graph) -> onnx.ModelProto:
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(MS, 1)],
                          producer_name="edgedec")
    m.ir_version = 10
    return m
