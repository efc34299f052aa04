"""Where ingest tasks run: in-process, threads, worker processes, or Ray tasks.

Each scheduler hands every batch's result dict to ``on_done`` as it arrives. A task's own errors
are data (a skipped subject with its reason); what a scheduler must add is the case where the
process running a task dies (killed, out of memory, a reader that calls ``os._exit``).

Worker processes are this module's own small pool (``run_processes``), not ``concurrent.futures``
or dask: when one worker of those dies, the pool breaks and every pending batch fails with
``BrokenProcessPool``, with no way to tell which subject killed it. Here every worker has its own
pipe and tells the driver which subject it is reading before it reads it, so a death costs exactly
that subject (a skipped subject naming the exit code), the rest of its batch is run again by a
fresh worker, and the other workers never notice.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
from collections import deque
from contextlib import contextmanager
from multiprocessing.connection import wait

from .report import one_line, where
from .task import ingest_batch

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 3  # a batch part re-queued after worker deaths


def empty_result(batch) -> dict:
    return {"batch": [s.subject_id for s in batch], "ingested": [], "already_present": [], "parts": [],
            "slices": 0, "read_s": 0.0, "write_s": 0.0, "skipped": []}


def run_inline(batches, reader_cls, store_path: str, max_part_bytes: int, on_done) -> None:
    for b in batches:
        on_done(ingest_batch(reader_cls, list(b), store_path, max_part_bytes))


def run_threads(batches, reader_cls, store_path: str, max_part_bytes: int, workers: int, on_done) -> None:
    from concurrent.futures import ThreadPoolExecutor, as_completed

    with ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(ingest_batch, reader_cls, list(b), store_path, max_part_bytes) for b in batches]
        for f in as_completed(futures):
            on_done(f.result())


def _worker(conn) -> None:
    """A worker process: run batches sent down ``conn`` until told to stop, reporting progress."""
    while True:
        msg = conn.recv()
        if msg is None:
            return
        key, reader_cls, sources, store_path, max_part_bytes = msg
        result = ingest_batch(reader_cls, sources, store_path, max_part_bytes,
                              progress=lambda phase, ids: conn.send(("progress", key, phase, ids)))
        conn.send(("done", key, result))


class _Proc:
    def __init__(self, ctx) -> None:
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker, args=(child,), daemon=True)
        self.process.start()
        child.close()
        self.task = None  # (key, batch, attempt)
        self.progress: tuple[str, list[str]] | None = None


def run_processes(batches, reader_cls, store_path: str, max_part_bytes: int, workers: int, on_done) -> None:
    """Run batches on ``workers`` spawned processes; a dead worker costs the subject it was on."""
    ctx = mp.get_context("spawn")
    queue = deque((i, list(b), 1) for i, b in enumerate(batches) if b)
    procs = [_Proc(ctx) for _ in range(min(workers, len(queue)))]
    next_key = len(batches)
    try:
        while queue or any(p.task for p in procs):
            for p in procs:
                if p.task is None and queue:
                    p.task, p.progress = queue.popleft(), None
                    key, batch, _ = p.task
                    try:
                        p.conn.send((key, reader_cls, batch, store_path, max_part_bytes))
                    except OSError:
                        pass  # it died before taking the batch: its sentinel says so below
            busy = [p for p in procs if p.task]
            ready = wait([p.conn for p in busy] + [p.process.sentinel for p in busy])
            for p in busy:
                if p.conn in ready:
                    try:
                        while p.conn.poll():
                            kind, key, *rest = p.conn.recv()
                            if kind == "progress":
                                p.progress = (rest[0], rest[1])
                            else:
                                on_done(rest[0])
                                p.task = None
                    except (EOFError, OSError):
                        pass  # the worker is gone: its sentinel says so below
                if p.task is not None and p.process.sentinel in ready and not p.process.is_alive():
                    p.process.join()
                    requeue, result = _after_death(p, next_key)
                    next_key += 1
                    on_done(result)
                    if requeue:
                        queue.append(requeue)
                    p.conn.close()
                    procs[procs.index(p)] = _Proc(ctx) if queue or any(q.task for q in procs if q is not p) else p
                    p.task = None
    finally:
        for p in procs:
            if p.process.is_alive():
                try:
                    p.conn.send(None)
                except OSError:
                    pass
        for p in procs:
            p.process.join(timeout=30)
            if p.process.is_alive():
                p.process.kill()


def _after_death(p: _Proc, next_key: int):
    """(batch to run again or None, result for this death) for a worker that died mid-batch."""
    key, batch, attempt = p.task
    code = p.process.exitcode
    how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
    result = empty_result(batch)
    result["batch"] = []  # the subjects run again are counted when their own result arrives
    phase, ids = p.progress or ("start", [])
    culprits = set(ids) if phase == "read" or attempt >= MAX_ATTEMPTS else set()
    if phase == "start" and attempt >= MAX_ATTEMPTS:
        culprits = {s.subject_id for s in batch}
    what = {"read": "reading it", "write": "writing it"}.get(phase, "starting")
    result["lost"] = [(s.subject_id, f"the ingest worker process died while {what} ({how}); the rest of its "
                       "batch was run again by another worker", where(s)) for s in batch if s.subject_id in culprits]
    result["batch"] = [s.subject_id for s in batch if s.subject_id in culprits]
    rest = [s for s in batch if s.subject_id not in culprits]
    result["requeued"] = [s.subject_id for s in rest]
    log.warning("ingest worker died (%s) while %s %s; %d subject(s) of its batch run again",
                how, phase, ", ".join(ids) or "starting", len(rest))
    return ((next_key, rest, attempt + 1) if rest else None), result


def run_ray(batches, reader_cls, store_path: str, max_part_bytes: int, on_done) -> None:
    import ray

    remote = ray.remote(num_cpus=1, max_retries=2)(ingest_batch)
    pending = {remote.remote(reader_cls, list(b), store_path, max_part_bytes): b for b in batches}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            batch = pending.pop(ref)
            try:
                result = ray.get(ref)
            except Exception as exc:  # the worker died on every retry
                result = empty_result(batch)
                result["lost"] = [(s.subject_id, f"ray task failed: {one_line(exc)}", where(s)) for s in batch]
            on_done(result)


@contextmanager
def ray_session(address: str | None):
    """Attached to the Ray cluster for the ingest, detached after; as is when already attached
    (a driver inside a Ray job)."""
    if address is None:
        yield
        return
    import ray

    if ray.is_initialized():
        yield
        return
    ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    try:
        yield
    finally:
        ray.shutdown()
