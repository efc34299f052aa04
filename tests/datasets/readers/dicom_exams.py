"""Hand-built DICOM files and a small cardiac exam with known planes, for the DICOM reader tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

# An oblique LV long axis pointing base -> apex towards the patient's left, front and feet (LPS).
AXIS = np.array([0.62, -0.55, -0.56])
AXIS = AXIS / np.linalg.norm(AXIS)
HEART = np.array([20.0, -10.0, 30.0])  # mid-ventricular point on the axis


def in_plane_basis(normal):
    """(lateral, anterior, septal) unit vectors perpendicular to ``normal`` (anatomical, LPS)."""
    ant = np.array([0.0, -1.0, 0.0]) - (np.array([0.0, -1.0, 0.0]) @ normal) * normal
    ant /= np.linalg.norm(ant)
    sep = np.array([-1.0, 0.0, 0.0]) - (np.array([-1.0, 0.0, 0.0]) @ normal) * normal
    sep -= (sep @ ant) * ant
    sep /= np.linalg.norm(sep)
    return -sep, ant, sep


def trace_dir(angle_deg):
    """Unit in-SA-plane direction at ``angle_deg`` (0 lateral, 90 anterior, 180 septal)."""
    lat, ant, _ = in_plane_basis(AXIS)
    a = np.deg2rad(angle_deg)
    return np.cos(a) * lat + np.sin(a) * ant


def centred_origin(centre, row_dir, col_dir, spacing, shape):
    """IPP that puts the image centre at ``centre`` (spacing = (row spacing, col spacing))."""
    return (np.asarray(centre) - (shape[1] - 1) / 2 * spacing[1] * np.asarray(row_dir)
            - (shape[0] - 1) / 2 * spacing[0] * np.asarray(col_dir))


def write_image(path: Path, *, ipp, iop, spacing, pixels, series_uid, series_number=1, description="cine",
                trigger_time=0.0, instance_number=1, frame_of_reference="1.2.826.0.1.3680043.8.498.1",
                manufacturer="ACME", study_uid="1.2.826.0.1.3680043.8.498.2", image_type=("ORIGINAL", "PRIMARY"),
                slope=None, intercept=None, transfer_syntax=ExplicitVRLittleEndian, pixel_bytes=None,
                drop=()):
    """Write one single-frame MR image; ``drop`` names attributes to leave out."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = description
    ds.InstanceNumber = instance_number
    ds.TriggerTime = f"{trigger_time:.2f}"
    ds.FrameOfReferenceUID = frame_of_reference
    ds.Manufacturer = manufacturer
    ds.ImageType = list(image_type)
    ds.ImagePositionPatient = [f"{x:.6f}" for x in ipp]
    ds.ImageOrientationPatient = [f"{x:.8f}" for x in iop]
    ds.PixelSpacing = [f"{x:.6f}" for x in spacing]
    ds.SliceThickness = "6"
    pixels = np.asarray(pixels, dtype=np.uint16)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = f"{slope}", f"{intercept}"
    ds.PixelData = pixels.tobytes() if pixel_bytes is None else pixel_bytes
    for key in drop:
        if key in ds:
            delattr(ds, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def read_back(path):
    """(IPP, IOP, PixelSpacing) as float lists, straight from a file's header."""
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return ([float(x) for x in ds.ImagePositionPatient], [float(x) for x in ds.ImageOrientationPatient],
            [float(x) for x in ds.PixelSpacing])


def pattern(shape, seed):
    return np.random.default_rng(seed).integers(0, 4000, size=shape, dtype=np.uint16)


SA_SHAPE = (40, 48)
SA_SPACING = (1.5, 1.25)  # non-square: rows 1.5 mm apart, columns 1.25 mm
LA_SHAPE = (48, 40)
LA_SPACING = (1.4, 1.2)
LA_ANGLES = {"4ch": 165.0, "3ch": 110.0, "2ch": 50.0}  # trace angles in the SA plane (see trace_dir)


def write_exam(folder: Path, *, n_slices=5, n_frames=3, slice_gap=10.0, descriptions=None, one_sa_series=False,
               rvot=True, localizer=True, flip_sa_normal=False, frame_of_reference="1.2.826.0.1.3680043.8.498.1",
               manufacturer="ACME", study_uid="1.2.826.0.1.3680043.8.498.2") -> dict:
    """An oblique SA stack (written apex-first, shuffled), 4ch/3ch/2ch through the LV axis, an RVOT plane
    on the septal side and a one-image localizer. Returns the truth: series number -> (view, index)."""
    descriptions = descriptions or {}
    truth: dict = {}
    lat, ant, sep = in_plane_basis(AXIS)
    normal = -AXIS if flip_sa_normal else AXIS
    row = lat
    col = np.cross(normal, row)  # row x col = normal
    sa_uids = [generate_uid() for _ in range(n_slices + 1)]
    order = list(range(n_slices))[::-1]
    order = order[1::2] + order[0::2]
    for k in order:  # k = 0 basal
        centre = HEART + (k - (n_slices - 1) / 2) * slice_gap * AXIS
        number = 1 if one_sa_series else 10 + k
        uid = sa_uids[-1] if one_sa_series else sa_uids[k]
        truth.setdefault(number, []).append(("sa", k))
        for f in range(n_frames):
            write_image(
                folder / f"sa{number}" / f"k{k}_f{f}.dcm",
                ipp=centred_origin(centre, row, col, SA_SPACING, SA_SHAPE), iop=[*row, *col], spacing=SA_SPACING,
                pixels=pattern(SA_SHAPE, 100 * k + f), series_uid=uid, series_number=number,
                description=descriptions.get("sa", "cine_sax"), trigger_time=40.0 * f,
                instance_number=n_frames - f,  # disagrees with TriggerTime on purpose
                frame_of_reference=frame_of_reference, manufacturer=manufacturer, study_uid=study_uid,
            )
    for i, (view, angle) in enumerate(LA_ANGLES.items()):
        t = trace_dir(angle)
        number = 20 + i
        truth[number] = [(view, 0)]
        uid = generate_uid()
        for f in range(n_frames):
            write_image(
                folder / f"la{number}" / f"f{f}.dcm",
                ipp=centred_origin(HEART, t, -AXIS, LA_SPACING, LA_SHAPE), iop=[*t, *(-AXIS)], spacing=LA_SPACING,
                pixels=pattern(LA_SHAPE, 1000 * number + f), series_uid=uid, series_number=number,
                description=descriptions.get(view, "cine"), trigger_time=40.0 * f, instance_number=f + 1,
                frame_of_reference=frame_of_reference, manufacturer=manufacturer, study_uid=study_uid,
            )
    if rvot:
        tilt = AXIS * np.cos(np.deg2rad(15)) + ant * np.sin(np.deg2rad(15))
        t = np.cross(tilt, sep)
        t /= np.linalg.norm(t)
        truth[30] = [("rvot", 0)]
        uid = generate_uid()
        for f in range(n_frames):
            write_image(
                folder / "rvot" / f"f{f}.dcm",
                ipp=centred_origin(HEART + 25.0 * sep, t, -tilt, LA_SPACING, LA_SHAPE), iop=[*t, *(-tilt)],
                spacing=LA_SPACING, pixels=pattern(LA_SHAPE, 3000 + f), series_uid=uid,
                series_number=30, description=descriptions.get("rvot", "cine"), trigger_time=40.0 * f,
                instance_number=f + 1, frame_of_reference=frame_of_reference, manufacturer=manufacturer,
                study_uid=study_uid,
            )
    if localizer:
        write_image(
            folder / "loc" / "1.dcm", ipp=[-100.0, -100.0, 0.0], iop=[1, 0, 0, 0, 1, 0], spacing=(2.0, 2.0),
            pixels=pattern((32, 32), 9), series_uid=generate_uid(), series_number=2, description="tri-pilot",
            frame_of_reference=frame_of_reference, manufacturer=manufacturer, study_uid=study_uid,
        )
    return truth


def write_enhanced(path: Path, frames, *, series_uid, series_number=50, description="cine sax enhanced",
                   slope=1.0, intercept=0.0, study_uid="1.2.826.0.1.3680043.8.498.2"):
    """One Enhanced MR multi-frame object; ``frames`` = [(ipp, iop, spacing, trigger_time, pixels)].
    Pixel spacing and rescale sit in the shared functional groups, the rest per frame."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    from pydicom.uid import EnhancedMRImageStorage

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = EnhancedMRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = EnhancedMRImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = description
    ds.InstanceNumber = 1
    ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.Manufacturer = "ACME"
    ds.NumberOfFrames = len(frames)
    measures = Dataset()
    measures.PixelSpacing = [f"{x:.6f}" for x in frames[0][2]]
    measures.SliceThickness = "6"
    transform = Dataset()
    transform.RescaleSlope, transform.RescaleIntercept, transform.RescaleType = f"{slope}", f"{intercept}", "US"
    shared = Dataset()
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PixelValueTransformationSequence = Sequence([transform])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per = []
    for ipp, iop, _, trigger, _ in frames:
        pos, ori, sync, item = Dataset(), Dataset(), Dataset(), Dataset()
        pos.ImagePositionPatient = [f"{x:.6f}" for x in ipp]
        ori.ImageOrientationPatient = [f"{x:.8f}" for x in iop]
        sync.NominalCardiacTriggerDelayTime = float(trigger)
        item.PlanePositionSequence = Sequence([pos])
        item.PlaneOrientationSequence = Sequence([ori])
        item.CardiacSynchronizationSequence = Sequence([sync])
        per.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per)
    stack = np.stack([np.asarray(f[4], dtype=np.uint16) for f in frames])
    ds.Rows, ds.Columns = stack.shape[1:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = stack.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path
