"""learning.evaluation.evaluate against independent oracles: cv2 resizing + torchmetrics + numpy metrics,
a 2-process gloo run equal to one process, and the ground truth kept at its own resolution."""

import cv2
import numpy as np
import pytest
import torch
from torch import nn
from torchmetrics.classification import MulticlassJaccardIndex

from mtl_perception.learning.evaluation import (
    EvalResize,
    ShardSampler,
    evaluate,
    semantic_class_names,
)
from mtl_perception.metrics import abs_rel_diff
from mtl_perception.model import build_model
from mtl_perception.pipeline import resize_for_network, upload_rgb

TASKS = ("depth", "semantic", "motion")


class ToyNet(nn.Module):
    """Deterministic stand-in: outputs are simple functions of the input, so expectations are exact."""

    tasks = TASKS

    def forward(self, image, flow=None):
        g = image.mean(1, keepdim=True)
        sem = torch.cat([-(g - c * 50.0).abs() for c in range(5)], 1)
        mot = torch.cat([-g, g - 128.0], 1)
        return {"depth": g / 4.0, "semantic": sem, "motion": mot}


def _samples(n, in_size=(16, 32), gt_size=(32, 64), seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        depth = rng.uniform(1, 70, (1, *gt_size)).astype(np.float32)
        depth[rng.random(depth.shape) < 0.2] = 0
        sem = rng.integers(0, 5, gt_size)
        sem[rng.random(gt_size) < 0.1] = 255
        out.append(
            {
                "image": torch.from_numpy(rng.uniform(0, 255, (3, *in_size)).astype(np.float32)),
                "flow": torch.from_numpy(rng.normal(0, 1, (3, *in_size)).astype(np.float32)),
                "depth": torch.from_numpy(depth),
                "semantic": torch.from_numpy(sem),
                "motion": torch.from_numpy(rng.integers(0, 2, gt_size)),
            }
        )
    return out


def _collate(samples):
    return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}


def _oracle(model, samples, out_size):
    """cv2 upsampling (bilinear depth, nearest labels) + torchmetrics IoU + numpy ARD, image by image."""
    h, w = out_size
    sem_iou = MulticlassJaccardIndex(5, average="none", ignore_index=255)
    mot_iou = MulticlassJaccardIndex(2, average="none", ignore_index=255)
    ards = []
    with torch.no_grad():
        for s in samples:
            raw = model(s["image"][None], s["flow"][None])
            depth = cv2.resize(raw["depth"][0, 0].numpy(), (w, h), interpolation=cv2.INTER_LINEAR)
            labels = {
                t: cv2.resize(
                    raw[t].argmax(1)[0].numpy().astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST
                )
                for t in ("semantic", "motion")
            }
            target = {
                k: cv2.resize(
                    s[k].numpy().reshape(s[k].shape[-2:]).astype(np.float32),
                    (w, h),
                    interpolation=cv2.INTER_NEAREST,
                )
                for k in ("depth", "semantic", "motion")
            }
            ards.append(abs_rel_diff(depth, target["depth"]))
            sem_iou.update(
                torch.from_numpy(labels["semantic"]).long(), torch.from_numpy(target["semantic"]).long()
            )
            mot_iou.update(
                torch.from_numpy(labels["motion"]).long(), torch.from_numpy(target["motion"]).long()
            )
    return float(np.mean(ards)), sem_iou.compute().numpy(), mot_iou.compute().numpy()


@pytest.mark.parametrize("out_size", [(32, 64), (64, 128)])
def test_evaluate_matches_cv2_torchmetrics_oracle(out_size):
    samples = _samples(5)
    model = ToyNet()
    loader = [_collate(samples[:2]), _collate(samples[2:])]
    result = evaluate(model, loader, tasks=TASKS, device="cpu", output_size=out_size, num_semantic_classes=5)
    ard, sem, mot = _oracle(model, samples, out_size)
    assert result["depth_ard"] == pytest.approx(ard, rel=1e-4)
    assert result["semantic_miou"] == pytest.approx(float(sem.mean()), rel=1e-6)
    assert result["motion_miou"] == pytest.approx(float(mot.mean()), rel=1e-6)
    names = semantic_class_names(5)
    for i, name in enumerate(names):
        assert result[f"semantic_iou_{name}"] == pytest.approx(float(sem[i]), rel=1e-6)
    assert result["motion_iou_static"] == pytest.approx(float(mot[0]), rel=1e-6)
    assert result["motion_iou_moving"] == pytest.approx(float(mot[1]), rel=1e-6)
    assert result["num_images"] == 5
    assert {"depth_abs_rel", "depth_rmse", "depth_delta1"} <= set(result)


