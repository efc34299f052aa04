"""Segment short-axis cines with a registered segmenter; labels back in the input geometry.

Input: any case of ``cases`` (a NIfTI stack; UK Biobank-like, ACDC, M&Ms-2 or DICOM folders; ED
and ES as separate files or one cine), or a folder of them. Every slice is resampled onto the
model's grid exactly as the cohort store does at ingest (same directions, same centre,
``image_size`` pixels at the model's ``spacing_mm``) and normalised with the same robust statistics
of the subject's SA view (``store.intensity_stats``), so the network sees what it saw in training.
The predicted labels are resampled back onto each source slice's own pixel grid with nearest
neighbour, so the label volume has exactly the input's shape and affine (NIfTI) or the affine of the
DICOM stack; ED/ES given as separate files get a label file each, beside their own header.

Post-processing keeps, per frame and structure, the largest 3-D connected component (as nnU-Net
does, Isensee et al., Nat Methods 2021): islands above the base or below the apex go, and with
them the volume they would add. A segmenter evaluated with test-time augmentation (its spec's
``inference.tta``) segments with it here too. Clinical measures (``evaluate.clinical_measures``:
LV/RV EDV, ESV, EF, LV mass at 1.05 g/ml) come with their plausibility (``plausibility``: healthy reference and
physiological ranges, a flag outside each), the segmenter's provenance (registered version, the
cohort and validation Dice it was trained with) and a QC picture (``qc``). ED and ES are given on
the command line, known to the input, or, for ES, estimated as the frame with the smallest
predicted LV cavity volume, as in the UK Biobank pipeline of Bai et al. (JCMR 2018).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from cardiossl.datasets.geometry import Plane
from cardiossl.datasets.resample import label_to_source  # noqa: F401  (public here too)

from ..tracking import ModelLoadError, load_segmenter_folder, resolve_model_dir
from ..tracking.serving import inference_tta
from . import plausibility
from .cases import PredictError, SAInput, find_cases, read_case, read_sa_input, stack_affine
from .evaluate import clinical_measures, label_volumes_ml, largest_components, slice_spacing_mm
from .qc import qc_figure

__all__ = ["PredictError", "SAInput", "find_cases", "label_to_source", "largest_components", "measures",
           "predict", "predict_all", "read_sa_input", "segment_input", "stack_affine", "to_grid", "write_labels"]


# ---------------------------------------------------------------------------------------------
# grid <-> source
# ---------------------------------------------------------------------------------------------
def to_grid(image: np.ndarray, plane: Plane, image_size: int, spacing_mm: float, stats: dict):
    """(normalised grid image [S, S] float32, grid plane) as the store + CohortDataset produce it."""
    from cardiossl.datasets.resample import resample_slice

    g, _, plane_g = resample_slice(image, plane, image_size, spacing_mm)
    lo, hi, mean, std = stats["p0_5"], stats["p99_5"], stats["mean"], stats["std"]
    g = (np.clip(g, lo, hi) - mean) / std
    return g.astype(np.float32), plane_g


def model_segmenter(model, *, batch_size: int = 16, device="cpu", tta: str = "none") -> Callable:
    """``fn(grid_images [N, S, S], grid_planes, frame) -> labels [N, S, S]`` from a segmenter module
    (``tta``: its test-time augmentation, ``evaluate.predict_labels``)."""
    from .evaluate import predict_labels

    def fn(images: np.ndarray, planes: list[Plane], frame: int) -> np.ndarray:
        return predict_labels(model, images[:, None].astype(np.float32), batch_size=batch_size, device=device,
                              tta=tta)

    return fn


def segment_input(inp: SAInput, segment: Callable, *, image_size: int, spacing_mm: float,
                  frames: list[int] | None = None) -> np.ndarray:
    """Labels [T, S, rows, cols] uint8 in source geometry (frames not in ``frames`` stay 0).

    ``segment(grid_images [S, G, G], grid_planes, frame) -> labels [S, G, G]`` segments one frame
    of the stack on the model grid (``model_segmenter`` wraps a network)."""
    from cardiossl.datasets.store import intensity_stats

    stats = intensity_stats(list(inp.images.reshape(-1, *inp.images.shape[2:])))
    frames = list(range(inp.n_frames)) if frames is None else frames
    out = np.zeros(inp.images.shape, dtype=np.uint8)
    shape = inp.images.shape[2:]
    for t in frames:
        grid = [to_grid(inp.images[t, k], inp.planes[k], image_size, spacing_mm, stats) for k in range(inp.n_slices)]
        labels_g = segment(np.stack([g for g, _ in grid]), [p for _, p in grid], t)
        for k, (_, plane_g) in enumerate(grid):
            out[t, k] = label_to_source(labels_g[k], plane_g, inp.planes[k], shape)
    return out


# ---------------------------------------------------------------------------------------------
# outputs
# ---------------------------------------------------------------------------------------------
def source_spacing(inp: SAInput) -> list[tuple[float, float, float]]:
    """Per-slice (slice spacing, row spacing, column spacing) mm for volumes in source geometry."""
    gap = slice_spacing_mm(inp.planes) if inp.n_slices > 1 else float("nan")
    if inp.n_slices == 1:
        raise PredictError(f"{inp.path}: a single SA slice has no slice spacing; volumes need a stack")
    return [(gap, p.spacing[0], p.spacing[1]) for p in inp.planes]


def measures(inp: SAInput, labels: np.ndarray, ed: int | None, es: int | None | str) -> dict:
    """Per-frame volumes and, with ED and ES, the clinical measures."""
    sp = source_spacing(inp)
    per_frame = []
    for t in range(inp.n_frames):
        if labels[t].any():
            per_frame.append({"frame": t, **{f"{k}_ml": v for k, v in label_volumes_ml(labels[t], sp).items()}})
    es_source = "given"
    if es == "auto":
        if inp.n_frames < 2 or not per_frame:
            es = None
        else:
            es = int(min(per_frame, key=lambda r: r["lv_cavity_ml"] if r["frame"] != ed else np.inf)["frame"])
            es_source = "frame with the smallest predicted LV cavity volume"
    out = {"ed_frame": ed, "es_frame": es, "es_frame_source": es_source if es is not None else None,
           "frames": per_frame, "slice_spacing_mm": sp[0][0]}
    if ed is not None and es is not None:
        out.update(clinical_measures(labels[ed], labels[es], sp))
    return out


def _nifti_image(vol: np.ndarray, affine: np.ndarray, header):
    import nibabel as nib

    if header is not None:
        hdr = header.copy()
        hdr.set_data_dtype(np.uint8)
        img = nib.Nifti1Image(vol.astype(np.uint8), affine, hdr)
        img.set_qform(affine, code=int(header["qform_code"]) or 1)
        img.set_sform(affine, code=int(header["sform_code"]) or 1)
    else:
        img = nib.Nifti1Image(vol.astype(np.uint8), affine)
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
    img.header["scl_slope"], img.header["scl_inter"] = 1.0, 0.0
    return img


def write_labels(inp: SAInput, labels: np.ndarray, out_path: Path) -> Path | dict[str, str]:
    """NIfTI label volume [X, Y, Z(, T)] uint8 with the input's affine (and header for NIfTI).

    For an input read from separate ED and ES files, one 3-D file per phase beside ``out_path``
    (``labels_ed.nii.gz``, ``labels_es.nii.gz``), each with its source's header; returns {phase: path}."""
    import nibabel as nib

    out_path.parent.mkdir(parents=True, exist_ok=True)
    if inp.phase_files:
        paths = {}
        for t, pf in enumerate(inp.phase_files):
            dst = out_path.with_name(f"labels_{pf.phase}.nii.gz")
            nib.save(_nifti_image(np.transpose(labels[t], (2, 1, 0)), pf.affine, pf.header), str(dst))
            paths[pf.phase] = str(dst)
        return paths
    vol = np.transpose(labels, (3, 2, 1, 0))  # [T, Z, Y, X] -> [X, Y, Z, T]
    if not inp.is_4d:
        vol = vol[..., 0]
    nib.save(_nifti_image(vol, inp.affine, inp.header), str(out_path))
    return out_path


