"""Validate and measure the GPU paths on one lent GPU in a few minutes; JSON + markdown report.

    python3 benchmarks/gpu_check.py [--out DIR] [--dry-run] [--budget-s 420]

Run from the repository root with any Python that has torch (CUDA build), OpenCV, numpy, onnx and
pytest: nothing is installed, ROS is never imported, nothing is fetched. It

1. records the environment (card, driver, torch/CUDA/cuDNN, ONNX Runtime providers, TensorRT or absent);
2. runs the GPU-marked tests (test/test_gpu.py, plus the CUDA tests of test_model_backends.py and
   test_model_engine_cache.py) in a child pytest, JUnit XML kept;
3. times the flow (384x768 and 1024x2048; cuda_defaults and common; eager and CUDA graph), the ``ti``
   network at 384x768 (torch fp32/fp16, eager and CUDA graph; ONNX Runtime CUDA and TensorRT when
   loadable) and the whole pipeline at 384x768 from 2048x1024 frames (the node's code path minus DDS:
   ``build_pipeline`` + ``process``), p50/p99 over the frames;
4. counts the host syncs of a steady-state frame with torch's sync debug mode (and where they happen).

Results go to ``--out`` (default ``$OUT``, else ``gpu_check_out/``): gpu_check.json, gpu_check.md,
gpu_tests.xml, gpu_tests.log. ``--dry-run`` does all of it at toy sizes on whatever device there is
(seconds on a CPU), so the script is exercised by the test suite and cannot rot. Timed targets are
reported as met or not, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the GPU image runs the checkout as it is, nothing installed

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mtl_perception.device_io import count_host_syncs  # noqa: E402
from mtl_perception.flow import COMMON, CUDA_DEFAULTS, StreamingFarneback  # noqa: E402
from mtl_perception.inference import TorchBackend, create_backend  # noqa: E402
from mtl_perception.inference.export import export_onnx  # noqa: E402
from mtl_perception.model import build_model  # noqa: E402
from mtl_perception.model.contract import assumed_contract  # noqa: E402
from mtl_perception.pipeline_config import PipelineConfig  # noqa: E402
from mtl_perception.pipeline_factory import build_pipeline  # noqa: E402

PARAM_SETS = {"cuda_defaults": CUDA_DEFAULTS, "common": COMMON}
GPU_TESTS = [
    "test/test_gpu.py",
    "test/test_model_backends.py::test_torch_cuda_fp16_graphs_match_eager",
    "test/test_model_engine_cache.py::test_tensorrt_backend_builds_caches_and_matches_torch",
]
TARGETS = {  # H100/H200-class card, issue 13
    "flow_384x768_cuda_defaults_ms": 3.0,
    "flow_1024x2048_cuda_defaults_ms": 15.0,
    "network_ti_fp16_ms": 2.0,
    "pipeline_fps": 60.0,
    "pipeline_p99_ms": 25.0,
    "pipeline_host_syncs": 1,
}


class Plan:
    """Sizes and repeat counts: the real measurement, or toy ones for --dry-run."""

    def __init__(self, dry_run: bool, device: torch.device) -> None:
        self.dry_run, self.device = dry_run, device
        cuda = device.type == "cuda"
        self.flow_sizes = [(48, 64)] if dry_run else [(384, 768), (1024, 2048)]
        self.flow_modes = ["eager", "graph"] if cuda else ["eager"]
        self.flow_params = ["cuda_defaults"] if dry_run else list(PARAM_SETS)
        self.flow_repeats = 2 if dry_run else 50
        self.preset, self.network_size = ("lite", (64, 128)) if dry_run else ("ti", (384, 768))
        self.network_repeats = 2 if dry_run else 100
        self.camera_size = (128, 256) if dry_run else (1024, 2048)
        self.frames = 4 if dry_run else 220  # the first ones warm up and are dropped
        self.warm_frames = 2 if dry_run else 20


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "mean_ms": round(statistics.fmean(ordered), 4),
        "p50_ms": round(float(np.percentile(ordered, 50)), 4),
        "p99_ms": round(float(np.percentile(ordered, 99)), 4),
        "min_ms": round(ordered[0], 4),
    }


def timed(step, repeats: int, device: torch.device) -> list[float]:
    """Wall-clock ms of ``step`` per call, the GPU drained after each (latency as a frame sees it)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    step()
    sync()
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        sync()
        out.append((time.perf_counter() - start) * 1e3)
    return out


