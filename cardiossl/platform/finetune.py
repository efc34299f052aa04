"""Deprecated path: fine-tuning moved to ``cardiossl.platform.fewshot.finetune`` (its job model to
``cardiossl.platform.config``). Kept for one release, so that executable YAMLs whose first line runs
``python -m cardiossl.platform.finetune`` still work: this module forwards to the new ``main``."""

import warnings

from cardiossl.datasets.splits import fewshot_split
from cardiossl.platform.config import FinetuneError, FinetuneJob, MultitaskConfig, SegLossConfig, job_copy
from cardiossl.platform.fewshot.finetune import FinetuneResult, apply_mode, finetune, main, run_finetune_job
from cardiossl.platform.fewshot.init import InitWeights, init_from_loaded, resolve_init
from cardiossl.platform.fewshot.samples import labelled_subjects, load_samples
from cardiossl.platform.tracking.weights import (
    build_segmenter,
    load_segmenter_folder,
    save_segmenter,
    segmenter_from_state,
)

warnings.warn(
    "cardiossl.platform.finetune moved to cardiossl.platform.fewshot.finetune; this alias goes in the next release",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = [
    "FinetuneError", "FinetuneJob", "FinetuneResult", "InitWeights", "MultitaskConfig", "SegLossConfig",
    "apply_mode", "build_segmenter", "fewshot_split", "finetune", "init_from_loaded", "job_copy",
    "labelled_subjects", "load_samples", "load_segmenter_folder", "main", "resolve_init", "run_finetune_job",
    "save_segmenter", "segmenter_from_state",
]

if __name__ == "__main__":
    raise SystemExit(main())
