"""Training speed: time per step and samples/s of train.py's own loop, per preset and weighting method.

    .venv/bin/python benchmarks/bench_train.py                                  # CPU: lite and ti, small
    .venv/bin/python benchmarks/bench_train.py --gpu                            # a lent GPU: TI's setting
    .venv/bin/python benchmarks/bench_train.py --gpu --data_path ROOT           # + the data loader alone

The step is ``train_one_epoch`` of training/train.py (forward, losses, the weighting's backward, Adam, the
per-step all-reduce of the losses) on batches already in device memory, so it measures the network and
the loop, not the disk; one warm-up epoch first (cuDNN autotuning, allocator, lazy init). ``--data_path``
also times the training DataLoader alone (decode + TI's augmentation + collation, with the workers,
pinned memory and prefetch given) to show whether it can feed the step.

``--gpu`` is the setting for an H100-class card: ``ti`` at 384x768, batch 16, bf16 autocast, channels_last,
cudnn.benchmark; loader: 8 workers, pinned memory, prefetch 4, persistent workers. Target >= 150 samples/s.
Writes benchmarks/results/train.json (``--json`` to change).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
from machine import cpu_name  # benchmarks/machine.py (sys.path[0] when run as a script)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # a lent GPU's image runs the checkout as it is, nothing installed

from mtl_perception.data.cityscapes import num_semantic_classes  # noqa: E402
from mtl_perception.learning.distributed import DistContext  # noqa: E402
from mtl_perception.learning.losses import build_criterion  # noqa: E402
from mtl_perception.learning.weighting import build_weighting  # noqa: E402
from mtl_perception.model import build_model  # noqa: E402

try:
    from mtl_perception_training import train
except ImportError:  # not installed: training/train.py of the checkout (setup.py maps it to that name)
    import importlib.util

    _spec = importlib.util.spec_from_file_location("train", ROOT / "training" / "train.py")
    train = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(train)


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (torch {torch.__version__}, CUDA {torch.version.cuda})"
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return (
        f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; "
        f"load average {load} at the start (1, 5, 15 min; above the core count means shared)"
    )


def synthetic_batch(batch: int, size: tuple[int, int], classes: int, device: torch.device) -> dict:
    h, w = size
    g = torch.Generator().manual_seed(0)
    return {
        "image": (torch.rand(batch, 3, h, w, generator=g) * 255).to(device),
        "flow": torch.randn(batch, 3, h, w, generator=g).to(device),
        "depth": (torch.rand(batch, 1, h, w, generator=g) * 80).to(device),
        "semantic": torch.randint(0, classes, (batch, h, w), generator=g).to(device),
        "motion": torch.randint(0, 2, (batch, h, w), generator=g).to(device),
    }


def time_steps(preset: str, method: str, args, device: torch.device) -> dict:
    """Seconds per training step of train_one_epoch on in-memory batches."""
    torch.manual_seed(0)
    classes = num_semantic_classes("five")
    model = build_model(preset=preset, num_semantic_classes=classes).to(device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    weighting = build_weighting(method, tasks=model.tasks).to(device)
    optimizer = torch.optim.Adam(
        [{"params": model.parameters()}, *weighting.optimizer_param_groups()], lr=1e-4, weight_decay=1e-4
    )
    criterion = build_criterion(tasks=model.tasks)
    batch = synthetic_batch(args.batch_size, tuple(args.size), classes, device)
    loop_args = argparse.Namespace(
        epochs=1,
        freeze_bn=False,
        amp=args.amp,
        amp_dtype=None,  # bfloat16 (train.py's --amp default)
        channels_last=args.channels_last,
        output_dir=".",
        batch_size=args.batch_size,
    )
    ctx = DistContext(rank=0, world_size=1, device=device)
    run = {"ctx": ctx, "args": loop_args, "epoch": 0, "global_step": 0, "log": None}
    train.train_one_epoch(model, criterion, weighting, optimizer, [batch] * args.warmup, **run)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    record, _ = train.train_one_epoch(model, criterion, weighting, optimizer, [batch] * args.steps, **run)
    return {
        "preset": preset,
        "method": method,
        "device": str(device),
        "size": list(args.size),
        "batch_size": args.batch_size,
        "amp": args.amp,
        "channels_last": args.channels_last,
        "steps": args.steps,
        "time_per_step_s": record["time_per_step_s"],
        "samples_per_s": record["samples_per_s"],
        "peak_memory_mb": record["peak_memory_mb"],
    }


def time_loader(args, device: torch.device) -> dict:
    """Samples/s of the training DataLoader alone (what one GPU process would get)."""
    argv = [
        "--data_path",
        str(args.data_path),
        "--img_resize",
        *map(str, args.size),
        "--batch_size",
        str(args.batch_size),
        "--workers",
        str(args.workers),
        "--prefetch_factor",
        str(args.prefetch_factor),
        "--train_split",
        args.split,
        "--val_split",
        args.split,
    ]
    loader_args = train.parse_args(argv)
    ctx = DistContext(rank=0, world_size=1, device=device)
    loader, _, sampler, _ = train.build_loaders(loader_args, ctx)
    # Epoch after epoch until --loader_batches batches (a small split still gives a steady rate); the clock
    # starts after the first batch (worker start-up), so the prefetched batches matter little.
    seen, start, epoch = -1, None, 0
    while seen < args.loader_batches:
        sampler.set_epoch(epoch)
        for batch in loader:
            batch["image"].to(device, non_blocking=True)
            seen += 1
            if start is None:
                start = time.perf_counter()
            if seen >= args.loader_batches:
                break
        epoch += 1
    elapsed = time.perf_counter() - start
    return {
        "workers": args.workers,
        "prefetch_factor": args.prefetch_factor,
        "pin_memory": device.type == "cuda",
        "batches": seen,
        "samples_per_s": seen * args.batch_size / elapsed if elapsed > 0 else float("nan"),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gpu", action="store_true", help="TI's setting on CUDA (see the module docstring)")
    ap.add_argument("--presets", nargs="+", default=None, help="default: lite ti (CPU), ti (--gpu)")
    ap.add_argument("--methods", nargs="+", default=["vanilla"], help="weighting methods to time")
    ap.add_argument("--size", type=int, nargs=2, default=None, help="H W (default 128 256 CPU, 384 768 GPU)")
    ap.add_argument("--batch_size", type=int, default=None, help="default 2 (CPU), 16 (--gpu)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default 4 CPU, 50 GPU)")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up steps (default 1 CPU, 10 GPU)")
    ap.add_argument(
        "--amp", action=argparse.BooleanOptionalAction, default=None, help="default: on with --gpu"
    )
    ap.add_argument("--channels_last", action=argparse.BooleanOptionalAction, default=None)
    ap.add_argument("--data_path", type=Path, default=None, help="also time the DataLoader on this root")
    ap.add_argument("--split", default="train")
    ap.add_argument("--workers", type=int, default=None, help="loader workers (default 2 CPU, 8 GPU)")
    ap.add_argument("--prefetch_factor", type=int, default=None, help="default 2 (CPU), 4 (GPU)")
    ap.add_argument("--loader_batches", type=int, default=20)
    ap.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "train.json")
    args = ap.parse_args(argv)
    gpu = args.gpu
    if gpu and not torch.cuda.is_available():
        ap.exit(2, "bench_train.py: error: --gpu: no CUDA GPU on this machine\n")
    defaults = {
        "presets": ["ti"] if gpu else ["lite", "ti"],
        "size": [384, 768] if gpu else [128, 256],
        "batch_size": 16 if gpu else 2,
        "steps": 50 if gpu else 4,
        "warmup": 10 if gpu else 1,
        "amp": gpu,
        "channels_last": gpu,
        "workers": 8 if gpu else 2,
        "prefetch_factor": 4 if gpu else 2,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    device = torch.device("cuda" if gpu else "cpu")
    if gpu:
        torch.backends.cudnn.benchmark = True
    where = machine(device)
    rows = [time_steps(p, m, args, device) for p in args.presets for m in args.methods]
    loader = time_loader(args, device) if args.data_path else None
    print(f"training step, {where}")
    print("| preset | method | size | batch | AMP | channels_last | s/step | samples/s | peak MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['preset']} | {r['method']} | {r['size'][0]}x{r['size'][1]} | {r['batch_size']} | "
            f"{'bf16' if r['amp'] else 'off'} | {r['channels_last']} | {r['time_per_step_s']:.3f} | "
            f"{r['samples_per_s']:.2f} | {r['peak_memory_mb']:.0f} |"
        )
    if loader:
        print(
            f"data loader alone: {loader['samples_per_s']:.1f} samples/s ({loader['workers']} workers, "
            f"prefetch {loader['prefetch_factor']}, pinned memory {loader['pin_memory']})"
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    result = {"machine": where, "steps": rows, "loader": loader}
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
