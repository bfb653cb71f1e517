"""Weight quantizers. Each returns the packed tensors and a `QuantError` measured against the float32
weights it was given, so the manifest records (and the export prints) how far quantization moved them.

int4: MatMulNBits layout, blocks of 32 along K, asymmetric with a 4-bit zero point per block:
    w[n, k] = (code[n, k] - zp[n, b]) * scale[n, b] + residual[n, b]        b = k // 32
Codes are packed two per byte, low nibble first.
  - Weights that are already 4-bit (GGUF Q4_0, Q4_1, Q4_K: each block of 32 is min + d * q, q in 0..15)
    are detected per block and kept exactly: same codes, scale d, and an integer zero point. What an
    integer zero point cannot express (min + zp * d, at most d/2) is `residual`, added back exactly by the
    graph as  sum_b(x over block b) * residual[n, b]  (a [K/32]-wide matmul, ~3% of the int4 one).
    Re-quantizing instead (rounding to a new grid) costs this model ~27% perplexity.
  - Other blocks get round-to-nearest with a small search over scales around min-max, keeping the one
    with the smallest squared error; their residual is 0.

int8: the same layout with 8-bit codes and a symmetric scale per block of 32 (zero point 128).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BLOCK = 32


@dataclass(frozen=True)
class QuantError:
    max_abs: float   # largest |w - dequant(w)|
    mean_abs: float  # mean |w - dequant(w)|
    rel_rms: float   # rms(w - dequant(w)) / rms(w)

    def to_dict(self) -> dict:
        return {"max_abs": self.max_abs, "mean_abs": self.mean_abs, "rel_rms": self.rel_rms}


def _error(w: np.ndarray, wq: np.ndarray) -> QuantError:
    d = (w - wq).astype(np.float64)
    rms_w = float(np.sqrt(np.mean(w.astype(np.float64) ** 2))) or 1.0
    return QuantError(float(np.abs(d).max()), float(np.abs(d).mean()), float(np.sqrt(np.mean(d * d)) / rms_w))


def _blocks(w: np.ndarray) -> np.ndarray:
    n, k = w.shape
    if k % BLOCK:
        w = np.pad(w, ((0, 0), (0, BLOCK - k % BLOCK)))
    return w.reshape(n, -1, BLOCK)


def pack_nibbles(codes: np.ndarray) -> np.ndarray:
    """[..., 2m] uint8 in 0..15 -> [..., m] bytes, element 2j in the low nibble."""
    if codes.shape[-1] % 2:
        codes = np.concatenate([codes, np.zeros(codes.shape[:-1] + (1,), np.uint8)], axis=-1)
    return (codes[..., 0::2] | (codes[..., 1::2] << 4)).astype(np.uint8)


def unpack_nibbles(packed: np.ndarray, n: int) -> np.ndarray:
    """Inverse of pack_nibbles: [..., m] bytes -> [..., n] values in 0..15."""
    return np.stack([packed & 15, packed >> 4], axis=-1).reshape(*packed.shape[:-1], -1)[..., :n]


def _grid_blocks(x: np.ndarray, lo: np.ndarray, hi: np.ndarray):
    """Find blocks that already are lo + d * q with integer q in 0..k, k <= 15: returns (mask, d)."""
    found = np.zeros(lo.shape, bool)
    step = np.zeros(lo.shape, np.float32)
    span = hi - lo
    for k in range(1, 16):
        d = span / k
        with np.errstate(divide="ignore", invalid="ignore"):
            q = (x - lo[..., None]) / d[..., None]
        ok = (np.abs(q - np.rint(q)) < 1e-3).all(-1) & (d > 0) & ~found
        found |= ok
        step = np.where(ok, d, step)
    return found, step


def quantize_int4(w: np.ndarray):
    """w [N, K] float32 -> (codes [N, K/32, 16] u8, scales [N, K/32] f32, zero_points [N, ceil(K/64)] u8,
    residual [N, K/32] f32 or None, err)."""
    x = _blocks(w.astype(np.float32))                                     # [N, B, 32]
    lo, hi = x.min(-1), x.max(-1)                                         # [N, B]
    on_grid, grid_d = _grid_blocks(x, lo, hi)
    best_err = np.full(lo.shape, np.inf, np.float32)
    best_s = np.zeros_like(lo)
    best_z = np.zeros(lo.shape, np.float32)
    for f in (1.0, 0.97, 0.94, 0.91, 1.03, 1.06):                         # scale candidates around min-max
        s = np.maximum((hi - lo) / 15.0 * f, 1e-12)
        for zr in (np.floor, np.ceil):
            z = np.clip(zr(-lo / s), 0, 15)
            q = np.clip(np.rint(x / s[..., None]) + z[..., None], 0, 15)
            e = np.sum(((q - z[..., None]) * s[..., None] - x) ** 2, axis=-1)
            better = e < best_err
            best_err = np.where(better, e, best_err)
            best_s = np.where(better, s, best_s)
            best_z = np.where(better, z, best_z)
    codes = np.clip(np.rint(x / best_s[..., None]) + best_z[..., None], 0, 15)
    residual = np.zeros_like(lo)
    # exact blocks: code = (x - lo) / d, zp = round(-lo / d), residual = lo + zp * d
    g_z = np.clip(np.rint(-lo / np.where(on_grid, grid_d, 1.0)), 0, 15)
    g_codes = np.rint((x - lo[..., None]) / np.where(on_grid, grid_d, 1.0)[..., None])
    codes = np.where(on_grid[..., None], g_codes, codes).astype(np.uint8)
    best_s = np.where(on_grid, grid_d, best_s)
    best_z = np.where(on_grid, g_z, best_z)
    residual = np.where(on_grid, lo + g_z * grid_d, residual).astype(np.float32)
    deq = ((codes.astype(np.float32) - best_z[..., None]) * best_s[..., None] + residual[..., None])
    err = _error(w, deq.reshape(w.shape[0], -1)[:, : w.shape[1]])
    has_residual = bool(np.abs(residual).max() > 0)
    return (pack_nibbles(codes), best_s.astype(np.float32), pack_nibbles(best_z.astype(np.uint8)),
            residual if has_residual else None, err)


def drop_residual(w: np.ndarray, codes, scales, zero_points, residual, mean_sums: np.ndarray):
    """The calibrated form of an exact 4-bit quantization (export/calibration.py): the residual dropped and
    its mean effect, residual @ mean_sums ([N]), returned as a bias. err: the weights' error without it."""
    zp = unpack_nibbles(zero_points, scales.shape[1]).astype(np.float32)
    q = unpack_nibbles(codes.reshape(codes.shape[0], -1), scales.shape[1] * BLOCK).astype(np.float32)
    deq = ((q.reshape(len(q), -1, BLOCK) - zp[..., None]) * scales[..., None]).reshape(len(q), -1)
    bias = (residual.astype(np.float64) @ mean_sums).astype(np.float32)
    return bias, _error(w, deq[:, : w.shape[1]])


