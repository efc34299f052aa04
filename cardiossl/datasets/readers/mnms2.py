"""M&Ms-2 layout (Martin-Isla et al., IEEE JBHI 2023): ``NNN/NNN_{SA,LA}_{ED,ES}[_gt].nii.gz`` + cines.

Each subject has a short-axis stack and one 4-chamber long-axis slice, both with their oblique scanner
affines, ED and ES volumes with labels (1 LV cavity, 2 LV myocardium, 3 RV cavity: already ours) and
optional cines ``NNN_SA_CINE`` / ``NNN_LA_CINE``. The files do not say which cine frame is ED or ES,
so the ED/ES volumes are located in the cine by their pixels.

The short-axis slice order in the files is not fixed (base or apex first), so it is decided from the
scanner geometry (``stack_order``: the LV long axis from the SA normal projected into the 4-chamber
plane, the apex towards the patient's left, anterior and inferior), never from the labels. Stored
slice 0 is the base and stack position runs 0 (base) .. 1 (apex); ``meta["sa_order"]`` states the
rule and flags an uncertain case.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..records import SliceRecord, SubjectRecord
from . import READERS
from .base import LayoutReader, ReadError, SubjectSource
from ..geometry import Plane
from ..stack_order import order_stack
from .nifti_io import (
    find_nifti,
    load_label,
    load_nifti,
    matching_frame,
    planes_of,
    volume_slices,
)

_SUBJECT = re.compile(r"^\d+$")
_SEARCH_DEPTH = 3  # root/NNN, root/dataset/NNN, root/MnM2/dataset/NNN



def _is_subject(d: Path) -> bool:
    return bool(_SUBJECT.match(d.name)) and (
        find_nifti(d, f"{d.name}_SA_ED") is not None or find_nifti(d, f"{d.name}_SA_CINE") is not None
    )


def _subject_dirs(root: Path, first_only: bool = False) -> list[Path]:
    found: list[Path] = []
    level = [root]
    for _ in range(_SEARCH_DEPTH):
        nxt: list[Path] = []
        for d in level:
            try:
                children = sorted(p for p in d.iterdir() if p.is_dir())
            except OSError:
                continue
            for c in children:
                if _is_subject(c):
                    found.append(c)
                    if first_only:
                        return found
                elif not c.name.startswith(".") and not _SUBJECT.match(c.name):
                    nxt.append(c)
        level = nxt
    return found


def _view_slices(
    folder: Path, sid: str, axis: str, view: str, la_planes: list[Plane] = ()
) -> tuple[list[SliceRecord], dict, list[Plane]]:
    """Every slice of one acquisition (SA or LA): ED/ES volumes with labels, plus the cine; and its
    planes. SA stacks are ordered base to apex with ``la_planes``' help."""
    ed_p, es_p = find_nifti(folder, f"{sid}_{axis}_ED"), find_nifti(folder, f"{sid}_{axis}_ES")
    cine_p = find_nifti(folder, f"{sid}_{axis}_CINE")
    phases: dict[str, tuple[np.ndarray, np.ndarray, Path, np.ndarray | None]] = {}
    for phase, p in (("ed", ed_p), ("es", es_p)):
        if p is None:
            continue
        vol, aff = load_nifti(p)
        if vol.ndim == 4:
            if vol.shape[3] != 1:
                raise ReadError(f"{p}: a single frame was expected, got shape {vol.shape}")
            vol = vol[..., 0]
        gt = find_nifti(folder, f"{sid}_{axis}_{phase.upper()}_gt")
        lab = load_label(gt, vol.shape, aff) if gt is not None else None
        phases[phase] = (vol, aff, p, lab)
    if "ed" in phases and "es" in phases:
        (v0, a0, p0, _), (v1, a1, p1, _) = phases["ed"], phases["es"]
        if v0.shape != v1.shape or not np.allclose(a0, a1, atol=1e-3 * max(1.0, np.abs(a0).max())):
            raise ReadError(f"{p1}: shape or affine differs from {p0.name}; both must share one grid")

    cine = cine_aff = None
    if cine_p is not None:
        cine, cine_aff = load_nifti(cine_p)
        if cine.ndim == 3:
            cine = cine[..., None]
    if not phases and cine is None:
        return [], {}, []

    # frame index of each phase volume
    frame_of: dict[str, int] = {}
    if cine is not None:
        for phase, (vol, aff, p, _) in phases.items():
            if vol.shape != cine.shape[:3] or not np.allclose(
                aff, cine_aff, atol=1e-3 * max(1.0, np.abs(aff).max())
            ):
                raise ReadError(f"{p}: shape or affine differs from {cine_p.name}")
            t = matching_frame(cine, vol)
            if t is None:
                raise ReadError(f"{p}: matches no frame of {cine_p.name}; are they the same scan?")
            frame_of[phase] = t
        if len(set(frame_of.values())) < len(frame_of):
            raise ReadError(f"{folder}: {sid}_{axis}_ED and _ES match the same cine frame")
        n_frames = cine.shape[3]
    else:
        frame_of = {ph: i for i, ph in enumerate(p for p in ("ed", "es") if p in phases)}
        n_frames = len(frame_of)

    ref_vol, ref_aff, ref_path = (
        (cine[..., 0], cine_aff, cine_p) if cine is not None else phases[next(iter(phases))][:3]
    )
    n_slices = ref_vol.shape[2]
    planes = planes_of(ref_path, ref_aff, n_slices)

    order = positions = stack = None
    if view == "sa":
        stack = order_stack(planes, [ref_vol.shape[1::-1]] * n_slices, la_planes)
        order, positions = stack.order, stack.positions

    by_frame = {t: ph for ph, t in frame_of.items()}
    slices: list[SliceRecord] = []
    for t in range(n_frames):
        phase = by_frame.get(t, "")
        if phase:
            vol, _, _, lab = phases[phase]
        else:
            vol, lab = cine[..., t], None
        slices += volume_slices(
            vol, planes, view=view, frame=t, phase=phase, label=lab, order=order,
            stack_positions=positions,
        )
    meta = {f"{axis.lower()}_n_frames": int(n_frames)}
    for phase, t in frame_of.items():
        meta[f"{axis.lower()}_{phase}_frame"] = int(t)
    if stack is not None:
        meta.update(stack.meta())
    return slices, meta, planes


