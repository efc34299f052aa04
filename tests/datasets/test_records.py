"""SubjectRecord.validate refuses non-finite pixels, whatever the one-pass check sees first."""

from __future__ import annotations

import numpy as np
import pytest

from cardiossl.datasets.geometry import Plane
from cardiossl.datasets.records import RecordError, SliceRecord, SubjectRecord, _all_finite


@pytest.mark.parametrize("values, finite", [
    ([1.0, 2.0], True),
    ([1.0, np.nan], False),
    ([np.inf, 1.0], False),
    ([-np.inf, np.inf], False),  # the sum is NaN
    ([3e38, 3e38, -1.0], True),  # finite pixels whose float32 sum overflows: checked pixel by pixel
    ([np.float32(3e38), np.inf], False),
])
def test_all_finite_equals_numpy(values, finite):
    a = np.zeros((9, 9), np.float32)
    a.flat[: len(values)] = values
    assert _all_finite(a) is finite is bool(np.all(np.isfinite(a)))


def test_integer_images_are_finite_by_type():
    assert _all_finite(np.full((8, 8), 32767, np.int16))


def test_validate_names_the_slice_with_a_nan():
    img = np.ones((10, 10), np.float32)
    img[3, 4] = np.nan
    plane = Plane(np.zeros(3), [1.0, 0, 0], [0, 1.0, 0], (1.0, 1.0))
    rec = SubjectRecord("s1", [SliceRecord("sa", 0, 0, np.ones((10, 10), np.float32), plane),
                               SliceRecord("sa", 1, 0, img, plane)])
    with pytest.raises(RecordError, match="subject s1, view sa, slice 1, frame 0: image has NaN or Inf"):
        rec.validate()
