"""Farnebäck timing: cv2.calcOpticalFlowFarneback vs this PyTorch port (CPU, and CUDA when present).

    python benchmarks/bench_flow.py [--quick] [--threads N] [--compile] [--sizes 384x768,1024x2048]

Times, per size and parameter set: cv2 on uint8 frames; ours one-shot (``calc_optical_flow_farneback``
on the same uint8 NumPy frames, both expansions included); ours streaming (``prepare`` of the new frame
+ ``flow`` with residual confidence: the per-frame cost in the node); and the node's cv2 implementation
(``Cv2StreamingFarneback``: cv2's flow + the residual confidence). Prints min / median ms and the
ratio to cv2, and writes benchmarks/results/flow.json. The machine load is recorded because a shared
2-core VM distorts the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import cv2
import torch

from mtl_perception.flow import COMMON, CUDA_DEFAULTS, StreamingFarneback, calc_optical_flow_farneback
from mtl_perception.flow.cv2_flow import Cv2StreamingFarneback
from mtl_perception.flow.synthetic import make_pair

PARAM_SETS = {"cuda_defaults": CUDA_DEFAULTS, "common": COMMON}


def _args(p):
    return (p.pyr_scale, p.levels, p.winsize, p.iterations, p.poly_n, p.poly_sigma, p.flags)


def _time(fn, repeats: int, sync=None) -> list[float]:
    fn()  # warm-up (kernel caches, allocator)
    if sync:
        sync()
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if sync:
            sync()
        out.append((time.perf_counter() - start) * 1e3)
    return out


def _row(name, times, ref_min=None):
    row = {
        "name": name,
        "min_ms": round(min(times), 2),
        "median_ms": round(statistics.median(times), 2),
        "n": len(times),
    }
    if ref_min:
        row["ratio_to_cv2"] = round(min(times) / ref_min, 2)
    return row


def bench_case(a, b, params, reps: int, compile_too: bool) -> list[dict]:
    """All implementations on one uint8 frame pair for one parameter set."""
    rows = []
    ref = _time(lambda: cv2.calcOpticalFlowFarneback(a, b, None, *_args(params)), reps)
    ref_min = min(ref)
    rows.append(_row("cv2", ref))
    ours = _time(lambda: calc_optical_flow_farneback(a, b, None, *_args(params)), reps)
    rows.append(_row("torch cpu one-shot", ours, ref_min))
    ta, tb = torch.from_numpy(a).float(), torch.from_numpy(b).float()
    stream = StreamingFarneback(params, "cpu")
    fa = stream.prepare(ta)
    rows.append(
        _row("torch cpu streaming", _time(lambda: stream.flow(fa, stream.prepare(tb)), reps), ref_min)
    )
    # the node's flow.implementation cv2: cv2's flow + the port's level-0 expansion (residual confidence)
    cv2_stream = Cv2StreamingFarneback(params, "cpu")
    ca = cv2_stream.prepare(ta)
    rows.append(
        _row(
            "cv2 streaming + conf.", _time(lambda: cv2_stream.flow(ca, cv2_stream.prepare(tb)), reps), ref_min
        )
    )
    if compile_too:
        cs = StreamingFarneback(params, "cpu", compile=True)
        start = time.perf_counter()
        cfa = cs.prepare(ta)
        cs.flow(cfa, cs.prepare(tb))
        compile_s = time.perf_counter() - start
        row = _row("torch cpu compiled", _time(lambda: cs.flow(cfa, cs.prepare(tb)), reps), ref_min)
        row["compile_s"] = round(compile_s, 1)
        rows.append(row)
    if torch.cuda.is_available():
        dev = torch.device("cuda")
        ga, gb = ta.to(dev), tb.to(dev)
        for graph in (False, True):
            gs = StreamingFarneback(params, dev, cuda_graph=graph)
            gfa = gs.prepare(ga)
            t = _time(lambda s=gs, f=gfa: s.flow(f, s.prepare(gb)), max(reps, 10), torch.cuda.synchronize)
            rows.append(_row(f"torch cuda streaming{' graph' if graph else ''}", t, ref_min))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats (development)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--compile", action="store_true", help="also time StreamingFarneback(compile=True)")
    ap.add_argument("--sizes", default="384x768,1024x2048")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "flow.json"))
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    results = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "torch": torch.__version__,
            "cv2": cv2.__version__,
            "torch_threads": torch.get_num_threads(),
            "cv2_threads": cv2.getNumThreads(),
            "load_avg_start": os.getloadavg(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "rows": [],
    }
    print(
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), cv2 {cv2.__version__} "
        f"({cv2.getNumThreads()} threads), load {os.getloadavg()[0]:.2f}"
    )
    print(f"{'size':>10} {'params':>14} {'impl':>22} {'min ms':>9} {'median ms':>10} {'x cv2':>6}")
    for h, w in sizes:
        prev_bgr, next_bgr, _ = make_pair("astronaut", h, w, 6.0)
        a, b = cv2.cvtColor(prev_bgr, cv2.COLOR_BGR2GRAY), cv2.cvtColor(next_bgr, cv2.COLOR_BGR2GRAY)
        big = h * w > 1_000_000
        reps = (2 if big else 3) if args.quick else (5 if big else 7)
        for pname, params in PARAM_SETS.items():
            rows = bench_case(a, b, params, reps, args.compile)
            for r in rows:
                r.update(size=f"{h}x{w}", params=pname)
                print(
                    f"{r['size']:>10} {pname:>14} {r['name']:>22} {r['min_ms']:>9.1f} "
                    f"{r['median_ms']:>10.1f} {r.get('ratio_to_cv2', 1.0):>6.2f}"
                )
            results["rows"].extend(rows)
    results["machine"]["load_avg_end"] = os.getloadavg()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
