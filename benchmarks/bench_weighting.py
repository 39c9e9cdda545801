"""Cost of one training step (forward + weighting.backward) per task-weighting method, relative to vanilla.

    .venv/bin/python benchmarks/bench_weighting.py [--preset lite] [--size 128 256] [--batch 2] [--steps 5]
                                                   [--device cpu] [--methods vanilla upgrad ...]

Synthetic inputs and simple per-task losses (the weighting's cost does not depend on the loss). Reports the
fastest of --steps timed steps (robust on a shared machine) and peak memory (CUDA only) per method.
Writes benchmarks/results/weighting.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from mtl_perception.learning.weighting import METHODS, build_weighting
from mtl_perception.model import build_model


def step_losses(outputs: dict) -> dict:
    """Positive scalar losses of the right kind per task (FAMO takes their log)."""
    losses = {}
    for task, out in outputs.items():
        out = out.float()
        if task == "depth":
            losses[task] = out.abs().mean() + 1.0
        else:
            target = torch.zeros(out.shape[0], *out.shape[2:], dtype=torch.long, device=out.device)
            losses[task] = torch.nn.functional.cross_entropy(out, target)
    return losses


def measure(method: str, args, device: torch.device) -> dict:
    torch.manual_seed(0)
    model = build_model(args.preset).to(device).train()
    weighting = build_weighting(method, tasks=model.tasks).to(device)
    optimizer = torch.optim.Adam([{"params": model.parameters()}, *weighting.optimizer_param_groups()], 1e-4)
    h, w = args.size
    image = torch.rand(args.batch, 3, h, w, device=device) * 255
    flow = torch.randn(args.batch, 3, h, w, device=device)
    times = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for step in range(args.steps + 1):  # the first step warms up
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        optimizer.zero_grad()
        outputs, features = model(image, flow, return_features=True)
        weighting.backward(step_losses(outputs), shared_features=features)
        optimizer.step()
        if weighting.needs_losses_after_step:
            with torch.no_grad():
                weighting.after_step(losses_after=step_losses(model(image, flow)))
        weighting.end_epoch(mean_losses={t: 1.0 + step for t in model.tasks})
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if step:
            times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {
        "method": method,
        "step_s": min(times),
        "median_step_s": statistics.median(times),
        "peak_memory_mb": peak,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="lite", choices=("lite", "ti"))
    parser.add_argument("--size", type=int, nargs=2, default=(128, 256), metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    args = parser.parse_args()
    device = torch.device(args.device)
    rows = [measure(method, args, device) for method in args.methods]
    base = next((r["step_s"] for r in rows if r["method"] == "vanilla"), rows[0]["step_s"])
    print(f"{args.preset} {args.size[0]}x{args.size[1]} batch {args.batch} on {device}")
    for row in rows:
        row["relative"] = row["step_s"] / base
        memory = f"  peak {row['peak_memory_mb']:.0f} MiB" if row["peak_memory_mb"] is not None else ""
        print(f"{row['method']:>17s}  {row['step_s'] * 1000:8.1f} ms  x{row['relative']:.2f}{memory}")
    out = Path(__file__).with_name("results") / "weighting.json"
    out.parent.mkdir(exist_ok=True)
    config = {"preset": args.preset, "size": list(args.size), "batch": args.batch, "device": str(device)}
    out.write_text(json.dumps({"config": config, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