@READERS.register("mnms2")
class MnMs2Reader(LayoutReader):
    """M&Ms-2 challenge layout: NNN folders with SA stack and 4-chamber LA, ED/ES labels and cines."""

    name = "mnms2"

    @classmethod
    def detect(cls, root: Path) -> bool:
        return bool(_subject_dirs(Path(root), first_only=True))

    def discover(self, root: Path) -> list[SubjectSource]:
        root = Path(root)
        return sorted(
            (SubjectSource(d.name, root, (d,)) for d in _subject_dirs(root)),
            key=lambda s: (s.subject_id, str(s.paths)),
        )

    def read(self, source: SubjectSource) -> SubjectRecord:
        folder = Path(source.paths[0])
        sid = folder.name
        la, la_meta, la_planes = _view_slices(folder, sid, "LA", "4ch")
        sa, sa_meta, _ = _view_slices(folder, sid, "SA", "sa", la_planes[:1])
        if not sa:
            raise ReadError(f"{folder}: no short-axis image ({sid}_SA_ED.nii.gz or {sid}_SA_CINE.nii.gz)")
        meta = {"layout": "mnms2", "source": str(folder), **sa_meta, **la_meta}
        if "sa_ed_frame" in meta:
            meta["ed_frame"] = meta["sa_ed_frame"]
        if "sa_es_frame" in meta:
            meta["es_frame"] = meta["sa_es_frame"]
        return SubjectRecord(sid, sa + la, meta).validate()
