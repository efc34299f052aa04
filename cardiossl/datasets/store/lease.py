"""The writer's lease on a part folder: a heartbeat file that garbage collection respects.

An uncommitted part is garbage only once its writer is gone. ``flock`` cannot tell that across
machines: with node-local locks (NFS ``local_lock``, Lustre ``localflock``, most FUSE mounts) a lock
taken on node B is invisible on node A, so an ingest on A would delete the part B is still writing.
A lease needs no lock service: the writer keeps a small file in its part (``.lease``: host, pid, a
heartbeat time and the lease length) and a thread rewrites it every quarter lease; ``cohort gc``
removes an uncommitted part only when its heartbeat, and the file's modification time as the file
server saw it, are both older than the lease plus a clock-skew margin. The writer refuses to commit
when its own last renewal is older than the lease minus that margin, so a writer stalled past its
lease (its part possibly collected) never publishes a marker for a part that may be gone: the usual
lease argument (Gray and Cheriton, SOSP 1989), sound as long as clocks agree within the margin.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from .layout import StoreError

LEASE_FILE = ".lease"
DEFAULT_LEASE_S = float(os.environ.get("CARDIOSSL_STORE_LEASE_S", 900.0))
SKEW_MARGIN_S = 60.0  # clocks of writers, collectors and the file server may disagree by this much


class Lease:
    """A renewed claim on ``part_dir``; ``start`` writes it, ``check`` before committing, ``stop`` after."""

    def __init__(self, part_dir: Path, lease_s: float = DEFAULT_LEASE_S, margin_s: float | None = None) -> None:
        self.part_dir = Path(part_dir)
        self.path = self.part_dir / LEASE_FILE
        self.lease_s = float(lease_s)
        self.margin_s = min(SKEW_MARGIN_S, self.lease_s / 4) if margin_s is None else float(margin_s)
        self.token = uuid.uuid4().hex
        self._renewed = 0.0  # time.monotonic() of the last successful renewal
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def _write(self) -> None:
        data = {"token": self.token, "host": socket.gethostname(), "pid": os.getpid(),
                "heartbeat": time.time(), "lease_s": self.lease_s}
        tmp = self.part_dir / f".lease.tmp-{self.token}"
        before = time.monotonic()
        with open(tmp, "w") as f:
            json.dump(data, f)
        os.replace(tmp, self.path)
        self._renewed = before

    def start(self) -> Lease:
        self._write()
        self._thread = threading.Thread(target=self._run, name=f"lease-{self.part_dir.name}", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.lease_s / 4):
            try:
                self._write()
            except OSError as exc:  # the folder is gone or the disk refuses: check() will say so
                self.error = exc

    def check(self) -> None:
        """Raise StoreError unless this lease is still held and fresh (call right before committing)."""
        age = time.monotonic() - self._renewed
        try:
            held = json.loads(self.path.read_text()).get("token") == self.token
        except (OSError, ValueError):
            held = False
        if not held or age > self.lease_s - self.margin_s:
            why = "its lease file is gone or another's" if not held else f"last renewed {age:.0f} s ago"
            raise StoreError(
                f"part {self.part_dir.name}: the writer's lease lapsed ({why}; lease {self.lease_s:.0f} s), "
                "so `cohort gc` may have collected the part; write the subjects again"
            )

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None


def lease_expired(part_dir: Path, now: float | None = None, min_lease_s: float = 0.0) -> bool:
    """Whether the writer of an uncommitted ``part_dir`` is gone by its lease: heartbeat and file time
    both older than the lease (at least ``min_lease_s``) plus the skew margin.

    A folder without a readable lease (a writer that has just made it) counts from the folder's own
    modification time with the default lease."""
    now = time.time() if now is None else now
    path = Path(part_dir) / LEASE_FILE
    try:
        data = json.loads(path.read_text())
        heartbeat, lease_s = float(data["heartbeat"]), float(data["lease_s"])
        mtime = path.stat().st_mtime
    except (OSError, ValueError, KeyError, TypeError):
        try:
            mtime = Path(part_dir).stat().st_mtime
        except OSError:
            return False
        heartbeat, lease_s = mtime, DEFAULT_LEASE_S
    limit = max(lease_s, min_lease_s) + min(SKEW_MARGIN_S, max(lease_s, min_lease_s) / 4)
    return now - heartbeat > limit and now - mtime > limit
