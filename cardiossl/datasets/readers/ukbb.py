"""UK Biobank cardiac MR as Bai et al.'s ``ukbb_cardiac`` conversion leaves it (Bai et al., JCMR 2018).

One folder per subject (``<eid>/``), NIfTI files (``.nii.gz`` or ``.nii``) named by view stem
``sa``, ``la_2ch``, ``la_3ch``, ``la_4ch``; any subset of the long-axis (LA) views may be present:

* ``<stem>.nii.gz``: the cine, 4-D ``(x, y, slice, frame)``; LA cines are ``(x, y, 1, frame)``. The
  cine is triggered at the R wave, so frame 0 is end-diastole (ED), as the pipeline assumes.
* ``<stem>_ED.nii.gz``, ``<stem>_ES.nii.gz``: single frames ``(x, y, slice)``. Next to a cine their
  frames are found in it by their pixels (the pipeline cuts them out of the cine); without a cine
  they are the subject's only frames (ED = frame 0, ES = frame 1).
* Labels, manual (``label_``, cvi42 contours of UK Biobank application 2964) or automatic (``seg_``,
  ``seg4_``, the pipeline's networks), as a 4-D file or per phase (``_ED``, ``_ES``). Values, from
  the pipeline's own code (``biobank_utils.py``, ``cardiac_utils.py``), and what is stored:

  ==========================================  =========================================  ================
  files                                       values                                     stored
  ==========================================  =========================================  ================
  ``label_sa*``, ``seg_sa*``                   1 LV cavity, 2 LV myocardium, 3 RV cavity  as they are
  ``seg4_la_4ch*``                             1 LV, 2 myocardium, 3 RV, 4 LA, 5 RA       1-3; atria -> 0
  ``label_la_2ch*``, ``seg_la_2ch*``           1 left atrium                              not stored
  ``label_la_4ch*``, ``seg_la_4ch*``           1 left atrium, 2 right atrium              not stored
  ==========================================  =========================================  ================

  Atrium-only files are not stored (a note says so): the project's labels (``records.LABELS``) are
  ventricular, and a slice stored as labelled with its ventricles left as background would teach a
  segmenter that they are background. An atrium is never stored as a ventricle. A 4-D manual file
  labels the frames that have any non-zero voxel (the annotated ones), a 4-D automatic file every
  frame. For each view, manual labels win over automatic ones (``seg4_`` over ``seg_`` for the
  4-chamber view); ``meta["labels"][view]`` records the source, the files and the frames, and
  ``meta["label_source"]`` is ``manual``, ``automatic``, ``manual+automatic`` or None.
* Ignored, each with a note in ``meta["notes"]``: ``ao.nii.gz`` (the aortic distensibility cine, not
  a cardiac view), ``label_up_*`` (labels on a 4x upsampled grid), and any other NIfTI file.

Planes come from the affine (``nifti_io.scanner_affine``); the SA stack is ordered base to apex by
geometry (``stack_order``, with the LA planes), never by file order or labels.

The project's own export (``cardiossl synth --format nifti``) looks similar but is another layout
(``readers.nifti_export``, ``cardiossl-nifti``); folders whose ``info.json`` says so are left to it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..geometry import Plane
from ..records import RecordError, SliceRecord, SubjectRecord
from ..stack_order import order_stack
from . import READERS
from .base import LayoutReader, ReadError, SubjectSource
from .nifti_export import is_export
from .nifti_io import AFFINE_ATOL_MM, find_nifti, load_nifti, matching_frame, planes_of

STEMS = {"sa": "sa", "2ch": "la_2ch", "3ch": "la_3ch", "4ch": "la_4ch"}
PHASE_SUFFIX = {"ed": "_ED", "es": "_ES"}
_SA_LUT = np.array([0, 1, 2, 3], dtype=np.uint8)
_SEG4_LUT = np.array([0, 1, 2, 3, 0, 0], dtype=np.uint8)  # 4 LA, 5 RA -> background
# (prefix, source, {view: LUT, or None for atrium-only files}); first match with a LUT wins
LABEL_KINDS = (
    ("label_", "manual", {"sa": _SA_LUT, "2ch": None, "4ch": None}),
    ("seg4_", "automatic", {"4ch": _SEG4_LUT}),
    ("seg_", "automatic", {"sa": _SA_LUT, "2ch": None, "4ch": None}),
)
ATRIAL = {"2ch": "1 left atrium", "4ch": "1 left atrium, 2 right atrium"}
_NIFTI = re.compile(r"^(?P<stem>.+?)\.nii(\.gz)?$")



def is_subject(folder: Path) -> bool:
    """A folder with an SA cine or an SA ED frame that is not a cardiossl NIfTI export."""
    return (find_nifti(folder, "sa") is not None or find_nifti(folder, "sa_ED") is not None) and not is_export(folder)


@dataclass
class _View:
    """One view's frames: ``volumes[t]`` (x, y, slice) at frame t, its planes and phase frames."""

    view: str
    volumes: list[np.ndarray]
    affine: np.ndarray
    planes: list[Plane]
    phase_frames: dict[str, int]
    from_cine: bool
    files: list[str] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.volumes[0].shape


