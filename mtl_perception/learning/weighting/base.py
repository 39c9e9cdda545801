"""The task-weighting interface, its distributed reductions, and per-task gradients at the shared features.

Every method does exactly one autograd backward into the network per step. Methods that need per-task
gradients read them at the shared features inside that one backward: each task's decoder nodes that consume
a feature tensor get a post-hook (the decoders are separate, so the gradient a consumer sends to the feature
belongs to one task), and a tensor hook on the feature may replace the summed gradient before it flows into
the trunk (rep_grad).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from typing import ClassVar

import torch
import torch.distributed as dist
from torch import Tensor, nn


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum over the ranks (a copy); the tensor itself when not distributed."""
    if world_size() == 1:
        return tensor
    reduced = tensor.detach().clone()
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return reduced


def all_reduce_mean(tensor: Tensor) -> Tensor:
    """Mean over the ranks: the pooled value of per-rank batch means (equal per-rank batches)."""
    size = world_size()
    return tensor if size == 1 else all_reduce_sum(tensor) / size


class TaskWeighting(nn.Module, abc.ABC):
    """One multi-task weighting method; its parameters, buffers and extra state are in state_dict().

    `OPTIONS` maps each keyword option to (default, help); build_weighting fills the defaults.
    """

    OPTIONS: ClassVar[dict[str, tuple[object, str]]] = {}
    needs_features: ClassVar[bool] = False
    needs_losses_after_step: ClassVar[bool] = False
    #: state entries where NaN is a marker, not a failure (the non-finite check of training skips them)
    NAN_MARKERS: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, *, tasks: Sequence[str]) -> None:
        super().__init__()
        tasks = tuple(tasks)
        if not tasks or len(set(tasks)) != len(tasks):
            raise ValueError(f"tasks: expected a non-empty sequence of distinct task names, got {tasks!r}")
        self.tasks: tuple[str, ...] = tasks

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    def backward(
        self,
        losses: Mapping[str, Tensor],
        *,
        shared_features: Sequence[Tensor] | None = None,
        shared_parameters: Sequence[nn.Parameter] | None = None,
        grad_scaler: torch.amp.GradScaler | None = None,
    ) -> dict[str, float]:
        """Exactly one autograd backward into the network; returns the weights used this step.

        shared_features: the (shared, skip) tensors of MultiTaskNet.forward(..., return_features=True); the
        methods with needs_features act on them. shared_parameters: accepted for the interface; every
        method here acts at the features, so none reads it. grad_scaler: an AMP GradScaler, whose scale
        multiplies the backward; the methods undo it before they measure gradients.
        """
        del shared_parameters  # part of the shared interface; the methods here act at the features
        stacked = self.stack_losses(losses)
        features = self._checked_features(shared_features) if self.needs_features else ()
        # GradScaler.scale (not get_scale) also creates the scale on the losses' device on the first step,
        # which GradScaler.step needs.
        scale = float(grad_scaler.scale(stacked.new_ones(()))) if grad_scaler is not None else 1.0
        task_losses = [losses[task] for task in self.tasks]
        weights = self._backward(stacked, task_losses=task_losses, features=features, scale=scale)
        return {task: float(w) for task, w in zip(self.tasks, weights.tolist(), strict=True)}

    @abc.abstractmethod
    def _backward(
        self, losses: Tensor, *, task_losses: list[Tensor], features: tuple[Tensor, ...], scale: float
    ) -> Tensor:
        """Run the one backward on the (T,) loss vector; return the (T,) weights used (each method's own)."""

    def after_step(self, *, losses_after: Mapping[str, Tensor]) -> None:
        """FAMO only: the losses re-evaluated (no_grad) on the same batch after optimizer.step()."""

    def end_epoch(self, *, mean_losses: Mapping[str, float]) -> None:
        """The epoch-mean training loss of each task (already reduced over ranks by the caller)."""

    def optimizer_param_groups(self) -> list[dict]:
        """Parameter groups this method trains with the network's optimizer; [] if none."""
        return []

    def stack_losses(self, losses: Mapping[str, Tensor]) -> Tensor:
        """The (T,) loss vector in task order; a clear error when the keys or shapes are wrong."""
        if set(losses) != set(self.tasks):
            raise ValueError(f"losses: expected keys {list(self.tasks)}, got {list(losses)}")
        for task in self.tasks:
            value = losses[task]
            if not isinstance(value, Tensor) or value.numel() != 1:
                raise ValueError(f"losses[{task!r}]: expected a scalar tensor, got {value!r}")
        return torch.stack([losses[task].reshape(()) for task in self.tasks])

    def _checked_features(self, features: Sequence[Tensor] | None) -> tuple[Tensor, ...]:
        if features is None or len(features) == 0:
            raise ValueError(
                f"{type(self).__name__} needs shared_features: pass the (shared, skip) tensors of "
                "model(..., return_features=True)"
            )
        for i, feature in enumerate(features):
            if not isinstance(feature, Tensor) or feature.grad_fn is None:
                raise ValueError(
                    f"shared_features[{i}]: expected a non-leaf tensor computed by the network "
                    f"(return_features=True), got {type(feature).__name__} without grad_fn"
                )
        return tuple(features)

    def scaled(self, root: Tensor, scale: float) -> Tensor:
        return root * scale if scale != 1.0 else root


