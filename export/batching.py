"""The batched variant of a segment graph: B sequences in one call, each with its own cache row and length.

An exported segment graph works on one sequence: its activations are rows [S, H] and only
GroupQueryAttention sees a batch axis, of size 1 (an Unsqueeze before it, a Squeeze after). The batched
variant reads the rows as B sequences of S tokens each:

    input_ids [B, S]  ->  rows [B*S, H]  (embedding, norms, every matmul: row-wise, unchanged)
    before attention:  Reshape [B*S, 3 heads] -> [B, S, 3 heads]    (B = the length of seqlens_k)
    after attention:   Reshape [B, S, H] -> [B*S, H]
    caches past/present_key_i [B, kv_heads, max_len, d], seqlens_k [B]: each sequence's length - 1

hidden_in / hidden_out keep the exported [1, rows, H] layout, with rows = B*S in sequence order, so the
head graph reads them unchanged (logits row b*S + s is sequence b's token s). GroupQueryAttention writes
sequence b's new keys and values at its own positions seqlens_k[b]+1-S .. seqlens_k[b] and applies rotary
from there, so sequences of different lengths share one call. Made when a bundle is loaded for batching;
composes with the cache types of export/kv.py (apply that first).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper


def batch_variant(model: onnx.ModelProto, config) -> onnx.ModelProto:
    """A copy of segment graph `model` that runs B sequences per call (config: the architecture's)."""
    width = (config.n_heads + 2 * config.n_kv_heads) * config.head_dim      # packed Q, K, V features
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    producers = {out: node for node in g.node for out in node.output}
    consumers = {}
    for node in g.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    for node in [n for n in g.node if n.op_type == "GroupQueryAttention"]:
        before = producers[node.input[0]]
        after = next(n for n in consumers[node.output[0]] if n.op_type == "Squeeze")
        if before.op_type != "Unsqueeze":
            raise ValueError(f"{node.name}: expected an Unsqueeze before GroupQueryAttention, found {before.op_type}")
        _to_reshape(before, [before.input[0], "batch.qkv_shape"])
        _to_reshape(after, [after.input[0], "batch.rows_shape"])
    g.initializer.extend([numpy_helper.from_array(np.array([-1, width], np.int64), "batch.qkv_tail"),
                          numpy_helper.from_array(np.array([-1, config.hidden], np.int64), "batch.rows_shape")])
    g.node.insert(0, helper.make_node("Concat", ["batch.size", "batch.qkv_tail"], ["batch.qkv_shape"],
                                      "/batch/qkv_shape", axis=0))
    g.node.insert(0, helper.make_node("Shape", ["seqlens_k"], ["batch.size"], "/batch/size"))
    for vi in list(g.input) + list(g.output):
        dims = vi.type.tensor_type.shape.dim
        if vi.name.startswith(("past_", "present_")) or vi.name in ("seqlens_k", "input_ids"):
            dims[0].ClearField("dim_value")
            dims[0].dim_param = "B"
        elif vi.name in ("hidden_in", "hidden_out"):
            dims[1].dim_param = "rows"
    return m


def _to_reshape(node, inputs: list[str]) -> None:
    node.op_type = "Reshape"
    del node.input[:]
    node.input.extend(inputs)
    del node.attribute[:]
