"""pseudo_grad_norm (TI §5.2) and GradNorm: TI's formulas on fixed inputs, LibMTL 1.1.5 bit for bit, the
paper's direction, and one identical update on every rank under torch.distributed (2 gloo processes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from weighting_toys import ToyNet, load_libmtl_weighting, toy_batch, toy_losses

from mtl_perception.learning.weighting import build_weighting

pytestmark = pytest.mark.usefixtures("torch_one_thread")
TASKS = ("depth", "semantic", "motion")


def ti_pseudo_grad_norm(
    loss_history, norm_history, *, alpha=0.75, lr=1e-4, beta_s=1e-3, beta_l=1e-6, eps=1e-6
):
    """TI's train_pixel2pixel MultiTask pseudo_grad_norm, written from ti_multitask.md §5.2 (numpy)."""
    w = np.ones(len(loss_history[0]))
    short = long = smooth = None
    history = []
    for losses, norms in zip(loss_history, norm_history, strict=True):
        history.append(w.copy())  # the weights used at this step
        losses, norms = np.asarray(losses, float), np.asarray(norms, float)
        if short is None:
            short, long, smooth = losses.copy(), losses.copy(), norms.copy()
        else:
            short = (1 - beta_s) * short + beta_s * losses
            long = (1 - beta_l) * long + beta_l * losses
            smooth = (1 - beta_s) * smooth + beta_s * norms
        r = short / (long + eps)
        r_hat = r / r.sum()
        target = smooth.mean() * r_hat**alpha
        u = target / (smooth + eps)
        w = w + lr * w * (u - 1)
        w = len(w) * w / w.sum()
    return history, w


def test_pseudo_grad_norm_update_matches_ti_formula_on_fixed_inputs():
    rng = np.random.default_rng(0)
    losses = rng.uniform(0.1, 3.0, (50, 3))
    norms = rng.uniform(0.01, 2.0, (50, 3))
    # Large rates so that 50 steps move the weights visibly.
    options = dict(alpha=0.75, weight_lr=0.05, short_smooth=0.1, long_smooth=0.01)
    expected_history, expected = ti_pseudo_grad_norm(
        losses, norms, alpha=0.75, lr=0.05, beta_s=0.1, beta_l=0.01
    )
    weighting = build_weighting("pseudo_grad_norm", tasks=TASKS, **options)
    for step in range(50):
        np.testing.assert_allclose(weighting.weights.numpy(), expected_history[step], rtol=1e-12)
        weighting.update(losses=torch.tensor(losses[step]), norms=torch.tensor(norms[step]))
    np.testing.assert_allclose(weighting.weights.numpy(), expected, rtol=1e-12)
    assert weighting.weights.sum().item() == pytest.approx(3.0)
    assert np.abs(expected - 1).max() > 1e-2
    # T is the number of tasks, not TI's hard-coded 3.
    two = build_weighting("pseudo_grad_norm", tasks=TASKS[:2], **options)
    for step in range(5):
        two.update(losses=torch.tensor(losses[step, :2]), norms=torch.tensor(norms[step, :2]))
    assert two.weights.sum().item() == pytest.approx(2.0)
    np.testing.assert_allclose(two.weights.numpy(), ti_pseudo_grad_norm(
        losses[:5, :2], norms[:5, :2], lr=0.05, beta_s=0.1, beta_l=0.01)[1], rtol=1e-12)  # fmt: skip


def test_pseudo_grad_norm_norms_are_the_weighted_gradients_at_the_trunk_output():
    weighting = build_weighting("pseudo_grad_norm", tasks=TASKS, weight_lr=0.5, short_smooth=0.5)
    weighting.weights.copy_(torch.tensor([0.5, 1.0, 1.5], dtype=torch.float64))
    torch.manual_seed(0)
    net = ToyNet(TASKS)
    x, targets = toy_batch(0, scales=(1.0, 3.0, 10.0))
    outputs, (shared, skip) = net(x, return_features=True)
    losses = toy_losses(outputs, targets, TASKS)
    w = [0.5, 1.0, 1.5]
    norms = [
        torch.autograd.grad(wi * losses[t], shared, retain_graph=True)[0].norm()
        for wi, t in zip(w, TASKS, strict=True)
    ]
    used = weighting.backward(losses, shared_features=(shared, skip))
    assert list(used.values()) == w
    np.testing.assert_allclose(weighting.smooth_norm.numpy(), torch.stack(norms).detach().numpy(), rtol=1e-6)
    # The network got the gradient of sum w_i L_i.
    got = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    sum(wi * toy_losses(net(x), targets, TASKS)[t] for wi, t in zip(w, TASKS, strict=True)).backward()
    for g, p in zip(got, net.parameters(), strict=True):
        torch.testing.assert_close(g, p.grad)


def _libmtl_model(epochs):
    """LibMTL's GradNorm driven through our own architecture mixin (rep_grad, one representation)."""
    GradNorm = load_libmtl_weighting("GradNorm").GradNorm  # noqa: N806

    class LibMTLToy(GradNorm):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.net = ToyNet(TASKS[:2])
            self.task_name, self.task_num, self.device, self.rep_grad = list(TASKS[:2]), 2, "cpu", True
            self.epoch, self.train_loss_buffer = 0, np.zeros((2, epochs))
            self.init_param()

        def get_share_params(self):
            return [*self.net.first.parameters(), *self.net.second.parameters()]

        def zero_grad_share_params(self):
            self.net.first.zero_grad(set_to_none=False)
            self.net.second.zero_grad(set_to_none=False)

        def forward(self, x):
            shared = torch.tanh(self.net.second(torch.tanh(self.net.first(x))))
            self.rep, self.rep_tasks, out = shared, {}, {}
            for task in self.task_name:
                # LibMTL's own rep_grad architecture always hands the heads detached copies, so in GradNorm's
                # epoch 0 (a plain equal-weight backward) its encoder gets no gradient at all: a LibMTL bug,
                # not GradNorm. Our mixin hands them the representation itself in that phase.
                rep = shared.detach().clone() if self.epoch >= 1 else shared
                if self.epoch >= 1:
                    rep.requires_grad = True
                self.rep_tasks[task] = rep
                out[task] = self.net.heads[task](torch.cat([rep, torch.zeros_like(rep)], 1)).squeeze(1)
            return out

    return LibMTLToy()


