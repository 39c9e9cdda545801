"""The command line of ``training/train.py``: TI's recipe as the defaults, one help line per flag.

The task-weighting options come from ``weighting_options(method)`` of each method, so a method's flag and
its default are defined once, in the weighting module. They default to None here: a method receives only
the options given on the command line, and its own defaults otherwise.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from mtl_perception.learning.dataset import DEFAULT_ROOT, FLOW_FOLDER
from mtl_perception.learning.distributed import check_device, check_gpus
from mtl_perception.learning.weighting import METHODS, weighting_options
from mtl_perception.model import TASK_NAMES
from mtl_perception.model.config import PRESETS, preset_config

MAX_SEED = 2**32 - 1  # numpy's legacy seeds; seed + epoch must stay a valid torch seed


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default, except None (no default: the help says what happens then)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        return action.help if action.default is None else super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    """All flags of training/train.py, with TI's recipe as the defaults."""
    p = argparse.ArgumentParser(
        prog="train.py",
        description="Train the two-stream multi-task network (TI's recipe by default). See docs/training.md.",
        formatter_class=_HelpFormatter,
    )
    data = p.add_argument_group("data")
    data.add_argument("--data_path", type=Path, default=DEFAULT_ROOT, help="Cityscapes-layout root")
    data.add_argument("--train_split", default="train", help="split trained on")
    data.add_argument("--val_split", default="val", help="split evaluated every --evaluate_every epochs")
    data.add_argument("--flow_folder", default=FLOW_FOLDER, help="folder of make_flow_dataset's flow PNGs")
    data.add_argument(
        "--semantic_mode",
        choices=("five", "trainid", "ti_five"),
        default="five",
        help="TI's five classes from *_labelIds.png, the 19 trainIds, or TI's own five-class files",
    )
    data.add_argument(
        "--img_resize",
        type=int,
        nargs=2,
        default=(384, 768),
        metavar=("H", "W"),
        help="network input size (train crops and validation resize)",
    )
    data.add_argument(
        "--output_size",
        type=int,
        nargs=2,
        default=(1024, 2048),
        metavar=("H", "W"),
        help="size the validation metrics are computed at (predictions upsampled)",
    )
    data.add_argument(
        "--transform_rotation",
        type=float,
        default=5.0,
        help="random rotation range in degrees (TI), applied with probability 0.5",
    )
    data.add_argument("--workers", type=int, default=8, help="DataLoader worker processes per GPU")
    data.add_argument("--prefetch_factor", type=int, default=2, help="batches each worker loads ahead")
    model = p.add_argument_group("model")
    model.add_argument(
        "--preset",
        choices=("ti", "lite"),
        default="ti",
        help="ti: TI's network; lite: half width, for CPUs and small GPUs",
    )
    model.add_argument(
        "--tasks",
        nargs="+",
        choices=TASK_NAMES,
        default=list(TASK_NAMES),
        help="tasks to learn; a single task is a single-task model (RGB input for depth and "
        "semantic, RGB + flow whenever motion is among them, as TI)",
    )
    model.add_argument(
        "--dropout", type=float, default=None, help="decoder dropout (default: the preset's, 0.2)"
    )
    model.add_argument(
        "--pretrained",
        default=None,
        metavar="PATH",
        help="initialise from an RGB network: a mtl_perception checkpoint or a torchvision "
        "mobilenet_v2 state_dict (both streams' stems from its encoder, decoders from its "
        "decoder; mismatched last convs skipped)",
    )
    opt = p.add_argument_group("optimisation (TI's recipe)")
    opt.add_argument(
        "--epochs", type=int, default=250, help="epochs to train (the total, also after --resume)"
    )
    opt.add_argument("--epoch_size", type=int, default=0, help="steps per epoch; 0: the whole training split")
    opt.add_argument("--batch_size", type=int, default=16, help="global batch, split evenly over the GPUs")
    opt.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate")
    opt.add_argument(
        "--weight_decay", type=float, default=1e-4, help="Adam (coupled L2) weight decay, all weights"
    )
    opt.add_argument(
        "--warmup_epochs", type=int, default=5, help="warm-up epochs (epoch 0 at --warmup_factor)"
    )
    opt.add_argument("--warmup_factor", type=float, default=1e-3, help="LR multiplier of the first epoch")
    opt.add_argument(
        "--milestones", type=int, nargs="*", default=[100, 200], help="epochs where LR *= --gamma"
    )
    opt.add_argument("--gamma", type=float, default=0.5, help="LR step factor")
    opt.add_argument(
        "--class_weights",
        choices=("none", "ti"),
        default="none",
        help="ti: TI's class weights for semantic (five classes) and motion",
    )
    opt.add_argument(
        "--class_weight_probability",
        type=float,
        default=0.0,
        help="0: class weights every step; p: only in a random fraction p of steps (TI: 0.2)",
    )
    opt.add_argument("--seed", type=int, default=1, help="seed of the init, the data order and augmentation")
    weighting = p.add_argument_group("task weighting")
    weighting.add_argument(
        "--multi_task_type",
        choices=METHODS,
        default="vanilla",
        help="how the task losses are weighted (docs/training.md, 'Task weighting')",
    )
    options: dict[str, list[tuple[str, object, str]]] = {}
    for method in METHODS:
        for name, (default, text) in weighting_options(method).items():
            options.setdefault(name, []).append((method, default, text))
    for name, uses in options.items():
        # The type of the defaults (float when every default is None, e.g. "use the network's lr");
        # default None, so a method receives only the options given and keeps its own defaults otherwise.
        kinds = {type(d) for _, d, _ in uses if d is not None}
        kind = kinds.pop() if len(kinds) == 1 and kinds <= {int, float, str} else float
        defaults = "; ".join(f"{method}: {default}" for method, default, _ in uses)
        weighting.add_argument(
            f"--{name}", type=kind, default=None, help=f"{uses[0][2]} (defaults: {defaults})"
        )
    run = p.add_argument_group("run")
    run.add_argument(
        "--output_dir",
        type=Path,
        default=Path("./data/checkpoints/train"),
        help="checkpoint.pt, best.pt, best.onnx, metrics.json, tensorboard/",
    )
    run.add_argument(
        "--overwrite", action="store_true", help="replace the outputs of a previous run in --output_dir"
    )
    run.add_argument(
        "--resume",
        default=None,
        metavar="CHECKPOINT",
        help="continue a run from its checkpoint.pt (same flags; --epochs may grow)",
    )
    run.add_argument("--evaluate_every", type=int, default=1, help="validate every N epochs (and the last)")
    run.add_argument(
        "--gpus",
        type=int,
        nargs="+",
        default=None,
        help="GPU indices: one DistributedDataParallel process per GPU; leave out for the CPU",
    )
    run.add_argument("--device", default=None, help="cpu or cuda[:N] for one process (default: cpu)")
    run.add_argument(
        "--amp",
        action="store_true",
        help="mixed precision: autocast in --amp_dtype (default bfloat16: no loss scaling, so the weighting "
        "sees the true losses; on a GPU it needs compute capability >= 8.0: A100, H100, RTX 30xx and later)",
    )
    run.add_argument(
        "--amp_dtype",
        choices=("bfloat16", "float16"),
        default=None,
        help="with --amp: bfloat16 (default) or float16 with dynamic loss scaling (a GradScaler; every "
        "weighting method undoes the scale before it measures gradients), for V100, T4 and other GPUs "
        "without bfloat16",
    )
    run.add_argument("--channels_last", action="store_true", help="NHWC memory format (faster convs on GPUs)")
    run.add_argument("--sync_bn", action="store_true", help="SyncBatchNorm across GPUs (TI: off; CUDA only)")
    run.add_argument(
        "--freeze_bn",
        action="store_true",
        help="BatchNorm in eval mode (running statistics, not updated): fine-tuning with small batches",
    )
    run.add_argument(
        "--tensorboard_images", type=int, default=2, help="validation predictions logged per evaluation"
    )
    run.add_argument(
        "--loss_warn_factor",
        type=float,
        default=100.0,
        help="warn (once) when a task's loss exceeds this many times its median over the last 100 steps "
        "(0: off)",
    )
    run.add_argument(
        "--export_onnx",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="export best.pt to best.onnx (at --img_resize) at the end",
    )
    return p