def _as_volume(path: Path, data: np.ndarray, view: str) -> np.ndarray:
    """A single-frame file as (x, y, slice)."""
    if data.ndim == 4:
        if data.shape[3] != 1:
            raise ReadError(f"{path}: one frame was expected, got shape {data.shape}")
        data = data[..., 0]
    if view != "sa" and data.shape[2] != 1:
        raise ReadError(f"{path}: a long-axis file holds one slice (x, y, 1), got shape {data.shape}")
    return data


def _read_view(folder: Path, view: str, notes: list[str]) -> _View | None:
    stem = STEMS[view]
    cine_p = find_nifti(folder, stem)
    phase_p = {ph: find_nifti(folder, stem + suf) for ph, suf in PHASE_SUFFIX.items()}
    if cine_p is None and not any(phase_p.values()):
        return None
    phase_vols: dict[str, tuple[np.ndarray, np.ndarray, Path]] = {}
    for ph, p in phase_p.items():
        if p is not None:
            vol, aff = load_nifti(p, notes=notes)
            phase_vols[ph] = (_as_volume(p, vol, view), aff, p)
    if cine_p is not None:
        cine, affine = load_nifti(cine_p, notes=notes)
        if cine.ndim == 3:
            if view != "sa" and cine.shape[2] != 1:
                raise ReadError(
                    f"{cine_p}: a long-axis cine is 4-D (x, y, 1, frame), got shape {cine.shape}; "
                    "re-save it with the singleton slice axis"
                )
            cine = cine[..., None]
        if view != "sa" and cine.shape[2] != 1:
            raise ReadError(f"{cine_p}: a long-axis cine holds one slice (x, y, 1, frame), got shape {cine.shape}")
        frames = {"ed": 0}
        for ph, (vol, aff, p) in phase_vols.items():
            if vol.shape != cine.shape[:3] or not np.allclose(aff, affine, atol=1e-3 * max(1.0, np.abs(aff).max())):
                raise ReadError(f"{p}: shape or affine differs from {cine_p.name}; both must share one grid")
            t = matching_frame(cine, vol)
            if t is None:
                raise ReadError(f"{p}: matches no frame of {cine_p.name}; are they the same scan?")
            frames[ph] = t
        if "es" in frames and frames["es"] == frames["ed"]:
            raise ReadError(f"{folder}: {stem}_ED and {stem}_ES match the same cine frame")
        volumes = [cine[..., t] for t in range(cine.shape[3])]
        path, files = cine_p, [cine_p.name] + [p.name for _, _, p in phase_vols.values()]
    else:
        (v0, affine, path), *rest = [phase_vols[ph] for ph in ("ed", "es") if ph in phase_vols]
        for vol, aff, p in rest:
            if vol.shape != v0.shape or not np.allclose(aff, affine, atol=1e-3 * max(1.0, np.abs(aff).max())):
                raise ReadError(f"{p}: shape or affine differs from {path.name}; both must share one grid")
        phases = [ph for ph in ("ed", "es") if ph in phase_vols]
        frames = {ph: i for i, ph in enumerate(phases)}
        volumes = [phase_vols[ph][0] for ph in phases]
        files = [phase_vols[ph][2].name for ph in phases]
    planes = planes_of(path, affine, volumes[0].shape[2])
    return _View(view, volumes, affine, planes, frames, cine_p is not None, files)


