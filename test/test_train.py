"""training/train.py: TI's defaults, the outputs of a run, bit-exact resume, the LR schedule, the sampler,
--pretrained from this project's and torchvision's key layouts."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from contracts import contract_of
from torch import nn
from train_fixtures import SPLIT, tiny_args, train_root

from mtl_perception.data.flow_folder import manifest_path, read_manifest
from mtl_perception.learning.distributed import DistContext
from mtl_perception.learning.pretrained import load_pretrained
from mtl_perception.learning.sampling import EpochShuffleSampler
from mtl_perception.learning.schedule import WarmupMultiStep
from mtl_perception.model import build_model, load_checkpoint, open_checkpoint, save_checkpoint
from mtl_perception_training import train

SEED_COMMANDS = [
    "--img_resize 384 768 --output_size 1024 2048 --gpus 0 1",
    "--multi_task_type pseudo_grad_norm --img_resize 384 768 --output_size 1024 2048 --gpus 0 1",
    "--multi_task_type uncertainty --img_resize 384 768 --output_size 1024 2048 --gpus 0 1",
]
TIMING_KEYS = ("time_per_step_s", "samples_per_s", "peak_memory_mb")
TRAIN_PY = Path(train.__file__)


def test_defaults_are_tis_recipe_and_every_flag_has_help(capsys):
    args = train.parse_args([])
    assert (args.lr, args.weight_decay, args.epochs, args.batch_size) == (1e-4, 1e-4, 250, 16)
    assert (args.warmup_epochs, args.warmup_factor, args.milestones, args.gamma) == (5, 1e-3, [100, 200], 0.5)
    assert tuple(args.img_resize) == (384, 768) and tuple(args.output_size) == (1024, 2048)
    assert (args.multi_task_type, args.seed, args.workers, args.transform_rotation) == ("vanilla", 1, 8, 5.0)
    assert args.tasks == ["depth", "semantic", "motion"] and args.gpus is None
    assert args.data_path == Path("./data/datasets/cityscapes/data")
    with pytest.raises(SystemExit):
        train.parse_args(["--help"])
    text = capsys.readouterr().out
    for flag in (
        "--data_path",
        "--tasks",
        "--preset",
        "--epochs",
        "--batch_size",
        "--lr",
        "--weight_decay",
        "--workers",
        "--seed",
        "--output_dir",
        "--resume",
        "--amp",
        "--pretrained",
        "--evaluate_every",
        "--gpus",
        "--multi_task_type",
        "--alpha",
        "--overwrite",
        "--img_resize",
        "--output_size",
    ):
        assert flag in text
    assert "pseudo_grad_norm: 0.75; grad_norm: 1.5" in " ".join(text.split())  # --alpha: both defaults


def test_float16_amp_scales_the_loss_and_resumes_bit_exactly(tmp_path, torch_one_thread):
    """--amp --amp_dtype float16 (a GradScaler; CPU autocast here): 8 epochs straight == 4 + --resume, the
    GradScaler's scale and growth tracker included. The metre-scale depth loss overflows float16 at the
    initial scale 2^16: the scaler skips those steps and halves the scale (about ten times) until Adam steps;
    TI's GradNorm weights stay finite throughout."""
    root = train_root()
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    common = ("--multi_task_type", "pseudo_grad_norm", "--amp", "--amp_dtype", "float16", "--no-export_onnx")
    common += ("--lr", "1e-3", "--warmup_epochs", "0", "--tensorboard_images", "0", "--evaluate_every", "4")
    train.main(train.parse_args(tiny_args(root, straight, "--epochs", "8", *common)))
    train.main(train.parse_args(tiny_args(root, resumed, "--epochs", "4", *common)))
    resume = ("--resume", str(resumed / "checkpoint.pt"))
    train.main(train.parse_args(tiny_args(root, resumed, "--epochs", "8", *common, *resume)))
    a, b = _checkpoint(straight), _checkpoint(resumed)
    assert a["grad_scaler"] == b["grad_scaler"]
    assert a["grad_scaler"]["scale"] < 65536.0 and math.log2(a["grad_scaler"]["scale"]).is_integer()
    adam_steps = int(a["optimizer"]["state"][0]["step"])
    assert 0 < adam_steps < 16  # some of the 16 steps were taken, the overflowing ones skipped
    for part in ("model", "weighting"):
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), f"{part}.{key}"
    assert _metrics_without_timing(straight) == _metrics_without_timing(resumed)
    records = json.loads((straight / "metrics.json").read_text())
    assert all(np.isfinite(r[f"weight/{t}"]) for r in records for t in ("depth", "semantic", "motion"))
    # A float16 checkpoint is not resumed as bfloat16 (the flags differ), and --amp_dtype needs --amp.
    assert train.cli(tiny_args(root, tmp_path / "other", "--amp", *resume)) == 2
    assert train.cli(tiny_args(root, tmp_path / "other", "--amp_dtype", "float16")) == 2
    assert not (tmp_path / "other").exists()


