"""The validation figure of a pretraining run: each pretext's own drawing of its target beside the
network's prediction, on a few validation slices."""

from __future__ import annotations

from cardiossl.pretexts.base import overlay_classes


def _draw_prediction(ax, pretext, sample: dict, output) -> None:
    """Generic picture of a network output, shaped like the pretext's target."""
    import numpy as np

    img = np.asarray(sample["input"])[0]
    out = np.asarray(output, dtype=np.float32)
    target = np.asarray(sample["target"])
    ax.imshow(img, cmap="gray", interpolation="nearest")
    if out.ndim == 3 and target.ndim == 2:  # per-pixel classes: the colours of the target's drawing
        overlay_classes(ax, out.argmax(0), alpha=0.3)
        ax.set_xlabel("prediction (argmax)", fontsize=7)
    elif out.ndim == 3 and out.shape[-2:] == img.shape and target.ndim == 3 and out.shape[0] == target.shape[0]:
        if "target_mask" in sample:  # reconstruction
            ax.imshow(out[0], cmap="gray", interpolation="nearest")
            ax.set_xlabel("reconstruction", fontsize=7)
        else:  # heatmaps
            ax.imshow(out.max(0), cmap="magma", alpha=0.6, interpolation="nearest", vmin=0, vmax=1)
            ax.set_xlabel("predicted heatmaps (max)", fontsize=7)
    else:
        flat = out.reshape(-1)
        if flat.size > 1:
            ax.set_xlabel(f"pred class {int(flat.argmax())} / target {int(np.asarray(target).reshape(-1)[0])}",
                          fontsize=7)
        else:
            ax.set_xlabel(f"pred {float(flat[0]):.2f} / target {float(np.asarray(target).reshape(-1)[0]):.2f}",
                          fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])


def prediction_figure(job, result, n_slices: int = 4):
    """Rows: validation slices; columns: the pretext target (its own ``draw``) and the prediction.

    Read from the run's own snapshot and split (``result``), never from the store as it is now."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import torch

    from .collate import collate, to_device
    from .data import make_dataset, split_cohort

    splits = result.splits or split_cohort(job, result.snapshot)
    subjects = splits["val"] or splits["train"]
    ds = make_dataset(job, subjects, result.pretext, train=False, snapshot=result.snapshot)
    if len(ds) == 0:
        return None
    idx = np.linspace(0, len(ds) - 1, num=min(n_slices, len(ds))).round().astype(int)
    samples = [ds[int(i)] for i in idx]
    model = result.model
    device = next(model.parameters()).device
    model.eval()
    with torch.no_grad():
        batch = to_device(collate(samples), device)
        out = model(batch["input"]).float().cpu().numpy()
    fig, axes = plt.subplots(len(samples), 2, figsize=(5, 2.5 * len(samples)), squeeze=False)
    for r, (s, o) in enumerate(zip(samples, out)):
        result.pretext.draw(axes[r, 0], s)
        axes[r, 0].set_title(f"{s.get('subject_id', '')} {s.get('view', '')} z{s.get('slice_index', '')}",
                             fontsize=7)
        _draw_prediction(axes[r, 1], result.pretext, s, o)
    fig.suptitle(f"{job.pretext.name}: target (left) and prediction (right), step {result.step}", fontsize=8)
    fig.tight_layout()
    return fig