def environment(device: torch.device) -> dict:
    env = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "device": str(device),
        "numpy": np.__version__,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1))
        env["compute_capability"] = f"{props.major}.{props.minor}"
        try:
            query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
            env["driver"] = subprocess.run(query, capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError) as error:
            env["driver"] = f"unknown ({error})"
    try:
        import cv2

        env["opencv"] = cv2.__version__
    except ImportError:
        env["opencv"] = "absent"
    try:
        import onnxruntime as ort

        env["onnxruntime"] = ort.__version__
        env["onnxruntime_providers"] = ort.get_available_providers()
    except ImportError:
        env["onnxruntime"], env["onnxruntime_providers"] = "absent", []
    try:
        import tensorrt as trt

        env["tensorrt"] = trt.__version__
    except ImportError:
        env["tensorrt"] = "absent"
    except Exception as error:  # noqa: BLE001 - a broken install: record why, measure the rest
        env["tensorrt"] = f"present but unusable ({type(error).__name__}: {error})"
    return env


def run_tests(out: Path, timeout_s: float) -> dict:
    """The GPU-marked tests in a child pytest; per-test outcome from its JUnit XML."""
    xml_path, log_path = out / "gpu_tests.xml", out / "gpu_tests.log"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml_path}"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    try:
        done = subprocess.run(
            command + GPU_TESTS, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s
        )
        log_path.write_text(done.stdout + done.stderr)
        returncode = done.returncode
    except subprocess.TimeoutExpired as expired:
        log_path.write_text(f"pytest ran past {timeout_s:.0f} s\n{expired.stdout or ''}")
        returncode = "timeout"
    cases = []
    if xml_path.is_file():
        for case in ET.parse(xml_path).getroot().iter("testcase"):
            outcome, detail = "passed", ""
            for tag in ("failure", "error", "skipped"):
                node = case.find(tag)
                if node is not None:
                    outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                    detail = (node.get("message") or "")[:300]
            cases.append({"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome,
                          "detail": detail})  # fmt: skip
    summary = {k: sum(c["outcome"] == k for c in cases) for k in ("passed", "failed", "error", "skipped")}
    return {"returncode": returncode, "seconds": round(time.perf_counter() - start, 1), **summary,
            "cases": cases}  # fmt: skip


