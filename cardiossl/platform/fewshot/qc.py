"""The QC picture of one predicted case: labels over the ED and ES slices, measures and flags beside.

Numbers alone hide the errors a glance catches (a myocardium above the base, an RV in the liver):
rows ED and ES, columns a basal, a mid and an apical slice of the labelled stack, labels drawn in
the training figures' colours (LV cavity, LV myocardium, RV cavity), and the measures with their
plausibility flags in the title.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

STRUCTURES = ("LV cavity", "LV myocardium", "RV cavity")


def pick_slices(labels: np.ndarray, n: int = 3) -> list[int]:
    """``n`` slice indices spread over the slices that hold a label (over all slices if none do)."""
    held = np.nonzero(labels.reshape(labels.shape[0], -1).any(1))[0]
    pool = held if held.size else np.arange(labels.shape[0])
    picks = np.linspace(0, len(pool) - 1, num=min(n, len(pool))).round().astype(int)
    return [int(pool[i]) for i in picks]


def qc_figure(images: np.ndarray, labels: np.ndarray, frames: dict[str, int], out_png: str | Path, *,
              title: str = "", notes: list[str] | None = None) -> Path:
    """``images``/``labels`` [T, S, rows, cols]; ``frames`` {"ED": t, "ES": t}; writes ``out_png``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from cardiossl.pretexts.base import overlay_classes

    rows = [(name, t) for name, t in frames.items() if t is not None]
    if not rows:
        rows = [("frame 0", 0)]
    cols = max(len(pick_slices(labels[t])) for _, t in rows)
    shape = images.shape[2:]
    panel = 2.6 * shape[0] / shape[1]  # the height of a 2.6-inch-wide panel of this aspect
    text = title + ("\n" + "\n".join(notes) if notes else "")
    fig, axes = plt.subplots(len(rows), cols, squeeze=False, layout="constrained",
                             figsize=(2.6 * cols, (panel + 0.25) * len(rows) + 0.6 + 0.14 * text.count("\n")))
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    for r, (name, t) in enumerate(rows):
        for c, k in enumerate(pick_slices(labels[t], cols)):
            ax = axes[r, c]
            img = images[t, k]
            lo, hi = np.percentile(img, [0.5, 99.5]) if img.size else (0, 1)
            ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
            overlay_classes(ax, labels[t, k], alpha=0.35)
            ax.set_title(f"{name} (frame {t}), slice {k}", fontsize=7)
    handles = [Patch(color=plt.get_cmap("tab10")(i), alpha=0.6, label=s) for i, s in enumerate(STRUCTURES)]
    fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=7, frameon=False)
    fig.suptitle(text, fontsize=7, ha="left", x=0.02)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png
