"""Cost of one training step (forward + weighting.backward) per task-weighting method, relative to vanilla.

    .venv/bin/python benchmarks/bench_weighting.py [--preset lite] [--size 128 256] [--batch 2] [--steps 5]
                                                   [--device cpu] [--threads N] [--methods vanilla ...]

Synthetic inputs and simple per-task losses (the weighting's cost does not depend on the loss). The methods
take their steps in turn; reports each one's fastest of --steps timed steps (robust on a shared machine)
and peak memory (CUDA only).
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


class Run:
    """One method's network, weighting and optimizer, stepped on fixed synthetic inputs."""

    def __init__(self, method: str, args, device: torch.device) -> None:
        torch.manual_seed(0)
        self.method, self.device = method, device
        self.model = build_model(args.preset).to(device).train()
        self.weighting = build_weighting(method, tasks=self.model.tasks).to(device)
        groups = [{"params": self.model.parameters()}, *self.weighting.optimizer_param_groups()]
        self.optimizer = torch.optim.Adam(groups, lr=1e-4)
        h, w = args.size
        self.image = torch.rand(args.batch, 3, h, w, device=device) * 255
        self.flow = torch.randn(args.batch, 3, h, w, device=device)
        self.times: list[float] = []
        self.peak_mb: float | None = None

    def step(self, index: int) -> None:
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        start = time.perf_counter()
        self.optimizer.zero_grad()
        outputs, features = self.model(self.image, self.flow, return_features=True)
        self.weighting.backward(step_losses(outputs), shared_features=features)
        self.optimizer.step()
        if self.weighting.needs_losses_after_step:
            with torch.no_grad():
                self.weighting.after_step(losses_after=step_losses(self.model(self.image, self.flow)))
        self.weighting.end_epoch(mean_losses={t: 1.0 + index for t in self.model.tasks})
        if cuda:
            torch.cuda.synchronize(self.device)
            self.peak_mb = max(self.peak_mb or 0.0, torch.cuda.max_memory_allocated(self.device) / 2**20)
        if index:  # the first step warms up
            self.times.append(time.perf_counter() - start)

    def row(self) -> dict:
        return {
            "method": self.method,
            "step_s": min(self.times),
            "median_step_s": statistics.median(self.times),
            "peak_memory_mb": self.peak_mb,
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
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    runs = [Run(method, args, device) for method in args.methods]
    # Round-robin over the methods, so that a change of load on a shared machine hits them all alike.
    for index in range(args.steps + 1):
        for run in runs:
            run.step(index)
    rows = [run.row() for run in runs]
    base = next((r["step_s"] for r in rows if r["method"] == "vanilla"), rows[0]["step_s"])
    print(f"{args.preset} {args.size[0]}x{args.size[1]} batch {args.batch} on {device}")
    for row in rows:
        row["relative"] = row["step_s"] / base
        memory = f"  peak {row['peak_memory_mb']:.0f} MiB" if row["peak_memory_mb"] is not None else ""
        print(f"{row['method']:>17s}  {row['step_s'] * 1000:8.1f} ms  x{row['relative']:.2f}{memory}")
    out = Path(__file__).with_name("results") / "weighting.json"
    out.parent.mkdir(exist_ok=True)
    config = {
        "preset": args.preset,
        "size": list(args.size),
        "batch": args.batch,
        "device": str(device),
        "threads": torch.get_num_threads(),
    }
    out.write_text(json.dumps({"config": config, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
