"""Segmentation evaluation as the cardiac MR field reports it, and the clinical measures.

Per subject and per phase (ED, ES), the predicted short-axis STACK is compared with the label stack
in 3-D: Dice per structure (LV cavity 1, LV myocardium 2, RV cavity 3) and their mean, and the
95th-percentile symmetric Hausdorff distance (HD95) in mm, as in the ACDC challenge (Bernard et al.,
IEEE TMI 2018) and Bai et al., MICCAI 2019. Both metrics come from MONAI (``DiceMetric``,
``compute_hausdorff_distance`` with the voxel spacing) so that numbers are comparable with other
work; only the empty-structure and partial-label cases are decided here, explicitly:

* structure absent from both label and prediction: Dice 1, HD95 0 mm (nothing to find, nothing
  found; MONAI would return NaN and silently drop the case from means);
* structure present in exactly one of them: Dice 0, HD95 undefined (NaN) and counted in
  ``empty_<structure>``. A stand-in distance (the field-of-view diagonal) would dominate every HD95
  mean; the count is reported beside the mean of the defined distances instead;
* structure not annotated for the subject (``annotated``: e.g. Sunnybrook contours the LV only):
  Dice and HD95 NaN, left out of every mean, whatever the prediction holds there.

Clinical measures use Simpson's rule of discs over the short-axis stack: each labelled pixel
contributes its in-plane area times the slice spacing (centre-to-centre distance, which already
includes any gap between slices). LV myocardial mass = myocardial volume at ED x 1.05 g/ml.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

STRUCTURES: dict[int, str] = {1: "lv_cavity", 2: "lv_myocardium", 3: "rv_cavity"}
"""Evaluated structures: label value -> name (records.LABELS without the background)."""
MYOCARDIAL_DENSITY_G_PER_ML = 1.05
"""Myocardial tissue density used for LV mass (Grothues et al., Am J Cardiol 2002)."""
HD_PERCENTILE = 95.0


class EvaluationError(ValueError):
    """Inputs that cannot be evaluated (shape mismatch, bad spacing, unknown labels)."""


# -- geometry helpers ---------------------------------------------------------------------------
def _check_spacing(spacing: Sequence[float], ndim: int) -> tuple[float, ...]:
    sp = tuple(float(s) for s in spacing)
    if len(sp) != ndim or not all(math.isfinite(s) and s > 0 for s in sp):
        raise EvaluationError(
            f"spacing must be {ndim} positive finite numbers (slice, row, column mm), got {spacing!r}"
        )
    return sp


def slice_spacing_mm(planes: Sequence) -> float:
    """Centre-to-centre distance between adjacent slices of a stack (mm), from their planes.

    ``planes``: Plane objects (or 11-float vectors) in stack order. The distance is measured along the
    stack normal between consecutive origins, then the median is taken, so one odd slice position
    does not skew it. A single slice has no spacing: EvaluationError.
    """
    from cardiossl.datasets.geometry import Plane

    ps = [p if isinstance(p, Plane) else Plane.from_vector(p) for p in planes]
    if len(ps) < 2:
        raise EvaluationError("a stack needs at least two slices to know its slice spacing")
    n = ps[0].normal
    pos = np.array([float(p.origin @ n) for p in ps])
    gaps = np.abs(np.diff(pos))
    gap = float(np.median(gaps))
    if not math.isfinite(gap) or gap <= 1e-6:
        raise EvaluationError(
            "slices of the stack lie in the same plane (zero slice spacing); "
            "check the stack's slice positions"
        )
    return gap


def stack_spacing(planes: Sequence) -> tuple[float, float, float]:
    """(slice spacing, row spacing, column spacing) mm of a stack on one in-plane grid."""
    from cardiossl.datasets.geometry import Plane

    p0 = planes[0] if isinstance(planes[0], Plane) else Plane.from_vector(planes[0])
    return (slice_spacing_mm(planes), float(p0.spacing[0]), float(p0.spacing[1]))


# -- segmentation metrics -----------------------------------------------------------------------
def _as_label_stack(x, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise EvaluationError(f"{name} must be a label stack [slices, rows, cols], got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.integer):
        if not np.all(np.equal(np.mod(a, 1), 0)):
            raise EvaluationError(f"{name} must hold integer labels, got dtype {a.dtype}")
        a = a.astype(np.int64)
    bad = set(np.unique(a).tolist()) - {0, *STRUCTURES}
    if bad:
        raise EvaluationError(f"{name} has label values {sorted(bad)} outside {{0, 1, 2, 3}}")
    return a


def nanmean(values) -> float:
    """Mean of the finite values; NaN (no warning) when there are none."""
    a = np.asarray(list(values), dtype=np.float64)
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else float("nan")


def _annotated(annotated, structures: Mapping[int, str]) -> set[int]:
    return set(structures) if annotated is None else {int(v) for v in annotated}


def segmentation_metrics(
    pred, label, spacing: Sequence[float], structures: Mapping[int, str] = STRUCTURES, annotated=None,
) -> dict[str, float]:
    """Dice and HD95 per structure and their means for ONE stack (one subject, one phase).

    ``pred``/``label``: integer arrays [slices, rows, cols] (a 2-D array is one slice);
    ``spacing``: (slice, row, column) mm; ``annotated``: the label values the reference annotates
    (None: all). Keys: ``dice_<name>``, ``hd95_<name>``, ``empty_<name>`` (1 when the structure is
    in exactly one of label and prediction), ``dice_mean``, ``hd95_mean`` (means of the defined
    values). See the module docstring for empty and unannotated structures.
    """
    import torch
    from monai.metrics import DiceMetric, compute_hausdorff_distance

    p = _as_label_stack(pred, "prediction")
    y = _as_label_stack(label, "label")
    if p.shape != y.shape:
        raise EvaluationError(f"prediction shape {p.shape} differs from label shape {y.shape}")
    sp = _check_spacing(spacing, 3)
    known = _annotated(annotated, structures)
    dice_metric = DiceMetric(include_background=False, reduction="none", ignore_empty=False)

    out: dict[str, float] = {}
    for value, name in structures.items():
        pm = p == value
        ym = y == value
        p_any, y_any = bool(pm.any()), bool(ym.any())
        empty = 0.0
        if value not in known:
            dice, hd = float("nan"), float("nan")
        elif not p_any and not y_any:
            dice, hd = 1.0, 0.0
        elif p_any != y_any:
            dice, hd, empty = 0.0, float("nan"), 1.0
        else:
            # one-hot [B=1, C=2 (background, structure), S, H, W]
            pt = torch.from_numpy(np.stack([~pm, pm])[None].astype(np.float32))
            yt = torch.from_numpy(np.stack([~ym, ym])[None].astype(np.float32))
            dice = float(dice_metric(pt, yt)[0, 0])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                hd = float(
                    compute_hausdorff_distance(
                        pt, yt, include_background=False, percentile=HD_PERCENTILE, spacing=sp
                    )[0, 0]
                )
        out[f"dice_{name}"] = dice
        out[f"hd95_{name}"] = hd
        out[f"empty_{name}"] = empty
    names = list(structures.values())
    out["dice_mean"] = nanmean(out[f"dice_{n}"] for n in names)
    out["hd95_mean"] = nanmean(out[f"hd95_{n}"] for n in names)
    return out


def segmentation_dice(pred, label, structures: Mapping[int, str] = STRUCTURES, annotated=None) -> dict[str, float]:
    """Dice per structure and mean only (MONAI DiceMetric; same empty and partial-label rules): for
    model selection, where the surface distances would cost more than the training step they judge."""
    import torch
    from monai.metrics import DiceMetric

    p = _as_label_stack(pred, "prediction")
    y = _as_label_stack(label, "label")
    if p.shape != y.shape:
        raise EvaluationError(f"prediction shape {p.shape} differs from label shape {y.shape}")
    values = list(structures)
    known = _annotated(annotated, structures)
    pt = torch.from_numpy(np.stack([p == v for v in [0, *values]])[None].astype(np.float32))
    yt = torch.from_numpy(np.stack([y == v for v in [0, *values]])[None].astype(np.float32))
    d = DiceMetric(include_background=False, reduction="none", ignore_empty=False)(pt, yt)[0]
    out = {}
    for i, v in enumerate(values):
        p_any, y_any = bool(pt[0, i + 1].any()), bool(yt[0, i + 1].any())
        if v not in known:
            out[f"dice_{structures[v]}"] = float("nan")
        else:
            out[f"dice_{structures[v]}"] = 1.0 if not (p_any or y_any) else (0.0 if p_any != y_any else float(d[i]))
    out["dice_mean"] = nanmean(out.values())
    return out


REGIONS = ("basal", "mid", "apical")


def regional_dice(pred, label, structures: Mapping[int, str] = STRUCTURES, annotated=None) -> dict[str, float]:
    """Mean Dice (over the annotated structures) in the basal, mid and apical third of the stack.

    The thirds split the slices whose label holds any annotated structure, in stack order (slice 0 =
    base), as ``np.array_split`` does (a stack of 7 gives 3 + 2 + 2); each third is scored in 3-D.
    Keys ``dice_basal``, ``dice_mid``, ``dice_apical`` (NaN when the stack has fewer than 3 such slices)."""
    p = _as_label_stack(pred, "prediction")
    y = _as_label_stack(label, "label")
    known = sorted(_annotated(annotated, structures) & set(structures))
    rows = np.flatnonzero(np.isin(y, known).reshape(len(y), -1).any(axis=1))
    out = {f"dice_{r}": float("nan") for r in REGIONS}
    if len(rows) < 3:
        return out
    for name, part in zip(REGIONS, np.array_split(rows, 3)):
        out[f"dice_{name}"] = segmentation_dice(p[part], y[part], structures, annotated)["dice_mean"]
    return out


def metric_names(structures: Mapping[int, str] = STRUCTURES) -> list[str]:
    names = list(structures.values())
    return [f"dice_{n}" for n in names] + ["dice_mean"] + [f"hd95_{n}" for n in names] + ["hd95_mean"]


def empty_names(structures: Mapping[int, str] = STRUCTURES) -> list[str]:
    return [f"empty_{n}" for n in structures.values()]


# -- clinical measures --------------------------------------------------------------------------
def label_volumes_ml(labels, spacing: Sequence[float]) -> dict[str, float]:
    """Volume (ml) of each structure in a label stack by summation of discs.

    ``spacing``: (slice spacing, row, column) mm for a stack on one grid, or a sequence of per-slice
    ``(slice spacing, row, column)`` triples when slices have different in-plane spacing (e.g. the
    source geometry of a DICOM exam).
    """
    y = _as_label_stack(labels, "labels")
    sp = np.asarray(spacing, dtype=np.float64)
    if sp.ndim == 1:
        sp = np.broadcast_to(_check_spacing(sp, 3), (y.shape[0], 3))
    if sp.shape != (y.shape[0], 3) or not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise EvaluationError(
            f"per-slice spacing must be [{y.shape[0]}, 3] positive numbers, got shape {sp.shape}"
        )
    voxel_ml = sp.prod(axis=1) / 1000.0  # mm^3 -> ml, per slice
    out = {}
    for value, name in STRUCTURES.items():
        counts = (y == value).reshape(y.shape[0], -1).sum(axis=1)
        out[name] = float((counts * voxel_ml).sum())
    return out


CLINICAL = ("lv_edv_ml", "lv_esv_ml", "lv_ef_pct", "rv_edv_ml", "rv_esv_ml", "rv_ef_pct", "lv_mass_g")
"""The clinical measures the study reports errors of."""


def measures_from_volumes(ed: Mapping[str, float], es: Mapping[str, float]) -> dict[str, float]:
    """LV/RV EDV, ESV (ml), SV, EF (%) and LV mass (g) from per-structure volumes (ml) at ED and ES.

    EF = (EDV - ESV) / EDV x 100; NaN when EDV is zero (no ventricle found). Mass uses the ED
    myocardium (the convention of the UK Biobank reference ranges, Petersen et al., JCMR 2017).
    A NaN volume (an unannotated structure) gives NaN measures."""

    def ef(edv: float, esv: float) -> float:
        return float((edv - esv) / edv * 100.0) if edv > 0 else float("nan")

    return {
        "lv_edv_ml": ed["lv_cavity"],
        "lv_esv_ml": es["lv_cavity"],
        "lv_sv_ml": ed["lv_cavity"] - es["lv_cavity"],
        "lv_ef_pct": ef(ed["lv_cavity"], es["lv_cavity"]),
        "rv_edv_ml": ed["rv_cavity"],
        "rv_esv_ml": es["rv_cavity"],
        "rv_sv_ml": ed["rv_cavity"] - es["rv_cavity"],
        "rv_ef_pct": ef(ed["rv_cavity"], es["rv_cavity"]),
        "lv_mass_g": ed["lv_myocardium"] * MYOCARDIAL_DENSITY_G_PER_ML,
    }


def clinical_measures(ed_labels, es_labels, ed_spacing, es_spacing=None) -> dict[str, float]:
    """LV/RV EDV, ESV (ml), EF (%), LV stroke volume and LV myocardial mass (g) from ED/ES stacks."""
    ed = label_volumes_ml(ed_labels, ed_spacing)
    es = label_volumes_ml(es_labels, ed_spacing if es_spacing is None else es_spacing)
    return measures_from_volumes(ed, es)


# -- per-subject evaluation of a model on a cohort store ----------------------------------------
def collect_stacks(samples: Iterable[dict]) -> dict[tuple[str, str], dict]:
    """Group SA samples (CohortDataset dicts) into stacks per (subject_id, phase), base to apex.

    Returns {(subject_id, phase): {"images": [S,1,H,W] float32, "labels": [S,H,W] int64,
    "planes": [S,11], "slice_index": [S]}}.
    """
    groups: dict[tuple[str, str], list[dict]] = {}
    for s in samples:
        groups.setdefault((str(s["subject_id"]), str(s["phase"])), []).append(s)
    stacks = {}
    for key, items in groups.items():
        items.sort(key=lambda s: int(s["slice_index"]))
        stacks[key] = {
            "images": np.stack([np.asarray(s["image"], dtype=np.float32) for s in items]),
            "labels": np.stack([np.asarray(s["label"], dtype=np.int64) for s in items]),
            "planes": np.stack([np.asarray(s["plane"], dtype=np.float64) for s in items]),
            "slice_index": np.array([int(s["slice_index"]) for s in items]),
        }
    return stacks


def predict_labels(model, images: np.ndarray, *, batch_size: int = 16, device="cpu", tta: str = "none") -> np.ndarray:
    """Argmax labels [S,H,W] of a segmenter (logits [B, C, H, W]) over images [S,1,H,W]
    (``tracking.serving.predict_batches``, with its test-time augmentation)."""
    from cardiossl.platform.tracking.serving import predict_batches

    return predict_batches(model, images, batch_size, tta=tta, device=device)


def largest_components(labels: np.ndarray, classes=(1, 2, 3)) -> tuple[np.ndarray, dict]:
    """Per frame and class, keep the largest 3-D connected component of ``labels`` [T, S, rows, cols].

    Returns (labels, voxels removed per class). Slices are stacked as they are (neighbours in the
    array are neighbours in space), 6-connectivity within and across slices."""
    from scipy import ndimage

    out = labels.copy()
    removed = {int(c): 0 for c in classes}
    for t in range(labels.shape[0]):
        for c in classes:
            mask = labels[t] == c
            comp, n = ndimage.label(mask)
            if n <= 1:
                continue
            sizes = np.bincount(comp.ravel())[1:]
            keep = 1 + int(np.argmax(sizes))
            drop = mask & (comp != keep)
            out[t][drop] = 0
            removed[int(c)] += int(drop.sum())
    return out, removed


def evaluate_stacks(model, stacks: Mapping[tuple[str, str], dict], *, device="cpu",
                    annotated: Mapping[str, Sequence[int]] | None = None) -> list[dict]:
    """One row per (subject, phase): metrics of the model's predicted stack against the labels, on the
    grid the stacks are on (``scoring.score_on_reference`` scores on the source pixels)."""
    rows = []
    for (sid, phase), st in sorted(stacks.items()):
        pred = predict_labels(model, st["images"], device=device)
        spacing = stack_spacing(st["planes"]) if len(st["planes"]) > 1 else (
            1.0, *[float(v) for v in st["planes"][0][9:11]]
        )
        ann = None if annotated is None else annotated.get(sid)
        row = {"subject_id": sid, "phase": phase, "n_slices": int(len(pred))}
        row.update(segmentation_metrics(pred, st["labels"], spacing, annotated=ann))
        rows.append(row)
    return rows


def subject_summary(rows: Sequence[dict]) -> list[dict]:
    """Average the ED and ES rows of each subject (means of the defined values; counts summed): the
    per-subject numbers the field reports."""
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["subject_id"], []).append(r)
    keys = metric_names()
    out = []
    for sid, rs in sorted(by.items()):
        row = {"subject_id": sid, "phases": "+".join(sorted(r["phase"] for r in rs))}
        row.update({k: nanmean(r[k] for r in rs) for k in keys})
        row.update({k: float(sum(r.get(k, 0.0) for r in rs)) for k in empty_names()})
        out.append(row)
    return out
