"""The study's pretrained encoders: run or reuse each pretraining job WITHOUT the study's test and
validation subjects, and refuse an encoder that saw any of them.

Every pretraining run logs the subjects it used (``cohort/subjects.json``: train / val / test after
``cohort.exclude``, and ``seen`` = train + val) and tags its registered model version with their
hash (``subjects_hash``; ``launch.subjects_record``). The study passes its held-out subjects as
``cohort.exclude`` to every pretraining job it starts, and reuses a registered version only when its
config hash, cohort fingerprint and subjects hash match that job and its logged subject list shares
no subject with the held-out set. A model named directly (``pretrain.<name>.model``) is checked the
same way: one that saw a held-out subject stops the study; one without a subject list is used with
a warning in the report (``pretrained_models.json``).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable
from pathlib import Path

from .. import tracking
from ..config import BenchmarkJob, is_model_ref, load_job
from ..launch import launch, subjects_record
from ..preflight import open_store
from ..launch import pretrain_identity as launch_identity
from ..tracking import mlflow_client

SUBJECTS_ARTIFACT = "cohort/subjects.json"


class StudyError(RuntimeError):
    """The study cannot continue (every trial failed, no pretrained model, a leaking encoder, ...)."""


def pretrain_job(job: BenchmarkJob, init: str, held_out: Iterable[str], job_dir: Path | None = None):
    """The pretraining job of ``pretrain.<init>.job`` as the study runs it: on ``pretrain_store`` (or
    the study's store), with the study's tracking URI and checkpoint storage, the held-out subjects
    excluded: by naming the study's split file when it has one (so a pretraining run submitted
    beforehand with ``--set cohort.exclude=<that file>`` is the same job and is reused), else by id."""
    src = job.pretrain[init]
    exclude = job.cohort.split.file or json.dumps(sorted(set(held_out)))
    path = Path(src.job)
    if not path.is_absolute() and job_dir is not None and (job_dir / path).exists():
        path = job_dir / path
    overrides = list(src.set) + [
        f"cohort.store={job.pretrain_store or job.cohort.store}",
        f"mlflow.tracking_uri={job.mlflow.tracking_uri}",
        f"cohort.exclude={exclude}",
    ]
    if job.checkpoint is not None:
        overrides.append(f"checkpoint.storage_path={job.checkpoint.storage_path}")
    pjob = load_job(path, overrides)
    if not pjob.mlflow.registered_model:
        raise StudyError(f"pretrain.{init}.job: {path} sets no mlflow.registered_model; the study loads by registry")
    return pjob


def pretrain_identity(pjob) -> dict[str, str]:
    """The tags that make a registered pretrained model reusable, as ``launch`` writes them: config
    hash (with the cohort's content), cohort fingerprint (its content hash) and the hash of the
    subjects the job would train and validate on, all of the store as it is now."""
    from ..training import split_cohort

    snapshot = open_store(pjob.cohort.store).snapshot()
    return {**launch_identity(pjob, snapshot),
            "subjects_hash": subjects_record(pjob, split_cohort(pjob, snapshot))["subjects_hash"]}


def encoder_subjects(ref: str, tracking_uri: str) -> dict | None:
    """The logged subject record of the run behind ``ref`` (``models:/...`` or a run id); None when
    the run logged none (an encoder from before subject logging, or a local folder)."""
    import mlflow

    try:
        if ref.startswith("models:/"):
            run_id = tracking.model_version(ref, tracking_uri).run_id
        elif ref.startswith("runs:/"):
            run_id = ref[len("runs:/"):].split("/", 1)[0]
        else:
            run_id = ref
        if not run_id:
            return None
        with tempfile.TemporaryDirectory(prefix="cardiossl-subjects-") as tmp:
            p = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=SUBJECTS_ARTIFACT, dst_path=tmp,
                                                    tracking_uri=tracking_uri)
            return json.loads(Path(p).read_text())
    except Exception:  # no such artifact (or not an MLflow reference): unknown
        return None


def check_disjoint(ref: str, record: dict | None, held_out: Iterable[str], init: str) -> None:
    """Refuse an encoder whose logged subjects include a held-out (test or validation) subject."""
    if record is None:
        return
    leak = sorted(set(record.get("seen", [])) & set(held_out))
    if leak:
        raise StudyError(
            f"pretrain.{init}: {ref} was pretrained on {len(leak)} of the study's test/validation subjects "
            f"({', '.join(leak[:5])}{', ...' if len(leak) > 5 else ''}); pretrain without them (give "
            f"pretrain.{init}.job, which excludes them) or name another model"
        )


def find_matching_pretrained(pjob, held_out: Iterable[str] = ()) -> str | None:
    """``models:/NAME/VERSION`` of the newest registered version pretrained with this exact config
    on this exact cohort and subjects (tags written by ``launch``) whose logged subject list avoids
    ``held_out``, or None."""
    from mlflow.exceptions import MlflowException

    ident = pretrain_identity(pjob)
    name = pjob.mlflow.registered_model
    client = mlflow_client(pjob.mlflow.tracking_uri)
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return None
    held = set(held_out)
    for v in sorted(versions, key=lambda v: -int(v.version)):
        if not all((v.tags or {}).get(k) == val for k, val in ident.items()):
            continue
        ref = f"models:/{name}/{v.version}"
        record = encoder_subjects(ref, pjob.mlflow.tracking_uri)
        if record is not None and not set(record.get("seen", [])) & held:
            return ref
    return None


def ensure_pretrained(job: BenchmarkJob, init: str, held_out: Iterable[str], job_dir: Path | None = None,
                      console=None) -> tuple[str, dict | None]:
    """(pinned model reference, its logged subject record) for ``init``: a given model (checked), a
    matching registered version, or a fresh pretraining run without the held-out subjects."""
    held_out = sorted(set(held_out))
    uri = job.mlflow.tracking_uri
    given = init if is_model_ref(init) else job.pretrain[init].model
    if given is not None:
        ref = pin(given, uri)
        record = encoder_subjects(ref, uri)
        check_disjoint(ref, record, held_out, init)
        if record is None and console:
            console.print(f"[yellow]warning[/] {ref} logged no subject list: cannot check it never saw a test subject")
        return ref, record
    pjob = pretrain_job(job, init, held_out, job_dir)
    found = find_matching_pretrained(pjob, held_out)
    if found:
        if console:
            console.print(f"[green]reusing[/] {found} for {init} (same config, cohort and subjects; none held out)")
        return found, encoder_subjects(found, uri)
    if console:
        console.print(f"[yellow]pretraining[/] {init} on {pjob.cohort.store} without the {len(held_out)} held-out "
                      "subjects (no registered model matches)")
    res = launch(pjob, address=job.ray.address)
    if not res.model_version:
        raise StudyError(f"pretraining {init} finished without registering a model")
    ref = f"models:/{pjob.mlflow.registered_model}/{res.model_version}"
    record = encoder_subjects(ref, uri)
    check_disjoint(ref, record, held_out, init)
    return ref, record


def pin(ref: str, tracking_uri: str) -> str:
    """``models:/NAME/VERSION`` for an alias or ``latest`` (what the study actually used); other
    references unchanged."""
    if ref.startswith("models:/"):
        try:
            mv = tracking.model_version(ref, tracking_uri)
            return f"models:/{mv.name}/{mv.version}"
        except Exception:
            return ref
    return ref