def _label_file(path: Path, v: _View, lut: np.ndarray, notes: list[str]) -> np.ndarray:
    """A label file on its view's grid, remapped through ``lut``; always 4-D (x, y, slice, k)."""
    data, affine = load_nifti(path, labels=True, notes=notes)
    if data.ndim == 3:
        data = data[..., None]
    if data.shape[:3] != v.shape:
        raise ReadError(
            f"{path}: label shape {data.shape[:3]} differs from its image's shape {v.shape}; "
            "the label must be on the image grid"
        )
    scale = max(1.0, float(np.abs(v.affine[:3, 3]).max()))
    if not np.allclose(affine, v.affine, rtol=0.0, atol=AFFINE_ATOL_MM * scale):
        raise ReadError(
            f"{path}: label affine differs from its image's affine (max difference "
            f"{np.abs(affine - v.affine).max():.4g}); the label must be on the image grid"
        )
    bad = np.unique(data[data >= len(lut)])
    if bad.size:
        raise ReadError(f"{path}: label values {bad.tolist()} have no meaning in this file's convention "
                        f"(0..{len(lut) - 1})")
    return lut[data]


def _view_labels(folder: Path, v: _View, notes: list[str], seen: set[str]) -> tuple[dict[int, np.ndarray], dict | None]:
    """{frame: label volume} of one view and what they came from (None when unlabelled); the names
    of every label file of the view, used or noted, go into ``seen``."""
    stem = STEMS[v.view]
    for prefix, source, luts in LABEL_KINDS:
        paths = {key: find_nifti(folder, prefix + stem + suf) for key, suf in (("cine", ""), *PHASE_SUFFIX.items())}
        present = {k: p for k, p in paths.items() if p is not None}
        if not present:
            continue
        seen.update(p.name for p in present.values())
        if v.view not in luts:
            notes.append(f"{', '.join(p.name for p in present.values())}: no known label convention for "
                         f"the {v.view} view; not stored")
            continue
        lut = luts[v.view]
        if lut is None:
            notes.append(f"{', '.join(p.name for p in present.values())}: atrial labels ({ATRIAL[v.view]}) "
                         "not stored: the ventricles are unlabelled in these files")
            continue
        labels: dict[int, np.ndarray] = {}
        used: list[str] = []
        n_frames = len(v.volumes)
        if "cine" in present:
            data = _label_file(present["cine"], v, lut, notes)
            if data.shape[3] != n_frames:
                raise ReadError(
                    f"{present['cine']}: {data.shape[3]} label frames where the image has {n_frames}; a 4-D "
                    "label file of this layout holds every cine frame"
                )
            if source == "manual":
                frames = [t for t in range(n_frames) if data[..., t].any()]
            else:
                frames = list(range(n_frames))
            labels.update({t: data[..., t] for t in frames})
            used.append(present["cine"].name)
        for ph in ("ed", "es"):
            if ph not in present:
                continue
            t = v.phase_frames.get(ph)
            if t is None:
                notes.append(f"{present[ph].name}: no {stem}{PHASE_SUFFIX[ph]} image to place it in the cine; "
                             "not stored")
                continue
            labels[t] = _label_file(present[ph], v, lut, notes)[..., 0]
            used.append(present[ph].name)
        if labels:
            return labels, {"source": source, "files": used, "frames": sorted(labels)}
    return {}, None


