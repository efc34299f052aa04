"""Intensity statistics of a (subject, view) and the int16 quantisation of stored slices.

Pure numpy, no store I/O: ingest records the statistics in each part (normalisation, fingerprint)
and ``predict`` recomputes them on a new stack so the network sees what it saw in training.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

QMAX = 32767
NORM_COLUMNS = ("lo", "hi", "mean", "std")
_MAX_STAT_PIXELS = 1 << 20


def intensity_stats(images: Sequence[np.ndarray]) -> dict:
    """Robust intensity statistics of one (subject, view): what normalisation and the fingerprint use.

    Percentiles 0.5 / 50 / 99.5 over the source pixels (a strided subsample of at most 2^20 pixels),
    then mean and std of the pixels clipped to [p0.5, p99.5], as nnU-Net does for its fingerprint
    (Isensee et al., Nat. Methods 2021). Computed on the source images, not on the grid, so the zero
    padding outside a small field of view does not bias them. The percentiles are numpy's
    ("linear" method), computed by ``_percentiles`` without numpy's full-array partition.
    """
    n_total = int(sum(im.size for im in images))
    stride = max(1, int(np.ceil(n_total / _MAX_STAT_PIXELS)))
    # Order statistics (percentiles, min, max) on the pixels in their own type, which widening to
    # float64 does not reorder or change; float64 only for the sums (mean, std). The ~10^6-pixel
    # working arrays live in per-thread scratch buffers: allocating them afresh for every call
    # costs more in page faults than the arithmetic.
    parts = [np.asarray(im).ravel()[::stride] for im in images]
    dtype = np.result_type(*parts)
    if dtype.kind not in "iuf":
        dtype = np.dtype(np.float64)
    n = sum(p.size for p in parts)
    narrow = np.concatenate(parts, out=_scratch("narrow", n, dtype), casting="same_kind")
    p_lo, p_med, p_hi = _percentiles(narrow, (0.5, 50.0, 99.5))
    lo, hi = float(narrow.min()), float(narrow.max())
    flat = _scratch("flat", n, np.float64)
    np.copyto(flat, narrow, casting="unsafe")
    clipped = np.clip(flat, p_lo, p_hi, out=flat)
    # clipped.mean() and clipped.std() as numpy computes them (numpy/_core/_methods.py _mean, _var),
    # sharing the mean and squaring into a scratch buffer
    arrmean = np.add.reduce(clipped, axis=None, keepdims=True)
    arrmean = np.true_divide(arrmean, np.intp(n), out=arrmean, casting="unsafe", subok=False)
    mean = arrmean[0]  # the same sum over the same count as clipped.mean()
    dev = np.subtract(clipped, arrmean, out=_scratch("dev", n, np.float64))
    np.square(dev, out=dev)
    var = np.add.reduce(dev, axis=None)
    var = var.dtype.type(var / np.intp(n))
    std = float(np.sqrt(var))
    return {
        "n_pixels": n_total,
        "min": lo,
        "max": hi,
        "p0_5": float(p_lo),
        "p50": float(p_med),
        "p99_5": float(p_hi),
        "mean": float(mean),
        "std": std if std > 1e-12 else 1.0,
    }


_SCRATCH = threading.local()


def _scratch(name: str, n: int, dtype) -> np.ndarray:
    """A reusable 1-D work array of ``n`` elements (contents undefined), one per thread and name."""
    dtype = np.dtype(dtype)
    buf = getattr(_SCRATCH, name, None)
    if buf is None or buf.dtype != dtype or buf.size < n:
        buf = np.empty(max(n, 1 << 16), dtype)
        setattr(_SCRATCH, name, buf)
    return buf[:n]


def _percentiles(x: np.ndarray, percents: Sequence[float]) -> list[float]:
    """``np.percentile(x.astype(float64), percents)`` (method "linear") of a finite 1-D array, bit for bit.

    numpy partitions the whole array around all eight order statistics it might need (~20 ms for
    the 10^6 pixels of an SA stack, the largest cost of a store write). Here each needed order
    statistic is found among the few pixels between two thresholds read off a sorted strided
    sample; the thresholds are checked to bracket it exactly (count below <= k < count below +
    candidates), else the whole array is partitioned as numpy does. The interpolation repeats
    numpy's: virtual index (n - 1) * q, gamma = its fraction, lerp a + (b - a) * g (b - (b - a) *
    (1 - g) when g >= 0.5).
    """
    n = x.size
    q = np.true_divide(np.asarray(percents, dtype=np.float64), 100)
    virtual = (n - 1) * q
    prev = np.floor(virtual)
    top = virtual >= n - 1
    prev_i = np.where(top, n - 1, prev).astype(np.intp)
    next_i = np.where(top, n - 1, prev + 1).astype(np.intp)
    gamma = virtual - np.where(top, -1.0, prev)
    values = _order_stats(x, sorted({int(k) for k in (*prev_i, *next_i)}))
    out = []
    for a_k, b_k, g in zip(prev_i, next_i, gamma):
        a, b = np.float64(values[int(a_k)]), np.float64(values[int(b_k)])
        diff = b - a
        out.append(float(b - diff * (1 - g)) if g >= 0.5 else float(a + diff * g))
    return out


def _order_stats(x: np.ndarray, ks: list[int]) -> dict[int, np.float64]:
    """{k: sorted(x)[k]} for the ranks ``ks``, exactly (see ``_percentiles``)."""
    n = x.size
    if n <= 1 << 16:
        part = np.partition(x, ks)
        return {k: part[k] for k in ks}
    sample = np.sort(x[:: max(1, n // 8192)])
    m = sample.size
    found: dict[int, np.float64] = {}
    for k in ks:
        if k in found:
            continue
        f = k / (n - 1)
        slack = 6.0 * np.sqrt(f * (1 - f) * m) + 16  # ranks of sample error, generously
        i_lo, i_hi = int(np.floor(f * (m - 1) - slack)), int(np.ceil(f * (m - 1) + slack))
        t_lo = sample[max(i_lo, 0)]
        t_hi = sample[min(i_hi, m - 1)]
        group = [j for j in ks if j not in found and j >= k]
        mask = _scratch("mask", n, np.bool_)
        if i_lo < 0:  # a low tail: everything up to t_hi
            below, cand = 0, x[np.less_equal(x, t_hi, out=mask)]
        elif i_hi >= m:  # a high tail
            cand = x[np.greater_equal(x, t_lo, out=mask)]
            below = n - cand.size
        else:
            np.greater_equal(x, t_lo, out=mask)
            below = n - int(np.count_nonzero(mask))
            mask &= np.less_equal(x, t_hi, out=_scratch("mask2", n, np.bool_))
            cand = x[mask]
        inside = [j for j in group if below <= j < below + cand.size]
        if not inside:
            part = np.partition(x, [j for j in ks if j not in found])  # numpy's way, exact by definition
            found.update({j: part[j] for j in ks if j not in found})
            break
        cand.partition([j - below for j in inside])  # cand is a fresh copy: partition in place
        found.update({j: cand[j - below] for j in inside})
    return found


def quantise(image: np.ndarray) -> tuple[np.ndarray, float, float]:
    """float image -> (int16 q, scale, offset) with image ~= q * scale + offset (error <= scale / 2)."""
    lo, hi = float(image.min()), float(image.max())
    offset = (hi + lo) / 2.0
    scale = (hi - lo) / (2 * QMAX) if hi > lo else 1.0
    q = image.astype(np.float64)  # a fresh array: the steps below work in place, same values
    np.subtract(q, offset, out=q)
    np.divide(q, scale, out=q)
    np.rint(q, out=q)
    return np.clip(q, -QMAX, QMAX, out=q).astype(np.int16), scale, offset