def fold_zero_points(scales: np.ndarray, zero_points: np.ndarray, residual: np.ndarray) -> np.ndarray:
    """Move the zero point into the residual: (code - zp) * s + r == (code - 8) * s + (r + (8 - zp) * s).

    MatMulNBits without a zero-point input uses 8, and its one-row int8 kernel is then faster (measured
    +6% decoding; see graphs.Builder.linear). Only for weights that carry a residual correction anyway."""
    zp = unpack_nibbles(zero_points, scales.shape[1]).astype(np.float32)
    return (residual + (8.0 - zp) * scales).astype(np.float32)


def quantize_int8(w: np.ndarray):
    """w [N, K] -> (codes [N, K/32, 32] u8, scales [N, K/32] f32, zero_points [N, K/32] u8 (=128), err)."""
    x = _blocks(w.astype(np.float32))
    s = np.maximum(np.abs(x).max(-1) / 127.0, 1e-12)
    q = np.clip(np.rint(x / s[..., None]), -127, 127)
    deq = (q * s[..., None]).reshape(w.shape[0], -1)
    err = _error(w, deq[:, : w.shape[1]])
    codes = (q + 128).astype(np.uint8)
    return codes, s.astype(np.float32), np.full(s.shape, 128, np.uint8), err


def quantize_rows_int8(w: np.ndarray):
    """Embedding table [V, H] -> (codes int8 [V, H], scales f32 [V, H/32], err): gathered by row at run time."""
    x = _blocks(w.astype(np.float32))
    s = np.maximum(np.abs(x).max(-1) / 127.0, 1e-12)
    q = np.clip(np.rint(x / s[..., None]), -127, 127).astype(np.int8)
    deq = (q * s[..., None]).reshape(w.shape[0], -1)
    return q.reshape(w.shape[0], -1), s.astype(np.float32), _error(w, deq[:, : w.shape[1]])
