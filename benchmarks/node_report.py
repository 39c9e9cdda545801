"""Markdown tables of a ``bench_node.py`` run (the ones docs/benchmarks.md shows), from its results dict.

python benchmarks/node_report.py benchmarks/results/node.json     # print a saved run again
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from node_delivery import print_delivery  # benchmarks/ is this script's folder


def print_conversions(results: dict) -> None:
    c = results["conversions"]
    height, width = results["camera"]
    print(f"# mtl_perception_node benchmark ({results['machine']}), camera {width}x{height} rgb8\n")
    print(
        f"Conversion rgb8 -> tensor {c['convert_rgb8_ms']:.2f} ms (bgr8 {c['convert_bgr8_ms']:.2f} ms); "
        "depth+semantic+motion messages at 2048x1024 "
        f"{c['fill_depth_semantic_motion_at_2048x1024_ms']:.2f} ms; "
        f"sum {c['convert_plus_fill_ms']:.2f} ms (target <= 3 ms).\n"
    )


def print_transport(transport: dict) -> None:
    print("| transport (no node) | p50 ms | p99 ms | received |\n|---|---:|---:|---:|")
    for name, t in transport.items():
        if "error" in t:
            print(f"| {name} | error | | |")
        else:
            print(f"| {name} | {t['p50_ms']:.1f} | {t['p99_ms']:.1f} | {t['received']}/{t['published']} |")


def print_node_runs(runs: list[dict]) -> None:
    print(
        "\n| config | backend | p50 ms | p99 ms | fps | drop | convert | preprocess | flow | network | "
        "postprocess | publish |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    for r in runs:
        if "error" in r:
            print(f"| error | {r['error'][-200:]} |")
            continue
        s = r["stages_ms"]
        stages = " | ".join(
            f"{s.get(k, float('nan')):.1f}"
            for k in ("convert", "preprocess", "flow", "network", "postprocess", "publish")
        )
        flow = "fast flow" if r["extra_parameters"] else "default flow"
        if r.get("flow_implementation"):
            flow += f" ({r['flow_implementation']}; {r.get('flow_implementation_measured_ms', '')})"
        size = f"{r['network_size'][0]}x{r['network_size'][1]}"
        print(
            f"| {r['preset']} {size} {r['device']}, {flow} | {r['backend']} | "
            f"{r['latency']['p50_ms']:.0f} | {r['latency']['p99_ms']:.0f} | {r['throughput_fps']:.2f} | "
            f"{100 * r['drop_rate']:.0f}% | {stages} |"
        )


def print_soak(s: dict) -> None:
    if "error" in s:
        print(f"\nSoak: error: {s['error'][-200:]}")
        return
    print(
        f"\nSoak: {s['frames_published']} frames, {s['outputs']} outputs, "
        f"RSS {s['rss_start_mib']:.0f} -> "
        f"{s['rss_end_mib']:.0f} MiB (max {s['rss_max_mib']:.0f}), growth after warm-up "
        f"{s['rss_growth_after_warmup_mib']:.1f} MiB"
    )


def camera_timing(results: dict) -> str:
    """'at R Hz for S s' of the camera publisher (older result files have it only per node run)."""
    rate, seconds = results.get("camera_rate_hz"), results.get("seconds_per_config")
    if rate is None:
        runs = [r for r in results["node"] if "publish_rate_hz" in r]
        if not runs:
            return "(timing not recorded)"
        rate, seconds = runs[0]["publish_rate_hz"], runs[0]["published"] / runs[0]["publish_rate_hz"]
    return f"at {rate:g} Hz for {seconds:g} s"


def print_report(results: dict) -> None:
    if "delivery" in results:
        print("Delivery (frames the node received / frames the camera sent):")
        print_delivery(results["delivery"])
        print()
    print_conversions(results)
    print_transport(results["transport"])
    print(f"\nNode graph over: {results['node_transport']}; camera publisher {camera_timing(results)}.")
    print_node_runs(results["node"])
    if "soak" in results:
        print_soak(results["soak"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path, help="node.json written by bench_node.py")
    args = ap.parse_args(argv)
    try:
        results = json.loads(args.results.read_text())
        print_report(results)
    except (OSError, ValueError, KeyError) as error:
        print(f"node_report: error: cannot report {args.results}: {error!r}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
