"""Keeping a store whole: ``verify`` (damage reported by subject), ``gc`` (garbage by lease) and
``remove_subjects`` (withdrawals: a subject leaves new snapshots and is rewritten out of its part).

Removal never edits a part in place (parts are immutable, and runs pinned to an older snapshot may
still read it): the remaining subjects of each affected part are copied into a new part, chunk by
chunk without decoding (so their stored bytes and digests are unchanged), and that part is committed
with a marker that ``replaces`` the old one. The old part leaves every new snapshot at that commit
and is deleted by the next ``gc``, which is when the withdrawn data is physically gone.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import index, parts
from .layout import (
    NO_CHUNK,
    PART_ATTRS_KEY,
    SLICE_ARRAYS,
    DamagedDataError,
    StoreError,
    decode_shard_index,
    encode_shard_index,
    read_layout,
    read_small_array,
    strip_crc,
)


@dataclass
class VerifyReport:
    """What ``verify`` found: problems by subject (and by part where no subject can be named)."""

    store: str
    parts_checked: int = 0
    subjects_checked: int = 0
    chunks_checked: int = 0
    damaged_subjects: dict[str, list[str]] = field(default_factory=dict)
    damaged_parts: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.damaged_subjects and not self.damaged_parts

    def to_dict(self) -> dict:
        return {"store": self.store, "ok": self.ok, "parts_checked": self.parts_checked,
                "subjects_checked": self.subjects_checked, "chunks_checked": self.chunks_checked,
                "damaged_subjects": self.damaged_subjects, "damaged_parts": self.damaged_parts}


def _check_array(folder: Path, rows_of_subject: np.ndarray | None, subjects: list[str], payload: bool,
                 report: VerifyReport, part_id: str, expected_rows: int) -> None:
    """Every chunk file of one array present, its shard index and (``payload``) chunk checksums good."""
    def blame(rows, problem: str) -> None:
        if rows_of_subject is None or rows is None:
            report.damaged_parts.setdefault(part_id, []).append(problem)
            return
        for sid in sorted({subjects[int(k)] for k in np.unique(rows_of_subject[rows])}):
            report.damaged_subjects.setdefault(sid, []).append(problem)

    try:
        layout = read_layout(folder)
    except (OSError, ValueError) as exc:
        blame(None, f"{folder}: zarr.json unreadable ({exc})")
        return
    if layout is None:
        blame(None, f"{folder}: not a layout this store writes")
        return
    if layout.shape[0] != expected_rows:
        blame(None, f"{folder}: {layout.shape[0]} rows, the part has {expected_rows}")
        return
    n, step = layout.shape[0], layout.chunk_rows
    for i in range(-(-n // step) if n else 0):
        rows = np.arange(i * step, min((i + 1) * step, n))
        path = layout.chunk_path(folder, i)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            if layout.checksum:
                blame(rows, f"{path}: missing")
            continue
        if not layout.sharded:
            if layout.checksum and payload:
                try:
                    strip_crc(data, str(path))
                except DamagedDataError as exc:
                    blame(rows, str(exc))
            report.chunks_checked += 1
            continue
        if len(data) < layout.index_nbytes:
            blame(rows, f"{path}: truncated ({len(data)} bytes)")
            continue
        idx = decode_shard_index(data[-layout.index_nbytes:], step)
        if idx is None:
            blame(rows, f"{path}: shard index corrupt (crc32c mismatch)")
            continue
        for j, row in enumerate(rows):
            off, nbytes = idx[j]
            if off == NO_CHUNK:
                continue
            if off + nbytes > len(data) - layout.index_nbytes:
                blame(np.array([row]), f"{path}: chunk of row {row} runs past the end (truncated)")
                continue
            report.chunks_checked += 1
            if layout.checksum and payload:
                try:
                    strip_crc(data[off:off + nbytes], f"{path} (row {row})")
                except DamagedDataError as exc:
                    blame(np.array([row]), str(exc))


def verify(store, *, payload: bool = True) -> VerifyReport:
    """Check every live part: its folder and attributes, its metadata arrays against its summary,
    every shard present (schema 2) with a good index, and (``payload``) every chunk's crc32c."""
    report = VerifyReport(str(store.path))
    view = store.view()
    for pid in view.live:
        report.parts_checked += 1
        part_dir = store.path / "parts" / pid
        subjects = view.subjects(pid)
        report.subjects_checked += len(subjects)
        n_slices = int(view.markers[pid]["n_slices"])
        try:
            attrs = json.loads((part_dir / "zarr.json").read_text())["attributes"][PART_ATTRS_KEY]
            if list(attrs["subjects"]) != subjects or int(attrs["n_slices"]) != n_slices:
                raise ValueError("its subjects or slice count differ from its commit marker")
        except (OSError, ValueError, KeyError) as exc:
            for sid in subjects:
                report.damaged_subjects.setdefault(sid, []).append(f"part {pid}: zarr.json missing or damaged ({exc})")
            continue
        subject_rows = None
        try:
            subject_rows = read_small_array(part_dir / "subject")
            meta = {k: read_small_array(part_dir / k) for k in SLICE_ARRAYS}
            seg, j = view.where[pid]
            if seg.n_slices[j] != n_slices or any(meta[k].shape[0] != n_slices for k in meta):
                raise ValueError(f"metadata arrays do not have {n_slices} rows")
        except (OSError, ValueError, DamagedDataError) as exc:
            report.damaged_parts.setdefault(pid, []).append(f"metadata: {exc}")
        for name in ("image", "label"):
            _check_array(part_dir / name, subject_rows, subjects, payload, report, pid, n_slices)
    return report


