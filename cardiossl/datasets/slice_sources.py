"""Array backends behind CohortDataset: where the stored int16 slices and uint8 labels come from.

The backend decides training throughput, so it is swappable (and the benchmark swaps it):

* ``ShardFileSource`` ("shard", the default): reads the store's own sharded Zarr v3 arrays directly.
  Each shard index (offset, length per chunk, checked by its crc32c) is read once and kept with the
  open file in one process-wide LRU (``OPEN_SHARDS``, capped); a sample is then one ``pread`` of one
  compressed chunk, its crc32c check (schema version 2) and one Blosc decompression. No event loop,
  no per-call planning: ~35 us per random 128x128 slice on one core here, against ~400 us for a
  single-slice tensorstore read and ~2.6 ms for zarr-python (STACK-NOTES), so plain random access is
  fast and a shard-aware sampler only adds page-cache locality. It accepts exactly the codec
  chains the store writes and refuses anything else (``UnsupportedLayout``), so it can never
  misread foreign data; a missing, truncated or damaged shard raises ``DamagedDataError`` naming
  the file (``CohortDataset`` adds the subject).
* ``TensorStoreSource`` ("tensorstore"): the general reader (any zarr v3 codec, remote kvstores); its
  per-call cost is high, so it reads aligned blocks of slices and keeps an LRU of decoded blocks,
  which pays off with BlockShuffleSampler's order.
* ``MemorySource`` ("memory"): every array in RAM; the ceiling the benchmark compares against.

All return ``(image int16 [G, G], label uint8 [G, G])`` for (part index, row); sources are opened in
the process that uses them (DataLoader workers, Ray workers), never pickled open.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from .store.layout import NO_CHUNK, DamagedDataError, decode_shard_index, read_layout, strip_crc

log = logging.getLogger(__name__)


class UnsupportedLayout(ValueError):
    """A zarr array whose codec chain the direct shard reader does not handle."""


class SliceSource:
    """(part index, row) -> (image int16 [G, G], label uint8 [G, G] or None)."""

    def read(self, part: int, row: int, with_label: bool) -> tuple[np.ndarray, np.ndarray | None]:
        raise NotImplementedError

    def close(self) -> None:
        pass


# ---------------------------------------------------------------------------------------------
def _default_max_open() -> int:
    """A quarter of this process's soft limit on open files, between 8 and 512."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft == resource.RLIM_INFINITY or soft <= 0:
            soft = 4096
    except (ImportError, OSError, ValueError):
        soft = 1024
    return max(8, min(512, soft // 4))


class OpenShards:
    """One LRU of open shard files per process: ``(fd, shard index)`` by path, at most ``cap`` open.

    A store of 50,000 parts has 100,000+ shard files; a cache per array (or per part) would hold an
    unbounded number of descriptors and fail with "Too many open files". Every direct reader of the
    process shares this one (``set_max_open_files`` or ``CARDIOSSL_MAX_OPEN_FILES`` set the cap,
    else a quarter of the soft RLIMIT_NOFILE). Reads hold the lock for the index lookup and the
    ``pread`` (microseconds), so an evicted descriptor is never in use; decompression runs outside.
    """

    def __init__(self) -> None:
        self._lru: OrderedDict[str, tuple[int, np.ndarray] | None] = OrderedDict()
        self._lock = threading.Lock()
        env = os.environ.get("CARDIOSSL_MAX_OPEN_FILES")
        self.cap: int | None = int(env) if env else None
        self.opened = 0  # files opened so far (a measure of cache misses)

    def _entry(self, path: str, rows: int, index_nbytes: int, missing_ok: bool):
        entry = self._lru.get(path, False)
        if entry is not False:
            self._lru.move_to_end(path)
            return entry
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            if not missing_ok:
                raise DamagedDataError(f"{path}: shard file is missing", path) from None
            entry = None  # version 1: a shard whose chunks are all the fill value is not written
        else:
            self.opened += 1
            try:
                size = os.fstat(fd).st_size
                if size < index_nbytes:
                    raise DamagedDataError(f"{path}: shard file is truncated ({size} bytes, its index alone "
                                           f"needs {index_nbytes})", path)
                index = decode_shard_index(os.pread(fd, index_nbytes, size - index_nbytes), rows)
                if index is None:
                    raise DamagedDataError(f"{path}: shard index is truncated or corrupt (crc32c mismatch)", path)
            except BaseException:
                os.close(fd)
                raise
            entry = (fd, index)
        self._lru[path] = entry
        cap = self.cap or _default_max_open()
        while len(self._lru) > cap:
            _, old = self._lru.popitem(last=False)
            if old is not None:
                os.close(old[0])
        return entry

    def read(self, path: str, rows: int, index_nbytes: int, j: int, missing_ok: bool) -> bytes | None:
        """The stored bytes of chunk ``j`` of the shard at ``path``; None for a chunk not stored."""
        with self._lock:
            entry = self._entry(path, rows, index_nbytes, missing_ok)
            if entry is None:
                return None
            fd, index = entry
            off, nbytes = index[j]
            if off == NO_CHUNK:
                return None
            data = os.pread(fd, int(nbytes), int(off))
        if len(data) != int(nbytes):
            raise DamagedDataError(f"{path}: shard file is truncated (chunk {j} needs bytes {int(off)}.."
                                   f"{int(off) + int(nbytes)})", path)
        return data

    @property
    def open_count(self) -> int:
        return sum(e is not None for e in self._lru.values())

    def clear(self) -> None:
        with self._lock:
            for entry in self._lru.values():
                if entry is not None:
                    os.close(entry[0])
            self._lru.clear()

    def _after_fork(self) -> None:
        """In a forked child: the parent's lock may be held by a thread that does not exist here."""
        self._lock = threading.Lock()
        self.clear()


OPEN_SHARDS = OpenShards()
os.register_at_fork(after_in_child=OPEN_SHARDS._after_fork)


def set_max_open_files(n: int | None) -> None:
    """Cap the direct readers' open shard files in this process (None: a quarter of RLIMIT_NOFILE)."""
    OPEN_SHARDS.cap = None if n is None else max(1, int(n))


class _ShardedArray:
    """One sharded zarr v3 array with chunk = one slice, bytes(little) -> blosc (-> crc32c) in shards."""

    def __init__(self, path: Path) -> None:
        self.path = path
        layout = read_layout(path)
        if layout is None or not layout.sharded:
            raise UnsupportedLayout(f"{path}: not the cohort store's sharded blosc layout")
        self.layout = layout
        self.shape = layout.shape
        self.dtype = layout.dtype
        self.shard = layout.chunk_rows
        self.fill = np.full(self.shape[1:], layout.fill_value, dtype=self.dtype)
        self.fill.setflags(write=False)
        self._nbytes_index = layout.index_nbytes
        self._shard_paths: dict[int, str] = {}

    def read(self, row: int) -> np.ndarray:
        from numcodecs import blosc

        if not 0 <= row < self.shape[0]:
            raise IndexError(f"{self.path}: row {row} outside 0..{self.shape[0] - 1}")
        s = row // self.shard
        key = self._shard_paths.get(s)
        if key is None:
            key = self._shard_paths[s] = str(self.layout.chunk_path(self.path, s))
        data = OPEN_SHARDS.read(key, self.shard, self._nbytes_index, row % self.shard,
                                missing_ok=not self.layout.checksum)
        if data is None:
            return self.fill
        if self.layout.checksum:
            data = strip_crc(data, f"{key} (row {row})")
        try:
            raw = blosc.decompress(data)
        except (RuntimeError, ValueError) as exc:
            raise DamagedDataError(f"{key} (row {row}): chunk cannot be decoded ({exc})", key) from None
        return np.frombuffer(raw, dtype=self.dtype).reshape(self.shape[1:])

    def close(self) -> None:
        pass  # descriptors live in OPEN_SHARDS


class ShardFileSource(SliceSource):
    """Direct shard reads; a part's arrays are opened on its first read (no per-part work up front),
    and a part in a layout this reader does not handle is read through tensorstore instead."""

    def __init__(self, store_path, part_ids: list[str]) -> None:
        self.store_path = store_path
        self.root = Path(store_path) / "parts"
        self.part_ids = list(part_ids)
        self._arrays: dict[tuple[int, str], _ShardedArray] = {}
        self._fallback: TensorStoreSource | None = None
        self._fallback_parts: set[int] = set()

    def _array(self, part: int, name: str) -> _ShardedArray:
        key = (part, name)
        arr = self._arrays.get(key)
        if arr is None:
            path = self.root / self.part_ids[part] / name
            try:
                arr = self._arrays[key] = _ShardedArray(path)
            except FileNotFoundError:
                raise DamagedDataError(f"{path}: array metadata (zarr.json) is missing", path) from None
        return arr

    def read(self, part, row, with_label):
        if part not in self._fallback_parts:
            try:
                image = self._array(part, "image").read(row)
                label = self._array(part, "label").read(row) if with_label else None
                return image, label
            except UnsupportedLayout as exc:
                log.warning("direct shard reader cannot read part %s (%s); using tensorstore for it",
                            self.part_ids[part], exc)
                self._fallback_parts.add(part)
                if self._fallback is None:
                    self._fallback = TensorStoreSource(self.store_path, self.part_ids)
        return self._fallback.read(part, row, with_label)

    def close(self) -> None:
        self._arrays.clear()
        if self._fallback is not None:
            self._fallback.close()


# ---------------------------------------------------------------------------------------------
class TensorStoreSource(SliceSource):
    """tensorstore reads of aligned ``block``-slice blocks, LRU of ``cache_blocks`` decoded blocks."""

    def __init__(self, store_path, part_ids: list[str], block: int = 32, cache_blocks: int = 16) -> None:
        import tensorstore as ts

        self.root = Path(store_path) / "parts"
        self.part_ids = list(part_ids)
        self.block = int(block)
        self.cache_blocks = int(cache_blocks)
        # One decode thread: a DataLoader worker is one core; the workers give the parallelism.
        self._ctx = ts.Context({"data_copy_concurrency": {"limit": 1}, "cache_pool": {"total_bytes_limit": 32 << 20}})
        self._handles: dict[tuple[int, str], object] = {}
        self._lru: OrderedDict[tuple[int, str, int], np.ndarray] = OrderedDict()

    def _handle(self, part: int, name: str):
        key = (part, name)
        h = self._handles.get(key)
        if h is None:
            import tensorstore as ts

            spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(self.root / self.part_ids[part] / name)}}
            h = self._handles[key] = ts.open(spec, read=True, context=self._ctx).result()
        return h

    def _block(self, part: int, name: str, b: int) -> np.ndarray:
        key = (part, name, b)
        arr = self._lru.get(key)
        if arr is not None:
            self._lru.move_to_end(key)
            return arr
        h = self._handle(part, name)
        n = h.shape[0]
        arr = h[b * self.block : min((b + 1) * self.block, n)].read().result()
        self._lru[key] = arr
        while len(self._lru) > self.cache_blocks:
            self._lru.popitem(last=False)
        return arr

    def read(self, part, row, with_label):
        b, k = divmod(row, self.block)
        image = self._block(part, "image", b)[k]
        label = self._block(part, "label", b)[k] if with_label else None
        return image, label

    def close(self) -> None:
        self._handles.clear()
        self._lru.clear()