def test_evaluate_real_network_restores_train_mode_and_only_its_tasks():
    torch.manual_seed(0)
    net = build_model("lite", tasks=("depth", "motion")).train()
    samples = _samples(2)
    result = evaluate(
        net,
        [_collate(samples)],
        tasks=("depth", "motion"),
        device="cpu",
        output_size=None,
        num_semantic_classes=5,
    )
    assert net.training
    assert (
        "semantic_miou" not in result and np.isfinite(result["depth_ard"]) and 0 <= result["motion_miou"] <= 1
    )
    with pytest.raises(ValueError, match=r"the model has no \['semantic'\] output"):
        evaluate(net, [], tasks=TASKS, device="cpu", output_size=None, num_semantic_classes=5)


def test_eval_resize_keeps_ground_truth_resolution():
    rng = np.random.default_rng(0)
    sample = {
        "image": rng.uniform(0, 255, (64, 128, 3)).astype(np.float32),
        "flow": np.dstack([np.full((64, 128), 4.0), np.full((64, 128), -2.0), np.ones((64, 128))]).astype(
            np.float32
        ),
        "depth": rng.uniform(1, 50, (64, 128)).astype(np.float32),
        "semantic": rng.integers(0, 5, (64, 128)).astype(np.uint8),
        "motion": np.zeros((64, 128), np.uint8),
    }
    out = EvalResize((32, 32))(sample)
    assert out["image"].shape == (32, 32, 3) and out["flow"].shape == (32, 32, 3)
    np.testing.assert_allclose(out["flow"][..., 0], 1.0)  # u scaled by 32/128
    np.testing.assert_allclose(out["flow"][..., 1], -1.0)  # v scaled by 32/64
    for key in ("depth", "semantic", "motion"):
        assert out[key] is sample[key]


def test_eval_resize_feeds_the_network_what_the_node_feeds_it():
    """The image through the node's upload + resize, a flow made at the network size untouched: a trained
    model scores the same offline and in the node (benchmarks/evaluate_paths.py)."""
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (64, 128, 3), dtype=np.uint8)
    flow = rng.normal(0, 2, (32, 64, 3)).astype(np.float32)
    out = EvalResize((32, 64))({"image": frame.astype(np.float32), "flow": flow, "depth": None})
    node_input = resize_for_network(upload_rgb(frame, torch.device("cpu")), (32, 64))
    np.testing.assert_array_equal(out["image"], node_input[0].permute(1, 2, 0).numpy())
    # independent of the node's code: torch's antialiased bilinear resize of the float frame, rounded
    reference = torch.nn.functional.interpolate(
        torch.from_numpy(frame).permute(2, 0, 1)[None].float(),
        size=(32, 64),
        mode="bilinear",
        align_corners=False,
        antialias=True,
    )
    assert np.abs(out["image"] - reference[0].permute(1, 2, 0).numpy()).max() <= 1.0
    assert out["flow"] is flow  # not aligned to the image and back (that blurs it)


def test_shard_sampler_covers_each_index_once():
    shards = [list(ShardSampler(7, rank=r, world_size=3)) for r in range(3)]
    assert sorted(sum(shards, [])) == list(range(7))
    with pytest.raises(ValueError, match="rank 3 outside"):
        ShardSampler(7, rank=3, world_size=3)


def _ddp_worker(rank, world, init_file, out_file):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        samples = _samples(5)
        loader = torch.utils.data.DataLoader(
            samples, batch_size=2, sampler=ShardSampler(len(samples)), collate_fn=_collate
        )
        result = evaluate(
            ToyNet(), loader, tasks=TASKS, device="cpu", output_size=(64, 128), num_semantic_classes=5
        )
        torch.save(result, f"{out_file}.{rank}")
    finally:
        dist.destroy_process_group()


def test_distributed_evaluation_equals_one_process(tmp_path):
    samples = _samples(5)
    single = evaluate(
        ToyNet(),
        [_collate(samples[i : i + 2]) for i in range(0, 5, 2)],
        tasks=TASKS,
        device="cpu",
        output_size=(64, 128),
        num_semantic_classes=5,
    )
    out = tmp_path / "result"
    torch.multiprocessing.spawn(_ddp_worker, args=(2, tmp_path / "init", out), nprocs=2, join=True)
    for rank in range(2):
        result = torch.load(f"{out}.{rank}")
        assert set(result) == set(single)
        for key, value in single.items():
            assert result[key] == pytest.approx(value, rel=1e-12, nan_ok=True), key
