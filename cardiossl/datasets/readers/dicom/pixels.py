"""DICOM pixels: decode an image's stored values through RescaleSlope/Intercept, or say which
pydicom plugin to install for its transfer syntax."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..base import ReadError
from .headers import DicomImage, _dcmread, _text, quiet_pydicom

# pip packages providing pydicom pixel decoders, per transfer syntax family
_PLUGIN_ADVICE = {
    "jpeg2000": "pip install pylibjpeg pylibjpeg-openjpeg  (or: pip install python-gdcm, or Pillow with OpenJPEG)",
    "jpegls": "pip install pylibjpeg pylibjpeg-libjpeg  (or: pip install pyjpegls, or: pip install python-gdcm)",
    "jpeg": "pip install pylibjpeg pylibjpeg-libjpeg  (or: pip install python-gdcm, or Pillow)",
    "rle": "pip install pylibjpeg pylibjpeg-rle",
}


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