def test_grad_norm_libmtl_mode_is_bit_exact_against_libmtl_1_1_5():
    epochs, batches, tasks = 20, 8, TASKS[:2]
    oracle = _libmtl_model(epochs)
    oracle_optimizer = torch.optim.Adam(oracle.parameters(), lr=1e-2, weight_decay=1e-5)
    torch.manual_seed(0)
    net = ToyNet(tasks)
    weighting = build_weighting("grad_norm", tasks=tasks, gradnorm_mode="libmtl")
    optimizer = torch.optim.Adam(
        [{"params": net.parameters()}, *weighting.optimizer_param_groups()], lr=1e-2, weight_decay=1e-5
    )
    history = []
    for epoch in range(epochs):
        oracle.epoch = epoch
        epoch_losses = []
        for b in range(batches):
            x, targets = toy_batch(b)
            oracle_optimizer.zero_grad()
            out = oracle(x)
            train_losses = torch.zeros(2)
            for i, t in enumerate(tasks):
                train_losses[i] = (out[t] - targets[i]).pow(2).mean()
            oracle_weights = oracle.backward(train_losses, alpha=1.5)
            oracle_optimizer.step()

            optimizer.zero_grad()
            outputs, (shared, skip) = net(x, return_features=True)
            # The oracle's heads see zeros for the skip: do the same, so only `shared` is the representation.
            outputs = {
                t: net.heads[t](torch.cat([shared, torch.zeros_like(skip)], 1)).squeeze(1) for t in tasks
            }
            losses = toy_losses(outputs, targets, tasks)
            weights = weighting.backward(losses, shared_features=(shared,))
            optimizer.step()
            np.testing.assert_array_equal(np.array(list(weights.values()), dtype=np.float32), oracle_weights)
            epoch_losses.append([train_losses[i].item() for i in range(2)])
            history.append(list(weights.values()))
        means = np.mean(epoch_losses, axis=0)
        oracle.train_loss_buffer[:, epoch] = means
        weighting.end_epoch(mean_losses={t: float(means[i]) for i, t in enumerate(tasks)})
    for ours, theirs in zip(net.parameters(), oracle.net.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    torch.testing.assert_close(weighting.loss_scale, oracle.loss_scale, rtol=0, atol=0)
    assert max(abs(w[1] - w[0]) for w in history) > 0.1  # the weights did move


def test_grad_norm_paper_mode_sum_and_direction():
    tasks = TASKS[:2]
    torch.manual_seed(0)
    net = ToyNet(tasks)
    weighting = build_weighting("grad_norm", tasks=tasks, gradnorm_lr=0.01)
    assert weighting.optimizer_param_groups()[0]["weight_decay"] == 0.0
    optimizer = torch.optim.Adam([{"params": net.parameters()}, *weighting.optimizer_param_groups()], lr=1e-2)
    for step in range(200):
        x, targets = toy_batch(step % 8, scales=(1.0, 10.0))
        optimizer.zero_grad()
        outputs, features = net(x, return_features=True)
        weights = weighting.backward(toy_losses(outputs, targets, tasks), shared_features=features)
        assert sum(weights.values()) == pytest.approx(2.0, rel=1e-5)  # sum w = T at every use
        optimizer.step()
    # GradNorm equalises gradient norms at W: the 10x harder task (10x larger gradients) is weighted down.
    assert weights["semantic"] < 0.5 * weights["depth"]


def test_pseudo_grad_norm_skips_a_float16_overflow_step():
    """A GradScaler whose scale overflows the backward (inf gradients; the scaler then skips the optimizer
    step) must not feed the inf norms to TI's EMAs: weights and buffers stay as they were, and the next,
    finite step updates them again."""
    torch.manual_seed(0)
    net = ToyNet(TASKS)
    x, targets = toy_batch(0, scales=(1.0, 3.0, 100.0))  # the gradient at F of the last task: norm > 2
    weighting = build_weighting("pseudo_grad_norm", tasks=TASKS, weight_lr=0.1)

    def step(grad_scaler):
        net.zero_grad()
        outputs, features = net(x, return_features=True)
        return weighting.backward(
            toy_losses(outputs, targets, TASKS), shared_features=features, grad_scaler=grad_scaler
        )

    step(None)
    before = {k: v.clone() for k, v in weighting.state_dict().items()}
    overflowing = torch.amp.GradScaler("cpu", init_scale=2.0**127)
    weights = step(overflowing)
    assert not torch.isfinite(net.first.weight.grad).all()  # the overflow happened
    assert list(weights.values()) == pytest.approx(before["weights"].tolist())
    for key, value in weighting.state_dict().items():
        assert torch.equal(value, before[key]), key
    step(torch.amp.GradScaler("cpu", init_scale=1024.0))
    assert int(weighting.state_dict()["steps"]) == 2
    assert not torch.equal(weighting.state_dict()["weights"], before["weights"])