# ---------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------
def load_segmenter(ref: str, tracking_uri: str | None = None):
    """(model, spec) from ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/ID/segmenter`` or
    a local folder written by ``tracking.save_segmenter``."""
    model, spec, _ = load_with_provenance(ref, tracking_uri)
    return model, spec


def load_with_provenance(ref: str, tracking_uri: str | None = None):
    """``load_segmenter`` plus the provenance: the version an alias resolved to, its run and tags."""
    import tempfile

    from ..tracking import resolve_version

    if os.path.isdir(ref):
        model, spec = load_segmenter_folder(ref)
        return model, spec, provenance(ref, ref, spec)
    if len(ref) == 32 and all(c in "0123456789abcdef" for c in ref):  # a bare run id
        ref = f"runs:/{ref}/segmenter"
    with tempfile.TemporaryDirectory(prefix="cardiossl-seg-") as tmp:
        try:
            resolved = resolve_version(ref, tracking_uri)
            d = resolve_model_dir(resolved, tracking_uri, dst=tmp)
        except ModelLoadError as exc:
            raise PredictError(str(exc)) from None
        model, spec = load_segmenter_folder(d)
    prov = provenance(ref, resolved, spec)
    if resolved.startswith("models:/"):
        prov.update(_version_record(resolved, tracking_uri))
    return model, spec, prov


