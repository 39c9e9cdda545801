"""A training run never saves a non-finite state, and says when its losses explode.

``state_tensors`` names every tensor a training step changes and ``checkpoint.pt`` keeps: the network's
parameters and buffers (BatchNorm statistics), the task weighting's state, the optimizer's state (Adam's
moments) and the GradScaler's scale. ``first_non_finite`` finds the first NaN or Inf among them. train.py
checks the network and the weighting after every step (what the next step computes with), everything
before every save, and stops with :class:`NonFiniteError` naming the tensor and the step, so the files of
the last finite epoch stay as they were.

The check costs one ``torch._foreach_norm`` per (device, dtype) group -- the fused norms
``clip_grad_norm_`` uses -- and an exact look only at tensors whose norm is not finite (a norm can overflow
where every value is finite); its cost per step is measured in docs/training.md ("Speed").
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping

import torch
import torch.distributed as dist
from torch import Tensor, nn


class NonFiniteError(ValueError):
    """A loss or a state tensor became NaN or Inf: the configuration (learning rate, a method option) or the
    data cannot be trained on as given, so it is reported as a bad input (one line, exit 2)."""


def _tensors(value, prefix: str) -> Iterator[tuple[str, Tensor]]:
    if isinstance(value, Tensor):
        yield prefix, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _tensors(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _tensors(item, f"{prefix}.{i}")


def state_tensors(
    *,
    model: nn.Module,
    weighting: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    grad_scaler: torch.amp.GradScaler | None = None,
) -> Iterator[tuple[str, Tensor]]:
    """(name, tensor) of everything a run saves, named as a user finds it: ``model buffer <name>``,
    ``optimizer exp_avg_sq of <parameter name>``, ``weighting <name>``, ``GradScaler scale``. A weighting's
    ``NAN_MARKERS`` (FAMO's ``losses_before``: NaN when no step is pending) are left out."""
    net = getattr(model, "module", model)  # DDP: the module's names
    for name, tensor in net.named_parameters():
        yield f"model parameter {name}", tensor
    for name, tensor in net.named_buffers():
        yield f"model buffer {name}", tensor
    names = {id(p): name for name, p in net.named_parameters()}
    if weighting is not None:
        names.update({id(p): f"weighting {name}" for name, p in weighting.named_parameters()})
        markers = getattr(weighting, "NAN_MARKERS", frozenset())
        for name, tensor in _tensors(weighting.state_dict(keep_vars=True), ""):
            if name not in markers:
                yield f"weighting {name}", tensor
    if optimizer is not None:
        for parameter, state in optimizer.state.items():
            owner = names.get(id(parameter), "a parameter")
            for key, tensor in _tensors(state, ""):
                yield f"optimizer {key} of {owner}", tensor
    if grad_scaler is not None and grad_scaler.is_enabled():
        scale = grad_scaler.get_scale()
        yield "GradScaler scale", torch.tensor(float(scale))


def first_non_finite(named: Iterable[tuple[str, Tensor]]) -> str | None:
    """The first named tensor holding a NaN or Inf, as ``name (k of n values NaN or Inf)``; None if all are
    finite. Integer tensors (step counters) cannot be non-finite and are skipped."""
    named = [(name, t.detach()) for name, t in named if t.is_floating_point() or t.is_complex()]
    groups: dict[tuple, list[int]] = {}
    for i, (_, tensor) in enumerate(named):
        groups.setdefault((tensor.device, tensor.dtype), []).append(i)
    suspects: list[int] = []
    for indices in groups.values():
        tensors = [named[i][1] for i in indices]
        norms = torch.stack([n.reshape(()) for n in torch._foreach_norm(tensors)])
        bad = (~torch.isfinite(norms)).nonzero().flatten().tolist()
        suspects += [indices[j] for j in bad]
    for i in sorted(suspects):  # the first in the caller's order
        name, tensor = named[i]
        count = int((~torch.isfinite(tensor)).sum())
        if count:
            return f"{name} ({count} of {tensor.numel()} values NaN or Inf)"
    return None


def check_finite_state(
    *,
    where: str,
    kept: Callable[[], str],
    model: nn.Module,
    weighting: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    grad_scaler: torch.amp.GradScaler | None = None,
) -> None:
    """Raise NonFiniteError naming the first non-finite state tensor, ``where`` (the step) and ``kept()``
    (what the stopped run leaves). Under torch.distributed every process stops when one finds a tensor (one
    small all-reduce), instead of the others hanging in the next collective."""
    bad = first_non_finite(
        state_tensors(model=model, weighting=weighting, optimizer=optimizer, grad_scaler=grad_scaler)
    )
    found = bad is not None
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        flag = torch.tensor([float(found)], device=next(model.parameters()).device)
        dist.all_reduce(flag)
        found = bool(flag.item() > 0)
    if found:
        raise NonFiniteError(
            f"non-finite {bad or 'state on another process'} {where}; training stopped, {kept()}"
        )


class LossWatch:
    """Warns once when a task's loss exceeds ``factor`` times its median over the previous ``window``
    steps: a run diverging (learning rate too high) long before anything is NaN. ``factor`` 0: off."""

    def __init__(self, factor: float, window: int = 100) -> None:
        self.factor = float(factor)
        self.history: dict[str, deque] = {}
        self.window = window
        self.warned = False

    def update(self, losses: Mapping[str, float]) -> str | None:
        """Record one step's losses; returns the warning (once) when one of them exploded."""
        message = None
        for task, value in losses.items():
            past = self.history.setdefault(task, deque(maxlen=self.window))
            if self.factor > 0 and not self.warned and past and math.isfinite(value):
                median = statistics.median(past)
                if median > 0 and value > self.factor * median:
                    self.warned = True
                    message = (
                        f"loss/{task} {value:.4g} is {value / median:.3g} times its running median "
                        f"{median:.4g} (warning above --loss_warn_factor {self.factor:g}; shown once): the "
                        "run is diverging, a lower --lr may help"
                    )
            past.append(value)
        return message
