"""cardiossl: self-supervised pretraining for cardiac MR segmentation.

Cohorts go into a Zarr store (``cardiossl.datasets``), pretext tasks (``cardiossl.pretexts``) train
shared backbones (``cardiossl.backbones``) on Ray Train, tracked in MLflow (``cardiossl.platform``).
"""

__version__ = "0.1.0"
