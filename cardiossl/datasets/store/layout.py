"""The on-disk zarr v3 layout of a cohort store part, parsed and encoded in one place.

The part writer (``parts``), the metadata reader (``read_small_array``) and the training-time
shard reader (``slice_sources.ShardFileSource``) all bypass zarr-python for speed, so all three
must agree byte for byte on what an array's ``zarr.json`` means, where a chunk lives and how a
shard index is laid out. They take it from here. Two array layouts exist, the two the store
creates; ``array_layout`` recognises exactly those and returns None for anything else (callers
then use zarr-python or tensorstore, so foreign data is never misread):

* sharded (image, label): ``sharding_indexed`` with one-row inner chunks, inner codecs bytes
  (little endian) + blosc (+ crc32c from schema version 2: every chunk carries its own checksum),
  the shard index (offset, length per chunk, 2^64 - 1 for a chunk not stored) as bytes + crc32c at
  the end of the shard file;
* unsharded (per-slice metadata): bytes (little endian) + zstd without its own checksum (+ crc32c
  from schema version 2).

Version 1 stores (no per-chunk checksum) stay readable; a damaged chunk of theirs decodes silently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)  # version 1: no per-chunk crc32c, no metadata index, flock'ed writers
FORMAT_NAME = "cardiossl.cohort"
ATTRS_KEY = "cardiossl"
PART_ATTRS_KEY = "cardiossl_part"

# name -> (dtype, trailing shape); one row per slice, in part order.
SLICE_ARRAYS: dict[str, tuple[str, tuple[int, ...]]] = {
    "subject": ("int32", ()),  # index into the part's subject list
    "view": ("int8", ()),  # index into records.VIEWS
    "frame": ("int32", ()),
    "phase": ("int8", ()),  # index into records.PHASES
    "slice_index": ("int32", ()),
    "stack_position": ("float32", ()),
    "has_label": ("bool", ()),
    "plane": ("float64", (11,)),  # stored-grid plane, Plane.to_vector layout
    "source_plane": ("float64", (11,)),  # plane of the source image
    "source_shape": ("int32", (2,)),  # (rows, cols) of the source image
    "image_scale": ("float64", (2,)),  # (scale, offset): value = q * scale + offset
    "norm": ("float32", (4,)),  # (lo, hi, mean, std) of the slice's (subject, view)
}

NO_CHUNK = 2**64 - 1  # shard index entry of a chunk that is not stored (the fill value)
BLOSC_SHUFFLE = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}


class StoreError(ValueError):
    """A store that cannot be opened or a write that must not happen; names the thing and the fix."""


class DamagedDataError(StoreError):
    """Stored bytes that are missing, truncated or fail their checksum; names the file (and, where the
    caller knows it, the subject)."""

    def __init__(self, message: str, path: Path | str | None = None) -> None:
        super().__init__(message)
        self.path = str(path) if path is not None else None


def crc32c(data) -> int:
    import google_crc32c

    return int(google_crc32c.value(bytes(data) if not isinstance(data, bytes) else data))


def with_crc(data: bytes) -> bytes:
    """``data`` followed by its crc32c, little endian: what zarr's ``crc32c`` codec writes."""
    return data + crc32c(data).to_bytes(4, "little")


def strip_crc(data: bytes, where: str) -> bytes:
    """The payload of a crc32c-coded chunk, checked; DamagedDataError naming ``where`` otherwise."""
    if len(data) < 4 or crc32c(memoryview(data)[:-4]) != int.from_bytes(data[-4:], "little"):
        raise DamagedDataError(f"{where}: crc32c checksum mismatch (the stored bytes are damaged)", where)
    return data[:-4]


@dataclass(frozen=True)
class ArrayLayout:
    """One array in one of the two layouts above, as read from its ``zarr.json``."""

    shape: tuple[int, ...]
    dtype: np.dtype  # little endian
    fill_value: int | float | bool
    chunk_rows: int  # rows per chunk (unsharded) or per shard (sharded)
    sharded: bool
    codec: dict  # configuration of the inner blosc codec (sharded) or of zstd (unsharded)
    checksum: bool = False  # every chunk ends with its crc32c (schema version 2)

    def chunk_path(self, folder: Path, i: int) -> Path:
        """The file of chunk (or shard) ``i``: chunks span every trailing dimension whole."""
        return Path(folder) / "c" / (str(i) + "/0" * (len(self.shape) - 1))

    @property
    def index_nbytes(self) -> int:
        """Bytes of a shard index with its crc32c (sharded layout)."""
        return self.chunk_rows * 16 + 4


def _little_bytes(codec: dict) -> bool:
    return codec.get("name") == "bytes" and (codec.get("configuration") or {}).get("endian", "little") == "little"