def test_amp_refuses_a_gpu_without_native_bfloat16(monkeypatch):
    """--amp is bfloat16 autocast; a V100-class card (compute capability 7.0) is named and refused. The CUDA
    queries are replaced (no GPU here); the real card path runs in benchmarks/gpu_check.py."""
    from mtl_perception.learning.distributed import DeviceError, check_amp

    check_amp(torch.device("cpu"))  # CPU autocast supports bfloat16: nothing to refuse
    asked = []
    monkeypatch.setattr(
        torch.cuda, "is_bf16_supported", lambda including_emulation=True: asked.append(including_emulation)
    )
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100-SXM2-16GB")
    with pytest.raises(
        DeviceError, match=r"Tesla V100-SXM2-16GB \(cuda:1\) has 7\.0; use --amp --amp_dtype float16"
    ):
        check_amp(torch.device("cuda", 1))
    assert asked == [False]  # emulated bfloat16 does not count
    check_amp(torch.device("cuda", 1), torch.float16)  # float16 runs on every CUDA GPU
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    check_amp(torch.device("cuda", 0))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_seed_commands_name_the_missing_gpus(capsys):
    for command in SEED_COMMANDS:
        assert train.cli(command.split()) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "--gpus 0 1: GPU 0, 1 not found" in err, err
    args = tiny_args(train_root(), Path("never-created"), "--device", "cuda")
    assert train.cli(args) == 2 and not Path("never-created").exists()
    assert "--device cuda: GPU 0 not found" in capsys.readouterr().err
    done = subprocess.run(
        [sys.executable, str(TRAIN_PY), *SEED_COMMANDS[0].split()],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2 and done.stderr.strip().startswith("train.py: error: --gpus 0 1: GPU 0, 1")


def _metrics_without_timing(output_dir: Path) -> list[dict]:
    records = json.loads((output_dir / "metrics.json").read_text())
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


def _checkpoint(output_dir: Path) -> dict:
    return torch.load(output_dir / "checkpoint.pt", map_location="cpu", weights_only=True)


def test_outputs_and_resume_continue_bit_exactly(tmp_path, torch_one_thread):
    """2 epochs straight == 1 epoch, then --resume for the second (with another worker count): the same
    weights, optimizer and weighting state, and the same metrics.json except the timings."""
    root = train_root()
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    common = ("--multi_task_type", "uncertainty", "--lr", "1e-3", "--warmup_epochs", "1")
    train.main(train.parse_args(tiny_args(root, straight, "--epochs", "2", *common)))
    train.main(train.parse_args(tiny_args(root, resumed, "--epochs", "1", "--no-export_onnx", *common)))
    assert not (resumed / "best.onnx").exists()
    train.main(
        train.parse_args(
            tiny_args(
                root,
                resumed,
                "--epochs",
                "2",
                "--workers",
                "1",
                *common,
                "--resume",
                str(resumed / "checkpoint.pt"),
            )
        )
    )
    a, b = _checkpoint(straight), _checkpoint(resumed)
    assert a["epoch"] == b["epoch"] == 2 and a["global_step"] == b["global_step"] == 4
    for part in ("model", "weighting"):
        assert a[part].keys() == b[part].keys()
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), f"{part}.{key}"
    for key, state in a["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(value, b["optimizer"]["state"][key][name]), f"optimizer {key}.{name}"
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    assert _metrics_without_timing(straight) == _metrics_without_timing(resumed)

    # metrics.json: one record per epoch with each task's loss and weight, validation metrics and speed.
    records = json.loads((straight / "metrics.json").read_text())
    assert [r["epoch"] for r in records] == [1, 2]
    for key in (
        "loss/depth",
        "loss/semantic",
        "loss/motion",
        "weight/depth",
        "weight/motion",
        "val/depth_ard",
        "val/semantic_miou",
        "val/motion_miou",
        *TIMING_KEYS,
    ):
        assert np.isfinite(records[-1][key]), key
    assert records[0]["weight/depth"] != records[1]["weight/depth"]  # uncertainty's weights are learned
    assert records[0]["lr"] == pytest.approx(1e-3 * 1e-3) and records[1]["lr"] == pytest.approx(1e-3)

    # best.pt: the model checkpoint by motion mIoU, loadable as the node and export_model load it.
    best_epoch = max(records, key=lambda r: r["val/motion_miou"])["epoch"]
    model, extra, contract = open_checkpoint(straight / "best.pt")
    assert extra["epoch"] == best_epoch and extra["metric"] == "val/motion_miou"
    # the input contract: tiny_args' --img_resize (the size the node runs it at) and the flow folder's record
    assert contract.network_size == (64, 128) and contract.flow == read_manifest(
        manifest_path(train_root(), SPLIT)
    ).flow
    assert model.config.preset == "lite" and model.tasks == ("depth", "semantic", "motion")
    assert a["best"] == {"metric": "val/motion_miou", "value": extra["value"], "epoch": best_epoch}
    from mtl_perception.inference.export import read_onnx_metadata
    from mtl_perception.inference.export_cli import main as export_main

    out = tmp_path / "export.onnx"
    assert export_main(["--checkpoint", str(straight / "best.pt"), "--out", str(out)]) == 0
    assert read_onnx_metadata(out)[1]["input_contract"] == contract.to_dict()
    assert read_onnx_metadata(straight / "best.onnx")[1]["input_contract"] == contract.to_dict()

    # best.onnx (exported by train.py) computes what best.pt computes.
    import onnxruntime

    session = onnxruntime.InferenceSession(str(straight / "best.onnx"), providers=["CPUExecutionProvider"])
    image = torch.rand(1, 3, 64, 128) * 255
    flow = torch.randn(1, 3, 64, 128)
    depth_onnx = session.run(["depth"], {"image": image.numpy(), "flow": flow.numpy()})[0]
    with torch.no_grad():
        depth_torch = model(image, flow)["depth"].numpy()
    np.testing.assert_allclose(depth_onnx, depth_torch, rtol=1e-3, atol=1e-3)

    # TensorBoard: per-step losses and weights, the epoch's metrics, prediction images.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(straight / "tensorboard"), size_guidance={"images": 0}).Reload()
    scalars = events.Tags()["scalars"]
    for tag in ("loss/depth", "loss/motion", "weight/semantic", "lr", "val/motion_miou", "val/depth_ard"):
        assert tag in scalars, tag
    assert [e.step for e in events.Scalars("loss/depth")] == [1, 2, 3, 4]
    assert {"val/image/0", "val/depth/0", "val/semantic/0", "val/motion/0"} <= set(events.Tags()["images"])


def test_warmup_then_steps_as_ti():
    factor = WarmupMultiStep(5, 1e-3, [100, 200], 0.5)
    epochs = [0, 1, 2, 3, 4, 5, 99, 100, 199, 200, 249]
    expected = [1e-3, 0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    assert [factor(e) for e in epochs] == pytest.approx(expected)


def test_ranks_share_one_permutation_per_epoch():
    """With N ranks of batch B/N, step k of all ranks together is step k of one process with batch B."""
    single = list(EpochShuffleSampler(13, seed=7, global_batch=4))
    ranks = [list(EpochShuffleSampler(13, seed=7, global_batch=4, rank=r, world_size=2)) for r in (0, 1)]
    assert len(single) == 12 and all(len(r) == 6 for r in ranks)  # the incomplete last batch is dropped
    for step in range(3):
        together = {i for r in ranks for i in r[2 * step : 2 * step + 2]}
        assert together == set(single[4 * step : 4 * step + 4])
    again = EpochShuffleSampler(13, seed=7, global_batch=4)
    assert list(again) == single  # a function of (seed, epoch) only
    again.set_epoch(1)
    assert [i for _, i in again] != [i for _, i in single] and all(e == 1 for e, _ in again)


def _torchvision_like_mobilenet_v2(width: float = 1.0) -> nn.Module:
    """A module with torchvision's mobilenet_v2 parameter names and shapes (features.0 .. features.18,
    classifier), built here so the test needs neither torchvision nor a download."""
    from mtl_perception.model.backbone import make_divisible

    def conv_bn(cin, cout, k=3, s=1, groups=1):
        return nn.Sequential(
            nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout), nn.ReLU6()
        )

    class InvertedResidual(nn.Module):
        def __init__(self, cin, cout, stride, t):
            super().__init__()
            hidden = cin * t
            layers = [conv_bn(cin, hidden, 1)] if t != 1 else []
            layers += [
                conv_bn(hidden, hidden, 3, stride, hidden),
                nn.Conv2d(hidden, cout, 1, bias=False),
                nn.BatchNorm2d(cout),
            ]
            self.conv = nn.Sequential(*layers)

    settings = [
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ]
    cin = make_divisible(32 * width)
    features = [conv_bn(3, cin, 3, 2)]
    for t, c, n, s in settings:
        for i in range(n):
            cout = make_divisible(c * width)
            features.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
            cin = cout
    features.append(conv_bn(cin, 1280, 1))
    net = nn.Module()
    net.features = nn.Sequential(*features)
    net.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, 1000))
    return net


