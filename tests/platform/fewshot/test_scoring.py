"""Test scoring on the source pixels: references re-read from where subjects came from (synthetic,
a real Sunnybrook case), predictions resampled back onto them, crop losses counted, partial labels
scored on their annotated classes only."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from cardiossl.datasets.resample import resample_slice
from cardiossl.datasets.store import CohortStore
from cardiossl.platform.fewshot.evaluate import collect_stacks, segmentation_metrics, stack_spacing
from cardiossl.platform.fewshot.reference import label_classes, read_source_record, reference_stacks
from cardiossl.platform.fewshot.samples import labelled_subjects, load_samples
from cardiossl.platform.fewshot.scoring import infer_stack, summarise_subjects, to_reference, trial_metrics
from cardiossl.platform.training import crop_or_pad

SUNNYBROOK = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "real" / "sunnybrook-SCD0000101"


def _grid_and_refs(store: str, subjects: list[str]):
    samples = load_samples(store, subjects, phases=("ed", "es"))
    grid = collect_stacks(samples)
    return samples, grid, reference_stacks(store, grid)


def test_synthetic_references_are_the_source_labels_at_the_stored_geometry(tiny_store):
    store = str(tiny_store)
    sid = labelled_subjects(store)[0]
    _, grid, refs = _grid_and_refs(store, [sid])
    st = CohortStore(store)
    for (s, phase), ref in refs.items():
        assert ref["kind"] == "source", ref["why"]
        # resampling the reference onto the store grid gives back exactly the stored labels
        rec, _ = read_source_record(s, st.subject_meta(s))
        by = {(x.frame, x.slice_index): x for x in rec.slices if x.view == "sa" and x.label is not None}
        frame = 0 if phase == "ed" else rec.meta["es_frame"]
        for j, k in enumerate(ref["slice_index"]):
            src = by[(frame, int(k))]
            _, lab_g, _ = resample_slice(src.image, src.plane, st.grid_size, st.spacing_mm, label=src.label)
            assert np.array_equal(lab_g, grid[(s, phase)]["labels"][j])
            assert np.array_equal(ref["labels"][j], src.label)


def test_predictions_go_back_to_the_source_and_crop_losses_are_counted(tiny_store):
    """The stored grid labels, as a prediction, score close to 1 on the finer source pixels; a
    network input cropped to 32 px (80 mm) cannot see part of the heart: those label pixels are
    counted, and they are exactly what the Dice loses."""
    store = str(tiny_store)
    sid = labelled_subjects(store)[0]
    samples, grid, refs = _grid_and_refs(store, [sid])
    ref = refs[(sid, "ed")]
    pred, cover = to_reference(grid[(sid, "ed")]["labels"], grid[(sid, "ed")]["planes"],
                               grid[(sid, "ed")]["slice_index"], ref)
    sp = stack_spacing(ref["planes"])
    full = segmentation_metrics(pred, ref["labels"], sp)
    assert full["dice_mean"] > 0.85 and 0 < cover.mean() < 1  # the grid sees less than the source FOV...
    assert not np.any((ref["labels"] > 0) & (cover == 0))  # ...but all of the heart
    small = collect_stacks(crop_or_pad(s, 32) for s in samples)[(sid, "ed")]
    pred32, cover32 = to_reference(small["labels"], small["planes"], small["slice_index"], ref)
    lost = int(((ref["labels"] > 0) & (cover32 == 0)).sum())
    assert lost > 0 and not np.any(pred32[cover32 == 0])
    assert segmentation_metrics(pred32, ref["labels"], sp)["dice_mean"] < full["dice_mean"]


def test_an_unreadable_source_falls_back_to_the_store_grid_and_says_so(tmp_path):
    from cardiossl.datasets.synthetic import synth_subject

    rec = synth_subject("synth00001", 0, n_frames=2, n_sub=1)
    rec.meta = {"ingest": {"layout": "acdc", "root": str(tmp_path / "gone"), "paths": [str(tmp_path / "gone" / "p")]},
                "ed_frame": 0, "es_frame": 1}
    store = CohortStore.create(tmp_path / "s.zarr", grid_size=64, spacing_mm=2.5)
    store.write_subjects([rec])
    _, grid, refs = _grid_and_refs(str(tmp_path / "s.zarr"), ["synth00001"])
    for key, ref in refs.items():
        assert ref["kind"] == "store grid" and "not readable here" in ref["why"]
        assert np.array_equal(ref["labels"], grid[key]["labels"])


def test_subject_and_trial_summaries_report_clinical_errors_and_crop_losses():
    def row(phase, lv_pred, lv_ref, lost):
        r = {"subject_id": "a", "phase": phase, "reference": "source", "dice_mean": 0.9 if phase == "ed" else 0.7,
             "hd95_mean": 2.0, "label_px_lv_cavity": 100.0, "lost_px_lv_cavity": lost, "empty_rv_cavity": 1.0}
        for name in ("lv_cavity", "lv_myocardium", "rv_cavity"):
            r[f"vol_pred_{name}"], r[f"vol_ref_{name}"] = (lv_pred, lv_ref) if name == "lv_cavity" else (50.0, 40.0)
            r[f"dice_{name}"], r[f"hd95_{name}"] = 0.8, 2.0
        return r

    (subj,) = summarise_subjects([row("ed", 150.0, 140.0, 5.0), row("es", 60.0, 70.0, 0.0)])
    assert subj["dice_ed"] == 0.9 and subj["dice_es"] == 0.7
    assert subj["lv_edv_ml_err"] == pytest.approx(10.0) and subj["lv_esv_ml_err"] == pytest.approx(-10.0)
    assert subj["lv_ef_pct_err"] == pytest.approx(60.0 - 50.0)
    assert subj["lv_mass_g_err"] == pytest.approx(10 * 1.05)
    m = trial_metrics([subj, {**subj, "subject_id": "b", "lv_edv_ml_err": -30.0}])
    assert m["test_lv_edv_ml_mae"] == pytest.approx(20.0) and m["test_lv_edv_ml_bias"] == pytest.approx(-10.0)
    assert m["test_lost_frac_lv_cavity"] == pytest.approx(10 / 400) and m["test_empty_rv_cavity"] == 4.0
    assert m["test_on_source"] == 1.0 and m["test_dice_mean_median"] == pytest.approx(0.8)


def _partial_store(path: Path) -> str:
    """Synthetic subjects labelled like Sunnybrook: LV cavity and myocardium only (RV stored as 0)."""
    from cardiossl.datasets.synthetic import synth_subject

    recs = []
    for i in range(2):
        rec = synth_subject(f"synth{i:05d}", 0, n_frames=2, n_sub=1)
        for s in rec.slices:
            if s.label is not None:
                s.label = np.where(s.label == 3, 0, s.label).astype(s.label.dtype)
        rec.meta = {"label_classes": [1, 2], "ed_frame": 0, "es_frame": 1}
        recs.append(rec)
    store = CohortStore.create(path, grid_size=64, spacing_mm=2.5)
    store.write_subjects(recs)
    return str(path)


def test_partial_labels_a_perfect_lv_myo_prediction_scores_one(tmp_path):
    store = _partial_store(tmp_path / "partial.zarr")
    ids = labelled_subjects(store)
    assert label_classes(store, ids) == {s: (1, 2) for s in ids}
    _, grid, refs = _grid_and_refs(store, ids)
    for key, st in grid.items():
        ref = refs[key]  # no source recorded: the store grid is the reference, at identical geometry
        pred = np.asarray(st["labels"]).copy()
        pred[:, :6, :6] = 3  # RV predicted where the reference says 0 ("not annotated")
        p, _ = to_reference(pred, st["planes"], st["slice_index"], ref)
        m = segmentation_metrics(p, ref["labels"], stack_spacing(ref["planes"]), annotated=(1, 2))
        assert m["dice_mean"] == 1.0 and m["hd95_mean"] == 0.0 and math.isnan(m["dice_rv_cavity"])


@pytest.mark.real
def test_sunnybrook_partial_labels_a_perfect_lv_myo_prediction_scores_one(tmp_path):
    """The real Sunnybrook case, ingested on a grid identical to its source pixels: its contours
    (LV cavity + myocardium) as the prediction, plus RV pixels, score mean Dice 1.0 and HD95 0 on
    the re-read source; without the partial-label rule the same prediction would score 0.667."""
    if not SUNNYBROOK.is_dir():
        pytest.skip(f"{SUNNYBROOK} not present")
    from cardiossl.datasets.ingest import ingest

    store = tmp_path / "sb.zarr"
    ingest(SUNNYBROOK, store, layout="sunnybrook", grid_size=256, spacing_mm=1.367188, workers=1)
    (sid,) = labelled_subjects(str(store))
    assert label_classes(str(store), [sid]) == {sid: (1, 2)}
    _, grid, refs = _grid_and_refs(str(store), [sid])
    ((key, st),) = grid.items()
    ref = refs[key]
    assert ref["kind"] == "source", ref["why"]
    pred = np.asarray(st["labels"]).copy()
    pred[:, :8, :8] = 3
    p, _ = to_reference(pred, st["planes"], st["slice_index"], ref)
    sp = stack_spacing(ref["planes"])
    m = segmentation_metrics(p, ref["labels"], sp, annotated=label_classes(str(store), [sid])[sid])
    assert m["dice_mean"] == 1.0 and m["hd95_mean"] == 0.0
    assert segmentation_metrics(p, ref["labels"], sp)["dice_mean"] == pytest.approx(2 / 3)


class _Painter(torch.nn.Module):
    """A 'segmenter' that paints fixed labels: slice i of the input (constant value i) gets ``labels[i]``."""

    def __init__(self, labels: np.ndarray) -> None:
        super().__init__()
        self.labels = torch.from_numpy(labels).long()

    def forward(self, x):
        lab = self.labels[x[:, 0, 0, 0].round().long()]
        return torch.nn.functional.one_hot(lab, 4).permute(0, 3, 1, 2).float()


def test_inference_keeps_the_largest_component_per_structure_and_counts_what_it_removed():
    labels = np.zeros((3, 16, 16), np.int64)
    labels[:, 4:9, 4:9] = 1  # the LV cavity through three slices
    labels[1, 12:14, 12:14] = 1  # an island of four pixels
    labels[2, 0:2, 0:3] = 3  # a lone RV: one component, kept
    images = np.arange(3, dtype=np.float32)[:, None, None, None] * np.ones((1, 1, 16, 16), np.float32)
    model = _Painter(labels)
    raw, none_removed = infer_stack(model, images)
    assert np.array_equal(raw, labels) and set(none_removed.values()) == {0}
    kept, removed = infer_stack(model, images, {"tta": "none", "largest_component": True})
    assert removed == {"lv_cavity": 4, "lv_myocardium": 0, "rv_cavity": 0}
    assert kept[1, 12:14, 12:14].sum() == 0 and np.array_equal(kept[:, 4:9, 4:9], labels[:, 4:9, 4:9])
    assert (kept == 3).sum() == 6
    off, _ = infer_stack(model, images, {"tta": "none", "largest_component": False})
    assert np.array_equal(off, labels)
