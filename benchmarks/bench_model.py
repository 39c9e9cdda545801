"""Latency of the multi-task network per backend (same inputs, one process), plus the complexity table.

    .venv/bin/python benchmarks/bench_model.py [--iters 10] [--warmup 2] [--skip-complexity]

Rows: `ti` at 384x768 and `lite` at 192x384, on the CPU (PyTorch eager, ONNX Runtime) and, when CUDA is
present, PyTorch fp32, PyTorch fp16 + channels_last + CUDA graph, ONNX Runtime CUDA, TensorRT fp16.
Writes benchmarks/results/model.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from machine import cpu_name  # benchmarks/machine.py (sys.path[0] when run as a script)

from mtl_perception.inference import create_backend
from mtl_perception.model.complexity import complexity_table, format_table

ROWS = (("ti", (384, 768)), ("lite", (192, 384)))


def configurations(device: str) -> list[tuple[str, dict]]:
    if device == "cpu":
        return [
            ("torch", dict(backend="torch", device="cpu")),
            ("onnxruntime", dict(backend="onnxruntime", device="cpu")),
        ]
    return [
        ("torch fp32", dict(backend="torch", device="cuda")),
        ("torch fp16 cudagraph", dict(backend="torch", device="cuda", precision="fp16")),
        ("onnxruntime cuda", dict(backend="onnxruntime", device="cuda")),
        ("tensorrt fp16", dict(backend="tensorrt", device="cuda", precision="fp16")),
    ]


def time_backend(backend, image, flow, warmup: int, iters: int) -> list[float]:
    cuda = backend.device.type == "cuda"
    for _ in range(warmup):
        backend.run(image, flow)
    times = []
    for _ in range(iters):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        backend.run(image, flow)
        if cuda:
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--skip-complexity", action="store_true")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "model.json"))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    complexity = []
    if not args.skip_complexity:
        logging.getLogger("fvcore").setLevel(logging.ERROR)
        complexity = complexity_table()
        print(format_table(complexity, 384, 768), "\n")

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    machine = {
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
    }
    try:
        import onnxruntime

        machine["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    results = []
    with tempfile.TemporaryDirectory() as cache:
        for preset, size in ROWS:
            g = torch.Generator().manual_seed(0)
            image = torch.rand(1, 3, *size, generator=g) * 255
            flow = torch.cat(
                [torch.randn(1, 2, *size, generator=g) * 4, torch.rand(1, 1, *size, generator=g)], 1
            )
            for device in devices:
                for label, kwargs in configurations(device):
                    row = {"preset": preset, "size": list(size), "backend": label, "device": device}
                    try:
                        backend = create_backend(
                            None, preset=preset, seed=0, input_size=size, cache_dir=cache, **kwargs
                        )
                        times = time_backend(
                            backend, image.to(device), flow.to(device), args.warmup, args.iters
                        )
                        row.update(
                            name=backend.name,
                            min_ms=round(min(times), 2),
                            median_ms=round(statistics.median(times), 2),
                            iters=len(times),
                        )
                    except (ValueError, ImportError) as exc:
                        row.update(skipped=str(exc))
                    results.append(row)
                    print(_format_row(row), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine, "latency": results, "complexity": complexity}, indent=2))
    print(f"\nmachine: {machine['cpu']} ({machine['cpu_count']} cores), GPU: {machine['gpu'] or 'none'}")
    print(f"wrote {out}")
    return 0


def _format_row(row: dict) -> str:
    head = f"{row['preset']:<5} {row['size'][0]}x{row['size'][1]:<4} {row['backend']:<22}"
    if "skipped" in row:
        return f"{head} skipped: {row['skipped']}"
    return f"{head} min {row['min_ms']:8.1f} ms  median {row['median_ms']:8.1f} ms  ({row['name']})"


if __name__ == "__main__":
    raise SystemExit(main())
