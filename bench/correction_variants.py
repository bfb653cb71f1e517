"""Where does the exact-int4 correction's cost go? Export the default model with one variant of it, then
time the variants against the real bundle with bench/compare_bundles.py:

    strip     no correction: integer zero points only (wrong weights: +22% perplexity), the speed bound
    shared    the correction's nodes as in the bundles, but every linear of a shape shares one residual
              array (wrong weights, a fraction of the bytes): what the nodes cost without the bytes
    sums-out  the block sums as extra output columns of the main MatMulNBits, then Split (the same weights,
              but the kernel rounds the sums differently: logits differ from the bundle's by up to ~2)

    python bench/correction_variants.py strip /tmp/v_strip
    python bench/compare_bundles.py BUNDLE /tmp/v_shared /tmp/v_strip --rounds 10
"""
import argparse

import numpy as np

from edgedec.export.bundle_writer import export_bundle
from edgedec.export.graphs import BLOCK, MS, Builder
from edgedec.export.quant import fold_zero_points, pack_nibbles, quantize_int4
from edgedec.models.known import default_gguf

bundle_linear = Builder.linear


def strip(b: Builder, x, w, name, q):
    codes, scales, zp, _ = q
    ins = [x, b.init(f"{name}.qweight", codes), b.init(f"{name}.scales", scales), b.init(f"{name}.zero_points", zp)]
    return b.node("MatMulNBits", ins, f"{name}/MatMulNBits", domain=MS, K=w.shape[1], N=w.shape[0], bits=4,
                  block_size=BLOCK, accuracy_level=4)[0]


def shared(b: Builder, x, w, name, q):
    n, k = w.shape
    codes, scales, zp, residual = q
    residual = fold_zero_points(scales, zp, residual)
    ins = [x, b.init(f"{name}.qweight", codes), b.init(f"{name}.scales", scales)]
    y = b.node("MatMulNBits", ins, f"{name}/MatMulNBits", domain=MS, K=k, N=n, bits=4, block_size=BLOCK,
               accuracy_level=4)[0]
    r = b.const(f"shared_residual.{n}.{k}", np.ascontiguousarray(residual.T))
    return b.node("Gemm", [b._block_sums(x, k), r, y], f"{name}/ResidualGemm")[0]


def sums_out(b: Builder, x, w, name, q):
    n, k = w.shape
    codes, scales, zp, residual = q
    residual = fold_zero_points(scales, zp, residual)
    nb = scales.shape[1]
    ind = np.full((nb, nb, BLOCK), 8, np.uint8)
    ind[np.arange(nb), np.arange(nb)] = 9               # (9 - 8) * 1 = 1 inside block b, 0 elsewhere
    ins = [x, b.init(f"{name}.qweight", np.concatenate([codes, pack_nibbles(ind)])),
           b.init(f"{name}.scales", np.concatenate([scales, np.ones((nb, nb), np.float32)]))]
    y = b.node("MatMulNBits", ins, f"{name}/MatMulNBits", domain=MS, K=k, N=n + nb, bits=4, block_size=BLOCK,
               accuracy_level=4)[0]
    y, sums = b.node("Split", [y, b.init(f"{name}.split", np.array([n, nb]))], f"{name}/SplitSums", n_out=2, axis=-1)
    return b.node("Gemm", [sums, b.init(f"{name}.residual", residual.T), y], f"{name}/ResidualGemm")[0]


VARIANTS = {"strip": strip, "shared": shared, "sums-out": sums_out}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("variant", choices=VARIANTS)
    ap.add_argument("out")
    a = ap.parse_args()
    variant = VARIANTS[a.variant]

    def linear(b, x, w, name, weight_name):
        if b.quant != "int4":                                   # the int8 head
            return bundle_linear(b, x, w, name, weight_name)
        codes, scales, zp, residual, err = quantize_int4(w)
        if residual is None:                                    # no exact 4-bit blocks: nothing to vary
            return bundle_linear(b, x, w, name, weight_name)
        b.errors[weight_name] = err.to_dict()
        return variant(b, x, w, name, (codes, scales, zp, residual))

    Builder.linear = linear
    export_bundle(default_gguf(), a.out)
    print(f"exported {a.variant} to {a.out}")


if __name__ == "__main__":
    main()
