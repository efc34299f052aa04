"""The Zarr v3 cohort store: every slice of every subject on one training grid, plus its geometry.

This room holds the store's layout (``layout``), part writing and the commit protocol (``parts``,
``durable``, the writer's ``lease``), the metadata ``index`` and the compact slice ``table``,
``snapshot``s, statistics (``stats``), the fingerprint, ``maintenance`` (verify, gc, remove) and
the ``CohortStore`` facade; it imports only from ``cardiossl.datasets`` (geometry, records, resample).

Layout (``docs/cohort-format.md`` is the full schema, version ``SCHEMA_VERSION``)::

    STORE/zarr.json              root group; attrs["cardiossl"]: format, schema version, grid, fingerprint
    STORE/.lock                  flock'ed while creating the store and while committing (one machine's writers)
    STORE/parts/<part_id>/       one immutable zarr group per write: image, label, per-slice metadata,
                                 summary.npz (its index rows), .lease (the writer's heartbeat)
    STORE/commits/<part_id>.json commit marker, written last by os.replace: the part is visible from here on
    STORE/index/                 manifest.json and merged segments: the committed parts' metadata in a few files
    STORE/qc/geometry.npz        derived: geometry QC estimates (``qc``), replaced whole, never part of a commit

Why parts: Zarr shards are read-modify-write units, and two processes writing different chunks of
one shard lose data (measured: 98 of 256 slices lost). So every write goes into its own part, written
by exactly one process, and no shard is ever shared between writers. Why a marker written last: a
crash (killed worker, full disk) must leave nothing half-visible; an unmarked part is garbage that
``cohort gc`` removes once its writer's lease has lapsed (the writer renews a heartbeat file in the
part; no lock, so it holds across machines whatever the file system does with flock).

Durability, in commit order: the part's files are written whole, once each (shards by
``parts._ChunkWriter``), then made durable by one barrier (``durable.make_durable``: one ``syncfs`` on local file
systems, else an fsync of every file and folder), and only then is the marker written, fsynced,
renamed into place and its folder fsynced. No file of a part is fsynced on its own as it is written:
nothing reads a part before its marker exists, so only the state at the barrier matters, and the
barrier comes before the marker. A power loss before the rename leaves an unmarked part (garbage);
after it, a complete one.

Images are stored as int16 with a per-slice linear scale (``image_scale``: value = q * scale +
offset, q in [-32767, 32767]): a quantisation step of range/65534, far below MR noise, that halves
the bytes to read and decompress per sample (the random-access cost that decides training
throughput) and halves the disk footprint of a 100,000-subject cohort.
"""

from .cohort import CohortStore
from .layout import (
    ATTRS_KEY,
    FORMAT_NAME,
    PART_ATTRS_KEY,
    READABLE_VERSIONS,
    SCHEMA_VERSION,
    SLICE_ARRAYS,
    DamagedDataError,
    StoreError,
    read_small_array,
)
from .parts import META_CHUNK, SHARD_SLICES
from .qc import QCEstimates, qc_path, read_qc, write_qc
from .snapshot import PartRef, Snapshot
from .stats import NORM_COLUMNS, QMAX, intensity_stats, quantise
from .table import SliceTable

__all__ = [
    "ATTRS_KEY", "FORMAT_NAME", "META_CHUNK", "NORM_COLUMNS", "PART_ATTRS_KEY", "QMAX", "READABLE_VERSIONS",
    "SCHEMA_VERSION", "SHARD_SLICES", "SLICE_ARRAYS", "CohortStore", "DamagedDataError", "PartRef", "QCEstimates",
    "SliceTable", "Snapshot", "StoreError", "intensity_stats", "qc_path", "quantise", "read_qc", "read_small_array",
    "write_qc",
]