def test_pretrained_from_a_torchvision_mobilenet_v2_state_dict(tmp_path):
    torch.manual_seed(0)
    source = _torchvision_like_mobilenet_v2()
    for p in source.state_dict().values():  # distinct values everywhere, BN statistics included
        p.copy_(torch.randn_like(p.float()).to(p.dtype) if p.is_floating_point() else p + 3)
    state = source.state_dict()
    assert "features.1.conv.2.weight" in state and "features.2.conv.3.running_var" in state  # torchvision's
    path = tmp_path / "mobilenet_v2-imagenet.pth"
    torch.save(state, path)
    torch.manual_seed(1)
    model = build_model("ti")
    untouched_before = {
        k: v.clone() for k, v in model.state_dict().items() if k.startswith(("fusion.", "decoders."))
    }
    report = load_pretrained(model, path)
    target = model.state_dict()
    for stream in ("image", "flow"):  # both streams' stems from the RGB encoder (TI)
        assert torch.equal(target[f"stems.{stream}.0.0.weight"], state["features.0.0.weight"])
        assert torch.equal(target[f"stems.{stream}.1.conv.0.0.weight"], state["features.1.conv.0.0.weight"])
        assert torch.equal(target[f"stems.{stream}.1.conv.1.0.weight"], state["features.1.conv.1.weight"])
        assert torch.equal(
            target[f"stems.{stream}.3.conv.2.1.running_mean"], state["features.3.conv.3.running_mean"]
        )  # noqa: E501
    assert torch.equal(target["trunk.0.conv.0.0.weight"], state["features.4.conv.0.0.weight"])
    assert torch.equal(target["trunk.13.conv.2.0.weight"], state["features.17.conv.2.weight"])
    assert torch.equal(target["trunk.13.conv.2.1.bias"], state["features.17.conv.3.bias"])
    for (
        key,
        value,
    ) in untouched_before.items():  # no counterpart in an ImageNet classifier: left as initialised
        assert torch.equal(target[key], value), key
    unused = set(report.unused)
    assert {"classifier.1.weight", "features.18.0.weight"} <= unused and not report.skipped_shape
    assert all(k.startswith(("classifier.", "features.18.")) for k in unused)
    # every stem and trunk tensor came from the file
    assert {k for k in target if k.startswith(("stems.", "trunk."))} == set(report.loaded)
    # and train.py's --pretrained does the same
    ctx = DistContext(rank=0, world_size=1, device=torch.device("cpu"))
    built = train.build_network(train.parse_args(["--pretrained", str(path)]), ctx).state_dict()
    assert all(torch.equal(built[k], target[k]) for k in report.loaded)


