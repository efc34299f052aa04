"""Deprecated path: the study moved to ``cardiossl.platform.fewshot.study`` (its job model to
``cardiossl.platform.config``, statistics and report to ``fewshot.stats`` / ``fewshot.report``).
Kept for one release, so that executable YAMLs whose first line runs
``python -m cardiossl.platform.study`` still work: this module forwards to the new ``main``."""

import warnings

from cardiossl.platform.config import SCRATCH, BenchmarkJob, StudyGrid
from cardiossl.platform.fewshot.report import aggregate, results_markdown, rows_csv, write_report
from cardiossl.platform.fewshot.stats import champion_key, compare_to_scratch, method_name
from cardiossl.platform.fewshot.study import StudyError, grid_cells, main, run_study

warnings.warn(
    "cardiossl.platform.study moved to cardiossl.platform.fewshot.study; this alias goes in the next release",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = [
    "SCRATCH", "BenchmarkJob", "StudyError", "StudyGrid", "aggregate", "champion_key", "grid_cells", "main",
    "method_name", "compare_to_scratch", "results_markdown", "rows_csv", "run_study", "write_report",
]

if __name__ == "__main__":
    raise SystemExit(main())