# ---------------------------------------------------------------------------------------------
class MemorySource(SliceSource):
    """Every image and label array in RAM (loaded with zarr-python on open)."""

    def __init__(self, store_path, part_ids: list[str], arrays: dict | None = None) -> None:
        if arrays is None:
            import zarr

            arrays = {}
            for i, pid in enumerate(part_ids):
                g = zarr.open_group(str(Path(store_path) / "parts" / pid), mode="r", zarr_format=3)
                arrays[i] = (np.asarray(g["image"][...]), np.asarray(g["label"][...]))
        self.arrays = arrays

    def read(self, part, row, with_label):
        images, labels = self.arrays[part]
        return images[row], (labels[row] if with_label else None)


READER_NAMES = ("shard", "tensorstore", "memory")


def open_source(kind: str, store_path, part_ids: list[str]) -> SliceSource:
    """Open the named backend; "shard" falls back to tensorstore for a part whose layout it does not
    handle. Nothing is read up front: a loader worker touches only the parts it samples."""
    if kind == "shard":
        return ShardFileSource(store_path, part_ids)
    if kind == "tensorstore":
        return TensorStoreSource(store_path, part_ids)
    if kind == "memory":
        return MemorySource(store_path, part_ids)
    raise ValueError(f"unknown reader {kind!r}; choose one of {', '.join(READER_NAMES)}")
