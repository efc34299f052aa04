"""Writing a part and committing it: the protocol that keeps a store whole under crashes and writers.

Every write goes into its own part, written by exactly one process (Zarr shards are
read-modify-write units: two processes writing different chunks of one shard lose data, 98 of 256
slices in a measurement), so no shard is ever shared between writers. The part's files are written
whole, once each (shards by ``_ChunkWriter``), made durable by one barrier
(``durable.make_durable``), and only then is its commit marker written, fsynced and renamed into
place (``write_and_commit``): a crash before the rename leaves an unmarked part, garbage that
``collect_uncommitted`` removes once its writer's lease (``lease``) has lapsed. Nothing after the
rename can remove the part: the clean-up on failure covers only the steps before it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..records import PHASES, VIEWS, RecordError, SubjectRecord, check_subject_id
from ..resample import resample_slice
from . import index
from .durable import StoreLock, flock, fsync_dir, make_durable
from .layout import (
    BLOSC_SHUFFLE,
    NO_CHUNK,
    PART_ATTRS_KEY,
    SCHEMA_VERSION,
    SLICE_ARRAYS,
    StoreError,
    crc32c,
    encode_shard_index,
    read_layout,
    with_crc,
)
from .lease import DEFAULT_LEASE_S, Lease, lease_expired
from .stats import intensity_stats, quantise

log = logging.getLogger(__name__)

SHARD_SLICES = 128  # slices per shard: 8 MiB of int16 128x128 slices per file before compression
META_CHUNK = 65536  # rows per chunk of the per-slice metadata arrays


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def jsonable(obj, what: str):
    try:
        return json.loads(json.dumps(obj, default=_json_default, allow_nan=True))
    except (TypeError, ValueError) as exc:
        raise RecordError(f"{what} cannot be stored as JSON: {exc}") from None


def check_part_id(part_id: str) -> str:
    try:
        return check_subject_id(part_id)
    except RecordError:
        raise StoreError(
            f"invalid part id {part_id!r}: use letters, digits, '.', '_' and '-' (no path separators)"
        ) from None


def new_part_id() -> str:
    return f"p{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:12]}"


def write_part(part_dir: Path, part_id: str, records: list[SubjectRecord], metas: dict, *,
               grid_size: int, spacing_mm: float) -> dict[str, np.ndarray]:
    """Resample and write every slice of ``records`` into ``part_dir``; returns the part's index summary.

    zarr-python creates the group and the arrays' ``zarr.json`` (``_create_array``); the chunk and
    shard files are then written here directly (``_ChunkWriter``), byte for byte what zarr-python
    writes for the same data, because zarr-python's per-write machinery (an event-loop round trip
    per write, an async task per chunk) cost more than the resampling itself. Any layout other
    than the one this module creates goes through zarr-python instead.
    """
    import zarr

    G = grid_size
    ordered = [sorted(r.slices, key=lambda s: (VIEWS.index(s.view), s.frame, s.slice_index)) for r in records]
    n = sum(len(s) for s in ordered)
    shard = min(SHARD_SLICES, n)
    group = zarr.open_group(str(part_dir), mode="a", zarr_format=3)  # "w" would delete the lease
    (image, direct_image), (label, direct_label) = pixel_arrays(group, part_dir, n, G, shard)
    meta_arrays = {k: np.zeros((n,) + shape, dtype=dtype) for k, (dtype, shape) in SLICE_ARRAYS.items()}
    pixel_crc = np.zeros((n, 2), np.uint32)  # crc32c of each slice's raw image and label bytes (digests)
    stats_all: dict[str, dict] = {}
    buf_img = np.zeros((shard, G, G), np.int16)
    buf_lbl = np.zeros((shard, G, G), np.uint8)
    view_code = {v: i for i, v in enumerate(VIEWS)}
    phase_code = {p: i for i, p in enumerate(PHASES)}
    row = 0
    for si, (rec, slices) in enumerate(zip(records, ordered)):
        by_view: dict[str, list[np.ndarray]] = {}
        for s in slices:
            by_view.setdefault(s.view, []).append(s.image)
        stats = {v: intensity_stats(ims) for v, ims in by_view.items()}
        stats_all[rec.subject_id] = stats
        for s in slices:
            img_g, lbl_g, plane_g = resample_slice(s.image, s.plane, G, spacing_mm, s.label)
            q, scale, offset = quantise(img_g)
            k = row % shard
            buf_img[k] = q
            buf_lbl[k] = lbl_g if lbl_g is not None else 0
            pixel_crc[row] = (crc32c(buf_img[k].data), crc32c(buf_lbl[k].data))
            st = stats[s.view]
            m = meta_arrays
            m["subject"][row] = si
            m["view"][row] = view_code[s.view]
            m["frame"][row] = s.frame
            m["phase"][row] = phase_code[s.phase]
            m["slice_index"][row] = s.slice_index
            m["stack_position"][row] = s.stack_position
            m["has_label"][row] = s.label is not None
            m["plane"][row] = plane_g.to_vector()
            m["source_plane"][row] = s.plane.to_vector()
            m["source_shape"][row] = s.image.shape
            m["image_scale"][row] = (scale, offset)
            m["norm"][row] = (st["p0_5"], st["p99_5"], st["mean"], st["std"])
            row += 1
            if row % shard == 0 or row == n:  # whole shards, written once, by this writer only
                start = (row - 1) // shard * shard
                for arr, direct, buf in ((image, direct_image, buf_img), (label, direct_label, buf_lbl)):
                    if direct is not None:
                        direct.write_chunk(start // shard, buf[: row - start])
                    else:
                        arr()[start:row] = buf[: row - start]
    for name, direct in (("image", direct_image), ("label", direct_label)):
        if direct is None:  # zarr-python skips empty shards; a checked part has all
            _fill_missing_chunks(part_dir / name)
    return finish_part(group, part_dir, part_id, meta_arrays, pixel_crc, [r.subject_id for r in records], metas,
                       stats_all, grid_size=G, spacing_mm=spacing_mm, shard=shard)


def pixel_arrays(group, part_dir: Path, n: int, grid_size: int, shard: int):
    """Create a part's image and label arrays; returns [(zarr array getter, direct writer or None)]."""
    from zarr.codecs import BloscCodec, Crc32cCodec

    G = grid_size
    blosc = BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle")
    pixel_kw = dict(chunks=(1, G, G), shards=(shard, G, G), compressors=(blosc, Crc32cCodec()), fill_value=0)
    out = []
    for name, dtype in (("image", "int16"), ("label", "uint8")):
        arr = _create_array(group, part_dir, name, shape=(n, G, G), dtype=dtype, **pixel_kw)
        out.append((arr, _ChunkWriter.for_array(part_dir / name)))
    return out


