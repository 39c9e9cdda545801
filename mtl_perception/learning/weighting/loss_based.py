"""Loss-based weightings (one plain backward of a weighted loss): vanilla, uncertainty, DWA, FAMO."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import TaskWeighting, all_reduce_mean, world_size

# Kendall et al. treat depth as a Gaussian regression and the segmentations as softmax classification.
REGRESSION_TASKS = ("depth",)
FAMO_EPSILON = 1e-8  # FAMO's (and torchjd's) shift inside log(L - L*)


class Vanilla(TaskWeighting):
    """Equal weights: L = sum_i L_i, w = 1 (TI's default without --multi_task_type)."""

    def _backward(
        self, losses: Tensor, *, task_losses: list[Tensor], features: tuple[Tensor, ...], scale: float
    ) -> Tensor:
        self.scaled(losses.sum(), scale).backward()
        return torch.ones(self.num_tasks)


class Uncertainty(TaskWeighting):
    """Kendall, Gal & Cipolla (CVPR 2018) homoscedastic uncertainty, s_i = log sigma_i^2 learned.

    form "kendall": 0.5 e^{-s} L + 0.5 s for regression tasks (depth), e^{-s} L + 0.5 s for classification;
    "regression": 0.5 e^{-s} L + 0.5 s for every task (torchjd UW; LibMTL UW with init -0.5);
    "ti": TI's intended design, tanh(e^{-s} / k) L + 0.5 s, k = 2 regression, 1 classification.
    """

    OPTIONS = {
        "uncertainty_form": ("kendall", "uncertainty: kendall | regression | ti (see docs/training.md)"),
        "init_log_variance": (0.0, "uncertainty: initial s = log sigma^2 of every task"),
        "uncertainty_lr": (
            None,
            "uncertainty: learning rate of s (follows the LR schedule); default the network's",
        ),
    }

    def __init__(
        self,
        *,
        tasks: Sequence[str],
        uncertainty_form: str = "kendall",
        init_log_variance: float = 0.0,
        uncertainty_lr: float | None = None,
    ) -> None:
        super().__init__(tasks=tasks)
        if uncertainty_form not in ("kendall", "regression", "ti"):
            raise ValueError(
                f"uncertainty_form: expected kendall, regression or ti, got {uncertainty_form!r}"
            )
        if uncertainty_lr is not None and not uncertainty_lr > 0:
            raise ValueError(f"uncertainty_lr: expected a learning rate > 0, got {uncertainty_lr}")
        self.form, self.lr = uncertainty_form, uncertainty_lr
        self.log_variance = nn.Parameter(torch.full((self.num_tasks,), float(init_log_variance)))
        regression = [task in REGRESSION_TASKS or uncertainty_form == "regression" for task in self.tasks]
        # Factor on e^{-s} (kendall, regression) or the divisor k inside tanh (ti).
        factor = (
            [0.5 if r else 1.0 for r in regression]
            if uncertainty_form != "ti"
            else [2.0 if r else 1.0 for r in regression]
        )
        self.register_buffer("factor", torch.tensor(factor), persistent=False)

    def loss_weights(self) -> Tensor:
        precision = torch.exp(-self.log_variance)
        if self.form == "ti":
            return torch.tanh(precision / self.factor)
        return self.factor * precision

    def _backward(
        self, losses: Tensor, *, task_losses: list[Tensor], features: tuple[Tensor, ...], scale: float
    ) -> Tensor:
        before = None if self.log_variance.grad is None else self.log_variance.grad.clone()
        weights = self.loss_weights()
        root = (weights * losses).sum() + 0.5 * self.log_variance.sum()
        self.scaled(root, scale).backward()
        if world_size() > 1:
            # The log-variances sit outside DDP: average this step's gradient as DDP does the network's.
            grad = self.log_variance.grad - (before if before is not None else 0.0)
            self.log_variance.grad = (before if before is not None else 0.0) + all_reduce_mean(grad)
        return weights.detach()

    def optimizer_param_groups(self) -> list[dict]:
        # No weight decay: it would pull sigma towards 1 (the LibMTL pitfall). An own LR because Adam moves
        # s by about lr per step whatever the loss scale: a short schedule at the network's LR cannot bring
        # s to its optimum log(L) (docs/training.md, "The table, measured").
        group: dict = {"params": [self.log_variance], "weight_decay": 0.0}
        if self.lr is not None:
            group["lr"] = self.lr
        return [group]


class DWA(TaskWeighting):
    """Dynamic Weight Average (Liu et al., MTAN, CVPR 2019): lambda = T softmax((L(t-1)/L(t-2)) / tau).

    Weights are 1 until two epoch means are known (end_epoch), as MTAN, LibMTL and torchjd.
    """

    OPTIONS = {"temperature": (2.0, "dwa: softmax temperature tau")}

    def __init__(self, *, tasks: Sequence[str], temperature: float = 2.0) -> None:
        super().__init__(tasks=tasks)
        if not temperature > 0:
            raise ValueError(f"temperature: expected > 0, got {temperature}")
        self.temperature = float(temperature)
        self.register_buffer("history", torch.zeros(2, self.num_tasks, dtype=torch.float64))
        self.register_buffer("epochs_seen", torch.zeros((), dtype=torch.long))

    def current_weights(self) -> Tensor:
        if int(self.epochs_seen) < 2:
            return torch.ones(self.num_tasks)
        rates = (self.history[1] / self.history[0]).float()
        return self.num_tasks * F.softmax(rates / self.temperature, dim=-1)

    def _backward(
        self, losses: Tensor, *, task_losses: list[Tensor], features: tuple[Tensor, ...], scale: float
    ) -> Tensor:
        weights = self.current_weights().to(losses.device)
        self.scaled((weights * losses).sum(), scale).backward()
        return weights

    def end_epoch(self, *, mean_losses: Mapping[str, float]) -> None:
        if set(mean_losses) != set(self.tasks):
            raise ValueError(f"mean_losses: expected keys {list(self.tasks)}, got {list(mean_losses)}")
        values = [float(mean_losses[task]) for task in self.tasks]
        if not all(math.isfinite(v) and v > 0 for v in values):
            raise ValueError(f"mean_losses: DWA needs finite positive epoch losses, got {dict(mean_losses)}")
        self.history[0] = self.history[1]
        self.history[1] = torch.tensor(values, dtype=torch.float64)
        self.epochs_seen += 1


class FAMO(TaskWeighting):
    """FAMO (Liu et al., NeurIPS 2023): gradient sum_i (z_i / c) grad L_i / (L_i - L*_i), z = softmax(xi).

    After optimizer.step(), after_step(losses_after=...) on the same batch takes one Adam step on the logits
    xi from delta_i = log D_i(before) - log D_i(after). Under DDP the losses are averaged over the ranks
    first, so every rank holds the same logits.
    """

    needs_losses_after_step = True
    NAN_MARKERS = frozenset({"losses_before"})  # NaN: no step waiting for after_step
    OPTIONS = {
        "famo_lr": (0.025, "famo: Adam learning rate of the task logits"),
        "famo_weight_decay": (1e-3, "famo: Adam weight decay of the logits (paper Alg. 2; Cityscapes: 0.01)"),
    }

    def __init__(
        self, *, tasks: Sequence[str], famo_lr: float = 0.025, famo_weight_decay: float = 1e-3
    ) -> None:
        super().__init__(tasks=tasks)
        if famo_lr < 0 or famo_weight_decay < 0:
            raise ValueError(
                f"famo_lr / famo_weight_decay: expected >= 0, got {famo_lr}, {famo_weight_decay}"
            )
        self.logits = nn.Parameter(torch.zeros(self.num_tasks))
        self.register_buffer("min_losses", torch.zeros(self.num_tasks))
        self.register_buffer("losses_before", torch.full((self.num_tasks,), float("nan")))
        self._optimizer = torch.optim.Adam([self.logits], lr=famo_lr, weight_decay=famo_weight_decay)

    def _backward(
        self, losses: Tensor, *, task_losses: list[Tensor], features: tuple[Tensor, ...], scale: float
    ) -> Tensor:
        pooled = all_reduce_mean(losses.detach())
        if not bool(torch.all(pooled > self.min_losses)):
            raise ValueError(f"famo: every loss must exceed its lower bound 0, got {pooled.tolist()}")
        self.losses_before.copy_(pooled)
        z = F.softmax(self.logits.detach(), dim=0)
        shifted = pooled - self.min_losses + FAMO_EPSILON
        normalizer = (z / shifted).sum()
        # d/dtheta of sum (z/c) log D_i = sum (z/c) grad L_i / D_i: the same gradient, as a weighted loss.
        weights = (z / normalizer) / shifted
        self.scaled((weights * losses).sum(), scale).backward()
        return weights

    def after_step(self, *, losses_after: Mapping[str, Tensor]) -> None:
        if bool(torch.isnan(self.losses_before).any()):
            raise RuntimeError("famo: after_step called before backward")
        after = all_reduce_mean(self.stack_losses(losses_after).detach())
        before = self.losses_before - self.min_losses + FAMO_EPSILON
        delta = torch.log(before) - torch.log(after - self.min_losses + FAMO_EPSILON)
        with torch.enable_grad():
            z = F.softmax(self.logits, dim=0)
            grad = torch.autograd.grad(z, self.logits, grad_outputs=delta)[0]
        self.logits.grad = grad
        self._optimizer.step()
        self.logits.grad = None  # only FAMO's own Adam steps the logits
        self.losses_before.fill_(float("nan"))

    def get_extra_state(self) -> dict:
        return {"optimizer": self._optimizer.state_dict()}

    def set_extra_state(self, state: dict) -> None:
        self._optimizer.load_state_dict(state["optimizer"])
