"""The console line of a running job: step, speed, time left and loss, every few steps, from rank 0.

A progress bar is the wrong tool here: the line is written by a Ray worker and reaches the user
through Ray's log forwarding (or a job's log file), where carriage returns and colour codes turn
into garbage. So: one plain line per ``every_steps`` steps (and the last), e.g.::

    [position] step 120/2000 (6%) | 3.1 step/s | ETA 10m06s | loss 1.2345 | val/loss 1.1021
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable


def format_duration(seconds: float) -> str:
    """``93`` -> ``1m33s``; ``7322`` -> ``2h02m``; unknown -> ``?``."""
    if not seconds == seconds or seconds < 0 or seconds == float("inf"):
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


class ProgressLine:
    """Prints ``step k/N | step/s | ETA | loss`` every ``every_steps`` steps (0: never).

    Speed is measured over the steps since the previous line (so a validation pause shows up once,
    not forever); the loss shown is the mean of the losses of those steps on this rank."""

    def __init__(self, name: str, total: int, every_steps: int, start_step: int = 0,
                 write: Callable[[str], None] | None = None, clock: Callable[[], float] = time.perf_counter):
        self.name, self.total, self.every = name, int(total), int(every_steps)
        self._write = write or _stdout_line
        self._clock = clock
        self._t, self._step = clock(), int(start_step)
        self._loss_sum, self._loss_n = 0.0, 0
        self.lines: list[str] = []

    @property
    def enabled(self) -> bool:
        return self.every > 0

    def due(self, step: int) -> bool:
        return self.enabled and (step % self.every == 0 or step == self.total)

    def add_loss(self, loss) -> None:
        """Accumulate this step's loss (a tensor stays on its device until the line is printed)."""
        if self.enabled:
            self._loss_sum = self._loss_sum + loss
            self._loss_n += 1

    def pause(self) -> None:
        """Restart the speed clock (after a validation or a checkpoint)."""
        self._t = self._clock()

    def update(self, step: int, extra: dict[str, float] | None = None) -> str | None:
        if not self.due(step):
            return None
        now = self._clock()
        steps = step - self._step
        rate = steps / (now - self._t) if now > self._t and steps > 0 else float("nan")
        eta = (self.total - step) / rate if rate == rate and rate > 0 else float("nan")
        parts = [f"[{self.name}] step {step}/{self.total} ({100 * step // max(1, self.total)}%)",
                 f"{rate:.2f} step/s" if rate == rate else "- step/s", f"ETA {format_duration(eta)}"]
        if self._loss_n:
            parts.append(f"loss {float(self._loss_sum) / self._loss_n:.4f}")
        for k, v in (extra or {}).items():
            parts.append(f"{k} {v:.4f}")
        line = " | ".join(parts)
        self._t, self._step, self._loss_sum, self._loss_n = now, step, 0.0, 0
        self.lines.append(line)
        self._write(line)
        return line


def _stdout_line(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