def _require(ok: bool, flag: str, value, need: str) -> None:
    if not ok:
        shown = " ".join(map(str, value)) if isinstance(value, (list, tuple)) else value
        raise ValueError(f"--{flag} {shown}: {need}")


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def check_args(args) -> None:
    """Values argparse cannot check, all before any work; each error names the flag and the value."""
    for flag in ("tensorboard_images", "epoch_size", "workers", "warmup_epochs"):
        _require(getattr(args, flag) >= 0, flag, getattr(args, flag), "must be >= 0")
    _require(args.prefetch_factor >= 1, "prefetch_factor", args.prefetch_factor, "must be >= 1")
    _require(0 <= args.seed <= MAX_SEED, "seed", args.seed, f"must be in 0 .. {MAX_SEED}")
    if args.dropout is not None:
        _require(
            _finite(args.dropout) and 0 <= args.dropout < 1, "dropout", args.dropout, "must be in [0, 1)"
        )
    for flag in ("lr", "gamma", "warmup_factor"):
        _require(
            _finite(getattr(args, flag)) and getattr(args, flag) > 0, flag, getattr(args, flag), "must be > 0"
        )
    _require(
        args.warmup_factor <= 1, "warmup_factor", args.warmup_factor, "must be <= 1 (a fraction of --lr)"
    )
    _require(
        _finite(args.weight_decay) and args.weight_decay >= 0,
        "weight_decay",
        args.weight_decay,
        "must be >= 0",
    )
    _require(all(m >= 1 for m in args.milestones), "milestones", args.milestones, "epochs must be >= 1")
    rotation = args.transform_rotation
    _require(
        _finite(rotation) and 0 <= rotation <= 180, "transform_rotation", rotation, "degrees in [0, 180]"
    )
    probability = args.class_weight_probability
    _require(
        _finite(probability) and 0 <= probability <= 1, "class_weight_probability", probability, "in [0, 1]"
    )
    factor = args.loss_warn_factor
    _require(_finite(factor) and (factor == 0 or factor > 1), "loss_warn_factor", factor, "0 (off) or > 1")
    check_method_options(args)
    for flag in ("img_resize", "output_size"):
        h, w = getattr(args, flag)
        if h <= 0 or w <= 0 or (flag == "img_resize" and (h % 16 or w % 16)):
            need = "positive multiples of 16 (the network's stride)" if flag == "img_resize" else "positive"
            raise ValueError(f"--{flag} {h} {w}: height and width must be {need}")
    if args.gpus:
        check_gpus(args.gpus)  # before the data: the seed's commands stop here on a CPU machine
    check_device(args.device)
    world = len(args.gpus) if args.gpus else 1
    if args.batch_size < 1 or args.batch_size % world:
        raise ValueError(f"--batch_size {args.batch_size}: must be a positive multiple of the {world} GPU(s)")
    for flag in ("epochs", "evaluate_every"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag} {getattr(args, flag)}: must be >= 1")
    if args.amp_dtype is not None and not args.amp:
        raise ValueError(f"--amp_dtype {args.amp_dtype}: mixed precision is off; add --amp")
    if args.sync_bn and not args.gpus and (args.device or "cpu") == "cpu":
        raise ValueError("--sync_bn: torch's SyncBatchNorm runs on CUDA only; leave it out on the CPU")
    if args.class_weights == "ti" and "semantic" in args.tasks and args.semantic_mode == "trainid":
        raise ValueError(
            "--class_weights ti: TI's semantic weights are for the five classes, not --semantic_mode trainid"
        )