def test_single_task_rows_use_tis_inputs(tmp_path, torch_one_thread):
    """--tasks depth: an RGB-only depth network, best.pt chosen by depth ARD (lower is better)."""
    out = tmp_path / "depth"
    best = train.main(train.parse_args(tiny_args(train_root(), out, "--tasks", "depth", "--no-export_onnx")))
    model, extra = load_checkpoint(out / "best.pt")
    assert model.tasks == ("depth",) and model.streams == ("image",)
    assert extra["metric"] == best["metric"] == "val/depth_ard"
    record = json.loads((out / "metrics.json").read_text())[0]
    assert "loss/depth" in record and not any("motion" in k or "semantic" in k for k in record)
    assert train.streams_for(["motion"]) == ("flow", "image")  # TI: motion from RGB + flow
    assert train.streams_for(["semantic"]) == ("image",)


def test_pretrained_from_a_single_task_rgb_checkpoint(tmp_path):
    """TI's recipe: a semantic RGB network initialises both streams and every decoder; the last conv of a
    decoder with another channel count is skipped."""
    torch.manual_seed(0)
    rgb = build_model("lite", tasks=("semantic",), streams=("image",))
    for p in rgb.parameters():
        p.data.normal_()
    path = save_checkpoint(tmp_path / "semantic.pt", rgb, contract=contract_of(rgb))
    torch.manual_seed(1)
    model = build_model("lite")
    predict_before = {t: model.decoders[t].predict.weight.clone() for t in ("depth", "motion")}
    report = load_pretrained(model, path)
    source = rgb.state_dict()
    for key, value in model.state_dict().items():
        if key.startswith("stems."):
            assert torch.equal(value, source["stems.image." + key.split(".", 2)[2]]), key
        elif key.startswith("trunk."):
            assert torch.equal(value, source[key]), key
    for task in ("depth", "semantic", "motion"):
        assert torch.equal(
            model.decoders[task].aspp.project[0].weight, rgb.decoders["semantic"].aspp.project[0].weight
        )  # noqa: E501
    assert torch.equal(model.decoders["semantic"].predict.weight, rgb.decoders["semantic"].predict.weight)
    for task, before in predict_before.items():  # 1 and 2 output channels, not 5: skipped, kept
        assert torch.equal(model.decoders[task].predict.weight, before)
    assert sorted(report.skipped_shape) == ["decoders.depth.predict.weight", "decoders.motion.predict.weight"]


def test_pretrained_refuses_a_file_it_cannot_map(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"encoder.conv1.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="key layout not recognised"):
        load_pretrained(build_model("lite"), path)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss over exec: Linux")
def test_peak_memory_is_the_process_own_not_its_parents():
    """Before: a train.py started by make_table (which evaluates in-process and grows large) reported the
    parent's peak RSS as its own, because Linux carries ``ru_maxrss`` over fork and exec; every later row
    of the table showed the same inflated peak. The parent here holds 400 MiB; the child allocates 100 MiB."""
    child = (
        "import numpy as np, torch\n"
        "from mtl_perception.learning.run_log import peak_memory_mb\n"
        "before = peak_memory_mb(torch.device('cpu'))\n"
        "block = np.ones(100 * 2**20 // 8)\n"
        "print(before, peak_memory_mb(torch.device('cpu')))\n"
    )
    parent_block = np.ones(400 * 2**20 // 8)
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, check=True)
    before, after = map(float, done.stdout.split())
    assert parent_block.sum() > 0
    assert before < 400, f"the child reports {before:.0f} MiB before allocating: its parent's peak"
    assert 95 <= after - before <= 130, (before, after)
