"""Scoring a segmenter's test predictions on the reference pixels, and a trial's summary numbers.

The network sees each slice on its input grid (the store grid cropped to ``image_size``); its
labels are resampled back onto each reference slice (``datasets.resample.label_to_source``, nearest
neighbour, exact through the stored planes) and scored there in 3-D (``evaluate``). Reference
label pixels outside the network's field of view cannot be predicted: they count as misses and are
also counted (``lost_px_<structure>``), so a crop that is too tight shows up as a number, not as
an unexplained Dice drop. With ``inference`` (``config.InferenceConfig``) the test predictions are
made as the segmenter will be used: test-time augmentation, then the largest connected component
per frame and structure on the network's stack (``removed_px_<structure>`` counts what it took
away). Per subject, the ED and ES rows give the clinical measures (LV/RV EDV, ESV, EF, LV mass) of
prediction and reference and their differences.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .evaluate import (
    CLINICAL, REGIONS, STRUCTURES, empty_names, label_volumes_ml, largest_components, measures_from_volumes,
    metric_names, nanmean, predict_labels, regional_dice, segmentation_metrics, stack_spacing, subject_summary,
)


def _spacing(planes: np.ndarray) -> tuple[float, float, float]:
    if len(planes) > 1:
        return stack_spacing(planes)
    return (1.0, float(planes[0][9]), float(planes[0][10]))


def to_reference(pred_g: np.ndarray, net_planes: np.ndarray, net_index: Sequence[int], ref: Mapping) -> tuple[np.ndarray, np.ndarray]:
    """(labels, coverage) on the reference slices: the network's labels resampled onto each
    reference slice, and 1 where the network's input grid covers the reference pixel."""
    from cardiossl.datasets.geometry import Plane
    from cardiossl.datasets.resample import label_to_source

    where = {int(k): i for i, k in enumerate(net_index)}
    shape = ref["labels"].shape[1:]
    pred = np.zeros(ref["labels"].shape, np.uint8)
    cover = np.zeros(ref["labels"].shape, np.uint8)
    ones = np.ones(pred_g.shape[1:], np.uint8)
    for j, k in enumerate(np.asarray(ref["slice_index"]).tolist()):
        i = where.get(int(k))
        if i is None:
            continue  # a reference slice the network was not given: predicted empty
        pg, pr = Plane.from_vector(net_planes[i]), Plane.from_vector(ref["planes"][j])
        pred[j] = label_to_source(pred_g[i], pg, pr, shape)
        cover[j] = label_to_source(ones, pg, pr, shape)
    return pred, cover


def infer_stack(model, images: np.ndarray, inference: Mapping | None = None, device="cpu") -> tuple[np.ndarray, dict]:
    """(labels [S,H,W], pixels removed per structure) of one stack on the network grid, with the
    test-time augmentation and post-processing of ``inference`` (a dumped ``InferenceConfig``)."""
    inference = dict(inference or {})
    pred = predict_labels(model, images, device=device, tta=str(inference.get("tta", "none")))
    removed = {name: 0 for name in STRUCTURES.values()}
    if inference and inference.get("largest_component", True):
        kept, by_class = largest_components(pred[None], classes=tuple(STRUCTURES))
        pred = kept[0]
        removed = {name: by_class[v] for v, name in STRUCTURES.items()}
    return pred, removed


def score_on_reference(model, stack: Mapping, ref: Mapping, *, annotated=None, device="cpu",
                       inference: Mapping | None = None) -> dict:
    """One (subject, phase) row: Dice/HD95 (+ empty counts), regional Dice, label pixels outside the
    network's view, pixels the post-processing removed, and predicted / reference volumes, on the
    reference slices."""
    pred_g, removed = infer_stack(model, stack["images"], inference, device=device)
    pred, cover = to_reference(pred_g, stack["planes"], stack["slice_index"], ref)
    y = ref["labels"]
    sp = _spacing(ref["planes"])
    known = set(STRUCTURES) if annotated is None else set(annotated)
    row = {"n_slices": int(len(y)), "reference": ref["kind"]}
    row.update(segmentation_metrics(pred, y, sp, annotated=annotated))
    row.update(regional_dice(pred, y, annotated=annotated))
    vp, vr = label_volumes_ml(pred, sp), label_volumes_ml(y, sp)
    for v, name in STRUCTURES.items():
        m = y == v
        row[f"label_px_{name}"] = float(m.sum()) if v in known else 0.0
        row[f"lost_px_{name}"] = float((m & (cover == 0)).sum()) if v in known else 0.0
        row[f"removed_px_{name}"] = float(removed[name])
        row[f"vol_pred_{name}"] = vp[name] if v in known else float("nan")
        row[f"vol_ref_{name}"] = vr[name] if v in known else float("nan")
    return row