Replacement = Callable[["FeatureGradients"], "list[Tensor] | None"]


class FeatureGradients:
    """Per-task gradients at the shared features, captured inside one backward of `root`.

    Construct before the backward, with the per-task losses that the root combines; after
    `run(root)`, `per_task[i][f]` is task i's gradient of the root at feature f (zeros if it reaches none).
    `replace(self) -> [gradient per feature] | None`, when given, is called once inside the backward,
    when every task's gradient has arrived, and its result flows into the trunk instead of their sum.
    """

    def __init__(
        self, losses: Sequence[Tensor], features: Sequence[Tensor], replace: Replacement | None = None
    ) -> None:
        self.features = tuple(features)
        self.per_task = [[torch.zeros_like(f) for f in self.features] for _ in losses]
        self._replace = replace
        self._replacement: list[Tensor] | None = None
        self._pending = 0
        self._handles: list = []
        targets = {(f.grad_fn, f.output_nr): index for index, f in enumerate(self.features)}
        owner: dict[object, int] = {}
        for task, loss in enumerate(losses):
            for node, edges in self._consumers(loss, targets).items():
                if node in owner:
                    raise ValueError(
                        f"tasks {owner[node]} and {task} share a node after the shared features; "
                        "per-task gradients need separate heads"
                    )
                owner[node] = task
                self._pending += 1
                self._handles.append(node.register_hook(self._capture(task, edges)))
        if self._replace is not None:
            for index, feature in enumerate(self.features):
                self._handles.append(feature.register_hook(self._replaced(index)))

    @staticmethod
    def _consumers(loss: Tensor, targets: dict) -> dict[object, list[tuple[int, int]]]:
        """Nodes of the loss's graph with an edge into a feature: {node: [(input slot, feature index)]}."""
        found: dict[object, list[tuple[int, int]]] = {}
        if loss.grad_fn is None:
            return found
        seen = {loss.grad_fn}
        stack = [loss.grad_fn]
        while stack:
            node = stack.pop()
            for slot, (child, output_nr) in enumerate(node.next_functions):
                if child is None:
                    continue
                feature = targets.get((child, output_nr))
                if feature is not None:
                    found.setdefault(node, []).append((slot, feature))
                elif child not in seen and not any(child is key[0] for key in targets):
                    seen.add(child)
                    stack.append(child)
        return found

    def _capture(self, task: int, edges: list[tuple[int, int]]):
        def hook(grad_inputs, grad_outputs):
            for slot, feature in edges:
                if grad_inputs[slot] is not None:
                    self.per_task[task][feature] = self.per_task[task][feature] + grad_inputs[slot]
            self._pending -= 1

        return hook

    def _replaced(self, index: int):
        def hook(grad: Tensor) -> Tensor | None:
            if self._replacement is None:
                if self._pending != 0:
                    raise RuntimeError(
                        f"feature {index}: its gradient arrived before {self._pending} task-head node(s) "
                        "had sent theirs; per-task gradients are incomplete"
                    )
                replacement = self._replace(self)
                self._replacement = (
                    list(replacement) if replacement is not None else [None] * len(self.features)
                )
            replacement = self._replacement[index]
            # Under autocast a feature may be float16 while the combination was formed in float32.
            return replacement.to(grad.dtype) if replacement is not None else None

        return hook

    def run(self, root: Tensor) -> None:
        try:
            root.backward()
        finally:
            for handle in self._handles:
                handle.remove()
        if self._pending != 0:
            raise RuntimeError(f"{self._pending} task-head node(s) never sent a gradient to the features")

    def flat(self) -> Tensor:
        """The (T, D) float32 (or wider) Jacobian of the root at the features, flattened and concatenated."""
        rows = [torch.cat([g.reshape(-1) for g in task]) for task in self.per_task]
        return torch.stack(rows).to(torch.promote_types(rows[0].dtype, torch.float32))

    def unflatten(self, vector: Tensor) -> list[Tensor]:
        """Split a D-vector back into the features' shapes."""
        out, start = [], 0
        for feature in self.features:
            out.append(vector[start : start + feature.numel()].reshape(feature.shape).to(feature.dtype))
            start += feature.numel()
        return out