def textured_frames(count: int, size: tuple[int, int], seed: int = 0) -> list[np.ndarray]:
    """A smooth random texture drifting ~1.5 px per frame (RGB uint8), so the flow has work to do."""
    import cv2

    h, w = size
    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.uniform(0, 255, (h + 64, w + 64, 3)).astype(np.float32), (0, 0), 2.0)
    base = cv2.normalize(base, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    frames = []
    for i in range(count):
        dx, dy = (1.5 * i) % 48, (0.75 * i) % 48
        m = np.float32([[1, 0, -dx], [0, 1, -dy]])
        frames.append(cv2.warpAffine(base, m, (w + 64, h + 64))[:h, :w].copy())
    return frames


def time_flow(plan: Plan) -> list[dict]:
    rows = []
    for h, w in plan.flow_sizes:
        frames = [torch.from_numpy(f[..., 1].copy()).to(plan.device) for f in textured_frames(2, (h, w))]
        for name in plan.flow_params:
            for mode in plan.flow_modes:
                stream = StreamingFarneback(PARAM_SETS[name], plan.device, cuda_graph=mode == "graph")
                partner = stream.prepare(frames[0])

                def step(stream=stream, partner=partner, current=frames[1]):
                    stream.flow(stream.prepare(current), partner)  # the node's per-frame flow work

                times = timed(step, plan.flow_repeats, plan.device)
                row = {"size": f"{h}x{w}", "params": name, "mode": mode, **percentiles(times)}
                row["graph_failure"] = stream.graph_failure
                rows.append(row)
    return rows


def time_network(plan: Plan, scratch: Path) -> list[dict]:
    torch.manual_seed(0)
    model = build_model(preset=plan.preset).eval()
    h, w = plan.network_size
    image = (torch.rand(1, 3, h, w) * 255).to(plan.device)
    flow = torch.randn(1, 3, h, w).to(plan.device)
    variants = [("fp32", False)]  # (precision, CUDA graph) of the PyTorch backend
    if plan.device.type == "cuda":
        variants += [("fp32", True), ("fp16", False), ("fp16", True)]
    rows = []
    for precision, graphs in variants:
        backend = TorchBackend(model, plan.device, precision, (h, w), cuda_graphs=graphs)
        times = timed(
            lambda b=backend: b.run(image, flow, check_finite=False), plan.network_repeats, plan.device
        )
        rows.append(
            {"backend": backend.name, "preset": plan.preset, "size": f"{h}x{w}", **percentiles(times)}
        )
    contract = assumed_contract(model.config, (h, w))  # an untrained network: the project's flow defaults
    onnx_path = export_onnx(model, scratch / "network.onnx", contract=contract, force=True)
    exported = [("onnxruntime", "fp32"), ("tensorrt", "fp16"), ("tensorrt", "fp32")]
    for backend_name, precision in exported if plan.device.type == "cuda" else exported[:1]:
        row = {"backend": f"{backend_name}-{precision}", "preset": plan.preset, "size": f"{h}x{w}"}
        try:
            backend = create_backend(
                onnx_path, backend=backend_name, device=plan.device, precision=precision,
                cache_dir=scratch / "cache",
            )  # fmt: skip
            times = timed(
                lambda b=backend: b.run(image, flow, check_finite=False), plan.network_repeats, plan.device
            )
            row.update(backend=backend.name, **percentiles(times))
        except (ValueError, RuntimeError, ImportError) as error:
            row["unavailable"] = f"{type(error).__name__}: {error}"[:400]
        rows.append(row)
    return rows


def time_pipeline(plan: Plan) -> dict:
    h, w = plan.network_size
    precision = "fp16" if plan.device.type == "cuda" else "fp32"
    config = PipelineConfig(
        model_file="untrained", model_preset=plan.preset, device=str(plan.device), precision=precision,
        network_height=h, network_width=w,
    )  # fmt: skip
    pipe = build_pipeline(config)
    pipe.warmup()
    frames = textured_frames(min(plan.frames, 24), plan.camera_size, seed=1)
    stages: dict[str, list[float]] = {}
    totals = []
    sync = torch.cuda.synchronize if plan.device.type == "cuda" else (lambda: None)
    for i in range(plan.frames):
        start = time.perf_counter()
        result = pipe.process(frames[i % len(frames)], i / 30.0)  # 30 Hz stamps, partner at flow_dt
        sync()
        if i < plan.warm_frames:
            continue
        totals.append((time.perf_counter() - start) * 1e3)
        for stage, ms in result.timings.items():
            stages.setdefault(stage, []).append(ms)
    report = {
        "backend": pipe.backend.name,
        "network_size": f"{h}x{w}",
        "camera_size": f"{plan.camera_size[0]}x{plan.camera_size[1]}",
        "flow_implementation": pipe.flow_implementation,
        # the cv2 implementation (chosen by auto on a CPU) has no CUDA graph
        "flow_cuda_graph": getattr(pipe.flow_input.flow, "cuda_graph", False),
        "flow_graph_failure": getattr(pipe.flow_input.flow, "graph_failure", None),
        "frame": percentiles(totals),
        "fps": round(1e3 / statistics.fmean(totals), 1),
        "stages": {stage: percentiles(values) for stage, values in stages.items()},
        "host_syncs_per_frame": None,
        "host_sync_sites": [],
    }
    if plan.device.type == "cuda":
        frame = frames[plan.frames % len(frames)]
        sites = count_host_syncs(lambda: pipe.process(frame, plan.frames / 30.0))
        report.update(host_syncs_per_frame=len(sites), host_sync_sites=sites)
    return report


def verdicts(results: dict) -> dict:
    """Each target of issue 13 against the measurement: met, missed, or not measured."""
    flows = {(r["size"], r["params"], r["mode"]): r["p50_ms"] for r in results.get("flow", [])}
    nets = {r["backend"]: r.get("p50_ms") for r in results.get("network", [])}
    pipe = results.get("pipeline") or {}
    measured = {
        "flow_384x768_cuda_defaults_ms": flows.get(("384x768", "cuda_defaults", "graph")),
        "flow_1024x2048_cuda_defaults_ms": flows.get(("1024x2048", "cuda_defaults", "graph")),
        "network_ti_fp16_ms": min(
            [v for k, v in nets.items() if v is not None and "fp16" in k], default=None
        ),
        "pipeline_fps": pipe.get("fps"),
        "pipeline_p99_ms": (pipe.get("frame") or {}).get("p99_ms"),
        "pipeline_host_syncs": pipe.get("host_syncs_per_frame"),
    }
    out = {}
    for key, target in TARGETS.items():
        value = measured[key]
        if value is None or results["dry_run"]:
            state = "not measured"
        elif key == "pipeline_fps":
            state = "met" if value >= target else "missed"
        else:
            state = "met" if value <= target else "missed"
        out[key] = {"target": target, "measured": value, "verdict": state}
    return out


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def markdown(results: dict) -> str:
    title = "# GPU check" + (" (dry run: toy sizes, not a measurement)" if results["dry_run"] else "")
    lines = [title, ""] + [f"- {k}: {v}" for k, v in results["environment"].items()]
    tests = results.get("tests") or {}
    counts = ", ".join(f"{k} {tests.get(k)}" for k in ("passed", "failed", "error", "skipped"))
    lines += ["", "## GPU tests", "", f"{counts} ({tests.get('seconds')} s)", ""]
    lines += [f"- {c['outcome']}: `{c['test']}` {c['detail']}".rstrip() for c in tests.get("cases", [])]
    lines += ["", "## Flow (prepare + flow per frame)", ""]
    flow_rows = [
        [r["size"], r["params"], r["mode"], r["p50_ms"], r["p99_ms"]] for r in results.get("flow", [])
    ]
    lines += _table(["size", "params", "mode", "p50 ms", "p99 ms"], flow_rows)
    lines += ["", "## Network", ""]
    net_rows = [
        [r["backend"], r["size"], r.get("p50_ms", "-"), r.get("p99_ms", "-"), r.get("unavailable", "")]
        for r in results.get("network", [])
    ]
    lines += _table(["backend", "size", "p50 ms", "p99 ms", "note"], net_rows)
    pipe = results.get("pipeline")
    if pipe:
        frame = pipe["frame"]
        lines += ["", f"## Pipeline ({pipe['backend']}, {pipe['camera_size']} -> {pipe['network_size']})", ""]
        lines += [
            f"{pipe['fps']} frames/s; frame p50 {frame['p50_ms']} ms, p99 {frame['p99_ms']} ms over "
            f"{frame['n']} frames; host syncs per frame: {pipe['host_syncs_per_frame']} "
            f"{pipe['host_sync_sites']}",
            "",
        ]
        stage_rows = [[stage, v["p50_ms"], v["p99_ms"]] for stage, v in pipe["stages"].items()]
        lines += _table(["stage", "p50 ms", "p99 ms"], stage_rows)
    lines += ["", "## Targets", ""]
    target_rows = [[k, v["target"], v["measured"], v["verdict"]] for k, v in results["targets"].items()]
    lines += _table(["target", "limit", "measured", "verdict"], target_rows)
    lines += ["", "Sections skipped: " + (", ".join(results["skipped"]) or "none")]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT") or "gpu_check_out", help="report folder")
    parser.add_argument("--dry-run", action="store_true", help="toy sizes, seconds, any device")
    parser.add_argument("--budget-s", type=float, default=420.0, help="skip what would start after this")
    parser.add_argument("--no-tests", action="store_true", help="skip the child pytest run")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda" and not args.dry_run:
        parser.exit(2, "gpu_check: no CUDA device; use --dry-run to exercise the script on the CPU\n")
    if device.type == "cpu":
        torch.set_num_threads(1)  # a dry run shares a small CI machine; more threads only thrash
    plan = Plan(args.dry_run, device)
    results: dict = {"dry_run": args.dry_run, "environment": environment(device), "skipped": []}
    print(json.dumps(results["environment"], indent=1), flush=True)
    sections = [
        ("tests", lambda: None if args.no_tests else run_tests(out, max(60.0, args.budget_s * 0.5))),
        ("flow", lambda: time_flow(plan)),
        ("network", lambda: time_network(plan, scratch)),
        ("pipeline", lambda: time_pipeline(plan)),
    ]
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as scratch_dir:  # exports and engines, not $OUT
        scratch = Path(scratch_dir)
        for name, section in sections:
            if time.perf_counter() - start > args.budget_s:
                results["skipped"].append(f"{name} (time budget)")
                continue
            results[name] = section()
            print(f"gpu_check: {name} done at {time.perf_counter() - start:.0f} s", flush=True)
    results["targets"] = verdicts(results)
    results["seconds"] = round(time.perf_counter() - start, 1)
    (out / "gpu_check.json").write_text(json.dumps(results, indent=1))
    (out / "gpu_check.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
