"""ACDC layout (Bernard et al., IEEE TMI 2018): ``patientXXX/patientXXX_frameNN[_gt].nii.gz`` + ``Info.cfg``.

Short axis only. ``Info.cfg`` names the end-diastolic and end-systolic frames (1-based, ``ED: 1``,
``ES: 12``) and the patient's group, height and weight; ``patientXXX_4d.nii.gz``, when present, is
the whole cine. ACDC labels 1 RV, 2 MYO, 3 LV are remapped to ours (1 LV cavity, 2 LV myocardium,
3 RV cavity).

Geometry: ACDC's files carry voxel sizes (in ``pixdim``) but no scanner orientation: every affine
is the identity up to axis flips, with 1 mm columns (``nifti_io.scanner_affine`` takes the voxel
sizes from ``pixdim``). Planes are therefore exact within one stack (slice spacing, pixel spacing,
slice order) and mean nothing across subjects or views. Base-to-apex order: where a file has a real
oblique orientation the geometric rule of ``stack_order`` applies; for the identity-like affines the
anatomical prior cannot be used (the world axes are not the patient's), so the file order is kept:
ACDC stores the base first (Bernard et al. 2018), which the labels of the 20 development patients
in ``../shared/data/real/acdc-dev`` confirm (checked by a test, never used by the reader).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..records import SubjectRecord
from . import READERS
from .base import LayoutReader, ReadError, SubjectSource
from ..stack_order import file_order, has_scanner_orientation, order_stack
from .nifti_io import find_nifti, load_label, load_nifti, planes_of, volume_slices

ACDC_TO_OURS = np.array([0, 3, 2, 1], dtype=np.uint8)  # ACDC 1 RV, 2 MYO, 3 LV -> 1 LV, 2 MYO, 3 RV
_PATIENT = re.compile(r"^patient\d+$")
_FRAME = re.compile(r"^(?P<id>patient\d+)_frame(?P<n>\d+)\.nii(\.gz)?$")
_SEARCH_DEPTH = 3  # root/patientXXX, root/training/patientXXX, root/database/training/patientXXX


def _patient_dirs(root: Path, first_only: bool = False) -> list[Path]:
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
                if _PATIENT.match(c.name) and (c / "Info.cfg").is_file():
                    found.append(c)
                    if first_only:
                        return found
                elif not c.name.startswith("."):
                    nxt.append(c)
        level = nxt
    return found


def parse_info_cfg(path: Path) -> dict[str, str]:
    """``Key: value`` lines of an ACDC Info.cfg."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ReadError(f"{path}: cannot read ({exc})") from exc
    out = {}
    for line in text.splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            out[k.strip()] = v.strip()
    return out



@READERS.register("acdc")
class AcdcReader(LayoutReader):
    """ACDC challenge layout: patientXXX folders with ED/ES frames, labels and Info.cfg."""

    name = "acdc"

    @classmethod
    def detect(cls, root: Path) -> bool:
        return bool(_patient_dirs(Path(root), first_only=True))

    def discover(self, root: Path) -> list[SubjectSource]:
        root = Path(root)
        dirs = _patient_dirs(root)
        return sorted(
            (SubjectSource(d.name, root, (d,)) for d in dirs), key=lambda s: (s.subject_id, str(s.paths))
        )

    def read(self, source: SubjectSource) -> SubjectRecord:
        folder = Path(source.paths[0])
        sid = folder.name
        cfg_path = folder / "Info.cfg"
        cfg = parse_info_cfg(cfg_path)
        try:
            ed, es = int(cfg["ED"]), int(cfg["ES"])
        except (KeyError, ValueError) as exc:
            raise ReadError(f"{cfg_path}: needs integer 'ED:' and 'ES:' lines (1-based frames)") from exc
        if ed < 1 or es < 1 or ed == es:
            raise ReadError(f"{cfg_path}: ED ({ed}) and ES ({es}) must be distinct frames >= 1")

        frame_files: dict[int, Path] = {}
        for p in sorted(folder.iterdir()):
            m = _FRAME.match(p.name)
            if m and m["id"] == sid:
                frame_files[int(m["n"])] = p
        cine_path = find_nifti(folder, f"{sid}_4d")
        for needed in (ed, es):
            if needed not in frame_files and cine_path is None:
                raise ReadError(
                    f"{folder}: no image for frame {needed} ({sid}_frame{needed:02d}.nii.gz) and no "
                    f"{sid}_4d.nii.gz to take it from"
                )

        notes: list[str] = []
        cine = cine_affine = None
        if cine_path is not None:
            cine, cine_affine = load_nifti(cine_path, notes=notes)
            if cine.ndim == 3:
                cine = cine[..., None]
        n_frames = cine.shape[3] if cine is not None else max(frame_files)
        if max(frame_files, default=0) > n_frames or max(ed, es) > n_frames:
            raise ReadError(
                f"{folder}: frame numbers (ED {ed}, ES {es}, files {sorted(frame_files)}) exceed the "
                f"{n_frames} frames of {cine_path.name if cine_path else 'the cohort'}"
            )

        slices = []
        n_slices = None
        planes = None
        order = None
        frame_numbers = range(1, n_frames + 1) if cine is not None else sorted(frame_files)
        for n in frame_numbers:
            phase = "ed" if n == ed else "es" if n == es else ""
            label = None
            if n in frame_files:
                path = frame_files[n]
                vol, affine = load_nifti(path, notes=notes)
                if vol.ndim == 4:
                    if vol.shape[3] != 1:
                        raise ReadError(f"{path}: a single frame was expected, got shape {vol.shape}")
                    vol = vol[..., 0]
                if cine is not None:
                    if vol.shape != cine.shape[:3]:
                        raise ReadError(
                            f"{path}: shape {vol.shape} differs from the cine {cine_path.name} "
                            f"{cine.shape[:3]}"
                        )
                    if not np.allclose(affine, cine_affine, atol=1e-3 * max(1.0, np.abs(affine).max())):
                        raise ReadError(f"{path}: affine differs from the cine {cine_path.name}")
                gt = find_nifti(folder, f"{sid}_frame{n:02d}_gt")
                if gt is not None:
                    label = load_label(gt, vol.shape, affine, ACDC_TO_OURS)
            else:
                path, vol, affine = cine_path, cine[..., n - 1], cine_affine
            if n_slices is None:
                n_slices = vol.shape[2]
                planes = planes_of(path, affine, n_slices)
                if has_scanner_orientation(planes[0]):
                    order = order_stack(planes, [vol.shape[1::-1]] * n_slices)
                else:
                    order = file_order(n_slices, "the affine has no scanner orientation; ACDC stores the base first")
            elif vol.shape[2] != n_slices:
                raise ReadError(f"{path}: {vol.shape[2]} slices where frame 1 has {n_slices}")
            slices += volume_slices(
                vol,
                planes,
                view="sa",
                frame=n - 1,
                phase=phase,
                label=label,
                order=order.order,
                stack_positions=order.positions,
            )

        meta = {
            "layout": "acdc",
            "source": str(folder),
            "ed_frame": ed - 1,
            "es_frame": es - 1,
            "n_frames": int(n_frames),
            "group": cfg.get("Group", ""),
            "sa_order": order.rule,
        }
        if notes:
            meta["notes"] = sorted(set(notes))
        for key, name in (("Height", "height_cm"), ("Weight", "weight_kg")):
            try:
                meta[name] = float(cfg[key])
            except (KeyError, ValueError):
                pass
        return SubjectRecord(sid, slices, meta).validate()
