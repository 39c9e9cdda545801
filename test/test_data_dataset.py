"""Multi-task dataset (pairing by name, values vs. the files) and make_flow_dataset (cv2 Farnebäck oracle)."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
import torch
from data_fixtures import CITY, FLOW_SIZE, HEIGHT, SEQUENCES, SPLIT, WIDTH, synthetic_root_with_flow

from mtl_perception.data import (
    FrameId,
    cityscapes_path,
    disparity_to_depth,
    label_ids_to_semantic,
    read_camera,
)
from mtl_perception.flow import CUDA_DEFAULTS, DEFAULT_CONFIDENCE_MODE, read_flow_png
from mtl_perception.flow.codecs import write_ti_flow_png
from mtl_perception.learning.augment import TrainAugment, align_flow
from mtl_perception.learning.dataset import FLOW_FOLDER, CityscapesMultiTask, flow_path
from mtl_perception.model import FlowContract
from mtl_perception.pipeline import resize_for_network
from mtl_perception_training.make_flow_dataset import main as make_flow_main
from mtl_perception_training.make_flow_dataset import make_flow_dataset


def _copy_tree(tmp_path, folders=None):
    src = synthetic_root_with_flow()
    dst = tmp_path / "root"
    for sub in folders or (
        "leftImg8bit",
        "leftImg8bit_sequence",
        "gtFine",
        "disparity",
        "camera",
        FLOW_FOLDER,
    ):
        shutil.copytree(src / sub, dst / sub)
    return dst


def test_sample_values_match_the_files():
    root = synthetic_root_with_flow()
    ds = CityscapesMultiTask(root, SPLIT)
    assert len(ds) == SEQUENCES
    assert [f.stem for f in ds.frames] == [f"{CITY}_{s:06d}_000019" for s in range(SEQUENCES)]
    s = ds[1]
    fid = FrameId(CITY, 1, 19)
    assert s["name"] == fid.stem
    assert s["image"].shape == (3, HEIGHT, WIDTH) and s["image"].dtype == torch.float32
    rgb = cv2.imread(str(cityscapes_path(root, "image", SPLIT, fid)))[..., ::-1]
    np.testing.assert_array_equal(s["image"].permute(1, 2, 0).numpy(), rgb.astype(np.float32))
    cam = read_camera(cityscapes_path(root, "camera", SPLIT, fid))
    disp = cv2.imread(str(cityscapes_path(root, "disparity", SPLIT, fid)), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(s["depth"][0].numpy(), disparity_to_depth(disp, cam.fx, cam.baseline))
    labels = cv2.imread(str(cityscapes_path(root, "label_ids", SPLIT, fid)), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(s["semantic"].numpy(), label_ids_to_semantic(labels, "five"))
    assert s["semantic"].dtype == torch.int64 and s["motion"].dtype == torch.int64
    motion = cv2.imread(str(cityscapes_path(root, "motion", SPLIT, fid)), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(s["motion"].numpy(), (motion > 0).astype(np.int64))
    # flow made at the network size is aligned to the image: vectors scaled by the size ratio
    flow, conf = read_flow_png(flow_path(root, SPLIT, fid))
    assert flow.shape[:2] == FLOW_SIZE
    ref = cv2.resize(np.dstack([flow, conf]), (WIDTH, HEIGHT), interpolation=cv2.INTER_LINEAR)
    ref[..., 0] *= WIDTH / FLOW_SIZE[1]
    ref[..., 1] *= HEIGHT / FLOW_SIZE[0]
    np.testing.assert_allclose(s["flow"].permute(1, 2, 0).numpy(), ref, atol=1e-5)
    assert 0 <= s["flow"][2].min() and s["flow"][2].max() <= 1
    # trainid mode and a batched, augmented loader
    assert set(
        CityscapesMultiTask(root, SPLIT, semantic_mode="trainid")[0]["semantic"].unique().tolist()
    ) <= {*range(19), 255}
    aug = CityscapesMultiTask(root, SPLIT, transform=TrainAugment((64, 128)), seed=0)
    batch = next(iter(torch.utils.data.DataLoader(aug, batch_size=2)))
    assert batch["image"].shape == (2, 3, 64, 128) and batch["flow"].shape == (2, 3, 64, 128)
    assert batch["depth"].shape == (2, 1, 64, 128) and batch["semantic"].shape == (2, 64, 128)


def test_missing_and_mismatched_files_name_the_path(tmp_path):
    root = _copy_tree(tmp_path)
    missing = flow_path(root, SPLIT, FrameId(CITY, 1, 19))
    missing.rename(missing.with_name(f"{CITY}_000001_000018_leftImg8bit_flow.png"))  # wrong frame number
    with pytest.raises(FileNotFoundError, match=str(missing.name)):
        CityscapesMultiTask(root, SPLIT)
    ds = CityscapesMultiTask(root, SPLIT, use_flow=False)
    assert "flow" not in ds[0]
    disp = cityscapes_path(root, "disparity", SPLIT, FrameId(CITY, 0, 19))
    cv2.imwrite(str(disp), np.ones((10, 10), np.uint16))
    with pytest.raises(ValueError, match="depth of"):
        ds.load(0)
    disp.write_bytes(b"\x89PNG truncated")
    with pytest.raises(ValueError, match="unreadable"):
        ds.load(0)


def test_depth_folder_alias_and_ti_flow(tmp_path):
    root = _copy_tree(tmp_path)
    (root / "disparity").rename(root / "depth")
    ti_dir = root / "ti_flow" / SPLIT / CITY
    ti_dir.mkdir(parents=True)
    ref = {}
    for seq in range(SEQUENCES):
        fid = FrameId(CITY, seq, 19)
        flow, conf = read_flow_png(flow_path(root, SPLIT, fid))
        write_ti_flow_png(ti_dir / f"{fid.stem}_leftImg8bit.png", flow, conf, scale=8.0)
        ref[fid.stem] = flow
    ds = CityscapesMultiTask(
        root, SPLIT, flow_folder="ti_flow", flow_suffix="leftImg8bit.png", flow_format="ti", ti_flow_scale=8.0
    )
    sample = align_flow(ds.load(0))  # the flow comes at its own size; the augmentation aligns it
    flow = cv2.resize(ref[ds.frames[0].stem], (WIDTH, HEIGHT), interpolation=cv2.INTER_LINEAR)
    flow[..., 0] *= WIDTH / FLOW_SIZE[1]
    flow[..., 1] *= HEIGHT / FLOW_SIZE[0]
    # TI's 8-bit code: 1/8 px steps at the flow size (1/4 px after the 2x alignment), saturating at 127/8
    small = cv2.resize(
        np.abs(ref[ds.frames[0].stem]).max(-1), (WIDTH, HEIGHT), interpolation=cv2.INTER_LINEAR
    )
    inside = small < 15
    assert inside.mean() > 0.9
    assert np.abs(sample["flow"][..., :2] - flow)[inside].max() <= 0.5 / 8 * 2 + 1e-4
    with pytest.raises(ValueError, match="ti_flow_scale"):
        CityscapesMultiTask(root, SPLIT, flow_format="ti")


def test_flow_dataset_matches_cv2_and_records_parameters():
    root = synthetic_root_with_flow()
    sidecar = json.loads((root / FLOW_FOLDER / SPLIT / "flow_params.json").read_text())
    recorded = sidecar["flow"]
    assert sidecar["complete"] and recorded["farneback"] == CUDA_DEFAULTS.to_dict()
    assert recorded["partner_gap"] == 2 and recorded["frame_rate_hz"] == 17.0
    assert recorded["size"] == list(FLOW_SIZE) and recorded["confidence"] == DEFAULT_CONFIDENCE_MODE
    fid = FrameId(CITY, 0, 19)
    flow, conf = read_flow_png(flow_path(root, SPLIT, fid))
    grays = []
    for f in (19, 17):
        rgb = cv2.imread(str(cityscapes_path(root, "image_sequence", SPLIT, FrameId(CITY, 0, f))))[..., ::-1]
        frame = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float()
        net = resize_for_network(frame, FLOW_SIZE)[0].permute(1, 2, 0).numpy().astype(np.uint8)
        grays.append(cv2.cvtColor(net, cv2.COLOR_RGB2GRAY))
    p = CUDA_DEFAULTS
    ref = cv2.calcOpticalFlowFarneback(
        grays[0],
        grays[1],
        None,
        p.pyr_scale,
        p.levels,
        p.winsize,
        p.iterations,
        p.poly_n,
        p.poly_sigma,
        p.flags,
    )
    err = np.linalg.norm(flow - ref, axis=-1)
    assert np.median(err) < 0.05 and np.percentile(err, 95) < 0.25, (np.median(err), np.percentile(err, 95))
    assert np.abs(ref).max() > 0.5  # the pair really moves
    assert 0.0 <= conf.min() and conf.max() <= 1.0 and conf.mean() > 0.3


def test_flow_dataset_resumes_and_refuses_other_parameters(tmp_path):
    root = _copy_tree(tmp_path)
    files = sorted((root / FLOW_FOLDER / SPLIT).rglob("*_leftImg8bit_flow.png"))
    assert len(files) == SEQUENCES
    stamps = {p: p.stat().st_mtime_ns for p in files}
    files[0].unlink()
    done = make_flow_dataset(
        root, SPLIT, flow=FlowContract(size=FLOW_SIZE), device="cpu", show_progress=False
    )
    assert (done["computed"], done["skipped"]) == (1, SEQUENCES - 1)
    assert files[0].is_file()
    assert all(p.stat().st_mtime_ns == stamps[p] for p in files[1:])  # finished files are not recomputed
    sidecar = root / FLOW_FOLDER / SPLIT / "flow_params.json"
    before = sidecar.read_text()
    args = [
        "--root",
        str(root),
        "--split",
        SPLIT,
        "--height",
        str(FLOW_SIZE[0]),
        "--width",
        str(FLOW_SIZE[1]),
    ]
    assert make_flow_main([*args, "--gap", "3"]) == 2
    assert make_flow_main([*args, "--params", "common"]) == 2
    assert sidecar.read_text() == before
    assert make_flow_main(args) == 0  # same parameters: nothing to do
    assert all(p.stat().st_mtime_ns == stamps[p] for p in files[1:])


def test_dataloader_workers_draw_different_augmentations():
    root = synthetic_root_with_flow()
    ds = CityscapesMultiTask(
        root, SPLIT, transform=TrainAugment((64, 128), rotation=5.0, p_rotate=1.0), seed=0
    )
    loader = torch.utils.data.DataLoader(ds, batch_size=1, sampler=[0, 0], num_workers=2)
    first, second = list(loader)
    assert first["name"] == second["name"]
    assert not torch.equal(first["image"], second["image"])  # forked workers must not share one RNG state
