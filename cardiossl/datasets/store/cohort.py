"""The CohortStore facade: open or create a store, write subjects as parts, snapshot, read the slice table.

The layout and the reasons for it are in ``cardiossl.datasets.store``'s docstring; the writing and
commit protocol in ``parts``, the writer's lease in ``lease``, the metadata index in ``index``, the
array format in ``layout``, statistics in ``stats``, the fingerprint in ``fingerprint`` and
verification, garbage collection and subject removal in ``maintenance``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ..geometry import Plane
from ..records import PHASES, VIEWS, SubjectRecord
from . import index, parts
from .durable import flock
from .fingerprint import compute_fingerprint
from .layout import ATTRS_KEY, FORMAT_NAME, PART_ATTRS_KEY, READABLE_VERSIONS, SCHEMA_VERSION, StoreError
from .lease import DEFAULT_LEASE_S
from .snapshot import PartRef, Snapshot, content_hash
from .table import SliceTable, build_table


class CohortStore:
    """A cohort of subjects on one in-plane grid; see the module docstring for the layout."""

    def __init__(self, path, *, lease_s: float = DEFAULT_LEASE_S) -> None:
        self.path = Path(path)
        self.lease_s = float(lease_s)  # how long a writer's lease lasts between heartbeats (``lease``)
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
        if version not in READABLE_VERSIONS:
            raise StoreError(
                f"{self.path} has cohort schema version {version}; this cardiossl reads versions "
                f"{', '.join(map(str, READABLE_VERSIONS))}. Re-ingest the cohort or install a matching cardiossl"
            )
        self.schema_version: int = version
        self.grid_size: int = int(attrs["grid_size"])
        self.spacing_mm: float = float(attrs["spacing_mm"])
        self._root_attrs = attrs
        self._part_attrs_cache: dict[str, dict] = {}

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
            (path / index.INDEX_DIR).mkdir(exist_ok=True)
        return cls(path)

    # committed parts ---------------------------------------------------------------------------
    def view(self) -> index.IndexView:
        """Every committed part with its marker and index rows (one listing of ``commits/``)."""
        return index.load_view(self.path)

    def part_ids(self) -> list[str]:
        """Live parts (committed and not replaced), in commit order."""
        return self.view().live

    def subject_ids(self) -> list[str]:
        view = self.view()
        return [s for pid in view.live for s in view.subjects(pid)]

    def has_subject(self, subject_id: str) -> bool:
        return subject_id in set(self.subject_ids())

    def removed_subject_ids(self) -> list[str]:
        """Subjects taken out by ``remove_subjects`` (ingest does not bring them back)."""
        view = self.view()
        live = {s for pid in view.live for s in view.subjects(pid)}
        return [s for s in view.removed if s not in live]

    def part_path(self, part_id: str) -> Path:
        return self.path / "parts" / parts.check_part_id(part_id)

    def snapshot(self) -> Snapshot:
        """The live parts, their subjects and the content hash, now (``snapshot``)."""
        view = self.view()
        refs, pairs = [], []
        for pid in view.live:
            subjects = view.subjects(pid)
            m = view.markers[pid]
            refs.append(PartRef(pid, int(m["seq"]), int(m["n_slices"]), tuple(subjects)))
            pairs += zip(subjects, view.digests(pid).tolist())
        return Snapshot(str(self.path), self.grid_size, self.spacing_mm, tuple(refs),
                        content_hash(self.grid_size, self.spacing_mm, pairs),
                        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), SCHEMA_VERSION)

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
        present = sorted(set(ids) & set(self.subject_ids()))
        if present:
            raise StoreError(
                f"subjects already in {self.path}: {', '.join(present)}; remove them from this write "
                "(ingest skips subjects already present)"
            )
        metas = {r.subject_id: parts.jsonable(r.meta, f"subject {r.subject_id}: meta") for r in records}

        part_id = parts.check_part_id(part_id) if part_id else parts.new_part_id()
        if (self.path / "commits" / f"{part_id}.json").exists():
            raise StoreError(f"part {part_id} is already committed in {self.path}; parts are immutable")
        parts.write_and_commit(self.path, part_id, ids, lambda d: self._write_part(d, part_id, records, metas),
                               lease_s=self.lease_s)
        return part_id

    def _write_part(self, part_dir: Path, part_id: str, records: list[SubjectRecord], metas: dict) -> dict:
        return parts.write_part(part_dir, part_id, records, metas, grid_size=self.grid_size,
                                spacing_mm=self.spacing_mm)

    def cleanup_incomplete(self, min_lease_s: float = 0.0) -> list[str]:
        """Remove parts that were never committed and whose writer's lease has lapsed; return their ids."""
        return parts.collect_uncommitted(self.path, set(self.view().markers), min_lease_s)

    # maintenance ------------------------------------------------------------------------------
    def verify(self, *, payload: bool = True):
        """Check every live part (files, checksums, summary); damage is reported by subject."""
        from .maintenance import verify

        return verify(self, payload=payload)

    def gc(self, *, min_lease_s: float = 0.0, dry_run: bool = False):
        """Remove uncommitted parts past their lease, parts replaced by ``remove_subjects`` and unused
        index files; keep everything a live part needs."""
        from .maintenance import collect_garbage

        return collect_garbage(self, min_lease_s=min_lease_s, dry_run=dry_run)

    def remove_subjects(self, subject_ids: list[str]):
        """Take subjects out of new snapshots and rewrite their parts without them (``maintenance``)."""
        from .maintenance import remove_subjects

        return remove_subjects(self, subject_ids)

    # reading ----------------------------------------------------------------------------------
    def _part_attrs(self, part_id: str) -> dict:
        if part_id not in self._part_attrs_cache:
            p = self.path / "parts" / part_id / "zarr.json"
            try:
                self._part_attrs_cache[part_id] = json.loads(p.read_text())["attributes"][PART_ATTRS_KEY]
            except (OSError, ValueError, KeyError) as exc:
                raise StoreError(f"committed part {part_id} is missing or damaged in {self.path} ({exc})") from None
        return self._part_attrs_cache[part_id]

    def slice_table(self, snapshot: Snapshot | None = None, *, with_stats: bool = False,
                    with_sources: bool | None = None) -> SliceTable:
        """Per-slice metadata of the live parts, or of the parts of ``snapshot`` (which stay readable
        after later commits and removals, until ``gc``). Source planes and intensity statistics
        only on request."""
        view = self.view()
        if snapshot is None:
            return build_table(view, view.live, with_stats=with_stats, with_sources=with_sources)
        missing = [p for p in snapshot.part_ids if p not in view.where]
        if missing:
            raise StoreError(
                f"snapshot {snapshot.content_hash[:12]} of {self.path} needs parts that are no longer there "
                f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}: removed by `cardiossl cohort gc` "
                "after `cohort remove`); start from a new snapshot"
            )
        return build_table(view, snapshot.part_ids, with_stats=with_stats, with_sources=with_sources)

    def _locate(self, subject_id: str) -> tuple[str, int]:
        view = self.view()
        for pid in view.live:
            subjects = view.subjects(pid)
            if subject_id in subjects:
                return pid, subjects.index(subject_id)
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
        t = build_table(self.view(), [part_id], with_sources=True)
        a = {"view": t.view, "frame": t.frame, "phase": t.phase, "slice_index": t.slice_index,
             "stack_position": t.stack_position, "has_label": t.has_label, "plane": t.plane,
             "source_plane": t.source_plane, "source_shape": t.source_shape}
        out = []
        for row in np.flatnonzero(t.subject == local):
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

        t = build_table(self.view(), [part_id])
        group = zarr.open_group(str(self.path / "parts" / part_id), mode="r", zarr_format=3)
        scale, offset = t.image_scale[row]
        image = (group["image"][row].astype(np.float64) * scale + offset).astype(np.float32)
        label = np.asarray(group["label"][row]) if t.has_label[row] else None
        return image, label

    # fingerprint ------------------------------------------------------------------------------
    @property
    def fingerprint(self) -> dict:
        """The fingerprint last stored by ``update_fingerprint`` ({} before the first one)."""
        return dict(self._root_attrs.get("fingerprint") or {})

    def compute_fingerprint(self, snapshot: Snapshot | None = None) -> dict:
        """Spacings, shapes, intensity statistics, subject count, views, labelled subjects (nnU-Net
        style), and the content hash: of the live parts, or of ``snapshot``."""
        snapshot = snapshot or self.snapshot()
        t = self.slice_table(snapshot, with_stats=True)
        return compute_fingerprint(t, self.grid_size, self.spacing_mm, snapshot.content_hash)

    def current_fingerprint(self, snapshot: Snapshot | None = None) -> tuple[dict, bool]:
        """(fingerprint, stored): the stored one when it describes ``snapshot`` (same content hash),
        else computed afresh (which reads the whole index)."""
        snapshot = snapshot or self.snapshot()
        stored = self.fingerprint
        if stored.get("content_hash") == snapshot.content_hash:
            return stored, True
        return self.compute_fingerprint(snapshot), False

    def update_fingerprint(self) -> dict:
        """Recompute the fingerprint and store it in the root attributes (one driver process only).

        Nothing time-dependent goes in: a re-ingest that adds nothing writes the same fingerprint."""
        import zarr

        fp = self.compute_fingerprint()
        with flock(self.path / ".lock"):
            root = zarr.open_group(str(self.path), mode="r+", zarr_format=3)
            attrs = dict(root.attrs[ATTRS_KEY])
            if attrs.get("fingerprint") != fp:
                attrs["fingerprint"] = fp
                root.attrs[ATTRS_KEY] = attrs
            self._root_attrs = attrs
        return fp

    def summary(self) -> dict:
        """Subjects, slices per view, labelled subjects and the fingerprint (the stored one when it is
        current: ``cohort info`` does not recompute it on every call)."""
        snapshot = self.snapshot()
        fp, stored = self.current_fingerprint(snapshot)
        return {
            "path": str(self.path),
            "schema_version": self.schema_version,
            "grid_size": self.grid_size,
            "spacing_mm": self.spacing_mm,
            "content_hash": snapshot.content_hash,
            "subjects": fp["subjects"],
            "slices": fp["slices"],
            "parts": len(snapshot.parts),
            "slices_per_view": {v: d["slices"] for v, d in fp["views"].items()},
            "subjects_per_view": {v: d["subjects"] for v, d in fp["views"].items()},
            "labelled_subjects": fp["labelled_subjects"],
            "labelled_slices": fp["labelled_slices"],
            "fingerprint": fp,
            "stored_fingerprint_current": stored,
        }

    def __repr__(self) -> str:
        return f"CohortStore({str(self.path)!r}, grid={self.grid_size}px@{self.spacing_mm}mm)"
