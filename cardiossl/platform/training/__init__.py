"""The per-worker pretraining loop in plain torch, and the pieces fine-tuning reuses.

This room holds sessions (local / Ray), the loop, checkpoints, the data path (splits, datasets,
samplers, loaders), augmentation, collation, metrics and the validation figure; it imports
``platform.tracking``, ``platform.config`` and the rooms below them.
"""

from .augment import Augment, SampleTransform, crop_or_pad, perturbed_plane, resample_to_plane
from .checkpoint import CKPT_MODEL, CKPT_OPTIM, CKPT_STATE, load_checkpoint, save_checkpoint
from .collate import Collate, collate, to_device
from .data import EpochDataset, EpochSampler, make_dataset, make_loader, make_sampler, split_cohort
from .figures import prediction_figure
from .loop import InjectedFault, PretextModel, TrainResult, ray_train_loop, run_pretraining
from .metrics import LiveMetrics, all_reduce_mean, evaluate
from .optim import LRSchedule, autocast, build_optimizer, build_scheduler
from .outputs import log_training_outputs
from .progress import ProgressLine, format_duration
from .session import LocalSession, RaySession, Session

__all__ = [
    "CKPT_MODEL", "CKPT_OPTIM", "CKPT_STATE", "Augment", "Collate", "EpochDataset", "EpochSampler",
    "InjectedFault", "LRSchedule", "LiveMetrics", "LocalSession", "PretextModel", "ProgressLine", "RaySession",
    "SampleTransform", "Session", "TrainResult", "all_reduce_mean", "autocast", "build_optimizer",
    "build_scheduler", "collate", "crop_or_pad", "evaluate", "format_duration", "load_checkpoint", "log_training_outputs",
    "make_dataset", "make_loader", "make_sampler", "perturbed_plane", "prediction_figure", "ray_train_loop",
    "resample_to_plane", "run_pretraining", "save_checkpoint", "split_cohort", "to_device",
]
