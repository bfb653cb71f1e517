"""Where one-row and many-row calls part: each kernel alone, then the whole model against llama.cpp.

    python bench/row_paths.py

1. MatMulNBits (576x1536, 4-bit, zero points, accuracy level 4): 200 rows in one call against the same
   rows one call each, 1 and 2 threads.
2. GroupQueryAttention (9 heads, 3 KV heads, rotary; 100 positions): the whole prompt in one call against
   one token per call and two tokens per call, on a shared cache buffer as the bundles run it.
3. The default bundle teacher-forced on the same tokens (King Lear, prose prompts) on both paths: top-1
   agreement with llama.cpp (same GGUF), and with each other.
"""
import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import edgedec
from edgedec.perplexity import token_nll
from edgedec.runtimes.llamacpp import LlamaCppEngine
from edgedec_tools.prompts import lear, writing_prompts

F32 = TensorProto.FLOAT


def _session(node, inputs, outputs, inits, threads: int = 2):
    g = helper.make_graph([node], "g", inputs, outputs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)])
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    return ort.InferenceSession(m.SerializeToString(), so)


def matmul_rows(rng) -> None:
    n, k = 1536, 576
    codes = rng.integers(0, 256, (n, k // 32, 16)).astype(np.uint8)
    scales = (rng.random((n, k // 32)) * 0.01).astype(np.float32)
    zp = rng.integers(0, 256, (n, k // 64)).astype(np.uint8)
    node = helper.make_node("MatMulNBits", ["A", "B", "S", "Z"], ["Y"], domain="com.microsoft", K=k, N=n, bits=4,
                            block_size=32, accuracy_level=4)
    a = rng.standard_normal((200, k)).astype(np.float32)
    for threads in (1, 2):
        s = _session(node, [helper.make_tensor_value_info("A", F32, ["M", k])],
                     [helper.make_tensor_value_info("Y", F32, ["M", n])],
                     [numpy_helper.from_array(x, name) for x, name in ((codes, "B"), (scales, "S"), (zp, "Z"))], threads)
        many = s.run(None, {"A": a})[0]
        one = np.concatenate([s.run(None, {"A": a[i:i + 1]})[0] for i in range(len(a))])
        print(f"MatMulNBits, {threads} thread(s): 200 rows at once == one at a time: {np.array_equal(many, one)}")


def attention_rows(rng) -> None:
    heads, kv_heads, d, length, s = 9, 3, 64, 256, 100
    width = (heads + 2 * kv_heads) * d
    ang = np.arange(length)[:, None] / (10000 ** (np.arange(0, d, 2) / d))[None]
    node = helper.make_node("GroupQueryAttention", ["qkv", "", "", "pk", "pv", "seqlens_k", "total", "cos", "sin"],
                            ["o", "k_out", "v_out"], domain="com.microsoft", num_heads=heads, kv_num_heads=kv_heads,
                            do_rotary=1, rotary_interleaved=1, scale=d ** -0.5)
    cache = [1, kv_heads, length, d]
    sess = _session(node, [helper.make_tensor_value_info("qkv", F32, [1, "S", width]),
                           helper.make_tensor_value_info("pk", F32, cache), helper.make_tensor_value_info("pv", F32, cache),
                           helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, [1]),
                           helper.make_tensor_value_info("total", TensorProto.INT32, [])],
                    [helper.make_tensor_value_info("o", F32, [1, "S", heads * d]),
                     helper.make_tensor_value_info("k_out", F32, cache), helper.make_tensor_value_info("v_out", F32, cache)],
                    [numpy_helper.from_array(np.cos(ang).astype(np.float32), "cos"),
                     numpy_helper.from_array(np.sin(ang).astype(np.float32), "sin")])
    x = rng.standard_normal((1, s, width)).astype(np.float32) * 3

    def run(pieces):
        k, v = np.zeros(cache, np.float32), np.zeros(cache, np.float32)
        outs, done = [], 0
        for p in pieces:
            io = sess.io_binding()
            io.bind_cpu_input("qkv", np.ascontiguousarray(x[:, done:done + p]))
            kk, vv = ort.OrtValue.ortvalue_from_numpy(k), ort.OrtValue.ortvalue_from_numpy(v)
            io.bind_ortvalue_input("pk", kk)
            io.bind_ortvalue_input("pv", vv)
            io.bind_ortvalue_output("k_out", kk)
            io.bind_ortvalue_output("v_out", vv)
            io.bind_cpu_input("seqlens_k", np.array([done + p - 1], np.int32))
            io.bind_cpu_input("total", np.array(done + p, np.int32))
            io.bind_output("o", "cpu")
            sess.run_with_iobinding(io)
            outs.append(io.get_outputs()[2].numpy())
            done += p
        return np.concatenate(outs, 1)
    whole = run([s])
    print(f"GroupQueryAttention: one token a call differs from the whole prompt by "
          f"{np.abs(run([1] * s) - whole).max():.2g} (outputs up to {np.abs(whole).max():.3g}); "
          f"two a call: {np.abs(run([2] * (s // 2)) - whole).max():.2g}")


def model_rows() -> None:
    m = edgedec.load(n_ctx=512)
    peer = LlamaCppEngine(m.bundle, n_ctx=512, logits_all=True).runner()
    for name, text in (("King Lear", lear(6000)), ("prose prompts", "\n\n".join(writing_prompts(6))[:6000])):
        ids = m.tokenizer.encode(text)[:1024]
        _, ref = token_nll(peer, ids, 512)
        _, many = token_nll(m.backend, ids, 512)
        _, one = token_nll(m.backend, ids, 512, chunk=1)
        print(f"{name}, {len(ids)} tokens: top-1 agreement with llama.cpp: many-row {(many == ref).mean():.4f}, "
              f"one-row {(one == ref).mean():.4f}; with each other {(one == many).mean():.4f}", flush=True)


if __name__ == "__main__":
    rng = np.random.default_rng(0)
    matmul_rows(rng)
    attention_rows(rng)
    model_rows()