def provenance(ref: str, resolved: str, spec: dict) -> dict:
    """What the segmenter is: the reference asked for, the version it resolved to, what it was trained on."""
    training = dict(spec.get("training") or {})
    for key in ("init", "mode", "n_train", "seed", "val_dice", "test_dice_mean", "cohort_store", "image_size",
                "spacing_mm"):
        if key in spec and key not in training:
            training[key] = spec[key]
    return {"ref": ref, "resolved": resolved, "training": training}


def _version_record(resolved: str, tracking_uri: str | None) -> dict:
    from ..tracking import mlflow_client

    name, version = resolved[len("models:/"):].rsplit("/", 1)
    try:
        mv = mlflow_client(tracking_uri).get_model_version(name, version)
    except Exception:  # the weights loaded; a registry hiccup must not lose the prediction
        return {"name": name, "version": version}
    return {"name": name, "version": version, "run_id": mv.run_id, "tags": dict(mv.tags or {})}


# ---------------------------------------------------------------------------------------------
# the whole command
# ---------------------------------------------------------------------------------------------
def predict(model_ref: str, input_path: str | os.PathLike, out: str | os.PathLike, *,
            tracking_uri: str | None = None, ed: int | None = None, es: int | str | None = "auto",
            frames: list[int] | None = None, device: str = "cpu", model=None, spec: dict | None = None,
            postprocess: bool = True, qc: bool = True, inp: SAInput | None = None,
            prov: dict | None = None) -> dict:
    """Segment one case; write ``OUT/labels.nii.gz`` (or ``labels_ed/es``), ``OUT/measures.json``
    and ``OUT/qc.png``; return the JSON."""
    import torch

    if model is None:
        model, spec, prov = load_with_provenance(model_ref, tracking_uri)
    model.to(device)
    inp = inp if inp is not None else read_sa_input(input_path)
    ed = inp.ed_frame if ed is None else int(ed)
    if es is None or es == "auto":
        es = inp.es_frame if inp.es_frame is not None else ("auto" if inp.n_frames > 1 else None)
    for name, t in (("ed", ed), ("es", es)):
        if isinstance(t, int) and not 0 <= t < inp.n_frames:
            raise PredictError(f"--{name} {t}: the input has frames 0..{inp.n_frames - 1}")
    spacing = float(spec["spacing_mm"])
    if not np.isfinite(spacing):
        raise PredictError(f"{model_ref}: the segmenter's spec has no grid spacing (spacing_mm)")
    with torch.no_grad():
        tta = inference_tta(spec)
        labels = segment_input(inp, model_segmenter(model, device=device, tta=tta),
                               image_size=int(spec["image_size"]), spacing_mm=spacing, frames=frames)
    removed = {}
    if postprocess:
        labels, removed = largest_components(labels)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    label_path = write_labels(inp, labels, out / "labels.nii.gz")
    result = {"input": str(input_path), "input_kind": inp.kind, "model": model_ref,
              "labels": label_path if isinstance(label_path, dict) else str(label_path),
              "label_values": {"1": "lv_cavity", "2": "lv_myocardium", "3": "rv_cavity"},
              "postprocess": {"largest_component": postprocess, "tta": tta,
                              "voxels_removed": {str(k): v for k, v in removed.items()}},
              **measures(inp, labels, ed, es)}
    check = plausibility.check(result)
    result.update({"plausible": check["plausible"], "flags": check["flags"], "ranges": check["ranges"],
                   "range_sources": check["sources"], "segmenter": prov or provenance(model_ref, model_ref, spec)})
    if inp.meta:
        result["input_meta"] = inp.meta
    if qc:
        result["qc"] = str(qc_png(inp, labels, result, out / "qc.png"))
    (out / "measures.json").write_text(json.dumps(result, indent=2, default=_json_default))
    return result


