"""open_nifti: the one-call gzip path gives nibabel's pixels, header and affine, and fails as nibabel does."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from cardiossl.datasets.readers.base import ReadError
from cardiossl.datasets.readers.nifti_io import load_nifti, open_nifti


def _affine() -> np.ndarray:
    a = np.diag([1.4, 1.6, 8.0, 1.0])
    a[:3, 3] = [-120.0, 80.5, 33.0]
    a[0, 1] = 0.2
    return a


@pytest.mark.parametrize("klass, dtype, slope, name", [
    (nib.Nifti1Image, np.int16, None, "a.nii.gz"),
    (nib.Nifti1Image, np.int16, (0.5, -3.0), "scaled.nii.gz"),
    (nib.Nifti1Image, np.float32, None, "f.nii.gz"),
    (nib.Nifti2Image, np.uint8, None, "two.nii.gz"),
    (nib.Nifti1Image, np.float64, None, "plain.nii"),
])
def test_same_pixels_header_and_affine_as_nibabel(tmp_path, klass, dtype, slope, name):
    rng = np.random.default_rng(0)
    data = (rng.normal(size=(21, 17, 5, 3)) * 300).astype(dtype)
    img = klass(data, _affine())
    img.header.set_qform(_affine(), code=1)
    if slope is not None:
        img.header.set_slope_inter(*slope)
    path = tmp_path / name
    nib.save(img, str(path))
    ref, got = nib.load(str(path)), open_nifti(path)
    assert type(got) is type(ref)
    a, b = np.asanyarray(ref.dataobj), np.asanyarray(got.dataobj)
    assert a.dtype == b.dtype and np.array_equal(a, b)
    np.testing.assert_array_equal(got.affine, ref.affine)
    assert got.header["qform_code"] == ref.header["qform_code"]
    assert got.header.get_slope_inter() == ref.header.get_slope_inter()


def test_gzip_with_several_members_is_read_whole(tmp_path):
    data = np.arange(8 * 9 * 4, dtype=np.int16).reshape(8, 9, 4)
    img = nib.Nifti1Image(data, _affine())
    img.header.set_qform(_affine(), code=1)
    raw = img.to_bytes()
    path = tmp_path / "multi.nii.gz"
    path.write_bytes(gzip.compress(raw[:1000]) + gzip.compress(raw[1000:]))
    assert np.array_equal(np.asanyarray(open_nifti(path).dataobj), data)


def test_truncated_and_corrupt_files_are_read_errors_naming_the_file(tmp_path):
    data = np.ones((16, 16, 3), np.int16)
    img = nib.Nifti1Image(data, _affine())
    img.header.set_qform(_affine(), code=1)
    good = tmp_path / "good.nii.gz"
    nib.save(img, str(good))
    raw = good.read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(raw[: len(raw) // 2])
    bad = bytearray(raw)
    bad[len(raw) // 2] ^= 0xFF
    (tmp_path / "flip.nii.gz").write_bytes(bytes(bad))
    for name in ("cut.nii.gz", "flip.nii.gz"):
        with pytest.raises(ReadError, match=rf"{name}: cannot read NIfTI .*corrupt or truncated"):
            load_nifti(tmp_path / name)
