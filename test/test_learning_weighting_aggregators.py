"""Gradient-based weightings against the torchjd 0.18 aggregators: on fixed toy Jacobians, end to end at the
shared features of a toy network (rep_grad), Nash-MTL's solver failures, state and AMP scale."""

from __future__ import annotations

import logging

import pytest
import torch
from torchjd import aggregation
from weighting_toys import ToyNet, toy_batch, toy_losses

from mtl_perception.learning.weighting import build_weighting

pytestmark = pytest.mark.usefixtures("torch_one_thread")
TASKS = ("depth", "semantic", "motion")
ORACLES = {
    "upgrad": lambda: aggregation.UPGrad(),
    "pcgrad": lambda: aggregation.PCGrad(),
    "cagrad": lambda: aggregation.CAGrad(c=0.4),
    "imtl_g": lambda: aggregation.IMTLG(),
    "aligned_mtl": lambda: aggregation.AlignedMTL(),
    "nash_mtl": lambda: aggregation.NashMTL(n_tasks=3, max_norm=1.0, update_weights_every=1, optim_niter=20),
}


def toy_jacobians():
    """Fixed 3 x 7 Jacobians: conflicting, aligned, and of very different row norms."""
    g = torch.Generator().manual_seed(0)
    conflicting = torch.randn(3, 7, generator=g)
    conflicting[1] = -0.8 * conflicting[0] + 0.3 * torch.randn(7, generator=g)
    aligned = torch.randn(1, 7, generator=g).repeat(3, 1) + 0.1 * torch.randn(3, 7, generator=g)
    scaled = torch.randn(3, 7, generator=g) * torch.tensor([[0.1], [1.0], [10.0]])
    return [conflicting, aligned, scaled]


@pytest.mark.parametrize("method", sorted(ORACLES))
def test_aggregation_equals_torchjd_on_fixed_jacobians(method):
    ours = build_weighting(method, tasks=TASKS)
    oracle = ORACLES[method]()
    for jacobian in toy_jacobians():
        torch.manual_seed(3)  # PCGrad visits the other tasks in random order
        expected = oracle(jacobian)
        torch.manual_seed(3)
        weights = ours.weights_for(jacobian)
        torch.testing.assert_close(weights @ jacobian, expected, rtol=1e-5, atol=1e-6)
        assert weights.shape == (3,)
    assert ours.solver_failures.item() == 0


def test_upgrad_never_conflicts_with_any_task():
    # The property UPGrad is built on (Quinton & Rey 2024): every task's gradient has a non-negative
    # inner product with the update, even where the mean conflicts with one.
    conflicting = toy_jacobians()[0]
    update = build_weighting("upgrad", tasks=TASKS).weights_for(conflicting) @ conflicting
    assert (conflicting @ update).min() >= -1e-5
    assert (conflicting @ conflicting.mean(0)).min() < 0


@pytest.mark.parametrize("method", ["upgrad", "imtl_g", "nash_mtl"])
def test_rep_grad_end_to_end_on_the_shared_features(method):
    torch.manual_seed(0)
    net = ToyNet(TASKS)
    x, targets = toy_batch(0, scales=(1.0, 3.0, 10.0))
    outputs, features = net(x, return_features=True)
    weighting = build_weighting(method, tasks=TASKS)
    weights = weighting.backward(toy_losses(outputs, targets, TASKS), shared_features=features)
    got = {name: p.grad.clone() for name, p in net.named_parameters()}

    torch.manual_seed(0)
    reference = ToyNet(TASKS)
    outputs, features = reference(x, return_features=True)
    losses = toy_losses(outputs, targets, TASKS)
    rows = [torch.cat([g.reshape(-1) for g in torch.autograd.grad(losses[t], features, retain_graph=True)])
            for t in TASKS]  # fmt: skip
    jacobian = torch.stack(rows)
    expected_weights = ORACLES[method]().weighting(jacobian)
    torch.testing.assert_close(torch.tensor(list(weights.values())), expected_weights, rtol=1e-5, atol=1e-6)
    direction = ORACLES[method]()(jacobian)
    sizes = [f.numel() for f in features]
    heads = [p for name, p in reference.named_parameters() if name.startswith("heads.")]
    trunk = [p for name, p in reference.named_parameters() if not name.startswith("heads.")]
    sum(losses.values()).backward(inputs=heads, retain_graph=True)
    torch.autograd.backward(
        features,
        [d.reshape(f.shape) for d, f in zip(direction.split(sizes), features, strict=True)],
        inputs=trunk,
    )
    for name, p in reference.named_parameters():
        # The trunk gets the aggregated direction; each head its own task's unweighted gradient.
        torch.testing.assert_close(got[name], p.grad, rtol=1e-5, atol=1e-6, msg=name)