def finish_part(group, part_dir: Path, part_id: str, meta_arrays: dict[str, np.ndarray], pixel_crc: np.ndarray,
                subjects: list[str], metas: dict, stats_all: dict, *, grid_size: int, spacing_mm: float,
                shard: int) -> dict[str, np.ndarray]:
    """Write a part's per-slice metadata arrays and attributes; return its index summary."""
    from zarr.codecs import Crc32cCodec, ZstdCodec

    n = int(meta_arrays["subject"].shape[0])
    for name, values in meta_arrays.items():
        arr = _create_array(
            group, part_dir, name, shape=values.shape, dtype=values.dtype,
            chunks=(min(META_CHUNK, n),) + values.shape[1:], fill_value=0,
            compressors=(ZstdCodec(level=0, checksum=False), Crc32cCodec()),
        )
        direct = _ChunkWriter.for_array(part_dir / name)
        if direct is None:
            arr()[...] = values
            _fill_missing_chunks(part_dir / name)  # zarr-python skips empty chunks; a checked part has all
        else:
            for i in range(0, n, direct.chunk_rows):
                direct.write_chunk(i // direct.chunk_rows, values[i : i + direct.chunk_rows])
    group.attrs[PART_ATTRS_KEY] = {
        "part_id": part_id,
        "schema_version": SCHEMA_VERSION,
        "grid_size": grid_size,
        "spacing_mm": spacing_mm,
        "n_slices": n,
        "shard_slices": shard,
        "subjects": subjects,
        "subject_meta": metas,
        "subject_stats": stats_all,
        "written_by": {"host": socket.gethostname(), "pid": os.getpid()},
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    digests = index.subject_digests(subjects, meta_arrays, pixel_crc)
    return index.summarise(subjects, meta_arrays, digests, stats_all, shard, SCHEMA_VERSION)


# --------------------------------------------------------------------------------------------
# the commit protocol
def _marker(part_id: str, seq: int, ids: list[str], n_slices: int, replaces, removed) -> dict:
    marker = {
        "part_id": part_id,
        "seq": int(seq),
        "subjects": list(ids),
        "n_slices": int(n_slices),
        "schema_version": SCHEMA_VERSION,
        "committed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if replaces:
        marker["replaces"] = list(replaces)
    if removed:
        marker["removed"] = list(removed)
    return marker


def _prepare_marker(store_path: Path, part_id: str, ids: list[str], n_slices: int, replaces, removed) -> tuple[dict, Path]:
    """Under the store lock: refuse ids another writer committed meanwhile (and parts already
    replaced), then write the marker under a temporary name and fsync it."""
    view = index.load_view(store_path)
    stale = sorted(set(replaces) - set(view.live))
    if stale:
        raise StoreError(f"parts {', '.join(stale)} of {store_path} are no longer live (replaced or removed by "
                         "another writer meanwhile); run the command again")
    committed = {s for pid in view.live if pid not in set(replaces) for s in view.subjects(pid)}
    clash = sorted(set(ids) & committed)
    if clash:  # another writer committed them while this part was being written
        raise StoreError(f"subjects already in {store_path}: {', '.join(clash)} (committed by another writer)")
    seq = max((m["seq"] for m in view.markers.values()), default=0) + 1
    marker = _marker(part_id, seq, ids, n_slices, replaces, removed)
    tmp = store_path / "commits" / f".tmp-{part_id}"
    with open(tmp, "w") as f:
        json.dump(marker, f)
        f.flush()
        os.fsync(f.fileno())
    return marker, tmp


def _after_commit(store_path: Path, part_id: str, marker: dict) -> None:
    """What follows the commit point: the marker's folder entry made durable, the index updated.
    Neither can undo the commit; a failure here leaves a committed part the index does not list
    yet, which readers find by the marker and the next commit indexes."""
    fsync_dir(store_path / "commits")
    try:
        with flock(store_path / ".lock"):  # one index writer at a time (on this machine; see ``index``)
            index.update_index(store_path, part_id, marker)
    except (OSError, ValueError) as exc:
        log.warning("part %s is committed but the store index was not updated (%s); it is read from "
                    "its own files until the next commit", part_id, exc)


def write_and_commit(store_path: Path, part_id: str, ids: list[str],
                     write: Callable[[Path], dict[str, np.ndarray]], *, replaces=(), removed=(),
                     lease_s: float = DEFAULT_LEASE_S) -> dict:
    """Make ``parts/<part_id>``, fill it with ``write(part_dir)`` (which returns the part's index
    summary) and commit it; returns the marker.

    In order: the folder (exclusive), the writer's lease, the files, the summary, one durability
    barrier, a lease check, then under the store lock the clash check and the marker under a
    temporary name, fsynced. Up to here any failure (an exception, KeyboardInterrupt) removes the
    folder and the temporary marker. Then ``os.replace`` puts the marker in place: the commit point.
    Nothing after it is inside that clean-up, so an interrupt from here on leaves a committed,
    complete part (at worst not yet in the index).
    """
    part_dir = store_path / "parts" / part_id
    try:
        part_dir.mkdir()
    except FileExistsError:
        raise StoreError(
            f"part folder {part_dir} already exists (another writer, or a crashed one: `cardiossl cohort gc` "
            "removes it once its lease has lapsed)"
        ) from None
    lease = Lease(part_dir, lease_s)
    lock = StoreLock(store_path / ".lock")
    dir_fd = os.open(part_dir, os.O_RDONLY)  # before the first write: syncfs reports errors since then
    try:
        try:
            lease.start()
            summary = write(part_dir)
            n_slices = int(summary["part_n_slices"][0])
            index.write_npz(part_dir / index.SUMMARY_FILE, summary)
            make_durable(part_dir, dir_fd)
            lease.check()
            lock.acquire()
            marker, tmp = _prepare_marker(store_path, part_id, ids, n_slices, replaces, removed)
        except BaseException:
            lease.stop()
            shutil.rmtree(part_dir, ignore_errors=True)
            (store_path / "commits" / f".tmp-{part_id}").unlink(missing_ok=True)
            raise
        os.replace(tmp, store_path / "commits" / f"{part_id}.json")  # the commit point
    finally:  # only releases: nothing here undoes a commit
        lock.release()
        lease.stop()
        os.close(dir_fd)
    _after_commit(store_path, part_id, marker)
    return marker


def commit_retirement(store_path: Path, replaces: list[str], removed: list[str]) -> dict:
    """A marker without a part: ``replaces`` leave new snapshots (every subject of theirs removed)."""
    part_id = new_part_id()
    with flock(store_path / ".lock"):
        try:
            marker, tmp = _prepare_marker(store_path, part_id, [], 0, replaces, removed)
        except BaseException:
            (store_path / "commits" / f".tmp-{part_id}").unlink(missing_ok=True)
            raise
        os.replace(tmp, store_path / "commits" / f"{part_id}.json")  # the commit point
    _after_commit(store_path, part_id, marker)
    return marker


def collect_uncommitted(store_path: Path, committed: set[str], min_lease_s: float = 0.0,
                        dry_run: bool = False) -> list[str]:
    """Remove parts that were never committed and whose writer's lease has lapsed; return their ids.

    The lease is a heartbeat file, not a lock, so this holds across machines whatever the file
    system does with ``flock``. A committed part is never touched."""
    removed = []
    parts = store_path / "parts"
    now = time.time()
    for d in sorted(parts.iterdir()) if parts.is_dir() else []:
        if not d.is_dir() or d.name in committed:
            continue
        if (store_path / "commits" / f"{d.name}.json").exists():
            continue  # committed after ``committed`` was listed
        if lease_expired(d, now, min_lease_s):
            if not dry_run:
                shutil.rmtree(d, ignore_errors=True)
            removed.append(d.name)
    for tmp in (store_path / "commits").glob(".tmp-*"):
        if now - tmp.stat().st_mtime > max(DEFAULT_LEASE_S, min_lease_s) and not dry_run:
            tmp.unlink(missing_ok=True)
    return removed


_ARRAY_META_TEMPLATES: dict[tuple, dict | None] = {}


def _create_array(group, part_dir: Path, name: str, **kw):
    """Create array ``name`` in a part; returns a function giving the zarr array (for zarr-python writes).

    The metadata (``zarr.json``) of a part's arrays differs between parts only in the slice count:
    the array shape and the shard or chunk length. The first part of each kind a process writes is
    created by zarr-python, and its ``zarr.json`` kept as a template; later parts get the template
    with those two numbers set, serialised as zarr-python serialises it (the template is kept only
    if that reproduces zarr-python's file byte for byte, so a zarr-python that writes otherwise is
    simply always asked). Saves zarr-python's per-call event-loop round trips, ~30 ms a part.
    """
    import zarr

    shape = tuple(int(x) for x in kw["shape"])
    outer = tuple(int(x) for x in (kw.get("shards") or kw["chunks"]))
    key = (name, np.dtype(kw["dtype"]).str, shape[1:], outer[1:], tuple(kw["chunks"][1:]),
           kw.get("shards") is not None, repr(kw.get("compressors")), kw.get("fill_value"))
    meta_path = part_dir / name / "zarr.json"
    template = _ARRAY_META_TEMPLATES.get(key)
    if template is not None:
        meta = dict(template)  # only the two lists below differ, and they are replaced, not edited
        meta["chunk_grid"] = {**template["chunk_grid"], "configuration": dict(template["chunk_grid"]["configuration"])}
        meta["shape"] = list(shape)
        meta["chunk_grid"]["configuration"]["chunk_shape"] = list(outer)
        meta_path.parent.mkdir()
        meta_path.write_bytes(json.dumps(meta, allow_nan=True, indent=zarr.config.get("json_indent")).encode())
        return lambda: zarr.open_array(str(part_dir / name), mode="r+", zarr_format=3)
    arr = group.create_array(name, **kw)
    if key not in _ARRAY_META_TEMPLATES:
        raw = meta_path.read_bytes()
        meta = json.loads(raw)
        grid = (meta.get("chunk_grid") or {}).get("configuration") or {}
        same = (
            json.dumps(meta, allow_nan=True, indent=zarr.config.get("json_indent")).encode() == raw
            and meta.get("shape") == list(shape)
            and grid.get("chunk_shape") == list(outer)
        )
        _ARRAY_META_TEMPLATES[key] = meta if same else None
    return lambda: arr



class _ChunkWriter:
    """Writes whole chunk (or shard) files of one zarr v3 array exactly as zarr-python 3 does.

    Only the layouts of ``layout.array_layout`` with fill value 0 (anything else: ``for_array``
    returns None and the caller uses zarr-python). As in zarr-python (``write_empty_chunks=False``),
    a chunk whose bytes are all zero (floats compared by bit pattern, so -0.0 is stored) is not
    stored: a shard index entry of 2^64 - 1, or no chunk file. With the crc32c codec in the chain
    (schema version 2) every chunk carries its checksum, and every chunk *file* is written, empty
    ones included (an all-empty shard index; an encoded chunk of zeros), so a missing file is
    damage, never the fill value. A file is written whole, once.
    """

    def __init__(self, folder: Path, layout, encode) -> None:
        self.folder = folder
        self.layout = layout
        self.chunk_rows = layout.chunk_rows  # rows per chunk (unsharded) or per shard (sharded)
        self.encode = (lambda raw: with_crc(bytes(encode(raw)))) if layout.checksum else (lambda raw: bytes(encode(raw)))
        self.sharded = layout.sharded
        self.write_empty = layout.checksum
        self._made: set[Path] = set()

    @classmethod
    def for_array(cls, folder: Path) -> _ChunkWriter | None:
        layout = read_layout(folder)
        if layout is None or layout.fill_value not in (0, 0.0, False):
            return None
        c = layout.codec
        if layout.sharded:
            if c.get("shuffle") not in BLOSC_SHUFFLE:
                return None
            from numcodecs import Blosc

            codec = Blosc(cname=c["cname"], clevel=int(c["clevel"]), shuffle=BLOSC_SHUFFLE[c["shuffle"]],
                          blocksize=int(c.get("blocksize", 0)), typesize=int(c["typesize"]))
            return cls(folder, layout, codec.encode)
        from numcodecs import Zstd

        return cls(folder, layout, Zstd(level=int(c.get("level", 0))).encode)

    def write_chunk(self, i: int, block: np.ndarray) -> None:
        """Write chunk (or shard) ``i``: ``block`` holds its rows inside the array (the last may be short)."""
        block = np.ascontiguousarray(block, dtype=block.dtype.newbyteorder("<"))
        if self.sharded:
            index = np.full((self.chunk_rows, 2), NO_CHUNK, dtype="<u8")
            pieces, offset = [], 0
            for j in range(block.shape[0]):
                raw = block[j].view(np.uint8).reshape(-1)
                if not raw.any():
                    continue
                enc = self.encode(raw)
                index[j] = (offset, len(enc))
                pieces.append(enc)
                offset += len(enc)
            if not pieces and not self.write_empty:
                return
            pieces.append(encode_shard_index(index))
            data = b"".join(pieces)
        else:
            if block.shape[0] < self.chunk_rows:  # chunks are stored whole, padded with the fill value
                full = np.zeros((self.chunk_rows,) + block.shape[1:], dtype=block.dtype)
                full[: block.shape[0]] = block
                block = full
            raw = block.view(np.uint8).reshape(-1)
            if not raw.any() and not self.write_empty:
                return
            data = self.encode(raw)
        path = self.layout.chunk_path(self.folder, i)
        if path.parent not in self._made:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._made.add(path.parent)
        with open(path, "wb") as f:
            f.write(data)


def _fill_missing_chunks(folder: Path) -> None:
    """Write the empty chunk files zarr-python leaves out, for arrays with per-chunk checksums."""
    layout = read_layout(folder)
    if layout is None or not layout.checksum or not layout.shape[0]:
        return
    writer = _ChunkWriter.for_array(folder)
    if writer is None:
        return
    for i in range(-(-layout.shape[0] // layout.chunk_rows)):
        if not layout.chunk_path(folder, i).exists():
            rows = min(layout.chunk_rows, layout.shape[0] - i * layout.chunk_rows)
            writer.write_chunk(i, np.zeros((rows,) + layout.shape[1:], layout.dtype))
