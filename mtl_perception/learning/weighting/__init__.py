"""Multi-task loss/gradient weighting: one interface (`TaskWeighting`), every method by name.

    weighting = build_weighting("uncertainty", tasks=("depth", "semantic", "motion"))
    optimizer = Adam([{"params": model.parameters()}, *weighting.optimizer_param_groups()], ...)
    outputs, features = model(image, flow, return_features=True)   # when weighting.needs_features
    weights = weighting.backward(criterion(outputs, batch), shared_features=features)
    optimizer.step()
    if weighting.needs_losses_after_step: weighting.after_step(losses_after=...)  # FAMO, no_grad
    weighting.end_epoch(mean_losses=...)                                      # once per epoch

Methods, defaults, costs and oracles: docs/training.md, "Task weighting".
"""

from __future__ import annotations

from collections.abc import Sequence

from .base import FeatureGradients, TaskWeighting
from .gradient_based import AGGREGATORS, JacobianAggregation
from .gradnorm import GradNorm, PseudoGradNorm
from .loss_based import DWA, FAMO, Uncertainty, Vanilla

_CLASSES: dict[str, type[TaskWeighting]] = {
    "vanilla": Vanilla,
    "pseudo_grad_norm": PseudoGradNorm,
    "grad_norm": GradNorm,
    "uncertainty": Uncertainty,
    "dwa": DWA,
    "famo": FAMO,
}
METHODS: tuple[str, ...] = (*_CLASSES, *AGGREGATORS)


def weighting_options(method: str) -> dict[str, tuple[object, str]]:
    """{option: (default, help)} of a method: the keyword options build_weighting accepts for it."""
    _check_method(method)
    if method in AGGREGATORS:
        return dict(AGGREGATORS[method][1])
    return dict(_CLASSES[method].OPTIONS)


def build_weighting(method: str, *, tasks: Sequence[str], **options) -> TaskWeighting:
    """The weighting `method` for `tasks`. Options left out or None take the method's default; an option
    the method does not have (with a value other than None) is an error naming it."""
    known = weighting_options(method)
    unknown = sorted(name for name, value in options.items() if name not in known and value is not None)
    if unknown:
        raise ValueError(
            f"weighting {method!r} has no option(s) {unknown}; its options are {sorted(known) or 'none'}"
        )
    chosen = {name: default for name, (default, _) in known.items()}
    chosen.update({name: value for name, value in options.items() if name in known and value is not None})
    if method in AGGREGATORS:
        return JacobianAggregation(method=method, tasks=tasks, **chosen)
    return _CLASSES[method](tasks=tasks, **chosen)


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown weighting method {method!r}; expected one of {', '.join(METHODS)}")


__all__ = [
    "METHODS",
    "FeatureGradients",
    "TaskWeighting",
    "build_weighting",
    "weighting_options",
]
