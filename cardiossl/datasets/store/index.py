"""The store's metadata index: every committed part's per-slice metadata in a handful of files.

Opening a store used to read every part's metadata (a dozen small arrays and a JSON document per
part: ~80,000 files for 100,000 subjects). Each part now also carries a columnar summary
(``parts/<id>/summary.npz``, written before its commit like the rest of the part) and the committer
lists it in ``index/manifest.json`` right after its commit point. Summaries are merged as they
accumulate, log-structured (O'Neil et al., Acta Informatica 1996): ``FANOUT`` entries of one level
become one segment of the next, so a store of P parts is read from at most ~FANOUT x log_FANOUT(P)
files and each part is rewritten only log_FANOUT(P) times.

The commit markers stay the truth (``commits/<id>.json``: a part is visible iff its marker exists);
the index is a cache of them. A reader lists ``commits/`` (one ``readdir``), takes what the manifest
covers and reads the few parts it does not (a committer killed between its commit point and its
index update, a version 1 store) from their own files; the next commit folds them in.

Columns are compact: ids are interned (a slice holds the index of its subject, of its plane with
its stack position, of its normalisation row and of its source plane), the part and row of a slice
are implied by the part's offset. Cine frames of one slice position share its plane row, so a
cohort with F frames per position costs 35 + 92 / F bytes per slice in a training table (source
planes are loaded only for the fingerprint and tools).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import uuid
from collections import OrderedDict
from pathlib import Path

import numpy as np

from .layout import PART_ATTRS_KEY, SLICE_ARRAYS, DamagedDataError, StoreError, read_small_array

SUMMARY_FILE = "summary.npz"
INDEX_DIR = "index"
MANIFEST = "manifest.json"
FANOUT = 8
INDEX_FORMAT = 1

# per-slice columns of the index (the plane, source plane and norm rows are interned)
SLICE_COLUMNS: dict[str, tuple[str, tuple[int, ...]]] = {
    "subject": ("int32", ()),  # index into the segment's (or table's) subject list
    "view": ("int8", ()),
    "frame": ("int16", ()),
    "phase": ("int8", ()),
    "slice_index": ("int16", ()),
    "has_label": ("bool", ()),
    "image_scale": ("float64", (2,)),
    "plane_index": ("int32", ()),  # row of planes / plane_stack
    "norm_index": ("int32", ()),  # row of norms
}
SOURCE_COLUMN = "source_index"  # int32, row of source_planes / source_shapes (loaded on request)
# interned tables: name -> (dtype, row shape, the slice column that indexes it)
TABLES: dict[str, tuple[str, tuple[int, ...], str]] = {
    "planes": ("float64", (11,), "plane_index"),
    "plane_stack": ("float32", (), "plane_index"),  # stack_position of the slices on that plane
    "norms": ("float32", (4,), "norm_index"),
}
SOURCE_TABLES: dict[str, tuple[str, tuple[int, ...], str]] = {
    "source_planes": ("float64", (11,), SOURCE_COLUMN),
    "source_shapes": ("int32", (2,), SOURCE_COLUMN),
}
STATS_FIELDS = ("n_pixels", "min", "max", "p0_5", "p50", "p99_5", "mean", "std")
_DIGEST_FIELDS = ("view", "frame", "phase", "slice_index", "stack_position", "has_label", "plane",
                  "source_plane", "source_shape", "image_scale", "norm")


# ---------------------------------------------------------------------------------------------
# building a part's summary
def subject_digests(subjects: list[str], meta: dict[str, np.ndarray], pixel_crc: np.ndarray | None) -> np.ndarray:
    """sha256 per subject of its slices' metadata rows and (schema 2) the crc32c of their raw pixels.

    The content identity of a subject: the same source data ingested on the same grid gives the same
    digest whatever part, batch, order or time it was written in. ``pixel_crc`` is [N, 2] uint32
    (image, label) of the uncompressed chunk bytes, so it does not depend on the codec either."""
    n = meta["subject"].shape[0]
    cols = [np.ascontiguousarray(meta[k]).reshape(n, -1).view(np.uint8).reshape(n, -1) for k in _DIGEST_FIELDS]
    if pixel_crc is not None:
        cols.append(np.ascontiguousarray(pixel_crc, dtype="<u4").view(np.uint8).reshape(n, -1))
    rows = np.concatenate(cols, axis=1) if n else np.zeros((0, 1), np.uint8)
    out = np.zeros(len(subjects), dtype="S32")
    order = np.argsort(meta["subject"], kind="stable")
    starts = np.searchsorted(meta["subject"][order], np.arange(len(subjects) + 1))
    for i, sid in enumerate(subjects):
        h = hashlib.sha256(sid.encode())
        h.update(rows[order[starts[i]:starts[i + 1]]].tobytes())
        out[i] = h.digest()
    return out


def _intern(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(unique rows, index of each row): rows compared by their bytes, so NaNs intern too."""
    rows = np.ascontiguousarray(rows).reshape(rows.shape[0], -1)
    if rows.shape[0] == 0:
        return rows, np.zeros(0, np.int32)
    keys = rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).reshape(-1)
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return rows[first], inverse.reshape(-1).astype(np.int32)


