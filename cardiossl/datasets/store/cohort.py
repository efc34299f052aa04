"""The CohortStore facade: open or create a store, write subjects as parts, read the slice table.

The layout and the reasons for it are in ``cardiossl.datasets.store``'s docstring; the writing and
commit protocol in ``parts``, the array format in ``layout``, statistics in ``stats`` and the
fingerprint in ``fingerprint``.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..geometry import Plane
from ..records import PHASES, VIEWS, SubjectRecord
from . import parts
from .durable import flock, make_durable
from .fingerprint import compute_fingerprint
from .layout import ATTRS_KEY, FORMAT_NAME, PART_ATTRS_KEY, SCHEMA_VERSION, SLICE_ARRAYS, StoreError, read_small_array


@dataclass
class SliceTable:
    """Per-slice metadata over all committed parts, in storage order (part by part, row by row)."""

    part_ids: list[str]
    subject_ids: list[str]  # global subject index -> id (commit order)
    part: np.ndarray  # int32, index into part_ids
    row: np.ndarray  # int64, row inside the part
    subject: np.ndarray  # int32, index into subject_ids
    view: np.ndarray
    frame: np.ndarray
    phase: np.ndarray
    slice_index: np.ndarray
    stack_position: np.ndarray
    has_label: np.ndarray
    plane: np.ndarray
    source_plane: np.ndarray
    source_shape: np.ndarray
    image_scale: np.ndarray
    norm: np.ndarray

    def __len__(self) -> int:
        return int(self.part.shape[0])



class CohortStore:
    """A cohort of subjects on one in-plane grid; see the module docstring for the layout."""

    def __init__(self, path) -> None:
        self.path = Path(path)
        root = self.path / "zarr.json"
        if not root.is_file():
            raise StoreError(
                f"{self.path} is not a cardiossl cohort store (no zarr.json there); create one with "
                "`cardiossl ingest` or `cardiossl synth --format zarr`"
            )
        try:
            meta = json.loads(root.read_text())
        except (OSError, ValueError) as exc:
            raise StoreError(f"{self.path} is not a cardiossl cohort store: zarr.json unreadable ({exc})") from None
        attrs = (meta.get("attributes") or {}).get(ATTRS_KEY)
        if meta.get("zarr_format") != 3 or not isinstance(attrs, dict) or attrs.get("format") != FORMAT_NAME:
            raise StoreError(
                f"{self.path} is a zarr node but not a cardiossl cohort store (no '{ATTRS_KEY}' "
                f"attributes with format {FORMAT_NAME!r})"
            )
        version = attrs.get("schema_version")
        if version != SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has cohort schema version {version}; this cardiossl reads version "
                f"{SCHEMA_VERSION}. Re-ingest the cohort or install a matching cardiossl"
            )
        self.schema_version: int = version
        self.grid_size: int = int(attrs["grid_size"])
        self.spacing_mm: float = float(attrs["spacing_mm"])
        self._root_attrs = attrs
        self._part_cache: dict[str, dict[str, np.ndarray]] = {}
        self._part_attrs_cache: dict[str, dict] = {}
        self._marker_cache: dict[str, dict] = {}  # commit marker file name -> parsed marker
        self._sorted_markers: list[dict] = []
        self._subject_set: set[str] = set()

    # creation -------------------------------------------------------------------------------
    @classmethod
    def create(cls, path, *, grid_size: int = 128, spacing_mm: float = 1.5) -> CohortStore:
        """Create a store, or open an existing one with the same grid (a different grid: StoreError)."""
        path = Path(path)
        grid_size, spacing_mm = int(grid_size), float(spacing_mm)
        if grid_size < 8 or not spacing_mm > 0:
            raise StoreError(f"grid_size must be >= 8 and spacing_mm > 0, got {grid_size}, {spacing_mm}")
        if path.exists() and not path.is_dir():
            raise StoreError(f"{path} exists and is not a folder; choose another store path")
        path.mkdir(parents=True, exist_ok=True)
        with flock(path / ".lock"):
            if (path / "zarr.json").exists():
                store = cls(path)
                if store.grid_size != grid_size or abs(store.spacing_mm - spacing_mm) > 1e-9:
                    raise StoreError(
                        f"{path} already holds a store on a {store.grid_size}px grid at "
                        f"{store.spacing_mm} mm; asked for {grid_size}px at {spacing_mm} mm. Use the same "
                        "grid or another store path"
                    )
                return store
            others = [p.name for p in path.iterdir() if p.name != ".lock"]
            if others:
                raise StoreError(
                    f"{path} is not empty and not a cardiossl store ({', '.join(sorted(others)[:5])}); "
                    "choose an empty or new folder"
                )
            import zarr

            root = zarr.open_group(str(path), mode="a", zarr_format=3)  # "w-" refuses the .lock file
            root.attrs[ATTRS_KEY] = {
                "format": FORMAT_NAME,
                "schema_version": SCHEMA_VERSION,
                "grid_size": grid_size,
                "spacing_mm": spacing_mm,
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "fingerprint": {},
            }
            root.create_group("parts")
            (path / "commits").mkdir(exist_ok=True)
        return cls(path)

    # commits ----------------------------------------------------------------------------------
    def _commits(self) -> list[dict]:
        """Every commit marker, in commit order.

        Markers are immutable once ``os.replace`` has put them in place, so each is parsed once per
        instance and cached by file name; every call still lists the folder, so markers committed by
        other writers since the last call are seen (and a marker that disappeared is dropped).
        """
        folder = self.path / "commits"
        names = []
        try:
            with os.scandir(folder) as it:
                names = [e.name for e in it if not e.name.startswith(".") and e.name.endswith(".json")]
        except FileNotFoundError:
            pass
        cache = self._marker_cache
        if len(cache) != len(names) or any(n not in cache for n in names):
            for name in set(cache) - set(names):
                del cache[name]
            for name in names:
                if name in cache:
                    continue
                p = folder / name
                try:
                    cache[name] = json.loads(p.read_text())
                except (OSError, ValueError) as exc:
                    raise StoreError(f"commit marker {p} is unreadable ({exc}); the store is damaged") from None
            self._sorted_markers = sorted(cache.values(), key=lambda m: (m["seq"], m["part_id"]))
            self._subject_set = {s for m in self._sorted_markers for s in m["subjects"]}
        return list(self._sorted_markers)

    def part_ids(self) -> list[str]:
        """Committed parts, in commit order."""
        return [m["part_id"] for m in self._commits()]

    def subject_ids(self) -> list[str]:
        return [s for m in self._commits() for s in m["subjects"]]

    def has_subject(self, subject_id: str) -> bool:
        self._commits()
        return subject_id in self._subject_set

    def part_path(self, part_id: str) -> Path:
        return self.path / "parts" / parts.check_part_id(part_id)

    # writing ----------------------------------------------------------------------------------
    def write_subjects(self, records: list[SubjectRecord], part_id: str | None = None) -> str:
        """Validate, resample and write ``records`` as one new part, committed atomically.

        Raises RecordError for a bad record and StoreError for ids already in the store or repeated
        in ``records``; in every failure the store is left exactly as it was.
        """
        records = list(records)
        if not records:
            raise StoreError("write_subjects needs at least one subject record")
        for rec in records:
            if not isinstance(rec, SubjectRecord):
                raise StoreError(f"write_subjects takes SubjectRecord objects, got {type(rec).__name__}")
            rec.validate()
        ids = [r.subject_id for r in records]
        repeated = sorted({s for s in ids if ids.count(s) > 1})
        if repeated:
            raise StoreError(f"duplicate subject ids in one write: {', '.join(repeated)}; give each subject a unique id")
        self._commits()
        present = sorted(set(ids) & self._subject_set)
        if present:
            raise StoreError(
                f"subjects already in {self.path}: {', '.join(present)}; remove them from this write "
                "(ingest skips subjects already present)"
            )
        metas = {r.subject_id: parts.jsonable(r.meta, f"subject {r.subject_id}: meta") for r in records}

        part_id = parts.check_part_id(part_id) if part_id else parts.new_part_id()
        part_dir = self.path / "parts" / part_id
        if (self.path / "commits" / f"{part_id}.json").exists():
            raise StoreError(f"part {part_id} is already committed in {self.path}; parts are immutable")
        try:
            part_dir.mkdir()
        except FileExistsError:
            raise StoreError(
                f"part folder {part_dir} already exists (another writer, or a crashed one: run "
                "CohortStore.cleanup_incomplete() first)"
            ) from None
        lock_fd = os.open(part_dir / ".writer.lock", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            os.write(lock_fd, json.dumps({"host": socket.gethostname(), "pid": os.getpid()}).encode())
            n_slices = self._write_part(part_dir, part_id, records, metas)
            make_durable(part_dir, lock_fd)
            self._commit(part_id, ids, n_slices)
        except BaseException:
            shutil.rmtree(part_dir, ignore_errors=True)
            raise
        finally:
            os.close(lock_fd)
        return part_id

    def _write_part(self, part_dir: Path, part_id: str, records: list[SubjectRecord], metas: dict) -> int:
        return parts.write_part(part_dir, part_id, records, metas, grid_size=self.grid_size,
                                spacing_mm=self.spacing_mm)

    def _commit(self, part_id: str, ids: list[str], n_slices: int) -> None:
        parts.commit_part(self.path, part_id, ids, n_slices, self._commits)

    def cleanup_incomplete(self) -> list[str]:
        """Remove parts that were never committed and whose writer is gone; return their ids.

        A part being written is skipped: its writer holds an flock on ``.writer.lock``.
        """
        return parts.cleanup_incomplete(self.path, set(self.part_ids()))

    # reading ----------------------------------------------------------------------------------
    def _part_attrs(self, part_id: str) -> dict:
        if part_id not in self._part_attrs_cache:
            p = self.path / "parts" / part_id / "zarr.json"
            try:
                self._part_attrs_cache[part_id] = json.loads(p.read_text())["attributes"][PART_ATTRS_KEY]
            except (OSError, ValueError, KeyError) as exc:
                raise StoreError(f"committed part {part_id} is missing or damaged in {self.path} ({exc})") from None
        return self._part_attrs_cache[part_id]

    def _part_arrays(self, part_id: str) -> dict[str, np.ndarray]:
        """The per-slice metadata arrays of one part (parts are immutable, so cached)."""
        if part_id not in self._part_cache:
            folder = self.path / "parts" / part_id
            try:
                self._part_cache[part_id] = {k: read_small_array(folder / k) for k in SLICE_ARRAYS}
            except (OSError, KeyError, ValueError) as exc:
                raise StoreError(f"committed part {part_id} is missing or damaged in {self.path} ({exc})") from None
        return self._part_cache[part_id]

    def slice_table(self) -> SliceTable:
        commits = self._commits()
        part_ids = [m["part_id"] for m in commits]
        subject_ids: list[str] = []
        cols: dict[str, list[np.ndarray]] = {k: [] for k in SLICE_ARRAYS}
        part_col, row_col = [], []
        for pi, m in enumerate(commits):
            arrays = self._part_arrays(m["part_id"])
            n = arrays["subject"].shape[0]
            for k in SLICE_ARRAYS:
                cols[k].append(arrays[k])
            cols["subject"][-1] = arrays["subject"].astype(np.int32) + len(subject_ids)
            subject_ids.extend(m["subjects"])
            part_col.append(np.full(n, pi, np.int32))
            row_col.append(np.arange(n, dtype=np.int64))

        def cat(k):
            dtype, shape = SLICE_ARRAYS[k]
            return np.concatenate(cols[k]) if cols[k] else np.zeros((0,) + shape, dtype)

        return SliceTable(
            part_ids=part_ids,
            subject_ids=subject_ids,
            part=np.concatenate(part_col) if part_col else np.zeros(0, np.int32),
            row=np.concatenate(row_col) if row_col else np.zeros(0, np.int64),
            **{k: cat(k) for k in SLICE_ARRAYS},
        )

    def _locate(self, subject_id: str) -> tuple[str, int]:
        for m in self._commits():
            if subject_id in m["subjects"]:
                return m["part_id"], m["subjects"].index(subject_id)
        known = self.subject_ids()
        import difflib

        hint = difflib.get_close_matches(subject_id, known, n=1)
        raise StoreError(
            f"subject {subject_id!r} is not in {self.path}"
            + (f"; did you mean {hint[0]!r}?" if hint else f" ({len(known)} subjects stored)")
        )

    def subject_meta(self, subject_id: str) -> dict:
        part_id, _ = self._locate(subject_id)
        return self._part_attrs(part_id)["subject_meta"][subject_id]

    def subject_slices(self, subject_id: str) -> list[dict]:
        """Every stored slice of one subject: ids, stored-grid plane and source plane (LPS mm)."""
        part_id, local = self._locate(subject_id)
        a = self._part_arrays(part_id)
        out = []
        for row in np.flatnonzero(a["subject"] == local):
            out.append(
                {
                    "part": part_id,
                    "row": int(row),
                    "view": VIEWS[int(a["view"][row])],
                    "frame": int(a["frame"][row]),
                    "phase": PHASES[int(a["phase"][row])],
                    "slice_index": int(a["slice_index"][row]),
                    "stack_position": float(a["stack_position"][row]),
                    "has_label": bool(a["has_label"][row]),
                    "plane": Plane.from_vector(a["plane"][row]).to_dict(),
                    "source_plane": Plane.from_vector(a["source_plane"][row]).to_dict(),
                    "source_shape": [int(x) for x in a["source_shape"][row]],
                    "grid_shape": [self.grid_size, self.grid_size],
                }
            )
        return out

    def read_slice(self, part_id: str, row: int) -> tuple[np.ndarray, np.ndarray | None]:
        """(image float32 [G, G] in source intensity units, label uint8 or None) via zarr-python.

        The simple, slow path (tools, tests); training reads go through CohortDataset.
        """
        import zarr

        a = self._part_arrays(part_id)
        group = zarr.open_group(str(self.path / "parts" / part_id), mode="r", zarr_format=3)
        scale, offset = a["image_scale"][row]
        image = (group["image"][row].astype(np.float64) * scale + offset).astype(np.float32)
        label = np.asarray(group["label"][row]) if a["has_label"][row] else None
        return image, label

    # fingerprint ------------------------------------------------------------------------------
    @property
    def fingerprint(self) -> dict:
        """The fingerprint last stored by ``update_fingerprint`` ({} before the first one)."""
        return dict(self._root_attrs.get("fingerprint") or {})

    def compute_fingerprint(self) -> dict:
        """Spacings, shapes, intensity statistics, subject count, views, labelled subjects (nnU-Net style)."""
        t = self.slice_table()
        stats = (self._part_attrs(pid)["subject_stats"] for pid in t.part_ids)
        return compute_fingerprint(t, stats, self.grid_size, self.spacing_mm)

    def update_fingerprint(self) -> dict:
        """Recompute the fingerprint and store it in the root attributes (one driver process only)."""
        import zarr

        fp = self.compute_fingerprint()
        fp["updated_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with flock(self.path / ".lock"):
            root = zarr.open_group(str(self.path), mode="r+", zarr_format=3)
            attrs = dict(root.attrs[ATTRS_KEY])
            attrs["fingerprint"] = fp
            root.attrs[ATTRS_KEY] = attrs
            self._root_attrs = attrs
        return fp

    def summary(self) -> dict:
        """Subjects, slices per view, labelled subjects and the (freshly computed) fingerprint."""
        fp = self.compute_fingerprint()
        stored = self.fingerprint
        return {
            "path": str(self.path),
            "schema_version": self.schema_version,
            "grid_size": self.grid_size,
            "spacing_mm": self.spacing_mm,
            "subjects": fp["subjects"],
            "slices": fp["slices"],
            "parts": fp["parts"],
            "slices_per_view": {v: d["slices"] for v, d in fp["views"].items()},
            "subjects_per_view": {v: d["subjects"] for v, d in fp["views"].items()},
            "labelled_subjects": fp["labelled_subjects"],
            "labelled_slices": fp["labelled_slices"],
            "fingerprint": fp,
            "stored_fingerprint_current": bool(stored) and stored.get("subjects") == fp["subjects"]
            and stored.get("slices") == fp["slices"],
        }

    def __repr__(self) -> str:
        return f"CohortStore({str(self.path)!r}, grid={self.grid_size}px@{self.spacing_mm}mm)"
