"""Task weighting: the interface, the model's features, the per-task gradient capture, the loss-based methods
against their oracles (the papers' formulas, torchjd scalarizers, LibMTL 1.1.5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchjd import scalarization
from weighting_toys import ToyNet, load_libmtl_weighting, toy_batch, toy_losses

from mtl_perception.learning.weighting import (
    METHODS,
    FeatureGradients,
    TaskWeighting,
    build_weighting,
    weighting_options,
)
from mtl_perception.model import build_model

pytestmark = pytest.mark.usefixtures("torch_one_thread")
TASKS = ("depth", "semantic")


def test_methods_and_options():
    assert METHODS == (
        "vanilla", "pseudo_grad_norm", "grad_norm", "uncertainty", "dwa", "famo",
        "upgrad", "pcgrad", "cagrad", "imtl_g", "aligned_mtl", "nash_mtl",
    )  # fmt: skip
    assert weighting_options("pseudo_grad_norm")["alpha"][0] == 0.75  # TI
    assert weighting_options("grad_norm")["alpha"][0] == 1.5  # the paper
    assert weighting_options("dwa")["temperature"][0] == 2.0
    for method in METHODS:
        weighting = build_weighting(method, tasks=TASKS)
        assert isinstance(weighting, TaskWeighting) and weighting.tasks == TASKS
        assert all(isinstance(help_text, str) for _, help_text in weighting_options(method).values())
    with pytest.raises(ValueError, match="unknown weighting method 'gradnrom'"):
        build_weighting("gradnrom", tasks=TASKS)
    with pytest.raises(ValueError, match=r"no option\(s\) \['alpha'\]"):
        build_weighting("vanilla", tasks=TASKS, alpha=1.5)
    assert build_weighting("vanilla", tasks=TASKS, alpha=None).tasks == TASKS  # unset flags pass as None
    with pytest.raises(ValueError, match="expected keys"):
        build_weighting("vanilla", tasks=TASKS).backward({"depth": torch.ones(())})
    with pytest.raises(ValueError, match="needs shared_features"):
        build_weighting("upgrad", tasks=TASKS).backward(
            {t: torch.ones((), requires_grad=True) for t in TASKS}
        )


def test_model_return_features():
    torch.manual_seed(0)
    model = build_model("lite").eval()
    image, flow = torch.rand(1, 3, 64, 64) * 255, torch.randn(1, 3, 64, 64)
    plain = model(image, flow)
    outputs, (shared, skip) = model(image, flow, return_features=True)
    for task in plain:
        torch.testing.assert_close(outputs[task], plain[task], rtol=0, atol=0)
    assert shared.shape == (1, model.trunk.out_channels, 4, 4)
    assert skip.shape[2:] == (16, 16)
    # The decoders consume `skip`; the trunk consumes the map before it, so no trunk gradient reaches it.
    assert torch.autograd.grad(shared.sum(), skip, allow_unused=True)[0] is None
    total = torch.autograd.grad(sum(o.sum() for o in outputs.values()), skip, retain_graph=True)[0]
    parts = sum(torch.autograd.grad(o.sum(), skip, retain_graph=True)[0] for o in outputs.values())
    torch.testing.assert_close(total, parts)
    ti = build_model("ti")
    _, (shared, _) = ti(torch.rand(1, 3, 64, 64) * 255, torch.randn(1, 3, 64, 64), return_features=True)
    assert shared.shape[1] == 320  # TI's trunk output, 320 ch @ 1/16


def test_feature_gradients_match_autograd_on_the_network():
    torch.manual_seed(1)
    model = build_model("lite").eval()
    outputs, features = model(torch.rand(1, 3, 32, 32) * 255, torch.randn(1, 3, 32, 32), return_features=True)
    losses = [o.float().pow(2).mean() for o in outputs.values()]
    expected = [torch.autograd.grad(loss, features, retain_graph=True) for loss in losses]
    replacement = [torch.randn_like(f) for f in features]
    captured = FeatureGradients(losses, features, replace=lambda grads: replacement)
    captured.run(sum(losses))
    for task, grads in enumerate(expected):
        for feature, grad in enumerate(grads):
            torch.testing.assert_close(captured.per_task[task][feature], grad)
    # The trunk got the replacement at the features, not the sum of the heads' gradients.
    got = [p.grad.clone() for p in model.stems.parameters()]
    torch.manual_seed(1)
    model = build_model("lite").eval()
    outputs, features = model(torch.rand(1, 3, 32, 32) * 255, torch.randn(1, 3, 32, 32), return_features=True)
    torch.autograd.backward(features, replacement)
    for p, g in zip(model.stems.parameters(), got, strict=True):
        torch.testing.assert_close(g, p.grad)


def _toy_step(weighting, seed=0, **kwargs):
    torch.manual_seed(seed)
    net = ToyNet(TASKS)
    x, targets = toy_batch(seed)
    outputs, features = net(x, return_features=True)
    losses = toy_losses(outputs, targets, TASKS)
    weights = weighting.backward(losses, shared_features=features, **kwargs)
    return net, losses, weights


def test_vanilla_keeps_unit_weights_and_plain_sum_gradient():
    weighting = build_weighting("vanilla", tasks=TASKS)
    net, losses, weights = _toy_step(weighting)
    assert weights == {"depth": 1.0, "semantic": 1.0}
    got = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    x, targets = toy_batch(0)
    sum(toy_losses(net(x), targets, TASKS).values()).backward()
    for g, p in zip(got, net.parameters(), strict=True):
        torch.testing.assert_close(g, p.grad, rtol=0, atol=0)


def test_uncertainty_lr_is_its_own_group_and_follows_the_schedule():
    from mtl_perception.learning.schedule import WarmupMultiStep

    weighting = build_weighting("uncertainty", tasks=TASKS, uncertainty_lr=1e-2)
    torch.manual_seed(0)
    net = ToyNet(TASKS)
    optimizer = torch.optim.Adam([{"params": net.parameters()}, *weighting.optimizer_param_groups()], lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupMultiStep(0, 1e-3, [1], 0.5))
    assert [g["lr"] for g in optimizer.param_groups] == [1e-3, 1e-2]
    # Adam's first step moves every parameter by about its group's lr: s by 1e-2, not the network's 1e-3.
    x, targets = toy_batch(0)
    outputs, features = net(x, return_features=True)
    weighting.backward(toy_losses(outputs, targets, TASKS), shared_features=features)
    before = weighting.log_variance.detach().clone()
    optimizer.step()
    torch.testing.assert_close((weighting.log_variance.detach() - before).abs(), torch.full((2,), 1e-2))
    scheduler.step()  # past the milestone: both halve
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([5e-4, 5e-3])
    with pytest.raises(ValueError, match="uncertainty_lr: expected a learning rate > 0, got 0.0"):
        build_weighting("uncertainty", tasks=TASKS, uncertainty_lr=0.0)


def test_uncertainty_kendall_forms_and_param_group():
    weighting = build_weighting("uncertainty", tasks=TASKS, init_log_variance=0.3)
    assert weighting.optimizer_param_groups() == [{"params": [weighting.log_variance], "weight_decay": 0.0}]
    _, losses, weights = _toy_step(weighting)
    s = 0.3
    # Kendall: depth (regression) L/(2 sigma^2) + log sigma; semantic (classification) L/sigma^2 + log sigma.
    assert weights["depth"] == pytest.approx(0.5 * np.exp(-s), rel=1e-6)
    assert weights["semantic"] == pytest.approx(np.exp(-s), rel=1e-6)
    depth, semantic = float(losses["depth"].detach()), float(losses["semantic"].detach())
    expected = [-0.5 * np.exp(-s) * depth + 0.5, -np.exp(-s) * semantic + 0.5]
    np.testing.assert_allclose(weighting.log_variance.grad.numpy(), expected, rtol=1e-5)


def test_uncertainty_regression_form_matches_torchjd_uw():
    ours = build_weighting("uncertainty", tasks=TASKS, uncertainty_form="regression")
    net_ours, _, _ = _toy_step(ours)
    oracle = scalarization.UW(len(TASKS))
    torch.manual_seed(0)
    net = ToyNet(TASKS)
    x, targets = toy_batch(0)
    losses = toy_losses(net(x), targets, TASKS)
    oracle(torch.stack([losses[t] for t in TASKS])).backward()
    torch.testing.assert_close(ours.log_variance.grad, oracle.log_var.grad)
    for a, b in zip(net_ours.parameters(), net.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad)


def test_uncertainty_regression_form_matches_libmtl_uw():
    uw = load_libmtl_weighting("UW").UW()
    uw.task_num, uw.device = len(TASKS), "cpu"
    uw.init_param()
    ours = build_weighting("uncertainty", tasks=TASKS, uncertainty_form="regression", init_log_variance=-0.5)
    _, losses, weights = _toy_step(ours)
    oracle_weights = uw.backward(torch.stack([losses[t].detach() for t in TASKS]))
    np.testing.assert_allclose(list(weights.values()), oracle_weights, rtol=1e-6)
    torch.testing.assert_close(ours.log_variance.grad, uw.loss_scale.grad)


def test_uncertainty_ti_form():
    weighting = build_weighting("uncertainty", tasks=TASKS, uncertainty_form="ti", init_log_variance=-1.0)
    _, _, weights = _toy_step(weighting)
    assert weights["depth"] == pytest.approx(np.tanh(np.exp(1.0) / 2), rel=1e-6)
    assert weights["semantic"] == pytest.approx(np.tanh(np.exp(1.0)), rel=1e-6)


def _train(method, steps, **options):
    """Train the toy (task 'semantic' 10x harder) with Adam; returns the last weights."""
    torch.manual_seed(0)
    net = ToyNet(TASKS)
    weighting = build_weighting(method, tasks=TASKS, **options)
    optimizer = torch.optim.Adam([{"params": net.parameters()}, *weighting.optimizer_param_groups()], lr=1e-2)
    weights = None
    for step in range(steps):
        x, targets = toy_batch(step % 8)
        optimizer.zero_grad()
        outputs, features = net(x, return_features=True)
        weights = weighting.backward(toy_losses(outputs, targets, TASKS), shared_features=features)
        optimizer.step()
    return weights


def test_uncertainty_direction_on_a_ten_times_harder_task():
    # Kendall: sigma^2 tends to the task's loss, so the 10x harder (100x larger loss) task gets less weight.
    weights = _train("uncertainty", 300, uncertainty_form="regression")
    assert weights["semantic"] < 0.5 * weights["depth"]


def test_dwa_matches_torchjd_and_libmtl():
    ours = build_weighting("dwa", tasks=TASKS)
    oracle = scalarization.DWA(temperature=2.0)
    dwa = load_libmtl_weighting("DWA").DWA()
    dwa.task_num, dwa.device = len(TASKS), "cpu"
    rng = np.random.default_rng(0)
    epochs = 5
    dwa.train_loss_buffer = np.zeros((len(TASKS), epochs))
    for epoch in range(epochs):
        dwa.epoch = epoch
        batches = [torch.tensor(rng.uniform(0.5, 2.0, len(TASKS)), dtype=torch.float32) for _ in range(3)]
        for values in batches:
            losses = {t: values[i].clone().requires_grad_() for i, t in enumerate(TASKS)}
            weights = torch.tensor(list(ours.backward(losses).values()))
            oracle_loss = oracle(values)
            torch.testing.assert_close((weights * values).sum(), oracle_loss)
            libmtl_weights = dwa.backward(values.clone().requires_grad_(), T=2.0)
            np.testing.assert_allclose(weights.numpy(), libmtl_weights, rtol=1e-6)
            assert weights.sum().item() == pytest.approx(len(TASKS), rel=1e-6)
        means = torch.stack(batches).mean(0)
        oracle.step()
        dwa.train_loss_buffer[:, epoch] = means.numpy()
        ours.end_epoch(mean_losses={t: float(means[i]) for i, t in enumerate(TASKS)})
    assert not torch.allclose(weights, torch.ones(len(TASKS)))  # the epochs 2.. weights were exercised


def test_famo_matches_torchjd_famo_over_steps():
    ours = build_weighting("famo", tasks=TASKS)
    oracle = scalarization.FAMO(len(TASKS), lr=0.025, weight_decay=1e-3)
    for step in range(6):
        net_ours, net_oracle = (
            (torch.manual_seed(0) and ToyNet(TASKS)),
            (torch.manual_seed(0) and ToyNet(TASKS)),
        )
        x, targets = toy_batch(step)
        ours.backward(toy_losses(net_ours(x), targets, TASKS))
        losses = toy_losses(net_oracle(x), targets, TASKS)
        oracle(torch.stack([losses[t] for t in TASKS])).backward()
        for a, b in zip(net_ours.parameters(), net_oracle.parameters(), strict=True):
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7)
        after = {t: v.detach() * (0.9 - 0.1 * i) for i, (t, v) in enumerate(losses.items())}
        ours.after_step(losses_after=after)
        oracle.update(torch.stack([after[t] for t in TASKS]))
        torch.testing.assert_close(ours.logits.detach(), oracle._w.detach(), rtol=1e-6, atol=1e-7)
    assert not torch.allclose(ours.logits.detach(), torch.zeros(len(TASKS)))
    # The logits' Adam state travels in state_dict (resume continues the same FAMO).
    clone = build_weighting("famo", tasks=TASKS)
    clone.load_state_dict(ours.state_dict())
    assert clone._optimizer.state_dict()["state"][0]["step"] == 6
    with pytest.raises(RuntimeError, match="after_step called before backward"):
        clone.after_step(losses_after=after)


@pytest.mark.parametrize(
    ("method", "options"),
    [("grad_norm", {}), ("grad_norm", {"gradnorm_mode": "libmtl"}), ("uncertainty", {})],
)
def test_weighting_parameter_gradients_are_in_the_amp_scaled_space(method, options):
    """Under a GradScaler every gradient the optimizer sees must carry the scale, so that unscale_ (which
    divides them all) gives the true one: the methods that write their weights' gradient by hand too."""
    grads = []
    for grad_scaler in (None, torch.amp.GradScaler("cpu", init_scale=1024.0)):
        torch.manual_seed(0)
        net = ToyNet(TASKS)
        x, targets = toy_batch(0)
        weighting = build_weighting(method, tasks=TASKS, **options)
        weighting.end_epoch(mean_losses={task: 1.0 for task in TASKS})  # LibMTL GradNorm: past epoch 0
        for _ in range(2):  # the paper's GradNorm records L(0) on its first step
            net.zero_grad()
            weighting.zero_grad()
            outputs, features = net(x, return_features=True)
            weighting.backward(
                toy_losses(outputs, targets, TASKS), shared_features=features, grad_scaler=grad_scaler
            )
        (parameter,) = weighting.parameters()
        grads.append((parameter.grad.clone(), net.first.weight.grad.clone()))
    (plain_weights, plain_net), (scaled_weights, scaled_net) = grads
    assert plain_weights.abs().sum() > 0
    torch.testing.assert_close(scaled_weights, 1024.0 * plain_weights, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(scaled_net, 1024.0 * plain_net, rtol=1e-4, atol=1e-6)
