"""Array backends behind CohortDataset: where the stored int16 slices and uint8 labels come from.

The backend decides training throughput, so it is swappable (and the benchmark swaps it):

* ``ShardFileSource`` ("shard", the default): reads the store's own sharded Zarr v3 arrays directly.
  Each shard index (offset, length per chunk, checked by its crc32c) is read once and cached; a sample
  is then one ``pread`` of one compressed chunk and one Blosc decompression. No event loop, no
  per-call planning: ~35 us per random 128x128 slice on one core here, against ~400 us for a
  single-slice tensorstore read and ~2.6 ms for zarr-python (STACK-NOTES), so plain random access is
  fast and a shard-aware sampler only adds page-cache locality. It accepts exactly the codec
  chain the store writes and refuses anything else (``UnsupportedLayout``), so it can never
  misread foreign data.
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

from .store.layout import NO_CHUNK, decode_shard_index, read_layout

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
class _ShardedArray:
    """One sharded zarr v3 array with chunk = one slice, bytes(little) -> blosc inside shards."""

    def __init__(self, path: Path, max_open: int = 64) -> None:
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
        self._open: OrderedDict[int, tuple[int, np.ndarray] | None] = OrderedDict()
        self._max_open = max_open
        self._lock = threading.Lock()

    def _shard(self, s: int):
        """(fd, index) of shard ``s`` or None when it was never written; call with the lock held."""
        if s in self._open:
            self._open.move_to_end(s)
            return self._open[s]
        key = self.layout.chunk_path(self.path, s)
        try:
            fd = os.open(key, os.O_RDONLY)
        except FileNotFoundError:
            entry = None  # a shard whose chunks are all the fill value is not written
        else:
            size = os.fstat(fd).st_size
            index = decode_shard_index(os.pread(fd, self._nbytes_index, size - self._nbytes_index), self.shard)
            if index is None:
                os.close(fd)
                raise OSError(f"{key}: shard index is truncated or corrupt (crc32c mismatch)")
            entry = (fd, index)
        self._open[s] = entry
        while len(self._open) > self._max_open:
            _, old = self._open.popitem(last=False)
            if old is not None:
                os.close(old[0])
        return entry

    def read(self, row: int) -> np.ndarray:
        from numcodecs import blosc

        with self._lock:  # a source may be shared by threads; an evicted fd must not be in use
            entry = self._shard(row // self.shard)
            if entry is None:
                return self.fill
            fd, index = entry
            off, nbytes = index[row % self.shard]
            if off == NO_CHUNK:
                return self.fill
            data = os.pread(fd, int(nbytes), int(off))
        raw = blosc.decompress(data)
        return np.frombuffer(raw, dtype=self.dtype).reshape(self.shape[1:])

    def close(self) -> None:
        with self._lock:
            for entry in self._open.values():
                if entry is not None:
                    os.close(entry[0])
            self._open.clear()


class ShardFileSource(SliceSource):
    def __init__(self, store_path, part_ids: list[str]) -> None:
        self.root = Path(store_path) / "parts"
        self.part_ids = list(part_ids)
        self._arrays: dict[tuple[int, str], _ShardedArray] = {}

    def _array(self, part: int, name: str) -> _ShardedArray:
        key = (part, name)
        arr = self._arrays.get(key)
        if arr is None:
            arr = self._arrays[key] = _ShardedArray(self.root / self.part_ids[part] / name)
        return arr

    def read(self, part, row, with_label):
        image = self._array(part, "image").read(row)
        label = self._array(part, "label").read(row) if with_label else None
        return image, label

    def close(self) -> None:
        for arr in self._arrays.values():
            arr.close()
        self._arrays.clear()


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
    """Open the named backend; "shard" falls back to tensorstore for a layout it does not handle."""
    if kind == "shard":
        src = ShardFileSource(store_path, part_ids)
        try:
            for i in range(len(part_ids)):
                src._array(i, "image")
                src._array(i, "label")
        except UnsupportedLayout as exc:
            src.close()
            log.warning("direct shard reader cannot read this store (%s); using tensorstore", exc)
            return TensorStoreSource(store_path, part_ids)
        return src
    if kind == "tensorstore":
        return TensorStoreSource(store_path, part_ids)
    if kind == "memory":
        return MemorySource(store_path, part_ids)
    raise ValueError(f"unknown reader {kind!r}; choose one of {', '.join(READER_NAMES)}")
