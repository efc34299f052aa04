"""The picture a user checks before spending GPU hours: a subject's slices with the pretext target.

SA slices (base to apex) show the network input with the target drawn over it by the pretext
itself (``Pretext.draw``); LA views show the traces of every SA slice plane, so a wrong plane or a
swapped spacing is visible at a glance. The same targets (and, for ``position``, every trace line
and crossing point) can be saved to an .npz to check or reuse elsewhere.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .base import Pretext, image_hw, sample_meta

LA_SA_TRACE_COLOR = "gold"


def make_targets(samples: list[dict], pretext: Pretext, seed: int = 0) -> list[dict | None]:
    """make_target for every sample the pretext accepts (None for the others), one generator per slice."""
    out = []
    for i, s in enumerate(samples):
        if pretext.accepts(sample_meta(s)):
            out.append(pretext.make_target(s, np.random.default_rng([seed, 0, 0, i])))
        else:
            out.append(None)
    return out


def _order(samples: list[dict]) -> list[int]:
    view_rank = {"sa": 0, "2ch": 1, "3ch": 2, "4ch": 3}
    return sorted(
        range(len(samples)),
        key=lambda i: (view_rank.get(samples[i].get("view", "sa"), 9), samples[i].get("slice_index", 0)),
    )


def _draw_sa_traces_on(ax, la_sample: dict, sa_samples: list[dict]) -> None:
    """Traces of the SA slice planes in an LA image: the SA stack as seen from the long axis."""
    from ..datasets.geometry import line_segment_in_image
    from .position import trace

    shape = image_hw(la_sample)
    plane = np.asarray(la_sample.get("plane", np.full(11, np.nan)), dtype=np.float64)
    if not np.all(np.isfinite(plane)):
        return
    for s in sa_samples:
        t = trace(plane, np.asarray(s["plane"], dtype=np.float64))
        if t is None:
            continue
        p, d_mm, _ = t
        seg = line_segment_in_image(p, d_mm / plane[9:11], shape)
        if seg is not None:
            (r0, c0), (r1, c1) = seg
            ax.plot([c0, c1], [r0, r1], color=LA_SA_TRACE_COLOR, linewidth=0.6, alpha=0.8)
            ax.text(c1, r1, str(s.get("slice_index", "")), color=LA_SA_TRACE_COLOR, fontsize=5)


def render_targets(
    samples: list[dict],
    pretext: Pretext,
    out_png: str | Path,
    npz: str | Path | None = None,
    *,
    seed: int = 0,
    title: str | None = None,
    ncols: int = 6,
) -> dict:
    """Draw every sample (SA with targets, LA views with the SA traces) into ``out_png``.

    Returns a summary (slices drawn, slices with a target). With ``npz``, saves for the slices with
    a target: ``view``, ``slice_index``, ``frame``, ``input``, ``target`` (+ ``target_mask``) stacked
    per slice, plus the pretext's ``annotations`` (for position: ``trace_views``, ``trace_points``
    [n, 3, 2, 2] (row, col), ``cross_point`` [n, 2], ``box_centres`` [n, 9, 2], ``axes_mm``).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if not samples:
        raise ValueError("render_targets: no samples to draw")
    order = _order(samples)
    samples = [samples[i] for i in order]
    targets = make_targets(samples, pretext, seed)
    sa_samples = [s for s in samples if s.get("view", "sa") == "sa"]
    n = len(samples)
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.3 * ncols, 2.75 * nrows + 0.5), squeeze=False)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_frame_on(False)
    drawn_views = set()
    for k, (s, t) in enumerate(zip(samples, targets)):
        ax = axes.ravel()[k]
        view = s.get("view", "sa")
        label = f"{view} s{s.get('slice_index', 0)} f{s.get('frame', 0)}"
        if t is not None:
            pretext.draw(ax, t)
        else:
            ax.imshow(np.asarray(s["image"])[0], cmap="gray", interpolation="nearest")
            if view != "sa":
                _draw_sa_traces_on(ax, s, sa_samples)
                h, w = image_hw(s)
                ax.set_xlim(-0.5, w - 0.5)
                ax.set_ylim(h - 0.5, -0.5)
            else:
                label += " (no target)"
        if view == "sa" and np.isfinite(float(s.get("stack_position", np.nan))):
            label += f" pos {float(s['stack_position']):.2f}"
        ax.set_title(label, fontsize=7)
        for line in ax.get_lines():
            if line.get_label() in ("2ch", "3ch", "4ch"):
                drawn_views.add(line.get_label())
    if drawn_views:
        from matplotlib.lines import Line2D

        from .position import VIEW_COLORS

        handles = [Line2D([], [], color=VIEW_COLORS[v], label=f"{v} trace") for v in sorted(drawn_views)]
        handles.append(Line2D([], [], color=LA_SA_TRACE_COLOR, label="SA slice (in LA views)"))
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=7, frameon=False)
    fig.suptitle(title or f"pretext {pretext.name}: {pretext.config.model_dump_json()}", fontsize=8)
    fig.tight_layout(rect=(0, 0.04, 1, 0.96), h_pad=1.5)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=130)
    plt.close(fig)

    made = [(s, t) for s, t in zip(samples, targets) if t is not None]
    if npz is not None:
        save_npz(npz, pretext, made)
    return {"slices": n, "with_target": len(made), "png": str(out_png), "npz": str(npz) if npz else None}


def save_npz(path: str | Path, pretext: Pretext, made: list[tuple[dict, dict]]) -> None:
    arrays: dict[str, np.ndarray] = {
        "pretext": np.array(pretext.name),
        "config": np.array(pretext.config.model_dump_json()),
        "subject_id": np.array([str(s.get("subject_id", "")) for s, _ in made]),
        "view": np.array([str(s.get("view", "")) for s, _ in made]),
        "slice_index": np.array([int(s.get("slice_index", 0)) for s, _ in made], dtype=np.int64),
        "frame": np.array([int(s.get("frame", 0)) for s, _ in made], dtype=np.int64),
    }
    if made:
        for key in ("input", "target", "target_mask"):
            if key in made[0][1]:
                arrays[key] = np.stack([np.asarray(t[key]) for _, t in made])
        ann = [pretext.annotations(t) for _, t in made]
        for key in ann[0]:
            arrays[key] = np.stack([a[key] for a in ann])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)
