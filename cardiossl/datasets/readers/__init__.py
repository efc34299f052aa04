"""Cohort layouts on disk, each a registered LayoutReader (third-party: entry-point group ``cardiossl.readers``).

Imports only the rest of ``cardiossl.datasets`` and ``cardiossl.registry``.
"""

from cardiossl.registry import Registry
from .base import LayoutReader, ReadError, SubjectSource

READERS: Registry[type[LayoutReader]] = Registry("reader", entry_point_group="cardiossl.readers")

__all__ = ["READERS", "LayoutReader", "ReadError", "SubjectSource"]

from . import acdc  # noqa: E402,F401  (registers "acdc")
from . import mnms2  # noqa: E402,F401  (registers "mnms2")
from . import dicom  # noqa: E402,F401  (registers "dicom")
from . import nifti_export  # noqa: E402,F401  (registers "cardiossl-nifti")
from . import ukbb  # noqa: E402,F401  (registers "ukbb")
from . import sunnybrook  # noqa: E402,F401  (registers "sunnybrook")