def _ignored(folder: Path, used: set[str]) -> list[str]:
    out = []
    for p in sorted(folder.iterdir()):
        m = _NIFTI.match(p.name)
        if not m or p.name in used or not p.is_file():
            continue
        stem = m["stem"]
        if stem == "ao" or stem.startswith(("ao_", "seg_ao", "label_ao")):
            out.append(f"{p.name}: aortic distensibility cine ignored (not a cardiac view the store keeps)")
        elif stem.startswith("label_up_"):
            out.append(f"{p.name}: labels on a 4x upsampled grid ignored (the label_* file on the image grid is used)")
        elif not re.match(r"^(label_|seg4?_)?(sa|la_[234]ch)(_E[DS])?$", stem):
            out.append(f"{p.name}: not part of the UK Biobank layout; ignored")
    return out


@READERS.register("ukbb")
class UKBBReader(LayoutReader):
    """UK Biobank folders as Bai et al.'s ``ukbb_cardiac`` conversion writes them (module docstring)."""

    name = "ukbb"

    @classmethod
    def detect(cls, root: Path) -> bool:
        root = Path(root)
        if not root.is_dir():
            return False
        if is_subject(root):
            return True
        return any(is_subject(d) for d in sorted(root.iterdir())[:50] if d.is_dir() and not d.name.startswith("."))

    def discover(self, root: Path) -> list[SubjectSource]:
        root = Path(root)
        if is_subject(root):  # a single subject folder
            return [SubjectSource(root.name, root.parent, (root,))]
        return [
            SubjectSource(d.name, root, (d,))
            for d in sorted(root.iterdir())
            if d.is_dir() and not d.name.startswith(".") and is_subject(d)
        ]

    def read(self, source: SubjectSource) -> SubjectRecord:
        folder = Path(source.paths[0]) if source.paths else Path(source.root) / source.subject_id
        sid = source.subject_id
        notes: list[str] = []
        views = {view: _read_view(folder, view, notes) for view in STEMS}
        views = {k: v for k, v in views.items() if v is not None}
        if "sa" not in views:
            raise ReadError(f"{folder}: no sa.nii.gz or sa_ED.nii.gz; every subject of this layout needs an SA image")
        sa = views["sa"]
        la_planes = [views[k].planes[0] for k in ("2ch", "3ch", "4ch") if k in views]
        stack = order_stack(sa.planes, [sa.shape[1::-1]] * sa.shape[2], la_planes)

        slices: list[SliceRecord] = []
        label_meta: dict[str, dict] = {}
        used: set[str] = set()
        for view, v in views.items():
            labels, info = _view_labels(folder, v, notes, used)
            if info is not None:
                label_meta[view] = info
            used.update(v.files)
            phase_of = {t: ph for ph, t in v.phase_frames.items()}
            order = stack.order if view == "sa" else [0]
            for t, vol in enumerate(v.volumes):
                lab = labels.get(t)
                for i, k in enumerate(order):
                    slices.append(SliceRecord(
                        view=view, slice_index=i, frame=t,
                        image=np.ascontiguousarray(vol[:, :, k].T, dtype=np.float32),
                        plane=v.planes[k],
                        label=None if lab is None else np.ascontiguousarray(lab[:, :, k].T),
                        phase=phase_of.get(t, ""),
                        stack_position=stack.positions[i] if view == "sa" else float("nan"),
                    ))
        notes.extend(_ignored(folder, used))
        sources = sorted({m["source"] for m in label_meta.values()})
        meta = {
            "layout": "ukbb",
            "source": str(folder),
            "ed_frame": sa.phase_frames.get("ed"),
            "es_frame": sa.phase_frames.get("es"),
            "views": sorted(views, key=list(STEMS).index),
            "n_frames": {view: len(v.volumes) for view, v in views.items()},
            "phase_frames": {view: v.phase_frames for view, v in views.items()},
            "labels": label_meta,
            "label_source": "+".join(sources) if sources else None,
            **stack.meta(),
        }
        if notes:
            meta["notes"] = notes
        try:
            return SubjectRecord(sid, slices, meta).validate()
        except RecordError as exc:
            raise ReadError(f"{folder}: {exc}") from None
