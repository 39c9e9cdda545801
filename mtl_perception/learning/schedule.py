"""TI's learning-rate schedule (xnn ``SchedulerWrapper``, stepped once per epoch): warm-up, then steps.

Epoch 0 trains at ``warmup_factor`` x lr, epochs 1 .. warmup-1 at e / warmup x lr, then lr x gamma^k where
k is the number of milestones reached (TI: 5 warm-up epochs, factor 1e-3, x0.5 at epochs 100 and 200).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence


class WarmupMultiStep:
    """The LR multiplier of an epoch, for ``torch.optim.lr_scheduler.LambdaLR`` (a class, not a lambda, so
    the scheduler's state_dict keeps its settings and a spawned process can pickle it)."""

    def __init__(
        self, warmup_epochs: int, warmup_factor: float, milestones: Sequence[int], gamma: float
    ) -> None:
        if warmup_epochs < 0 or not 0 < warmup_factor <= 1 or gamma <= 0:
            raise ValueError(
                f"warm-up epochs must be >= 0, warm-up factor in (0, 1], gamma > 0; got {warmup_epochs}, "
                f"{warmup_factor}, {gamma}"
            )
        self.warmup_epochs, self.warmup_factor = int(warmup_epochs), float(warmup_factor)
        self.milestones, self.gamma = sorted(int(m) for m in milestones), float(gamma)

    def __call__(self, epoch: int) -> float:
        if epoch < self.warmup_epochs:
            return self.warmup_factor if epoch == 0 else epoch / self.warmup_epochs
        return self.gamma ** bisect_right(self.milestones, epoch)