def summarise(subjects: list[str], meta: dict[str, np.ndarray], digests: np.ndarray,
              subject_stats: dict, shard_slices: int, schema_version: int) -> dict[str, np.ndarray]:
    """The index columns of one part from its per-slice metadata arrays (``SLICE_ARRAYS``)."""
    from ..records import VIEWS

    n = meta["subject"].shape[0]
    out: dict[str, np.ndarray] = {"format": np.array(INDEX_FORMAT)}
    out["part_n_slices"] = np.array([n], np.int64)
    out["part_n_subjects"] = np.array([len(subjects)], np.int64)
    out["part_shard_slices"] = np.array([shard_slices], np.int64)
    out["part_schema"] = np.array([schema_version], np.int16)
    out["subject_ids"] = np.array([s.encode() for s in subjects], dtype=f"S{max([1] + [len(s) for s in subjects])}")
    out["subject_digest"] = np.asarray(digests, dtype="S32")
    for k in ("frame", "slice_index"):
        v = np.asarray(meta[k])
        if v.size and (v.min() < -32768 or v.max() > 32767):
            raise StoreError(f"{k} values {v.min()}..{v.max()} do not fit the index (int16); split the series")
    for k in ("subject", "view", "frame", "phase", "slice_index", "has_label", "image_scale"):
        dtype, _ = SLICE_COLUMNS[k]
        out[k] = np.ascontiguousarray(meta[k], dtype=dtype)
    geo = np.concatenate([np.asarray(meta["plane"], np.float64),
                          np.asarray(meta["stack_position"], np.float32).astype(np.float64)[:, None]], axis=1)
    table, out["plane_index"] = _intern(geo)
    out["planes"] = np.ascontiguousarray(table[:, :11])
    out["plane_stack"] = table[:, 11].astype(np.float32)
    src = np.concatenate([np.asarray(meta["source_plane"], np.float64),
                          np.asarray(meta["source_shape"], np.float64)], axis=1)
    table, out[SOURCE_COLUMN] = _intern(src)
    out["source_planes"] = np.ascontiguousarray(table[:, :11])
    out["source_shapes"] = table[:, 11:13].astype(np.int32)
    out["norms"], out["norm_index"] = _intern(np.asarray(meta["norm"], np.float32))
    st_subject, st_view, st = [], [], []
    for i, sid in enumerate(subjects):
        for view, s in (subject_stats.get(sid) or {}).items():
            st_subject.append(i)
            st_view.append(VIEWS.index(view))
            st.append([float(s[f]) for f in STATS_FIELDS])
    out["stats_subject"] = np.array(st_subject, np.int32)
    out["stats_view"] = np.array(st_view, np.int8)
    out["stats"] = np.array(st, np.float64).reshape(-1, len(STATS_FIELDS))
    return out


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Uncompressed npz (no pickles), written whole under a temporary name and renamed into place."""
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)


def summary_from_part(part_dir: Path, part_id: str) -> dict[str, np.ndarray]:
    """The summary of a part without one (schema version 1), from its metadata arrays and attributes;
    its digests then cover the metadata only (version 1 keeps no pixel checksum)."""
    try:
        attrs = json.loads((part_dir / "zarr.json").read_text())["attributes"][PART_ATTRS_KEY]
        meta = {k: read_small_array(part_dir / k) for k in SLICE_ARRAYS}
    except (OSError, KeyError, ValueError) as exc:
        raise DamagedDataError(f"committed part {part_id} is missing or damaged in {part_dir.parent.parent} "
                               f"({exc})", part_dir) from None
    subjects = list(attrs["subjects"])
    return summarise(subjects, meta, subject_digests(subjects, meta, None), attrs.get("subject_stats") or {},
                     int(attrs.get("shard_slices", 0)), int(attrs.get("schema_version", 1)))


# ---------------------------------------------------------------------------------------------
# segments: one or more parts' summaries, loaded lazily and cached (they never change once written)
class Segment:
    """The index rows of some parts, in commit order. Part- and subject-level arrays are kept; the
    per-slice columns and tables are read from the file when asked for (``columns``), not kept, so a
    cached segment costs little memory in every process that opened the store."""

    def __init__(self, arrays: dict[str, np.ndarray] | None = None, path: Path | None = None,
                 markers: list[dict] | None = None) -> None:
        self.path = path
        self._cols: dict[str, np.ndarray] = {}
        if arrays is None:
            with np.load(path, allow_pickle=False) as z:
                names = set(z.files)
                small = [k for k in names if k.startswith("part_") or k in ("subject_ids", "subject_digest", "markers")]
                arrays = {k: z[k] for k in small}
        else:
            names = set(arrays)
            self._cols = dict(arrays)
        self.names = names
        if markers is None:
            markers = json.loads(str(arrays["markers"])) if "markers" in arrays else [{}]
        self.markers = markers
        self.n_slices = arrays["part_n_slices"].astype(np.int64)
        self.n_subjects = arrays["part_n_subjects"].astype(np.int64)
        self.shard_slices = arrays["part_shard_slices"].astype(np.int64)
        self.schema = arrays["part_schema"].astype(np.int64)
        self.part_ids = [m.get("part_id") for m in markers]
        self.slice_start = np.concatenate([[0], np.cumsum(self.n_slices)])
        self.subject_start = np.concatenate([[0], np.cumsum(self.n_subjects)])
        self.subject_ids = arrays["subject_ids"]
        self.subject_digest = arrays["subject_digest"]

    def columns(self, names) -> dict[str, np.ndarray]:
        """The arrays ``names``, read in one pass over the file."""
        if self.path is None:
            return {k: self._cols[k] for k in names}
        with np.load(self.path, allow_pickle=False) as z:
            return {k: z[k] for k in names}

    def column(self, name: str) -> np.ndarray:
        return self.columns([name])[name]

    def subjects_of(self, j: int) -> list[str]:
        return [s.decode() for s in self.subject_ids[self.subject_start[j]:self.subject_start[j + 1]].tolist()]


_SEGMENTS: OrderedDict[tuple, Segment] = OrderedDict()
_SEGMENTS_LOCK = threading.Lock()
_MAX_SEGMENTS = 256


def _load_segment(path: Path, markers: list[dict] | None) -> Segment:
    st = os.stat(path)
    key = (str(path), st.st_size, st.st_mtime_ns, json.dumps(markers, sort_keys=True) if markers else None)
    with _SEGMENTS_LOCK:
        seg = _SEGMENTS.get(key)
        if seg is not None:
            _SEGMENTS.move_to_end(key)
            return seg
    seg = Segment(path=path, markers=markers)
    with _SEGMENTS_LOCK:
        _SEGMENTS[key] = seg
        while len(_SEGMENTS) > _MAX_SEGMENTS:
            _SEGMENTS.popitem(last=False)
    return seg


def marker_record(marker: dict) -> dict:
    """A marker as the index keeps it: without its subject list (the segment holds that)."""
    return {k: v for k, v in marker.items() if k != "subjects"}


# ---------------------------------------------------------------------------------------------
# the view of the committed parts a reader works from
class IndexView:
    """Every committed part (live or retired) with its marker and where its index rows are."""

    def __init__(self, markers: dict[str, dict], where: dict[str, tuple[Segment, int]],
                 unindexed: list[str]) -> None:
        self.markers = markers
        self.where = where
        self.unindexed = unindexed  # committed parts the manifest did not cover (read from their own files)
        retired = {r for m in markers.values() for r in m.get("replaces") or ()}
        self.retired = retired
        self.removed = sorted({s for m in markers.values() for s in m.get("removed") or ()})
        order = sorted(markers.values(), key=lambda m: (m["seq"], m["part_id"]))
        self.live = [m["part_id"] for m in order if m["part_id"] not in retired and m.get("n_slices", 0) > 0]

    def subjects(self, part_id: str) -> list[str]:
        seg, j = self.where[part_id]
        return seg.subjects_of(j)

    def digests(self, part_id: str) -> np.ndarray:
        seg, j = self.where[part_id]
        return seg.subject_digest[seg.subject_start[j]:seg.subject_start[j + 1]]


def _listing(store_path: Path) -> list[str]:
    try:
        with os.scandir(store_path / "commits") as it:
            return [e.name[:-5] for e in it if e.name.endswith(".json") and not e.name.startswith(".")]
    except FileNotFoundError:
        return []


def read_manifest(store_path: Path) -> dict:
    try:
        m = json.loads((store_path / INDEX_DIR / MANIFEST).read_text())
        if isinstance(m, dict) and m.get("format") == INDEX_FORMAT and isinstance(m.get("entries"), list):
            return m
    except (OSError, ValueError):
        pass
    return {"format": INDEX_FORMAT, "entries": []}


def _entry_segment(store_path: Path, entry: dict) -> Segment | None:
    if entry.get("file") is None:  # a marker without slices (a part retired by `cohort remove`)
        arrays = {"part_n_slices": np.zeros(1, np.int64), "part_n_subjects": np.zeros(1, np.int64),
                  "part_shard_slices": np.zeros(1, np.int64), "part_schema": np.zeros(1, np.int64),
                  "subject_ids": np.zeros(0, "S1"), "subject_digest": np.zeros(0, "S32")}
        return Segment(arrays=arrays, markers=entry["markers"])
    return _load_segment(store_path / entry["file"], entry.get("markers"))


def _part_segment(store_path: Path, part_id: str, marker: dict) -> Segment:
    part_dir = store_path / "parts" / part_id
    rec = marker_record(marker)
    if (part_dir / SUMMARY_FILE).is_file():
        return _load_segment(part_dir / SUMMARY_FILE, [rec])
    key = (str(part_dir), "v1")
    with _SEGMENTS_LOCK:
        seg = _SEGMENTS.get(key)
    if seg is None:
        seg = Segment(arrays=summary_from_part(part_dir, part_id), markers=[rec])
        with _SEGMENTS_LOCK:
            _SEGMENTS[key] = seg
    return seg


def read_marker(store_path: Path, part_id: str) -> dict:
    p = store_path / "commits" / f"{part_id}.json"
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise StoreError(f"commit marker {p} is unreadable ({exc}); the store is damaged") from None


def load_view(store_path: Path) -> IndexView:
    """The committed parts: the manifest's segments for what it covers, the parts' own files for the rest."""
    store_path = Path(store_path)
    listing = set(_listing(store_path))
    segments: list[Segment] = []
    for _ in range(3):  # a concurrent merge may delete a segment between manifest and load
        segments, missing = [], False
        for e in read_manifest(store_path)["entries"]:
            try:
                segments.append(_entry_segment(store_path, e))
            except FileNotFoundError:  # merged away (read the manifest again), or a collected part's summary
                missing = True
        if not missing:
            break
    markers: dict[str, dict] = {}
    where: dict[str, tuple[Segment, int]] = {}
    for seg in segments:
        for j, (pid, m) in enumerate(zip(seg.part_ids, seg.markers)):
            if pid in listing:
                markers[pid] = m
                where[pid] = (seg, j)
    unindexed = sorted(listing - set(markers))
    for pid in unindexed:
        m = read_marker(store_path, pid)
        markers[pid] = marker_record(m)
        if int(m.get("n_slices", 0)) > 0:
            where[pid] = (_part_segment(store_path, pid, m), 0)
        else:
            where[pid] = (_entry_segment(store_path, {"file": None, "markers": [marker_record(m)]}), 0)
    return IndexView(markers, where, unindexed)


# ---------------------------------------------------------------------------------------------
# keeping the index up to date (called by the committer, under the store lock)
def _merge(store_path: Path, entries: list[dict], level: int, listing: set[str]) -> dict:
    """One segment file of ``level`` holding the parts of ``entries`` that are still committed."""
    parts: list[tuple[Segment, int]] = []
    for e in entries:
        seg = _entry_segment(store_path, e)
        parts += [(seg, j) for j, pid in enumerate(seg.part_ids) if pid in listing]
    out = concat(parts, with_stats=True)
    out["markers"] = np.array(json.dumps([seg.markers[j] for seg, j in parts]))
    folder = store_path / INDEX_DIR
    path = folder / f"seg-L{level}-{uuid.uuid4().hex[:12]}.npz"
    write_npz(path, out)
    return {"file": f"{INDEX_DIR}/{path.name}", "level": level, "markers": None}


def update_index(store_path: Path, part_id: str | None = None, marker: dict | None = None) -> None:
    """Add a just-committed part to the index (and any committed part it missed: with no part given,
    only those), then merge ``FANOUT`` entries of a level into one of the next. Call under the store lock."""
    store_path = Path(store_path)
    (store_path / INDEX_DIR).mkdir(exist_ok=True)
    manifest = read_manifest(store_path)
    listing = set(_listing(store_path))
    entries, covered = [], set()
    for e in manifest["entries"]:
        try:
            seg = _entry_segment(store_path, e)
        except FileNotFoundError:
            continue
        entries.append(e)
        covered.update(seg.part_ids)
    new = [part_id] if part_id and part_id not in covered else []  # (another committer may have added it)
    for pid in sorted(listing - covered - {part_id}) + new:  # repair, then the new part
        m = marker if pid == part_id else read_marker(store_path, pid)
        rec = marker_record(m)
        if int(m.get("n_slices", 0)) == 0:
            entries.append({"file": None, "level": 0, "markers": [rec]})
        elif (store_path / "parts" / pid / SUMMARY_FILE).is_file():
            entries.append({"file": f"parts/{pid}/{SUMMARY_FILE}", "level": 0, "markers": [rec]})
        else:  # a version 1 part: its summary goes into the index folder, never into the part
            path = store_path / INDEX_DIR / f"seg-v1-{pid}.npz"
            write_npz(path, summary_from_part(store_path / "parts" / pid, pid))
            entries.append({"file": f"{INDEX_DIR}/{path.name}", "level": 0, "markers": [rec]})
    obsolete = []
    while True:
        levels: dict[int, list[int]] = {}
        for i, e in enumerate(entries):
            levels.setdefault(int(e["level"]), []).append(i)
        full = [lv for lv, idx in sorted(levels.items()) if len(idx) >= FANOUT]
        if not full:
            break
        lv = full[0]
        idx = levels[lv][:FANOUT]
        merged = _merge(store_path, [entries[i] for i in idx], lv + 1, listing | ({part_id} if part_id else set()))
        obsolete += [entries[i]["file"] for i in idx if (entries[i].get("file") or "").startswith(INDEX_DIR + "/")]
        entries = entries[: idx[0]] + [merged] + [e for i, e in enumerate(entries) if i > idx[0] and i not in idx]
    tmp = store_path / INDEX_DIR / f".{MANIFEST}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.write_text(json.dumps({"format": INDEX_FORMAT, "entries": entries}))
    os.replace(tmp, store_path / INDEX_DIR / MANIFEST)
    for f in obsolete:
        (store_path / f).unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# concatenating index rows of parts in a given order
def concat(parts: list[tuple[Segment, int]], with_stats: bool = False,
           with_sources: bool | None = None) -> dict[str, np.ndarray]:
    """The index columns of ``parts`` (segment, part index) in that order, as one segment's arrays:
    subject, plane, source and norm indices renumbered; each segment's tables included once.
    Statistics and source planes only when asked (a training table needs neither)."""
    with_sources = with_stats if with_sources is None else with_sources
    slice_columns = dict(SLICE_COLUMNS, **({SOURCE_COLUMN: ("int32", ())} if with_sources else {}))
    all_tables = dict(TABLES, **(SOURCE_TABLES if with_sources else {}))
    table_of = {spec[2]: name for name, spec in all_tables.items()}
    runs: list[list] = []  # [segment, first part, last part + 1]
    for seg, j in parts:
        if runs and runs[-1][0] is seg and runs[-1][2] == j:
            runs[-1][2] = j + 1
        else:
            runs.append([seg, j, j + 1])
    cols: dict[str, list[np.ndarray]] = {k: [] for k in slice_columns}
    tables: dict[str, list[np.ndarray]] = {k: [] for k in all_tables}
    table_offset: dict[int, dict[str, int]] = {}
    table_len = {k: 0 for k in all_tables}
    subj_ids, digests, st_subject, st_view, st = [], [], [], [], []
    n_subjects = 0
    part_cols: dict[str, list[np.ndarray]] = {k: [] for k in ("part_n_slices", "part_n_subjects",
                                                                "part_shard_slices", "part_schema")}
    for seg, j0, j1 in runs:
        s0, s1 = int(seg.slice_start[j0]), int(seg.slice_start[j1])
        u0, u1 = int(seg.subject_start[j0]), int(seg.subject_start[j1])
        part_cols["part_n_slices"].append(seg.n_slices[j0:j1])
        part_cols["part_n_subjects"].append(seg.n_subjects[j0:j1])
        part_cols["part_shard_slices"].append(seg.shard_slices[j0:j1])
        part_cols["part_schema"].append(seg.schema[j0:j1])
        subj_ids.append(seg.subject_ids[u0:u1])
        digests.append(seg.subject_digest[u0:u1])
        if s1 > s0:
            wanted = list(slice_columns) + ([] if id(seg) in table_offset else list(all_tables))
            loaded = seg.columns(wanted)
            if id(seg) not in table_offset:
                table_offset[id(seg)] = {}
                for name in all_tables:
                    t = loaded[name]
                    table_offset[id(seg)][name] = table_len[name]
                    tables[name].append(t)
                    table_len[name] += t.shape[0]
            off = table_offset[id(seg)]
            for k, (dtype, _) in slice_columns.items():
                c = loaded[k][s0:s1]
                if k == "subject":
                    c = c - u0 + n_subjects
                elif k in table_of:
                    c = c + off[table_of[k]]
                cols[k].append(c.astype(dtype, copy=False))
        if with_stats and "stats" in seg.names:
            sc = seg.columns(["stats_subject", "stats_view", "stats"])
            ss = sc["stats_subject"]
            keep = (ss >= u0) & (ss < u1)
            st_subject.append(ss[keep] - u0 + n_subjects)
            st_view.append(sc["stats_view"][keep])
            st.append(sc["stats"][keep])
        n_subjects += u1 - u0
    out: dict[str, np.ndarray] = {"format": np.array(INDEX_FORMAT)}
    for k, v in part_cols.items():
        out[k] = np.concatenate(v) if v else np.zeros(0, np.int64)
    width = max([1] + [a.dtype.itemsize for a in subj_ids])
    out["subject_ids"] = np.concatenate([a.astype(f"S{width}") for a in subj_ids]) if subj_ids else np.zeros(0, "S1")
    out["subject_digest"] = np.concatenate(digests) if digests else np.zeros(0, "S32")
    for k, (dtype, shape) in slice_columns.items():
        out[k] = np.concatenate(cols[k]) if cols[k] else np.zeros((0,) + shape, dtype)
    for k, (dtype, shape, _) in all_tables.items():
        out[k] = np.concatenate(tables[k]) if tables[k] else np.zeros((0,) + shape, dtype)
    if with_stats:
        out["stats_subject"] = np.concatenate(st_subject) if st_subject else np.zeros(0, np.int32)
        out["stats_view"] = np.concatenate(st_view) if st_view else np.zeros(0, np.int8)
        out["stats"] = np.concatenate(st) if st else np.zeros((0, len(STATS_FIELDS)))
        out = _compact_tables(out)
    return out


def _compact_tables(out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Drop table rows no slice refers to (parts collected since), renumbering the indices."""
    for col, names in (("plane_index", ("planes", "plane_stack")), (SOURCE_COLUMN, ("source_planes", "source_shapes")),
                       ("norm_index", ("norms",))):
        used, inverse = np.unique(out[col], return_inverse=True)
        if used.size == out[names[0]].shape[0]:
            continue
        out[col] = inverse.reshape(-1).astype(np.int32)
        for name in names:
            out[name] = out[name][used]
    return out
