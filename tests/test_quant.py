"""The quantizers against GGUF's own block formats, quantized by gguf-py (not by us)."""
import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize, quantize

from edgedec.export.quant import fold_zero_points, quantize_int4, quantize_int8, unpack_nibbles


def _int4_dequant(w: np.ndarray) -> tuple[np.ndarray, object]:
    codes, scales, zp, residual, err = quantize_int4(w)
    q = unpack_nibbles(codes, 32).astype(np.float32)                          # [N, B, 32]
    z = unpack_nibbles(zp, scales.shape[1]).astype(np.float32)                # [N, B]
    r = residual if residual is not None else np.zeros_like(scales)
    deq = (q - z[..., None]) * scales[..., None] + r[..., None]
    return deq.reshape(w.shape[0], -1)[:, : w.shape[1]], err


@pytest.fixture(scope="module")
def weights():
    return np.random.default_rng(0).standard_normal((64, 256)).astype(np.float32) * 0.05


@pytest.mark.parametrize("qtype", [T.Q4_0, T.Q4_1])
def test_int4_keeps_4bit_gguf_blocks_exactly(weights, qtype):
    w = dequantize(quantize(weights, qtype), qtype).astype(np.float32)
    deq, err = _int4_dequant(w)
    assert np.array_equal(deq, w) and err.max_abs == 0.0


def test_folded_zero_point_dequantizes_the_same(weights):
    """What the int4 graphs run for weights with a residual: no zero point (MatMulNBits' default 8),
    the zero point folded into the residual."""
    w = dequantize(quantize(weights, T.Q4_1), T.Q4_1).astype(np.float32)
    codes, scales, zp, residual, _ = quantize_int4(w)
    folded = fold_zero_points(scales, zp, residual)
    deq = (unpack_nibbles(codes, 32) - 8.0) * scales[..., None] + folded[..., None]
    assert np.abs(deq.reshape(w.shape) - w).max() < 1e-6 * np.abs(w).max()


@pytest.mark.parametrize("qtype", [T.Q5_0, T.Q8_0])
def test_int4_requantizes_other_formats_within_a_step(weights, qtype):
    """Not on a 4-bit grid: rounded to 16 levels whose integer zero point may shift the grid against the
    block's range, so the error stays within one step (scale candidates go up to 1.06x min-max)."""
    w = dequantize(quantize(weights, qtype), qtype).astype(np.float32)
    deq, err = _int4_dequant(w)
    blocks = w.reshape(w.shape[0], -1, 32)
    step = ((blocks.max(-1) - blocks.min(-1)) / 15 * 1.06)[..., None]
    assert (np.abs(deq - w).reshape(blocks.shape) <= step + 1e-7).all()
    assert 0 < err.rel_rms < 0.1
    assert err.max_abs == pytest.approx(np.abs(deq - w).max(), rel=1e-6)


def test_int8_keeps_q8_0_exactly(weights):
    w = dequantize(quantize(weights, T.Q8_0), T.Q8_0).astype(np.float32)
    codes, scales, zp, err = quantize_int8(w)
    deq = (codes.astype(np.float32) - zp[..., None]) * scales[..., None]
    assert np.abs(deq.reshape(w.shape) - w).max() <= 1e-7 * np.abs(w).max() and err.max_abs <= 1e-7


def test_calibrated_bias_lowers_held_out_error_below_round_to_nearest(weights):
    """int4-calibrated on a Q4_1 linear: codes, steps and integer zero points kept, the offsets' mean effect
    on the calibration activations added back as a bias. Activations with a non-zero mean per block (as
    RMSNorm outputs have): on held-out ones, the output error falls to under half of round-to-nearest's
    (dropping the offsets, as a plain integer-zero-point requantization does). Measured: 0.36x."""
    from edgedec.export.quant import drop_residual
    w = dequantize(quantize(weights, T.Q4_1), T.Q4_1).astype(np.float32)
    codes, scales, zp, residual, _ = quantize_int4(w)
    rng = np.random.default_rng(1)
    mean = 0.5 + 0.2 * rng.standard_normal(256)
    calib, held_out = (mean + rng.standard_normal((n, 256)) for n in (512, 256))
    sums = calib.reshape(512, -1, 32).sum(-1).mean(0)
    bias, err = drop_residual(w, codes, scales, zp, residual, sums)
    q = unpack_nibbles(codes, 32).astype(np.float32)
    z = unpack_nibbles(zp, scales.shape[1]).astype(np.float32)
    nearest = ((q - z[..., None]) * scales[..., None]).reshape(w.shape)
    truth = held_out @ w.T
    rtn = np.linalg.norm(held_out @ nearest.T - truth)
    calibrated = np.linalg.norm(held_out @ nearest.T + bias - truth)
    assert calibrated < 0.5 * rtn
    assert err.max_abs <= scales.max() / 2 + 1e-7          # the weights alone moved by at most half a step