def array_layout(meta: dict) -> ArrayLayout | None:
    """The layout of an array given its parsed ``zarr.json``; None unless it is one of the two above."""
    shape = tuple(meta.get("shape", ()))
    grid = meta.get("chunk_grid") or {}
    chunk = tuple((grid.get("configuration") or {}).get("chunk_shape", ()))
    keys = meta.get("chunk_key_encoding") or {}
    codecs = meta.get("codecs") or []
    fill = meta.get("fill_value")
    if not (
        meta.get("zarr_format") == 3
        and grid.get("name") == "regular"
        and keys.get("name") == "default"
        and (keys.get("configuration") or {}).get("separator", "/") == "/"
        and isinstance(fill, int | float | bool)
        and len(chunk) == len(shape) >= 1
        and chunk[1:] == shape[1:]
        and not meta.get("storage_transformers")
    ):
        return None
    dtype = np.dtype(meta["data_type"]).newbyteorder("<")
    if len(codecs) == 1 and codecs[0].get("name") == "sharding_indexed":
        cfg = codecs[0].get("configuration") or {}
        inner, index = cfg.get("codecs") or [], cfg.get("index_codecs") or []
        checksum = len(inner) == 3 and inner[2].get("name") == "crc32c"
        if not (
            tuple(cfg.get("chunk_shape", ())) == (1,) + shape[1:]
            and cfg.get("index_location", "end") == "end"
            and len(inner) in (2, 3) and _little_bytes(inner[0]) and inner[1].get("name") == "blosc"
            and (len(inner) == 2 or checksum)
            and len(index) == 2 and _little_bytes(index[0]) and index[1].get("name") == "crc32c"
        ):
            return None
        return ArrayLayout(shape, dtype, fill, chunk[0], True, dict(inner[1].get("configuration") or {}), checksum)
    checksum = len(codecs) == 3 and codecs[2].get("name") == "crc32c"
    if len(codecs) in (2, 3) and (len(codecs) == 2 or checksum) and _little_bytes(codecs[0]) \
            and codecs[1].get("name") == "zstd":
        z = codecs[1].get("configuration") or {}
        if z.get("checksum", False):
            return None
        return ArrayLayout(shape, dtype, fill, chunk[0], False, dict(z), checksum)
    return None


def read_layout(folder: Path) -> ArrayLayout | None:
    """``array_layout`` of the array stored in ``folder``."""
    return array_layout(json.loads((Path(folder) / "zarr.json").read_text()))


def encode_shard_index(index: np.ndarray) -> bytes:
    """A shard index ([rows, 2] of (offset, nbytes), ``NO_CHUNK`` for unstored chunks) with its crc32c."""
    return with_crc(np.ascontiguousarray(index, dtype="<u8").tobytes())


def decode_shard_index(raw: bytes, rows: int) -> np.ndarray | None:
    """The [rows, 2] index from the last ``rows * 16 + 4`` bytes of a shard; None when truncated or
    when its crc32c does not match."""
    if len(raw) != rows * 16 + 4 or crc32c(memoryview(raw)[:-4]) != int.from_bytes(raw[-4:], "little"):
        return None
    return np.frombuffer(raw, dtype="<u8", count=rows * 2).reshape(rows, 2)


def read_small_array(path: Path) -> np.ndarray:
    """A whole unsharded zarr v3 array (bytes -> zstd, as the store writes its metadata arrays).

    Reads the chunk files directly: ~0.05 ms per array instead of ~2 ms through zarr-python, which
    is what makes building the slice table of a store with thousands of parts take seconds, not
    minutes. Any other layout goes through zarr-python.
    """
    layout = read_layout(path)
    if layout is None or layout.sharded:
        import zarr

        return np.asarray(zarr.open_array(str(path), mode="r", zarr_format=3)[...])
    from numcodecs import zstd

    shape, dtype, rows = layout.shape, layout.dtype, layout.chunk_rows
    out = np.full(shape, layout.fill_value, dtype=dtype)
    for i in range(-(-shape[0] // rows) if shape[0] else 0):
        chunk = layout.chunk_path(path, i)
        try:
            raw = chunk.read_bytes()
        except FileNotFoundError:
            continue  # a chunk equal to the fill value is not written
        if layout.checksum:
            raw = strip_crc(raw, str(chunk))
        try:
            block = np.frombuffer(zstd.decompress(raw), dtype=dtype).reshape((rows,) + shape[1:])
        except (RuntimeError, ValueError) as exc:
            raise DamagedDataError(f"{chunk}: cannot be decoded ({exc})", chunk) from None
        stop = min((i + 1) * rows, shape[0])
        out[i * rows : stop] = block[: stop - i * rows]
    return out.astype(dtype.newbyteorder("="), copy=False)
