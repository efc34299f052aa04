"""cardiossl: self-supervised pretraining for cardiac MR segmentation.

Cohorts go into a Zarr store (``cardiossl.datasets``), pretext tasks (``cardiossl.pretexts``) train
shared backbones (``cardiossl.backbones``) on Ray Train, tracked in MLflow (``cardiossl.platform``).
Imports flow one way: registry <- datasets <- backbones <- pretexts <- platform (pyproject.toml's
import-linter contract, checked by tests/test_import_layers.py).
"""

__version__ = "0.1.0"