@dataclass
class GcReport:
    uncommitted: list[str] = field(default_factory=list)  # parts never committed, lease lapsed
    retired: list[str] = field(default_factory=list)  # parts replaced by `cohort remove`
    index_files: list[str] = field(default_factory=list)  # index segments no manifest refers to
    dry_run: bool = False

    def to_dict(self) -> dict:
        return {"uncommitted": self.uncommitted, "retired": self.retired, "index_files": self.index_files,
                "dry_run": self.dry_run}


def collect_garbage(store, *, min_lease_s: float = 0.0, dry_run: bool = False) -> GcReport:
    """Remove what no live part needs: uncommitted parts whose writer's lease has lapsed (never one
    being written, on any machine), parts replaced by ``remove_subjects`` (snapshots taken before
    that removal cannot be read after this) and index segments the manifest no longer lists; and
    index the committed parts the index misses."""
    report = GcReport(dry_run=dry_run)
    view = store.view()
    if view.unindexed and not dry_run:  # committed parts the index misses (version 1 parts, interrupted commits)
        from .durable import flock

        with flock(store.path / ".lock"):
            index.update_index(store.path)
        view = store.view()
    report.uncommitted = parts.collect_uncommitted(store.path, set(view.markers), min_lease_s, dry_run)
    for pid in sorted(view.retired & set(view.markers)):
        report.retired.append(pid)
        if not dry_run:
            (store.path / "commits" / f"{pid}.json").unlink(missing_ok=True)  # first: never a marker without its part
            shutil.rmtree(store.path / "parts" / pid, ignore_errors=True)
    if report.retired and not dry_run:  # the manifest forgets them (their summaries are gone)
        from .durable import flock

        with flock(store.path / ".lock"):
            index.update_index(store.path)
    folder = store.path / index.INDEX_DIR
    if folder.is_dir():
        listed = {e.get("file") for e in index.read_manifest(store.path)["entries"]}
        for f in sorted(folder.glob("seg-*.npz")):
            if f"{index.INDEX_DIR}/{f.name}" not in listed:
                report.index_files.append(f.name)
                if not dry_run:
                    f.unlink(missing_ok=True)
    return report


@dataclass
class RemoveReport:
    removed: list[str]
    replaced_parts: dict[str, str | None]  # old part -> the part holding its other subjects (None: none left)


def _new_array_meta(src: Path, dst: Path, n: int, outer_rows: int) -> None:
    """``dst/zarr.json``: the array metadata of ``src`` for ``n`` rows in chunks (or shards) of ``outer_rows``."""
    meta = json.loads((src / "zarr.json").read_text())
    meta["shape"] = [n] + list(meta["shape"][1:])
    meta["chunk_grid"]["configuration"]["chunk_shape"] = [outer_rows] + list(meta["shape"][1:])
    dst.mkdir(parents=True)
    (dst / "zarr.json").write_text(json.dumps(meta, allow_nan=True, indent=2))