def test_nash_mtl_solver_failure_is_logged_or_raised(caplog):
    degenerate = torch.tensor([[0.0, 0.0], [0.0, 1.0]])  # cvxpy raises on it (torchjd's note)
    weighting = build_weighting("nash_mtl", tasks=TASKS[:2])
    with caplog.at_level(logging.WARNING):
        weights = weighting.weights_for(degenerate)
    assert weighting.solver_failures.item() == 1
    assert "nash_mtl: the solver failed" in caplog.text and "previous weights" in caplog.text
    assert torch.isfinite(weights).all()
    strict = build_weighting("nash_mtl", tasks=TASKS[:2], nash_on_failure="error")
    with pytest.raises(RuntimeError, match="nash_mtl: the solver failed"):
        strict.weights_for(degenerate)
    with pytest.raises(ValueError, match="nash_on_failure"):
        build_weighting("nash_mtl", tasks=TASKS, nash_on_failure="ignore")


def test_nash_mtl_state_travels_in_state_dict():
    jacobians = toy_jacobians()
    first = build_weighting("nash_mtl", tasks=TASKS)
    first.weights_for(jacobians[0])
    resumed = build_weighting("nash_mtl", tasks=TASKS)
    resumed.load_state_dict(first.state_dict())
    torch.testing.assert_close(resumed.weights_for(jacobians[2]), first.weights_for(jacobians[2]))


def test_amp_grad_scaler_scale_is_undone_for_the_weights():
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    results = []
    for grad_scaler in (None, scaler):
        torch.manual_seed(0)
        net = ToyNet(TASKS)
        x, targets = toy_batch(0, scales=(1.0, 3.0, 10.0))
        outputs, features = net(x, return_features=True)
        weighting = build_weighting("nash_mtl", tasks=TASKS)
        weights = weighting.backward(
            toy_losses(outputs, targets, TASKS), shared_features=features, grad_scaler=grad_scaler
        )
        results.append((weights, net.first.weight.grad.clone()))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-5)
    torch.testing.assert_close(results[1][1], 1024.0 * results[0][1], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(("method", "options"), [("upgrad", {}), ("grad_norm", {"gradnorm_mode": "libmtl"})])
def test_bfloat16_autocast_features(method, options):
    # Under autocast the features are bfloat16 while the methods combine in float32.
    results = []
    for dtype in (None, torch.bfloat16):
        torch.manual_seed(0)
        net = ToyNet(TASKS)
        x, targets = toy_batch(0, scales=(1.0, 3.0, 10.0))
        weighting = build_weighting(method, tasks=TASKS, **options)
        weighting.end_epoch(mean_losses={t: 1.0 for t in TASKS})
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
            outputs, features = net(x, return_features=True)
        assert features[0].dtype == (dtype or torch.float32)
        losses = toy_losses({t: o.float() for t, o in outputs.items()}, targets, TASKS)
        weights = weighting.backward(losses, shared_features=features)
        assert net.first.weight.grad.dtype == torch.float32
        results.append((list(weights.values()), net.first.weight.grad.clone()))
    assert results[1][0] == pytest.approx(results[0][0], rel=0.05, abs=0.01)
    torch.testing.assert_close(results[1][1], results[0][1], rtol=0.1, atol=0.02)
