"""mtl_perception.learning.finite: every weighting method's healthy state passes the non-finite check (a
method may keep NaN as a "nothing pending" marker, and says so); a NaN or Inf anywhere is found and named;
a loss explosion is warned about once."""

from __future__ import annotations

import math

import pytest
import torch
from weighting_toys import ToyNet, toy_batch, toy_losses

from mtl_perception.learning.finite import LossWatch, first_non_finite, state_tensors
from mtl_perception.learning.weighting import METHODS, build_weighting

TASKS = ("depth", "semantic")


@pytest.mark.parametrize("method", METHODS)
def test_a_healthy_run_of_every_method_passes(method):
    """Regression: FAMO keeps NaN in losses_before between steps by design; the first check stopped it."""
    torch.manual_seed(0)
    net = ToyNet(TASKS)
    weighting = build_weighting(method, tasks=TASKS)
    optimizer = torch.optim.Adam([{"params": net.parameters()}, *weighting.optimizer_param_groups()], lr=1e-2)
    for epoch in range(2):
        for step in range(3):
            x, targets = toy_batch(seed=10 * epoch + step)
            outputs, features = net(x, return_features=True)
            optimizer.zero_grad(set_to_none=True)
            weighting.backward(toy_losses(outputs, targets, TASKS), shared_features=features)
            optimizer.step()
            if weighting.needs_losses_after_step:
                with torch.no_grad():
                    weighting.after_step(losses_after=toy_losses(net(x), targets, TASKS))
            named = state_tensors(model=net, weighting=weighting, optimizer=optimizer)
            assert first_non_finite(named) is None, (method, epoch, step)
        weighting.end_epoch(mean_losses=dict.fromkeys(TASKS, 1.0 + epoch))


def test_the_first_non_finite_tensor_is_named_wherever_it_is():
    net = ToyNet(TASKS)
    optimizer = torch.optim.Adam(net.parameters())
    x, targets = toy_batch(seed=0)
    sum(toy_losses(net(x), targets, TASKS).values()).backward()
    optimizer.step()
    named = lambda: state_tensors(model=net, optimizer=optimizer)  # noqa: E731
    assert first_non_finite(named()) is None
    optimizer.state[net.second.weight]["exp_avg_sq"][1, 2] = math.inf
    assert first_non_finite(named()) == "optimizer exp_avg_sq of second.weight (1 of 64 values NaN or Inf)"
    net.heads["semantic"].bias.data[0] = math.nan
    assert first_non_finite(named()) == "model parameter heads.semantic.bias (1 of 1 values NaN or Inf)"
    big = {"first.weight": torch.full((4, 8), 3e38)}  # finite, though its norm overflows float32
    assert first_non_finite(big.items()) is None


def test_a_loss_explosion_is_warned_about_once():
    watch = LossWatch(100)
    assert [watch.update({"depth": v, "semantic": 1.0}) for v in (80.0, 60.0, 50.0)] == [None] * 3
    warning = watch.update({"depth": 1e17, "semantic": 1.0})
    assert warning.startswith("loss/depth 1e+17 is 1.67e+15 times its running median 60")
    assert watch.update({"depth": 1e18, "semantic": 1e9}) is None  # once
    assert LossWatch(0).update({"depth": 1.0}) is None and LossWatch(0).update({"depth": 1e30}) is None
