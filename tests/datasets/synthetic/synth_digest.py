"""A short content hash of synthetic subjects (pixels, labels, meta), to pin a version array for array."""

from __future__ import annotations

import hashlib
import json

import numpy as np


def digest(*records) -> str:
    h = hashlib.sha256()
    for record in records:
        for s in record.slices:
            h.update(np.ascontiguousarray(s.image).tobytes())
            if s.label is not None:
                h.update(np.ascontiguousarray(s.label).tobytes())
        h.update(json.dumps(record.meta, sort_keys=True).encode())
    return h.hexdigest()[:16]
