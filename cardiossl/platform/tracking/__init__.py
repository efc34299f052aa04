"""MLflow tracking and the model registry I/O: rank 0 writes metrics, the driver owns runs and models.

This room holds the trackers (rank 0 only), MLflow run helpers, the safetensors folder formats of
pretrained encoders and segmenters (``weights``) and Model Registry registration and loading
(``models``); it imports only ``platform.config`` and the rooms below it.
"""

from .models import (
    ARTIFACT_PATH,
    load_pretrained,
    model_version,
    register_pretrained,
    register_segmenter,
    resolve_model_dir,
    resolve_version,
)
from .runs import (
    create_run,
    default_artifact_location,
    fingerprint_hash,
    finish_run,
    git_commit,
    lineage_tags,
    log_job_record,
    log_snapshot_input,
    mlflow_client,
    quiet_mlflow_logs,
    ui_command,
)
from .trackers import MAX_PARAM_LEN, MlflowTracker, NullTracker, make_tracker
from .weights import (
    FORMAT_VERSION,
    N_CLASSES,
    SEGMENTER_FORMAT,
    SEGMENTER_SPEC,
    SEGMENTER_WEIGHTS,
    ModelLoadError,
    build_segmenter,
    load_pretrained_dir,
    load_segmenter_folder,
    save_pretrained,
    save_segmenter,
    segmenter_from_state,
)

__all__ = [
    "ARTIFACT_PATH", "FORMAT_VERSION", "MAX_PARAM_LEN", "N_CLASSES", "SEGMENTER_FORMAT", "SEGMENTER_SPEC",
    "SEGMENTER_WEIGHTS", "MlflowTracker", "ModelLoadError", "NullTracker", "build_segmenter", "create_run",
    "default_artifact_location", "fingerprint_hash", "finish_run", "git_commit", "lineage_tags",
    "load_pretrained", "load_pretrained_dir", "load_segmenter_folder", "log_job_record", "log_snapshot_input",
    "make_tracker", "mlflow_client", "model_version", "quiet_mlflow_logs", "register_pretrained",
    "register_segmenter", "resolve_model_dir", "resolve_version", "save_pretrained", "save_segmenter",
    "segmenter_from_state", "ui_command",
]
