"""DICOM headers: find the image files of an exam and read each image's geometry and timing.

Planes come straight from the headers (``Plane.from_dicom``: PixelSpacing is (row spacing, column
spacing)); enhanced (multi-frame) MR objects are read frame by frame from their functional groups.
Pixels are read later (``pixels``), only for the images that are kept.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...geometry import GeometryError, Plane
from ...stack_order import APEX_DIRECTION_LPS  # noqa: F401  (left, anterior, inferior; re-exported)
from ..base import ReadError

log = logging.getLogger(__name__)

DICOM_SUFFIXES = (".dcm", ".ima", ".dicom")
SEPTAL_LPS = np.array([-1.0, 0.0, 0.0])  # patient right
ANTERIOR_LPS = np.array([0.0, -1.0, 0.0])

_HINTS = (
    ("rvot", re.compile(r"rvot|rv[ _-]?outflow", re.I)),
    ("3ch", re.compile(r"3[ _-]?ch|three[ _-]?ch|lvot|lv[ _-]?outflow|3[ _-]?cv", re.I)),
    ("4ch", re.compile(r"4[ _-]?ch|four[ _-]?ch|\bhla\b|horizontal[ _-]?long|4[ _-]?cv", re.I)),
    ("2ch", re.compile(r"2[ _-]?ch|two[ _-]?ch|\bvla\b|vertical[ _-]?long|2[ _-]?cv", re.I)),
    ("sa", re.compile(r"\bsax?\b|sax|short[ _-]?ax|(^|[ _-])sa($|[ _-])", re.I)),
)


def description_hint(text: str) -> str | None:
    """The view a SeriesDescription/ProtocolName names ("sa", "2ch", "3ch", "4ch", "rvot"), if any."""
    for view, pattern in _HINTS:
        if pattern.search(text or ""):
            return view
    return None


@dataclass(eq=False)
class DicomImage:
    """Header facts of one 2-D image file (pixels are read later, only for images that are kept)."""

    path: Path
    series_uid: str
    series_number: int
    description: str
    plane: Plane
    shape: tuple[int, int]
    trigger_time: float | None
    instance_number: int
    sop_uid: str
    frame_of_reference: str
    manufacturer: str
    image_type: tuple[str, ...]
    transfer_syntax: str
    frame_in_file: int | None = None  # frame of an enhanced multi-frame object; None: single-frame file
    n_frames_in_file: int = 1
    slope: float = 1.0  # RescaleSlope / RescaleIntercept (per frame for enhanced objects)
    intercept: float = 0.0


def is_dicom_file(path: Path) -> bool:
    """DICOM Part 10 preamble, or a DICOM-like suffix (read with ``force`` then)."""
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def iter_dicom_files(folder: Path):
    """DICOM files below ``folder`` in sorted walk order (hidden files and folders, DICOMDIR ignored)."""
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fn in sorted(filenames):
            if fn.startswith(".") or fn.upper() == "DICOMDIR":
                continue
            p = Path(dirpath) / fn
            if p.is_file() and is_dicom_file(p):
                yield p


def dicom_files(folder: Path) -> list[Path]:
    """Every DICOM file below ``folder``, sorted."""
    return list(iter_dicom_files(folder))


_QUIET_LOCK = threading.Lock()
_QUIET = {"depth": 0, "mode": None}


@contextlib.contextmanager
def quiet_pydicom():
    """Read leniently and silently: real archives are full of harmless VR violations (long or
    malformed UIDs from anonymisers) that pydicom would otherwise warn and log about per element.

    pydicom's validation mode is process-global, so concurrent readers (dask threads) share one
    reference-counted switch and the first mode comes back when the last reader leaves.
    """
    from pydicom import config

    with _QUIET_LOCK:
        if _QUIET["depth"] == 0:
            _QUIET["mode"] = config.settings.reading_validation_mode
            config.settings.reading_validation_mode = config.IGNORE
        _QUIET["depth"] += 1
    try:
        yield
    finally:
        with _QUIET_LOCK:
            _QUIET["depth"] -= 1
            if _QUIET["depth"] == 0:
                config.settings.reading_validation_mode = _QUIET["mode"]


def _dcmread(path: Path, *, header_only: bool):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        with quiet_pydicom():
            return pydicom.dcmread(
                path, stop_before_pixels=header_only, force=path.suffix.lower() in DICOM_SUFFIXES,
                defer_size="64 KB" if header_only else None,
            )
    except (InvalidDicomError, EOFError, OSError, ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
        raise ReadError(f"{path}: not a readable DICOM file ({type(e).__name__}: {e}); "
                        "remove or replace the file") from e


def _text(ds, key: str) -> str:
    v = ds.get(key, "")
    return "" if v is None else str(v).strip()


def _number(ds, key: str, default=None):
    v = ds.get(key, None)
    if v is None or v == "":
        return default
    try:
        return float(v)
    except (TypeError, ValueError):
        return default


_SKIP_SOP_PREFIXES = ("1.2.840.10008.5.1.4.1.1.7",  # secondary capture family
                      "1.2.840.10008.5.1.4.1.1.88",  # structured reports
                      "1.2.840.10008.5.1.4.1.1.11",  # presentation states
                      "1.2.840.10008.5.1.4.1.1.66",  # raw data, spatial registration
                      "1.2.840.10008.1.3.10")  # media storage directory


def _functional(ds, frame: int, sequence: str, attribute: str):
    """An attribute of an enhanced object's per-frame functional group, else of the shared group."""
    per = ds.get("PerFrameFunctionalGroupsSequence", None)
    shared = ds.get("SharedFunctionalGroupsSequence", None)
    for groups in ((per[frame] if per is not None and frame < len(per) else None),
                   (shared[0] if shared is not None and len(shared) else None)):
        if groups is None or sequence not in groups:
            continue
        items = groups[sequence].value
        if items and attribute in items[0] and items[0][attribute].value not in (None, ""):
            return items[0][attribute].value
    return None