def check_split_size(args, samples: int) -> str | None:
    """ValueError when the training split has not one batch; the note to print when --epoch_size asks for
    more steps than the split has (the epochs are capped at the split)."""
    if samples < args.batch_size:
        raise ValueError(
            f"--batch_size {args.batch_size}: split {args.train_split!r} of {args.data_path} has only "
            f"{samples} samples, not one batch"
        )
    steps = samples // args.batch_size
    if args.epoch_size > steps:
        return (
            f"--epoch_size {args.epoch_size}: split {args.train_split!r} has {steps} batches of --batch_size "
            f"{args.batch_size}; epochs are capped at {steps} steps"
        )
    return None


def check_method_options(args) -> None:
    """A weighting option given to a method that does not have it, or a NaN/Inf option value, is refused
    (silently ignoring --alpha under vanilla would let a user believe it acted)."""
    own = weighting_options(args.multi_task_type)
    every = {name for method in METHODS for name in weighting_options(method)}
    for name in sorted(every):
        value = getattr(args, name, None)
        if value is None:
            continue
        if name not in own:
            users = [m for m in METHODS if name in weighting_options(m)]
            raise ValueError(
                f"--{name} {value}: not an option of --multi_task_type {args.multi_task_type} (its options: "
                f"{', '.join('--' + o for o in own) or 'none'}); --{name} is for {', '.join(users)}"
            )
        _require(not isinstance(value, float) or math.isfinite(value), name, value, "must be a finite number")


def method_options(args) -> dict:
    """The chosen method's options given on the command line (the others keep the method's defaults)."""
    names = weighting_options(args.multi_task_type)
    return {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}


def run_config(args) -> dict:
    """The flags of this run as plain data (checkpoint.pt, the resume check), defaults resolved."""
    return resolve_run_config(
        {
            k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
            for k, v in vars(args).items()
        }
    )


def resolve_run_config(config: dict) -> dict:
    """A flag left out that means "the preset's value" replaced by that value (--dropout: 0.2 of both
    presets), so a run started without it and resumed with the value (or the reverse) is one run."""
    if config.get("dropout") is None and config.get("preset") in PRESETS:
        return {**config, "dropout": preset_config(config["preset"]).dropout}
    return config
