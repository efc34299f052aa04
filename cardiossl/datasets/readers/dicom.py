"""DICOM exam folders: one folder per subject, any nesting, views decided from plane geometry.

Reading an exam
---------------
Every file below the subject folder that carries the ``DICM`` preamble (or ends in ``.dcm``/``.ima``)
is read. Images are grouped into series by SeriesInstanceUID, and a series is split into *plane
groups*, one per distinct plane (orientation and position), so a series that mixes planes (a whole
SA stack in one series, a localizer with three orthogonal planes) still yields one group per slice.
The images of one group are its cine frames, ordered by TriggerTime, then InstanceNumber. Single-phase
groups in an exam that has cine groups are localizers/scouts and are skipped with a note, as are
non-image objects (DICOMDIR, structured reports, secondary captures). A group that is neither parallel
to the SA stack nor roughly perpendicular to it is skipped with a note. Planes come straight from the
headers (``Plane.from_dicom``: PixelSpacing is (row spacing, column spacing)); pixels are the stored
values through RescaleSlope/RescaleIntercept, as float32.

Deciding the views (geometry first; SeriesDescription only as a hint)
---------------------------------------------------------------------
1. **SA stack**: plane groups are clustered by orientation (normals within 10 degrees); the SA stack is
   the cluster with the most spatially distinct positions along its normal (ties: the one whose
   descriptions say SA, then the one with more planes perpendicular to it). Two groups at the same
   position keep the later series (a re-acquisition) and note the other.
2. **Long-axis candidates**: groups whose normal is within 40 degrees of perpendicular to the SA normal.
3. **LV long axis**: every pair of candidates at least 20 degrees apart defines a line (their
   intersection); a candidate agrees with that line when the line, where it meets the first and the
   last SA slice, lies within 15 mm of the candidate's plane. The line with most agreeing candidates
   wins (fewest millimetres of disagreement next). The agreeing candidates are the *LV planes*
   (2ch/3ch/4ch all contain the LV long axis); the LV centre in each SA slice is the least-squares
   crossing of their traces there (``meta["lv_centres"]``).
4. **Which LV plane is which**, from the traces' line angles in the middle SA slice, measured in
   anatomical in-plane directions: 0 = lateral, 90 = *anterior* (patient -y in LPS projected into the
   SA plane), 180 = *septal* (patient right, -x, projected and made orthogonal to anterior). The
   standard planes cut an SA slice about 60 degrees apart, in a fixed cyclic order: the **4ch** runs
   through the RV (near the septal direction), the **3ch** (through the LV outflow tract and aortic
   root, anterior to the mitral valve) is the 4ch turned 60 degrees towards anterior, the **2ch** the
   4ch turned 60 degrees the other way (this holds for the AHA segment model, Cerqueira et al.,
   Circulation 2002, where the planes cut segments 3/6, 2/5 and 1/4, and for bivme-patient1). The
   reader fits this pattern (``assign_lv_views``): it picks the 4ch angle phi and gives each LV plane
   a view or none so as to minimise the angular misfit plus the distance of phi from the septal
   direction, with 45 degrees for a plane left without a view and 15 degrees off for every view the
   description names (``4CH``, ``2CH``, ``3CH``/``LVOT``), so descriptions decide only near-ties.
   Because the pattern is fitted as a whole, any two or three LV planes resolve while the 4ch trace
   lies within about 25 degrees of the septal direction (bivme-patient1: 18); at 30 degrees (the
   AHA idealisation, 4ch through the inferoseptum) 4ch and 3ch tie and descriptions decide; beyond
   that the views rotate by one place. A further LV plane within 10 degrees of an assigned one repeats that view
   (``slice_index`` 1, 2, ...); any other is ``la``.
5. **Other long-axis planes** (not containing the LV axis): ``rvot`` when the trace passes on the
   septal (RV) side of the LV centre and the description does not name an LV view; ``la`` otherwise
   (e.g. a plane described as 2CH that misses the LV axis by centimetres is an RV two-chamber view,
   not a 2ch). With fewer than two long-axis candidates there is no LV axis, and a candidate takes
   its view from its description, or ``la``.
6. **Base to apex**: the SA slices are ordered along the stack normal so that slice 0 is basal, using
   the anatomical direction of the LV long axis, which points from base to apex towards the
   patient's left, anterior and inferior, i.e. (+1, -1, -1)/sqrt(3) in LPS (the usual orientation of
   the heart in the chest; the LA planes fix the axis but not its sign). ``stack_position`` is the
   distance from the basal slice over the stack length (0 base .. 1 apex; 0.5 for a single slice).

Limits: the septal/anterior directions and the apex direction are anatomical priors in patient
coordinates; they fail for dextrocardia or congenital hearts with unusual orientation (the apex
direction is flagged ``uncertain`` in ``meta["sa_order"]`` when the stack normal is more than 72
degrees away from it) and become less reliable when the heart is rotated by tens of degrees about its
long axis, where a view-naming description decides only near-ties. Exams whose series have different
FrameOfReferenceUIDs are read as one coordinate system (with a warning), since anonymisers often
rewrite the UID per image. Enhanced (multi-frame) MR objects are read frame by frame from their
functional groups (plane position/orientation, pixel measures, trigger delay, rescale).

End-diastole is taken to be the first frame of each cine (smallest TriggerTime, the R wave) and is
marked ``phase="ed"``; end-systole is left unknown (``meta["es_frame"] = None``).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..geometry import GeometryError, Plane, plane_intersection
from ..records import SliceRecord, SubjectRecord
from . import READERS
from .base import LayoutReader, ReadError, SubjectSource

log = logging.getLogger(__name__)

DICOM_SUFFIXES = (".dcm", ".ima", ".dicom")
PARALLEL_DEG = 10.0  # normals closer than this: the same orientation (one stack)
LA_MAX_TILT_DEG = 40.0  # a long-axis plane's normal is within this of perpendicular to the SA normal
AXIS_PAIR_MIN_DEG = 20.0  # two planes closer than this do not define a usable axis line
AXIS_TOL_MM = 15.0  # a plane contains the LV axis when the axis lies within this of it
HINT_BONUS_DEG = 15.0  # what a view-naming SeriesDescription is worth in the angle costs
UNASSIGNED_COST_DEG = 45.0  # an LV plane left without a standard view costs this much misfit
MAX_LV_PLANES = 5  # the LV planes nearest the axis that take part in the view fit
REPEAT_DEG = 10.0  # an extra LV plane this close to an assigned one repeats that view
SAME_POSITION_MM = 1.0  # two SA planes closer than this along the normal share a position
APEX_DIRECTION_LPS = np.array([1.0, -1.0, -1.0]) / np.sqrt(3.0)  # left, anterior, inferior
SEPTAL_LPS = np.array([-1.0, 0.0, 0.0])  # patient right
ANTERIOR_LPS = np.array([0.0, -1.0, 0.0])

_HINTS = (
    ("rvot", re.compile(r"rvot|rv[ _-]?outflow", re.I)),
    ("3ch", re.compile(r"3[ _-]?ch|three[ _-]?ch|lvot|lv[ _-]?outflow|3[ _-]?cv", re.I)),
    ("4ch", re.compile(r"4[ _-]?ch|four[ _-]?ch|\bhla\b|horizontal[ _-]?long|4[ _-]?cv", re.I)),
    ("2ch", re.compile(r"2[ _-]?ch|two[ _-]?ch|\bvla\b|vertical[ _-]?long|2[ _-]?cv", re.I)),
    ("sa", re.compile(r"\bsax?\b|sax|short[ _-]?ax|(^|[ _-])sa($|[ _-])", re.I)),
)
_LOCALIZER = re.compile(r"locali[sz]er|scout|survey|tri[ _-]?pilot|\bloc\b|localiser", re.I)

# pip packages providing pydicom pixel decoders, per transfer syntax family
_PLUGIN_ADVICE = {
    "jpeg2000": "pip install pylibjpeg pylibjpeg-openjpeg  (or: pip install python-gdcm, or Pillow with OpenJPEG)",
    "jpegls": "pip install pylibjpeg pylibjpeg-libjpeg  (or: pip install pyjpegls, or: pip install python-gdcm)",
    "jpeg": "pip install pylibjpeg pylibjpeg-libjpeg  (or: pip install python-gdcm, or Pillow)",
    "rle": "pip install pylibjpeg pylibjpeg-rle",
}


def description_hint(text: str) -> str | None:
    """The view a SeriesDescription/ProtocolName names ("sa", "2ch", "3ch", "4ch", "rvot"), if any."""
    for view, pattern in _HINTS:
        if pattern.search(text or ""):
            return view
    return None


# ------------------------------------------------------------------------------------------------
# headers
# ------------------------------------------------------------------------------------------------
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


@dataclass(eq=False)
class PlaneGroup:
    """The images of one series that share one plane: the cine frames of one slice."""

    series_uid: str
    series_number: int
    description: str
    plane: Plane
    shape: tuple[int, int]
    images: list[DicomImage] = field(default_factory=list)
    view: str = ""
    slice_index: int = 0
    stack_position: float = float("nan")
    reason: str = ""

    @property
    def name(self) -> str:
        return f"series {self.series_number} {self.description!r}"

    @property
    def hint(self) -> str | None:
        return description_hint(self.description)

    @property
    def n_frames(self) -> int:
        return len(self.images)


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


# ------------------------------------------------------------------------------------------------
# pixels
# ------------------------------------------------------------------------------------------------
def _plugin_family(ts_uid: str) -> str | None:
    if ts_uid.startswith("1.2.840.10008.1.2.4.9") or ts_uid.startswith("1.2.840.10008.1.2.4.20"):
        return "jpeg2000"
    if ts_uid in ("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"):
        return "jpegls"
    if ts_uid.startswith("1.2.840.10008.1.2.4."):
        return "jpeg"
    if ts_uid == "1.2.840.10008.1.2.5":
        return "rle"
    return None


def missing_decoder(ts_uid: str) -> str | None:
    """None when pydicom can decode ``ts_uid`` here; else what to install, for the error message."""
    from pydicom.uid import UID

    uid = UID(ts_uid)
    if not uid.is_compressed:
        return None
    try:
        from pydicom.pixels import get_decoder

        decoder = get_decoder(uid)
    except (NotImplementedError, ValueError, ImportError):
        return f"pydicom has no decoder for {uid.name} ({uid})"
    if decoder.is_available:
        return None
    family = _plugin_family(str(uid))
    advice = _PLUGIN_ADVICE.get(family, "install a pydicom pixel-data plugin (pylibjpeg or python-gdcm)")
    return (f"no pydicom pixel-data plugin for {uid.name} ({uid}) is installed "
            f"(pydicom needs one of: {'; '.join(decoder.missing_dependencies)}); {advice}")


def _decode(path: Path) -> tuple[np.ndarray, bool]:
    """All stored frames of a file (frames first for multi-frame objects) and whether MONOCHROME1."""
    ds = _dcmread(path, header_only=False)
    if "PixelData" not in ds:
        raise ReadError(f"{path}: no pixel data")
    try:
        with quiet_pydicom():
            arr = ds.pixel_array
    except Exception as e:  # pydicom raises many types for damaged or truncated pixel data
        raise ReadError(f"{path}: cannot decode pixel data ({type(e).__name__}: {e}); "
                        "the file is damaged or truncated") from e
    return arr, _text(ds, "PhotometricInterpretation") == "MONOCHROME1"


def read_pixels(image: DicomImage, cache: dict | None = None) -> np.ndarray:
    """The stored image through RescaleSlope/Intercept as float32 (rows, cols); ReadError when it can't.

    ``cache`` (path -> decoded file) lets the frames of one multi-frame object share one decode.
    """
    problem = missing_decoder(image.transfer_syntax)
    if problem:
        raise ReadError(f"{image.path}: {problem}")
    if cache is not None and image.path in cache:
        arr, mono1 = cache[image.path]
    else:
        arr, mono1 = _decode(image.path)
        if cache is not None and image.n_frames_in_file > 1:
            cache.clear()  # keep at most one multi-frame object decoded
            cache[image.path] = (arr, mono1)
    if image.frame_in_file is not None:
        expected = (image.n_frames_in_file, *image.shape) if image.n_frames_in_file > 1 else image.shape
        if arr.shape != expected:
            raise ReadError(f"{image.path}: pixel data shape {arr.shape} differs from the header's {expected}")
        arr = arr[image.frame_in_file] if image.n_frames_in_file > 1 else arr
    elif arr.shape != image.shape:
        raise ReadError(f"{image.path}: pixel data shape {arr.shape} differs from Rows x Columns "
                        f"{image.shape} (colour images are not cardiac MR magnitude)")
    out = arr.astype(np.float64) * image.slope + image.intercept
    if mono1:
        out = out.max() + out.min() - out  # displayed inverted: store as MONOCHROME2
    out = out.astype(np.float32)
    if not np.all(np.isfinite(out)):
        raise ReadError(f"{image.path}: pixel data has NaN or Inf values")
    return out


# ------------------------------------------------------------------------------------------------
# grouping
# ------------------------------------------------------------------------------------------------
def _same_plane(a: Plane, b: Plane, shape_a, shape_b) -> bool:
    return (
        shape_a == shape_b
        and np.allclose(a.spacing, b.spacing, atol=1e-4)
        and np.allclose(a.row_dir, b.row_dir, atol=1e-3)
        and np.allclose(a.col_dir, b.col_dir, atol=1e-3)
        and float(np.linalg.norm(a.origin - b.origin)) < 0.05
    )


def _frame_key(im: DicomImage):
    t = im.trigger_time
    return (0 if t is not None else 1, t if t is not None else 0.0, im.instance_number, str(im.path),
            im.frame_in_file or 0)


def group_planes(images: list[DicomImage]) -> list[PlaneGroup]:
    """Group by SeriesInstanceUID, then split each series by plane; frames sorted in cine order."""
    by_series: dict[str, list[DicomImage]] = {}
    for im in images:
        by_series.setdefault(im.series_uid, []).append(im)
    groups: list[PlaneGroup] = []
    for uid, ims in by_series.items():
        series_groups: list[PlaneGroup] = []
        seen_sop: set[str] = set()
        for im in ims:
            if im.sop_uid in seen_sop:  # the same instance stored twice
                continue
            seen_sop.add(im.sop_uid)
            for g in series_groups:
                if _same_plane(g.plane, im.plane, g.shape, im.shape):
                    g.images.append(im)
                    break
            else:
                series_groups.append(PlaneGroup(uid, im.series_number, im.description, im.plane, im.shape, [im]))
        for g in series_groups:
            g.images.sort(key=_frame_key)
            g.plane = g.images[0].plane
        groups.extend(series_groups)
    groups.sort(key=lambda g: (g.series_number, g.series_uid, tuple(np.round(g.plane.origin, 3))))
    return groups


def _is_localizer(g: PlaneGroup, has_cine: bool) -> bool:
    if any(t.upper() == "LOCALIZER" for im in g.images for t in im.image_type):
        return True
    if _LOCALIZER.search(g.description or ""):
        return True
    return has_cine and g.n_frames < 2


# ------------------------------------------------------------------------------------------------
# geometry: views
# ------------------------------------------------------------------------------------------------
def _angle_between_lines(u: np.ndarray, v: np.ndarray) -> float:
    """Angle in degrees (0..90) between two undirected 3-D lines."""
    c = abs(float(u @ v)) / (np.linalg.norm(u) * np.linalg.norm(v))
    return float(np.degrees(np.arccos(min(1.0, c))))


def _orientation_clusters(groups: list[PlaneGroup]) -> list[list[PlaneGroup]]:
    clusters: list[list[PlaneGroup]] = []
    for g in groups:
        for c in clusters:
            if all(_angle_between_lines(g.plane.normal, h.plane.normal) <= PARALLEL_DEG for h in c):
                c.append(g)
                break
        else:
            clusters.append([g])
    return clusters


def _stack_normal(cluster: list[PlaneGroup]) -> np.ndarray:
    ref = cluster[0].plane.normal
    n = sum((g.plane.normal if g.plane.normal @ ref >= 0 else -g.plane.normal) for g in cluster)
    return n / np.linalg.norm(n)


def _distinct_positions(cluster: list[PlaneGroup], normal: np.ndarray) -> int:
    pos = sorted(float(g.plane.center(g.shape) @ normal) for g in cluster)
    return 1 + sum(1 for a, b in zip(pos, pos[1:]) if b - a > SAME_POSITION_MM)


def _in_plane_point(plane: Plane, others: list[Plane]) -> np.ndarray:
    """The point of ``plane`` closest (least squares) to all ``others``: where their traces cross."""
    a = np.array([[o.normal @ plane.row_dir, o.normal @ plane.col_dir] for o in others])
    b = np.array([o.normal @ (o.origin - plane.origin) for o in others])
    st, *_ = np.linalg.lstsq(a, b, rcond=None)
    return plane.origin + st[0] * plane.row_dir + st[1] * plane.col_dir


def _line_meets_plane(point, direction, plane: Plane) -> np.ndarray | None:
    den = float(direction @ plane.normal)
    if abs(den) < 1e-6:
        return None
    t = float((plane.origin - point) @ plane.normal) / den
    return point + t * direction


def _plane_distance(plane: Plane, point: np.ndarray) -> float:
    return abs(float((point - plane.origin) @ plane.normal))


def _in_plane_unit(v: np.ndarray, normal: np.ndarray) -> np.ndarray | None:
    w = v - (v @ normal) * normal
    n = np.linalg.norm(w)
    return None if n < 1e-6 else w / n


VIEW_OFFSETS_DEG = {"4ch": 0.0, "3ch": -60.0, "2ch": 60.0}
"""Trace directions of the LV views in an SA slice relative to the 4ch trace, in the frame of
``assign_lv_views`` (the three planes are ~60 degrees apart; the 3ch lies on the anterior side)."""


def _line_diff(a, b):
    """Unsigned difference of line angles in degrees (mod 180), 0..90; broadcasts."""
    d = np.abs(np.asarray(a, dtype=np.float64) - b) % 180.0
    return np.minimum(d, 180.0 - d)


def assign_lv_views(thetas: list[float], hints: list[str | None]) -> tuple[list[str | None], float]:
    """Views for LV long-axis planes from their trace angles in an SA slice; (views, 4ch angle).

    ``thetas``: line angles in degrees, 0 = lateral, 90 = anterior, 180 = septal (patient right).
    Fits the pattern 4ch at phi, 3ch at phi - 60, 2ch at phi + 60 over phi and over every way to
    give each plane a view or none (each view at most once), minimising the angular misfit, plus the
    distance of phi from the septal direction (the 4ch runs through the RV), plus 45 degrees for every
    plane left without a view, minus 15 degrees for every view its description names.
    """
    phis = np.arange(0.0, 180.0, 0.5)
    prior = _line_diff(phis, 180.0)
    best = (np.inf, [None] * len(thetas), 180.0)
    choices = [None, *VIEW_OFFSETS_DEG]
    for combo in itertools.product(choices, repeat=len(thetas)):
        used = [v for v in combo if v is not None]
        if len(used) != len(set(used)):
            continue
        cost = prior.copy()
        for th, hint, v in zip(thetas, hints, combo):
            if v is None:
                cost += UNASSIGNED_COST_DEG
            else:
                cost += _line_diff(th - VIEW_OFFSETS_DEG[v], phis) - (HINT_BONUS_DEG if hint == v else 0.0)
        i = int(np.argmin(cost))
        if cost[i] < best[0] - 1e-9:
            best = (float(cost[i]), list(combo), float(phis[i]))
    return best[1], best[2]


@dataclass
class ViewDecision:
    sa: list[PlaneGroup]
    assigned: list[PlaneGroup]  # every kept group, with .view/.slice_index/.stack_position/.reason set
    skipped: list[str]
    meta: dict


def decide_views(groups: list[PlaneGroup]) -> ViewDecision:
    """Classify plane groups into SA / 2ch / 3ch / 4ch / rvot / la (see the module docstring)."""
    skipped: list[str] = []
    meta: dict = {}
    if not groups:
        return ViewDecision([], [], skipped, meta)
    clusters = _orientation_clusters(groups)

    def score(c):
        n = _stack_normal(c)
        perp = sum(1 for g in groups if g not in c
                   and _angle_between_lines(g.plane.normal, n) >= 90 - LA_MAX_TILT_DEG)
        hinted = sum(1 for g in c if g.hint == "sa")
        return (_distinct_positions(c, n), hinted, perp)

    best = max(clusters, key=score)
    sa_cluster: list[PlaneGroup] = []
    if score(best)[0] >= 2:
        sa_cluster = best
    else:  # no stack: trust a description that says SA
        hinted = [c for c in clusters if any(g.hint == "sa" for g in c)]
        sa_cluster = hinted[0] if hinted else []

    # --- SA stack ----------------------------------------------------------------------------
    sa: list[PlaneGroup] = []
    normal = None
    if sa_cluster:
        normal = _stack_normal(sa_cluster)
        cos = float(normal @ APEX_DIRECTION_LPS)
        if abs(cos) < 0.3:
            off = np.degrees(np.arccos(abs(cos)))
            meta["sa_order"] = f"uncertain: stack normal is {off:.0f} deg from the apex direction"
        else:
            meta["sa_order"] = "base to apex along (+L, -P, -S) (anatomical apex direction)"
        if cos < 0:
            normal = -normal  # now points from base towards apex
        ordered = sorted(sa_cluster, key=lambda g: (float(g.plane.center(g.shape) @ normal), -g.series_number))
        for g in ordered:
            pos = float(g.plane.center(g.shape) @ normal)
            if sa and abs(pos - float(sa[-1].plane.center(sa[-1].shape) @ normal)) <= SAME_POSITION_MM:
                prev = sa[-1]
                later = (g.series_number, g.n_frames) > (prev.series_number, prev.n_frames)
                keep, drop = (g, prev) if later else (prev, g)
                sa[-1] = keep
                skipped.append(f"{drop.name}: SA slice at the same position as {keep.name}; kept the later series")
                continue
            sa.append(g)
        pos = np.array([float(g.plane.center(g.shape) @ normal) for g in sa])
        span = pos[-1] - pos[0]
        for i, g in enumerate(sa):
            g.view, g.slice_index = "sa", i
            g.stack_position = float((pos[i] - pos[0]) / span) if span > 0 else 0.5
            g.reason = "SA stack (largest set of parallel, distinct planes)"
        meta["sa_normal_base_to_apex"] = [float(x) for x in normal]

    # --- long-axis candidates ----------------------------------------------------------------
    candidates: list[PlaneGroup] = []
    for g in groups:
        if g in sa_cluster:
            continue
        if normal is None:
            candidates.append(g)
            continue
        tilt = 90.0 - _angle_between_lines(g.plane.normal, normal)
        if tilt <= LA_MAX_TILT_DEG:
            candidates.append(g)
        else:
            skipped.append(f"{g.name}: plane is {90 - tilt:.0f} deg from the SA stack normal "
                           "(neither SA nor long-axis); skipped")

    assigned: list[PlaneGroup] = []
    if candidates:
        if normal is None or len(candidates) < 2:
            for g in candidates:
                g.view = g.hint if g.hint in ("2ch", "3ch", "4ch", "rvot") else "la"
                g.reason = ("no SA stack and LV axis to check it against: view from the description"
                            if g.view != "la" else "long-axis plane of unknown type (no LV axis to compare with)")
            assigned = candidates
        else:
            assigned = _classify_long_axis(candidates, sa, normal, meta)
    # unique slice_index per view for the non-SA views
    counters: dict[str, int] = {}
    for g in sorted(assigned, key=lambda g: (g.view, g.slice_index, g.series_number)):
        g.slice_index = counters.get(g.view, 0)
        counters[g.view] = g.slice_index + 1
    assigned.sort(key=lambda g: (g.series_number, g.series_uid, g.view, g.slice_index))
    return ViewDecision(sa, sa + assigned, skipped, meta)


def _classify_long_axis(cands: list[PlaneGroup], sa: list[PlaneGroup], normal: np.ndarray, meta: dict):
    ends = [sa[0].plane, sa[-1].plane]
    best = None
    for a, b in itertools.combinations(cands, 2):
        if _angle_between_lines(a.plane.normal, b.plane.normal) < AXIS_PAIR_MIN_DEG:
            continue
        line = plane_intersection(a.plane, b.plane)
        if line is None or _angle_between_lines(line[1], normal) > 45.0:
            continue
        pts = [_line_meets_plane(line[0], line[1], e) for e in ends]
        if any(p is None for p in pts):
            continue
        mid = sa[len(sa) // 2]
        r, c, _ = mid.plane.world_to_pixel(_line_meets_plane(line[0], line[1], mid.plane))
        if not (-0.5 <= r <= mid.shape[0] - 0.5 and -0.5 <= c <= mid.shape[1] - 0.5):
            continue  # the axis must pass through the SA field of view
        dist = {id(g): max(_plane_distance(g.plane, p) for p in pts) for g in cands}
        inliers = [g for g in cands if dist[id(g)] <= AXIS_TOL_MM]
        rvot_penalty = sum(0.5 for g in (a, b) if g.hint == "rvot")
        key = (len(inliers) - rvot_penalty, -sum(dist[id(g)] for g in inliers))
        if best is None or key > best[0]:
            best = (key, inliers, dist)
    if best is None:
        for g in cands:
            g.view = g.hint if g.hint in ("2ch", "3ch", "4ch", "rvot") else "la"
            g.reason = "long-axis planes do not meet in a common line through the SA stack: view from the description"
        return cands
    _, lv, dist = best
    centres = [_in_plane_point(s.plane, [g.plane for g in lv]) for s in sa]
    meta["lv_centres"] = [[float(x) for x in c] for c in centres]
    for g in cands:
        g.reason = f"{dist[id(g)]:.1f} mm from the LV long axis"

    mid = sa[len(sa) // 2].plane
    centre = centres[len(sa) // 2]
    ant = _in_plane_unit(ANTERIOR_LPS, mid.normal)
    sep = _in_plane_unit(SEPTAL_LPS, mid.normal)
    if ant is None or sep is None:
        ant = sep = None
    else:
        sep = _in_plane_unit(sep - (sep @ ant) * ant, mid.normal)

    traces = {}
    for g in cands:
        line = plane_intersection(mid, g.plane)
        traces[id(g)] = line
    out: list[PlaneGroup] = []

    # LV planes: fit the 4ch/3ch/2ch pattern (see the module docstring, step 4)
    if sep is None:
        for g in lv:
            g.view = g.hint if g.hint in ("2ch", "3ch", "4ch") else "la"
            g.reason += "; SA plane orientation gives no septal direction: view from the description"
        out.extend(lv)
    else:
        lat = -sep
        lv_sorted = sorted(lv, key=lambda g: dist[id(g)])
        considered = lv_sorted[:MAX_LV_PLANES]
        thetas = [float(np.degrees(np.arctan2(traces[id(g)][1] @ ant, traces[id(g)][1] @ lat))) % 180.0
                  for g in considered]
        views, phi = assign_lv_views(thetas, [g.hint for g in considered])
        meta["lv_view_pattern_4ch_deg"] = phi
        assigned_traces = {}
        for g, th, v in zip(considered, thetas, views):
            g.reason += f"; trace at {th:.0f} deg (lateral 0, anterior 90, septal 180)"
            if v is not None:
                g.view, g.slice_index = v, 0
                g.reason += f", fits the {v} direction {(phi + VIEW_OFFSETS_DEG[v]) % 180:.0f} deg"
                assigned_traces[v] = traces[id(g)][1]
        for g in lv_sorted:
            if g.view:
                out.append(g)
                continue
            near = [(_angle_between_lines(traces[id(g)][1], t), v) for v, t in assigned_traces.items()]
            near = [x for x in near if x[0] <= REPEAT_DEG]
            if near:
                g.view, g.slice_index = min(near)[1], 1
                g.reason += f"; repeats the {g.view} plane"
            else:
                g.view = "la"
                g.reason += "; contains the LV axis but fits no free standard view"
            out.append(g)

    # planes that miss the LV axis
    for g in cands:
        if g in lv:
            continue
        p, d = traces[id(g)]
        foot = p + ((centre - p) @ d) * d
        side = float((foot - centre) @ sep) if sep is not None else 0.0
        if g.hint in ("2ch", "3ch", "4ch"):
            g.view = "la"
            g.reason += f"; described as {g.hint} but misses the LV long axis: an unknown long-axis view"
        elif side > 0 or (sep is None and g.hint == "rvot"):
            g.view = "rvot"
            off = np.linalg.norm(foot - centre)
            g.reason += f"; misses the LV axis and passes {off:.0f} mm on the septal (RV) side"
        else:
            g.view = "la"
            g.reason += "; misses the LV long axis on the lateral side"
        out.append(g)
    return out


# ------------------------------------------------------------------------------------------------
# exam -> record
# ------------------------------------------------------------------------------------------------
def scan_exam(folder: Path) -> tuple[list[DicomImage], list[str]]:
    """Headers of every image below ``folder`` and notes on what was skipped."""
    images: list[DicomImage] = []
    notes: list[str] = []
    files = dicom_files(folder)
    if not files:
        raise ReadError(f"{folder}: no DICOM files found below this folder")
    for p in files:
        ims, note = read_header(p)
        images.extend(ims)
        if note:
            notes.append(note)
    if not images:
        raise ReadError(f"{folder}: no DICOM images with geometry found ({len(files)} DICOM objects, none an image)")
    return images, notes


def build_exam(subject_id: str, images: list[DicomImage], notes: list[str] | None = None,
               source: str = "") -> tuple[SubjectRecord, list[DicomImage]]:
    """Group, classify, read pixels: the record, and the source image of each of its slices."""
    notes = list(notes or [])
    warns: list[str] = []
    groups = group_planes(images)
    has_cine = any(g.n_frames >= 2 for g in groups)
    kept = []
    for g in groups:
        if _is_localizer(g, has_cine):
            notes.append(f"{g.name}: localizer/scout or single-phase image ({g.n_frames} image) skipped"
                         + (" (the exam has cine series)" if has_cine and g.n_frames < 2 else ""))
        else:
            kept.append(g)
    if not kept:
        raise ReadError(f"subject {subject_id}: no usable image series (only localizers or non-images)")
    fors = sorted({im.frame_of_reference for g in kept for im in g.images})
    if "" in fors:
        warns.append("some images have a blank FrameOfReferenceUID: planes are assumed to share the "
                     "exam's patient coordinate system")
    if len([f for f in fors if f]) > 1:
        warns.append(f"{len([f for f in fors if f])} different FrameOfReferenceUIDs: planes are read as "
                     "one patient coordinate system (anonymisers often rewrite this UID)")
    manufacturers = sorted({im.manufacturer for g in kept for im in g.images})
    if "" in manufacturers:
        warns.append("some images have a blank Manufacturer")
    decision = decide_views(kept)
    notes.extend(decision.skipped)
    for w in warns:
        log.warning("subject %s: %s", subject_id, w)

    slices: list[SliceRecord] = []
    sources: list[DicomImage] = []
    cache: dict = {}
    series_meta = []
    for g in decision.assigned:
        cine = g.n_frames >= 2 and all(im.trigger_time is not None for im in g.images)
        for frame, im in enumerate(g.images):
            slices.append(SliceRecord(
                view=g.view, slice_index=g.slice_index, frame=frame, image=read_pixels(im, cache),
                plane=im.plane, label=None, phase="ed" if (cine and frame == 0) else "",
                stack_position=g.stack_position if g.view == "sa" else float("nan"),
            ))
            sources.append(im)
        series_meta.append({
            "series_number": g.series_number, "description": g.description, "series_uid": g.series_uid,
            "view": g.view, "slice_index": g.slice_index, "frames": g.n_frames, "reason": g.reason,
            "plane": g.plane.to_dict(),
        })
    if not slices:
        raise ReadError(f"subject {subject_id}: no slices left after skipping: {'; '.join(notes)}")
    meta = {
        "layout": "dicom", "source": source, "series": series_meta, "skipped": notes, "warnings": warns,
        "manufacturer": next((m for m in manufacturers if m), ""), "ed_frame": 0, "es_frame": None,
        **decision.meta,
    }
    return SubjectRecord(subject_id, slices, meta), sources


def read_exam(subject_id: str, folder: Path) -> SubjectRecord:
    """Read one DICOM exam folder into a validated SubjectRecord (ReadError for bad input)."""
    images, notes = scan_exam(Path(folder))
    record, _ = build_exam(subject_id, images, notes, source=str(folder))
    return record


def sanitize_subject_id(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip("._-")
    s = re.sub(r"\.{2,}", ".", s)[:128]
    return s or "subject"


def _study_uid(folder: Path) -> str | None:
    for p in itertools.islice(iter_dicom_files(folder), 1):
        try:
            with quiet_pydicom():
                import pydicom

                return str(pydicom.dcmread(p, stop_before_pixels=True, specific_tags=["StudyInstanceUID"],
                                           force=True).get("StudyInstanceUID", "")) or None
        except Exception:  # an unreadable file is reported when the subject is read
            return None
    return None


def _has_dicom(folder: Path, limit: int = 200) -> bool:
    seen = 0
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for fn in filenames:
            seen += 1
            if not fn.startswith(".") and is_dicom_file(Path(dirpath) / fn):
                return True
            if seen >= limit:
                return False
    return False


@READERS.register("dicom")
class DicomReader(LayoutReader):
    """One folder per subject holding a cardiac MR exam as DICOM files (any nesting below it).

    A root whose own files are DICOM is one subject; otherwise each sub-folder holding DICOM files is
    a subject, unless all of them belong to one study (one StudyInstanceUID), in which case the root
    is a single exam whose series happen to sit in sub-folders. Folder names become subject ids
    (characters outside letters, digits, '.', '_', '-' replaced by '_').
    """

    name = "dicom"

    @classmethod
    def detect(cls, root: Path) -> bool:
        root = Path(root)
        if not root.is_dir():
            return False
        return _has_dicom(root)

    def discover(self, root: Path) -> list[SubjectSource]:
        root = Path(root)
        if not root.is_dir():
            raise ReadError(f"{root}: not a folder")
        if any(p.is_file() and is_dicom_file(p) for p in root.iterdir() if not p.name.startswith(".")):
            return [SubjectSource(sanitize_subject_id(root.name), root, (root,))]
        subs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and _has_dicom(p))
        if len(subs) >= 2:
            studies = {_study_uid(p) for p in subs}
            if len(studies) == 1 and None not in studies:
                return [SubjectSource(sanitize_subject_id(root.name), root, (root,))]
        out = [SubjectSource(sanitize_subject_id(p.name), root, (p,)) for p in subs]
        return sorted(out, key=lambda s: s.subject_id)

    def read(self, source: SubjectSource) -> SubjectRecord:
        folder = Path(source.paths[0]) if source.paths else Path(source.root) / source.subject_id
        return read_exam(source.subject_id, folder).validate()
