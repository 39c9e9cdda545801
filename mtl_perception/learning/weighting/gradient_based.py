"""Gradient-based weightings from torchjd 0.18 aggregators, applied at the shared features (rep_grad).

One backward of sum_i L_i: the heads get their own grad L_i; at the shared features (trunk output and
stride-4 skip) the per-task gradients form the T x D feature Jacobian J, torchjd's weighting gives w, and
w @ J (what the torchjd aggregator returns) flows into the trunk instead of the plain sum. Under
torch.distributed the Gramian J J^T is all-reduced to the pooled batch's, so every rank uses the same w and
DDP's average equals the pooled-batch step.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .base import FeatureGradients, TaskWeighting, all_reduce_sum, world_size

if TYPE_CHECKING:
    from torchjd import aggregation

log = logging.getLogger(__name__)


def _torchjd():
    """torchjd's aggregation module, imported on first use: it pulls cvxpy and several QP solvers, which
    the loss-based methods (and a GPU image without them) do not need."""
    from torchjd import aggregation

    return aggregation


def _nash_mtl(tasks: int, options: dict) -> aggregation.Aggregator:
    return _torchjd().NashMTL(
        n_tasks=tasks,
        max_norm=options["nash_max_norm"],
        update_weights_every=options["nash_update_every"],
        optim_niter=options["nash_optim_niter"],
    )


AGGREGATORS: dict[
    str, tuple[Callable[[int, dict], aggregation.Aggregator], dict[str, tuple[object, str]]]
] = {
    "upgrad": (lambda tasks, options: _torchjd().UPGrad(), {}),
    "pcgrad": (lambda tasks, options: _torchjd().PCGrad(), {}),
    "cagrad": (
        lambda tasks, options: _torchjd().CAGrad(c=options["cagrad_c"]),
        {"cagrad_c": (0.4, "cagrad: radius c of the ball around the mean gradient (CAGrad/Nash-MTL code)")},
    ),
    "imtl_g": (lambda tasks, options: _torchjd().IMTLG(), {}),
    "aligned_mtl": (lambda tasks, options: _torchjd().AlignedMTL(), {}),
    "nash_mtl": (
        _nash_mtl,
        {
            "nash_max_norm": (1.0, "nash_mtl: clip ||w @ J|| to this (0: off)"),
            "nash_update_every": (1, "nash_mtl: solve for new weights every N steps"),
            "nash_optim_niter": (20, "nash_mtl: convex-concave iterations per solve"),
            "nash_on_failure": ("warn", "nash_mtl: warn (log, keep previous weights) | error"),
        },
    ),
}


class JacobianAggregation(TaskWeighting):
    """A torchjd aggregator on the per-task gradients at the shared features."""

    needs_features = True

    def __init__(self, *, method: str, tasks: Sequence[str], **options) -> None:
        super().__init__(tasks=tasks)
        factory, _ = AGGREGATORS[method]
        self.method = method
        self.aggregator = factory(self.num_tasks, options)
        self.on_failure = options.get("nash_on_failure", "error")
        if self.on_failure not in ("warn", "error"):
            raise ValueError(f"nash_on_failure: expected warn or error, got {self.on_failure!r}")
        self.register_buffer("solver_failures", torch.zeros((), dtype=torch.long))
        self._failures: list[str] = []
        if method == "nash_mtl":
            self._watch_nash_solver()

    def _backward(
        self, losses: Tensor, *, task_losses: list[Tensor], features: tuple[Tensor, ...], scale: float
    ) -> Tensor:
        used: list[Tensor] = []

        def aggregate(grads: FeatureGradients) -> list[Tensor] | None:
            jacobian = grads.flat()
            if not bool(torch.isfinite(jacobian).all()):
                # An AMP overflow: let the inf reach the GradScaler, which then skips this step.
                used.append(torch.full((self.num_tasks,), float("nan")))
                return None
            weights = self.weights_for(jacobian / scale)
            used.append(weights.detach())
            return grads.unflatten(weights.to(jacobian.dtype) @ jacobian)

        FeatureGradients(task_losses, features, replace=aggregate).run(self.scaled(losses.sum(), scale))
        return used[0].float().cpu()

    def weights_for(self, jacobian: Tensor) -> Tensor:
        """torchjd's weights for this (T, D) Jacobian; aggregator(J) == weights_for(J) @ J."""
        self._failures.clear()
        if world_size() == 1:
            weights = self.aggregator.weighting(jacobian)
        else:
            gramian = all_reduce_sum(jacobian @ jacobian.T) / world_size() ** 2
            if isinstance(self.aggregator, _torchjd().GramianWeightedAggregator):
                weights = self.aggregator.gramian_weighting(gramian)
            else:
                # Nash-MTL reads the matrix only through J J^T (and ||w @ J||): any R with R R^T = the
                # pooled Gramian gives the pooled batch's weights.
                eigenvalues, vectors = torch.linalg.eigh(gramian.double())
                root = vectors * eigenvalues.clamp(min=0).sqrt()
                weights = self.aggregator.weighting(root.to(jacobian.dtype))
        if self._failures:
            self.solver_failures += 1
            message = (
                f"{self.method}: the solver failed on {len(self._failures)} of its iterations this step "
                f"({self._failures[0]}); torchjd keeps the previous weights {weights.tolist()}"
            )
            if self.on_failure == "error":
                raise RuntimeError(message)
            log.warning(message)
        return weights

    def _watch_nash_solver(self) -> None:
        """Record every failed or non-optimal cvxpy solve of torchjd's Nash-MTL (it swallows them)."""
        nash = self.aggregator.weighting
        create = nash._init_optim_problem  # pinned torchjd 0.18.0: builds `prob` at the first call

        def create_and_watch() -> None:
            create()
            solve = nash.prob.solve

            def watched_solve(*args, **kwargs):
                try:
                    with warnings.catch_warnings():
                        # torchjd's problem is not DPP by construction; cvxpy would say so every step.
                        warnings.filterwarnings("ignore", message="You are solving a parameterized problem")
                        result = solve(*args, **kwargs)
                except Exception as error:  # torchjd catches SolverError/ValueError; record, re-raise
                    self._failures.append(f"{type(error).__name__}: {error}")
                    raise
                if nash.prob.status not in ("optimal", "optimal_inaccurate"):
                    self._failures.append(f"status {nash.prob.status}")
                return result

            nash.prob.solve = watched_solve

        nash._init_optim_problem = create_and_watch

    def get_extra_state(self) -> dict:
        if self.method != "nash_mtl":
            return {}
        nash = self.aggregator.weighting
        return {"step": nash.step, "prvs_alpha": nash.prvs_alpha, "normalization": nash.normalization_factor}

    def set_extra_state(self, state: dict) -> None:
        if self.method != "nash_mtl" or not state:
            return
        nash = self.aggregator.weighting
        nash.prvs_alpha, nash.normalization_factor = state["prvs_alpha"], state["normalization"]
        if state["step"] > 0:
            nash._init_optim_problem()  # the cvxpy problem is built at step 0, which a resume skips
        nash.step = state["step"]
