"""Under torch.distributed (2 gloo processes on the CPU, DDP): every rank holds the same weights, and they and
the network equal one process on the pooled batch (TI's per-replica pseudo_grad_norm bug fixed)."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from weighting_toys import ToyNet, toy_batch, toy_losses

from mtl_perception.learning.weighting import build_weighting

TASKS = ("depth", "semantic", "motion")
STEPS = 4
CASES = {
    # Large rates so that a few steps move the weights visibly.
    "pseudo_grad_norm": ("pseudo_grad_norm", {"weight_lr": 0.5, "short_smooth": 0.5, "long_smooth": 0.1}),
    "uncertainty": ("uncertainty", {}),
    "grad_norm": ("grad_norm", {"gradnorm_lr": 0.05}),
    "grad_norm_libmtl": ("grad_norm", {"gradnorm_mode": "libmtl"}),
    "famo": ("famo", {"famo_lr": 0.1}),
    "upgrad": ("upgrad", {}),
    "nash_mtl": ("nash_mtl", {}),
}


def train(case: str, rank: int, world: int) -> dict:
    """STEPS SGD steps on this rank's share of a fixed batch; returns weights, state and parameters."""
    method, options = CASES[case]
    torch.manual_seed(0)
    net = ToyNet(TASKS)
    model = torch.nn.parallel.DistributedDataParallel(net) if world > 1 else net
    weighting = build_weighting(method, tasks=TASKS, **options)
    optimizer = torch.optim.SGD([{"params": net.parameters()}, *weighting.optimizer_param_groups()], lr=0.05)
    history = []
    for step in range(STEPS):
        x, targets = toy_batch(step, n=16, scales=(1.0, 3.0, 10.0))
        share = slice(rank * 16 // world, (rank + 1) * 16 // world)
        x, targets = x[share], [y[share] for y in targets]
        optimizer.zero_grad()
        outputs, features = model(x, return_features=True)
        history.append(weighting.backward(toy_losses(outputs, targets, TASKS), shared_features=features))
        optimizer.step()
        if weighting.needs_losses_after_step:
            with torch.no_grad():
                weighting.after_step(losses_after=toy_losses(net(x), targets, TASKS))
        if step == 0:  # an "epoch" of one step: LibMTL's GradNorm starts from the second
            weighting.end_epoch(mean_losses={t: 1.0 + i for i, t in enumerate(TASKS)})
    state = {k: v.clone() for k, v in weighting.state_dict().items() if isinstance(v, torch.Tensor)}
    return {"weights": history, "state": state, "params": [p.detach().clone() for p in net.parameters()]}


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        results = {case: train(case, rank, world) for case in CASES}
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


@pytest.mark.parametrize("case", list(CASES))
def test_every_rank_takes_the_pooled_batch_step(ranks, case, torch_one_thread):
    single = train(case, rank=0, world=1)
    first, second = ranks[0][case], ranks[1][case]
    assert first["weights"] == second["weights"]  # one update per step, from the all-reduced values
    for name, value in first["state"].items():
        torch.testing.assert_close(value, second["state"][name], rtol=0, atol=0, equal_nan=True, msg=name)
    for step, (got, expected) in enumerate(zip(first["weights"], single["weights"], strict=True)):
        assert list(got.values()) == pytest.approx(list(expected.values()), rel=2e-5, abs=1e-7), step
    for name, value in single["state"].items():
        torch.testing.assert_close(
            first["state"][name], value, rtol=2e-5, atol=1e-7, equal_nan=True, msg=name
        )
    for got, expected in zip(first["params"], single["params"], strict=True):
        torch.testing.assert_close(got, expected, rtol=2e-5, atol=1e-6)
    weights = [list(w.values()) for w in single["weights"]]
    assert weights[-1] != pytest.approx(weights[0], rel=1e-3)  # the weights moved, so the check bites
