"""When a fine-tuning trial has converged: early stopping on the validation curve.

A fixed step budget turns slower convergence into a Dice gap (a baseline that has not finished
learning looks worse than it is). Each trial therefore trains until its validation Dice has not
improved by more than ``min_delta`` for ``patience`` validations, with ``steps`` as the cap
(Prechelt, "Early stopping - but when?", 1998), and never stops before ``min_steps``: a lucky
validation score in the first steps followed by a slow climb would otherwise end a run that is
still learning; the best validation checkpoint is the one evaluated. The step of that checkpoint (steps-to-best) and whether the trial stopped on its own or
hit the cap are reported, so "converges faster" and "ends higher" stay separate findings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class EarlyStopping:
    """Tracks the best validation score; ``update`` says whether it improved, ``stop`` whether to stop."""

    patience: int | None = None  # validations without improvement; None: never stop early
    min_delta: float = 0.0
    min_steps: int = 0  # no stop before this step
    best: float = -math.inf
    best_step: int = 0
    since_best: int = 0
    last_step: int = 0
    stopped_early: bool = False

    def update(self, step: int, score: float) -> bool:
        """Record the validation ``score`` at ``step``; True when it is the new best (checkpoint it).
        A NaN score (no validation subjects) counts as an improvement: the last state is kept."""
        self.last_step = step
        if math.isnan(score) or score > self.best + self.min_delta or self.best == -math.inf:
            if not math.isnan(score):
                self.best = score
            self.best_step, self.since_best = step, 0
            return True
        self.since_best += 1
        return False

    def stop(self) -> bool:
        if self.patience is not None and self.since_best >= self.patience and self.last_step >= self.min_steps:
            self.stopped_early = True
        return self.stopped_early

    def summary(self, last_step: int) -> dict[str, float]:
        return {"best_step": float(self.best_step), "stopped_step": float(last_step),
                "converged": float(self.stopped_early)}


def steps_to_reach(history: list[dict], fraction: float = 0.95, key: str = "val_dice") -> float:
    """First validation step whose score reaches ``fraction`` of the curve's best (NaN without a
    curve): a convergence speed that does not depend on the noise around the maximum."""
    pts = [(h["step"], h[key]) for h in history if key in h and math.isfinite(h[key])]
    if not pts:
        return float("nan")
    best = max(v for _, v in pts)
    return float(next(s for s, v in pts if v >= fraction * best))


def late_gain(history: list[dict], window_steps: float, key: str = "val_dice") -> float:
    """How much the best validation score rose over the last ``window_steps`` steps of the curve:
    for a trial that reached the cap, the difference between "still learning" and noise-level creep."""
    pts = [(h["step"], h[key]) for h in history if key in h and math.isfinite(h[key])]
    if not pts or not math.isfinite(window_steps):
        return float("nan")
    last = pts[-1][0]
    before = [v for s, v in pts if s <= last - window_steps]
    return float(max(v for _, v in pts) - max(before)) if before else float("nan")