def qc_png(inp: SAInput, labels: np.ndarray, result: dict, path: Path) -> Path:
    """The QC figure of a case: ED/ES slices with labels, measures and flags in the title."""
    keys = (("lv_edv_ml", "LV EDV", "ml"), ("lv_ef_pct", "LV EF", "%"), ("lv_mass_g", "LV mass", "g"),
            ("rv_edv_ml", "RV EDV", "ml"), ("rv_ef_pct", "RV EF", "%"))
    summary = "  ".join(f"{name} {result[k]:.0f} {u}" for k, name, u in keys
                        if isinstance(result.get(k), float) and math.isfinite(result[k]))
    seg = result.get("segmenter") or {}
    model = seg.get("resolved") or result.get("model", "")
    notes = [plausibility.describe(f) for f in result.get("flags", [])]
    return qc_figure(inp.images, labels, {"ED": result.get("ed_frame"), "ES": result.get("es_frame")}, path,
                     title=f"{Path(inp.path).name} ({inp.kind}); model {model}\n{summary}", notes=notes)


def predict_all(model_ref: str, input_path: str | os.PathLike, out: str | os.PathLike, *,
                tracking_uri: str | None = None, device: str = "cpu", on_case: Callable | None = None,
                **kwargs) -> list[dict]:
    """Every case at ``input_path`` (one, or a cohort folder): one model load, ``OUT/<case>/`` each.

    A case that cannot be read is reported in its entry (``error``) and the others go on."""
    cases = find_cases(input_path)
    model, spec, prov = load_with_provenance(model_ref, tracking_uri)
    results = []
    for case_id, path, kind in cases:
        dst = Path(out) if len(cases) == 1 else Path(out) / case_id
        try:
            res = predict(model_ref, path, dst, device=device, model=model, spec=spec, prov=prov,
                          inp=read_case(path, kind), **kwargs)
            res["case"] = case_id
        except PredictError as exc:
            res = {"case": case_id, "input": str(path), "error": str(exc)}
        results.append(res)
        if on_case is not None:
            on_case(res)
    return results


def _json_default(o):
    if isinstance(o, np.integer | np.floating):
        return o.item()
    raise TypeError(type(o).__name__)