def _float_or_none(v):
    try:
        return None if v is None or v == "" else float(v)
    except (TypeError, ValueError):
        return None


def read_header(path: Path) -> tuple[list[DicomImage], str | None]:
    """(images, None) for an image object with geometry (one per frame of an enhanced multi-frame
    object), ([], note) for an object that is skipped.

    Raises ReadError for an unreadable or truncated file, or an image without geometry.
    """
    with quiet_pydicom():
        ds = _dcmread(path, header_only=True)
        sop_class = _text(ds, "SOPClassUID") or _text(getattr(ds, "file_meta", {}), "MediaStorageSOPClassUID")
        if sop_class.startswith(_SKIP_SOP_PREFIXES):
            return [], f"{path.name}: non-image or secondary-capture object ({sop_class}) skipped"
        if "Rows" not in ds or "Columns" not in ds:
            from pydicom.uid import UID

            if not sop_class or "Image Storage" in UID(sop_class).name:
                raise ReadError(f"{path}: an image object without Rows/Columns: the file is truncated or "
                                "damaged; replace it or remove it")
            return [], f"{path.name}: no image ({UID(sop_class).name}) skipped"
        series_uid = _text(ds, "SeriesInstanceUID") or f"no-series-uid:{path.parent}"
        series_number = int(_number(ds, "SeriesNumber", 0) or 0)
        description = _text(ds, "SeriesDescription") or _text(ds, "ProtocolName")
        series = f"series {series_number} {description!r} (SeriesInstanceUID {series_uid})"
        n_frames = int(_number(ds, "NumberOfFrames", 1) or 1)
        enhanced = n_frames > 1 or "PerFrameFunctionalGroupsSequence" in ds
        image_type = ds.get("ImageType", None) or ()
        image_type = tuple(str(x) for x in (image_type if not isinstance(image_type, str) else [image_type]))
        meta = getattr(ds, "file_meta", None)
        ts = str(meta.get("TransferSyntaxUID", "1.2.840.10008.1.2")) if meta is not None else "1.2.840.10008.1.2"
        sop_uid = _text(ds, "SOPInstanceUID") or str(path)
        images = []
        for i in range(n_frames):
            if enhanced:
                geo = {"ImagePositionPatient": _functional(ds, i, "PlanePositionSequence", "ImagePositionPatient"),
                       "ImageOrientationPatient": _functional(ds, i, "PlaneOrientationSequence",
                                                              "ImageOrientationPatient"),
                       "PixelSpacing": _functional(ds, i, "PixelMeasuresSequence", "PixelSpacing")}
                geo = {k: (v if v is not None else ds.get(k, None)) for k, v in geo.items()}
                trigger = _float_or_none(_functional(ds, i, "CardiacSynchronizationSequence",
                                                     "NominalCardiacTriggerDelayTime"))
                slope = _float_or_none(_functional(ds, i, "PixelValueTransformationSequence", "RescaleSlope"))
                intercept = _float_or_none(_functional(ds, i, "PixelValueTransformationSequence",
                                                       "RescaleIntercept"))
            else:
                geo = {k: ds.get(k, None) for k in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing")}
                trigger = _number(ds, "TriggerTime")
                slope, intercept = _number(ds, "RescaleSlope"), _number(ds, "RescaleIntercept")
            missing = [k for k, v in geo.items() if v in (None, "")]
            where = f"{path}" + (f" frame {i + 1}" if enhanced else "")
            if missing:
                raise ReadError(f"{where}: {series} has no geometry (missing {', '.join(missing)}); an image "
                                "without its plane cannot be placed: remove the series or fix its headers")
            try:
                plane = Plane.from_dicom([float(x) for x in geo["ImagePositionPatient"]],
                                         [float(x) for x in geo["ImageOrientationPatient"]],
                                         [float(x) for x in geo["PixelSpacing"]])
            except (GeometryError, ValueError, TypeError) as e:
                raise ReadError(f"{where}: {series} has invalid geometry: {e}") from e
            images.append(DicomImage(
                path=path,
                series_uid=series_uid,
                series_number=series_number,
                description=description,
                plane=plane,
                shape=(int(ds.Rows), int(ds.Columns)),
                trigger_time=trigger,
                instance_number=int(_number(ds, "InstanceNumber", 0) or 0),
                sop_uid=sop_uid if not enhanced else f"{sop_uid}#{i + 1}",
                frame_of_reference=_text(ds, "FrameOfReferenceUID"),
                manufacturer=_text(ds, "Manufacturer"),
                image_type=image_type,
                transfer_syntax=ts,
                frame_in_file=i if enhanced else None,
                n_frames_in_file=n_frames,
                slope=1.0 if slope is None else slope,
                intercept=0.0 if intercept is None else intercept,
            ))
        return images, None