def _write_values(src: Path, dst: Path, values: np.ndarray) -> None:
    """A per-slice metadata array with the codecs of ``src`` holding ``values``."""
    from .parts import _ChunkWriter, _fill_missing_chunks

    layout = read_layout(src)
    n = values.shape[0]
    _new_array_meta(src, dst, n, min(layout.chunk_rows, n))
    writer = _ChunkWriter.for_array(dst)
    for i in range(0, n, writer.chunk_rows):
        writer.write_chunk(i // writer.chunk_rows, values[i:i + writer.chunk_rows])
    _fill_missing_chunks(dst)


def _copy_pixels(src: Path, dst: Path, keep_rows: np.ndarray, shard_rows: int) -> None:
    """The rows ``keep_rows`` of a sharded pixel array, repacked into new shards chunk by chunk,
    the stored (compressed, checksummed) bytes unchanged."""
    layout = read_layout(src)
    if layout is None or not layout.sharded:
        raise StoreError(f"{src}: a layout this store does not write; cannot rewrite it")
    n = int(keep_rows.size)
    _new_array_meta(src, dst, n, shard_rows)
    new = read_layout(dst)
    chunks: list[bytes | None] = []
    cached: tuple[int, bytes, np.ndarray] | None = None
    for row in keep_rows.tolist():
        s, j = divmod(row, layout.chunk_rows)
        if cached is None or cached[0] != s:
            path = layout.chunk_path(src, s)
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                if layout.checksum:
                    raise DamagedDataError(f"{path}: missing; run `cardiossl cohort verify`", path) from None
                data = b""
            idx = decode_shard_index(data[-layout.index_nbytes:], layout.chunk_rows) if data else \
                np.full((layout.chunk_rows, 2), NO_CHUNK, dtype="<u8")
            if idx is None:
                raise DamagedDataError(f"{path}: shard index corrupt; run `cardiossl cohort verify`", path)
            cached = (s, data, idx)
        off, nbytes = (int(x) for x in cached[2][j])
        chunks.append(None if off == NO_CHUNK else cached[1][off:off + nbytes])
    for s in range(-(-n // new.chunk_rows)):
        index_arr = np.full((new.chunk_rows, 2), NO_CHUNK, dtype="<u8")
        pieces, offset = [], 0
        for k, c in enumerate(chunks[s * new.chunk_rows:(s + 1) * new.chunk_rows]):
            if c is not None:
                index_arr[k] = (offset, len(c))
                pieces.append(c)
                offset += len(c)
        if not pieces and not new.checksum:
            continue
        path = new.chunk_path(dst, s)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"".join(pieces) + encode_shard_index(index_arr))


def _rewrite_without(store, view, part_id: str, drop: set[str]):
    """The writer of a new part holding ``part_id``'s subjects except ``drop`` (for write_and_commit)."""
    src = store.path / "parts" / part_id
    seg, j = view.where[part_id]
    subjects = view.subjects(part_id)
    keep_subjects = [s for s in subjects if s not in drop]

    def write(dst: Path) -> dict:
        import zarr

        attrs = json.loads((src / "zarr.json").read_text())["attributes"][PART_ATTRS_KEY]
        meta = {k: read_small_array(src / k) for k in SLICE_ARRAYS}
        keep_local = np.array([i for i, s in enumerate(subjects) if s not in drop], np.int64)
        keep_rows = np.flatnonzero(np.isin(meta["subject"], keep_local))
        renumber = np.full(len(subjects), -1, np.int64)
        renumber[keep_local] = np.arange(keep_local.size)
        meta = {k: v[keep_rows] for k, v in meta.items()}
        meta["subject"] = renumber[meta["subject"]].astype(meta["subject"].dtype)
        group = zarr.open_group(str(dst), mode="a", zarr_format=3)
        shard = min(int(attrs.get("shard_slices") or keep_rows.size), int(keep_rows.size))
        for name in ("image", "label"):
            _copy_pixels(src / name, dst / name, keep_rows, shard)
        for name, values in meta.items():
            _write_values(src / name, dst / name, values)
        new_attrs = dict(attrs)
        new_attrs.update({
            "n_slices": int(keep_rows.size), "shard_slices": shard, "subjects": keep_subjects,
            "subject_meta": {s: v for s, v in (attrs.get("subject_meta") or {}).items() if s in keep_subjects},
            "subject_stats": {s: v for s, v in (attrs.get("subject_stats") or {}).items() if s in keep_subjects},
            "rewritten_from": part_id,
        })
        group.attrs[PART_ATTRS_KEY] = new_attrs
        digests = seg.subject_digest[seg.subject_start[j]:seg.subject_start[j + 1]][keep_local]
        return index.summarise(keep_subjects, meta, digests, new_attrs["subject_stats"], shard,
                               int(attrs.get("schema_version", 1)))

    return keep_subjects, write


def remove_subjects(store, subject_ids: list[str]) -> RemoveReport:
    """Withdraw ``subject_ids``: from the next snapshot on they are gone, their parts rewritten
    without them; the old parts are deleted by the next ``gc``. Unknown ids: StoreError naming them."""
    ids = list(dict.fromkeys(subject_ids))
    if not ids:
        raise StoreError("cohort remove needs at least one subject id")
    view = store.view()
    owner = {s: pid for pid in view.live for s in view.subjects(pid)}
    unknown = [s for s in ids if s not in owner]
    if unknown:
        raise StoreError(f"not in {store.path}: {', '.join(unknown)} (nothing was removed)")
    by_part: dict[str, set[str]] = {}
    for s in ids:
        by_part.setdefault(owner[s], set()).add(s)
    replaced: dict[str, str | None] = {}
    for pid, drop in by_part.items():
        keep, write = _rewrite_without(store, view, pid, drop)
        removed = sorted(drop)
        if not keep:
            parts.commit_retirement(store.path, [pid], removed)
            replaced[pid] = None
            continue
        new_id = parts.new_part_id()
        parts.write_and_commit(store.path, new_id, keep, write, replaces=[pid], removed=removed,
                               lease_s=store.lease_s)
        replaced[pid] = new_id
    return RemoveReport(sorted(ids), replaced)