def score_stacks(model, stacks: Mapping[tuple[str, str], dict], refs: Mapping[tuple[str, str], dict], *,
                 annotated: Mapping[str, Sequence[int]] | None = None, device="cpu",
                 inference: Mapping | None = None) -> list[dict]:
    """Rows per (subject, phase), sorted."""
    rows = []
    for (sid, phase), st in sorted(stacks.items()):
        ann = None if annotated is None else annotated.get(sid)
        rows.append({"subject_id": sid, "phase": phase,
                     **score_on_reference(model, st, refs[(sid, phase)], annotated=ann, device=device,
                                         inference=inference)})
    return rows


def _volumes(row: Mapping, which: str) -> dict[str, float]:
    return {name: float(row[f"vol_{which}_{name}"]) for name in STRUCTURES.values()}


def summarise_subjects(per_phase: Sequence[dict]) -> list[dict]:
    """Per subject: the ED/ES means (``evaluate.subject_summary``), Dice at ED and at ES, regional
    Dice, lost label pixels, and with both phases the clinical measures of prediction (``_pred``) and
    reference (``_ref``) and their error (``_err`` = prediction - reference)."""
    rows = subject_summary(per_phase)
    by: dict[str, dict[str, dict]] = {}
    for r in per_phase:
        by.setdefault(r["subject_id"], {})[r["phase"]] = r
    for row in rows:
        phases = by[row["subject_id"]]
        for ph in ("ed", "es"):
            row[f"dice_{ph}"] = float(phases[ph]["dice_mean"]) if ph in phases else float("nan")
        for reg in REGIONS:
            row[f"dice_{reg}"] = nanmean(r.get(f"dice_{reg}", np.nan) for r in phases.values())
        for name in STRUCTURES.values():
            for k in ("label_px", "lost_px", "removed_px"):
                row[f"{k}_{name}"] = float(sum(r.get(f"{k}_{name}", 0.0) for r in phases.values()))
        row["reference"] = "+".join(sorted({str(r.get("reference", "")) for r in phases.values()}))
        if "ed" in phases and "es" in phases and "vol_pred_lv_cavity" in phases["ed"]:
            pred = measures_from_volumes(_volumes(phases["ed"], "pred"), _volumes(phases["es"], "pred"))
            ref = measures_from_volumes(_volumes(phases["ed"], "ref"), _volumes(phases["es"], "ref"))
            for m in CLINICAL:
                row[f"{m}_pred"], row[f"{m}_ref"], row[f"{m}_err"] = pred[m], ref[m], pred[m] - ref[m]
    return rows


def trial_metrics(per_subject: Sequence[dict]) -> dict[str, float]:
    """A trial's test numbers: means (and medians) over subjects of the defined values, counts of
    undefined HD95 summed, the share of label pixels outside the network's view, clinical MAE and bias."""
    out: dict[str, float] = {}
    for k in metric_names() + [f"dice_{p}" for p in ("ed", "es")] + [f"dice_{r}" for r in REGIONS]:
        vals = [r.get(k, np.nan) for r in per_subject]
        out[f"test_{k}"] = nanmean(vals)
        if k == "dice_mean":
            finite = [v for v in vals if np.isfinite(v)]
            out["test_dice_mean_median"] = float(np.median(finite)) if finite else float("nan")
    for k in empty_names():
        out[f"test_{k}"] = float(sum(r.get(k, 0.0) for r in per_subject))
    for name in STRUCTURES.values():
        px = sum(r.get(f"label_px_{name}", 0.0) for r in per_subject)
        lost = sum(r.get(f"lost_px_{name}", 0.0) for r in per_subject)
        out[f"test_lost_frac_{name}"] = lost / px if px else float("nan")
        out[f"test_removed_px_{name}"] = float(sum(r.get(f"removed_px_{name}", 0.0) for r in per_subject))
    for m in CLINICAL:
        err = np.array([r.get(f"{m}_err", np.nan) for r in per_subject], dtype=np.float64)
        out[f"test_{m}_mae"] = nanmean(np.abs(err))
        out[f"test_{m}_bias"] = nanmean(err)
    out["test_on_source"] = float(np.mean([r.get("reference") == "source" for r in per_subject])) if per_subject else 0.0
    return out
