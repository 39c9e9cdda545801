"""Delivery matrix for ``bench_node.py``: publisher QoS x frame size x how the node is started.

Per cell a camera process (``bench_node.py --role publisher``, its own DDS participant with Fast DDS
defaults, as a C++ driver with defaults would be) sends ``frames`` rgb8 frames at ``rate`` Hz to one
running ``mtl_perception_node`` (installed executable, packaged params.yaml, ``lite`` 192x384); delivered
= the node's own ``frames_received`` counter (from /diagnostics) after the cell minus before it. Node starts:

* ``default``: as ``ros2 run`` / ``ros2 launch`` start it (its own UDP profile, ros/transport.py);
* ``middleware defaults``: ``MTL_PERCEPTION_FASTDDS_PROFILE=none``, the node before issue 12;
* ``SHM profile, whole graph``: ``config/fastdds_shm.xml`` for the camera and the node.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from mtl_perception.ros.harness import OutputRecorder, node_process, require_node_up

REPO = Path(__file__).resolve().parents[1]
SIZES = ((480, 640), (720, 1280), (1024, 2048))
PUBLISHER_QOS = ("reliable", "best_effort")
NODE_STARTS = {
    "default": {},
    "middleware defaults": {"MTL_PERCEPTION_FASTDDS_PROFILE": "none"},
    "SHM profile, whole graph": {"FASTRTPS_DEFAULT_PROFILES_FILE": str(REPO / "config" / "fastdds_shm.xml")},
}
NODE_ARGS = [
    "--params-file", str(REPO / "config" / "params.yaml"),
    "-p", "model_file:=untrained",
    "-p", "model_preset:=lite", "-p", "network_height:=192", "-p", "network_width:=384",
    "-p", "device:=cpu", "-p", "diagnostics_period:=0.5", "-p", "summary_period:=0.0",
]  # fmt: skip


def _received(recorder: OutputRecorder, namespace: str) -> int:
    return int(recorder.diagnostic_values(namespace).get("frames_received", 0))


def _settle(recorder: OutputRecorder, namespace: str, quiet: float = 1.5, timeout: float = 20.0) -> int:
    """The node's frames_received once it stopped changing for ``quiet`` seconds."""
    deadline = time.monotonic() + timeout
    last, since = _received(recorder, namespace), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = _received(recorder, namespace)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
    return last


def measure_start(start: str, *, frames: int, rate: float, script: Path) -> list[dict]:
    """Every (publisher QoS, size) cell against one node started the ``start`` way."""
    env_changes = NODE_STARTS[start]
    saved = {name: os.environ.get(name) for name in (*env_changes, "FASTRTPS_DEFAULT_PROFILES_FILE")}
    os.environ.update(env_changes)  # the node process and the camera process inherit it
    namespace = f"/bench_delivery_{uuid.uuid4().hex[:6]}"
    cells = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench_delivery_") as tmp:
            log = Path(tmp) / "node.log"
            with node_process(NODE_ARGS, namespace=namespace, log_path=log, stop_timeout=30.0) as process:
                with OutputRecorder([], namespace=namespace, name="delivery") as recorder:
                    require_node_up(
                        lambda: (
                            recorder.node.count_subscribers(f"{namespace}/image") > 0
                            and bool(recorder.diagnostic_values(namespace))
                        ),
                        process=process,
                        timeout=120,
                        waiting_for=f"subscribe to {namespace}/image",
                        log_path=log,
                    )
                    for qos in PUBLISHER_QOS:
                        for height, width in SIZES:
                            before = _settle(recorder, namespace)
                            camera = subprocess.Popen(
                                [
                                    sys.executable,
                                    str(script),
                                    "--role",
                                    "publisher",
                                    "--topic",
                                    f"{namespace}/image",
                                    "--rate",
                                    str(rate),
                                    "--frames",
                                    str(frames),
                                    "--size",
                                    f"{width}x{height}",
                                    "--publisher-qos",
                                    qos,
                                ]  # fmt: skip
                            )
                            camera.wait(timeout=600)
                            delivered = _settle(recorder, namespace) - before
                            cells.append(
                                {
                                    "node_start": start,
                                    "publisher_qos": qos,
                                    "size": [height, width],
                                    "sent": frames,
                                    "delivered": delivered,
                                    "transport": recorder.diagnostic_values(namespace).get("transport", ""),
                                }
                            )
                            print(f"  {start} {qos} {width}x{height}: {delivered}/{frames}", flush=True)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return cells


def measure(*, frames: int, rate: float, script: Path, starts=tuple(NODE_STARTS)) -> dict:
    cells = []
    for start in starts:
        try:
            cells += measure_start(start, frames=frames, rate=rate, script=script)
        except RuntimeError as error:
            cells.append({"node_start": start, "error": str(error)[-2000:]})
    return {"frames": frames, "rate_hz": rate, "cells": cells}


def print_delivery(delivery: dict) -> None:
    """Delivered / sent per cell, the default start first."""
    sizes = [f"{w}x{h}" for h, w in SIZES]
    print(f"\n{delivery['frames']} frames at {delivery['rate_hz']:g} Hz per cell.\n")
    print(f"| node started | publisher | {' | '.join(sizes)} |\n|---|---|{'---:|' * len(sizes)}")
    rows: dict[tuple[str, str], dict[str, str]] = {}
    for cell in delivery["cells"]:
        if "error" in cell:
            print(f"| {cell['node_start']} | error: {cell['error'][-150:]} |")
            continue
        key = (cell["node_start"], cell["publisher_qos"])
        height, width = cell["size"]
        rows.setdefault(key, {})[f"{width}x{height}"] = f"{cell['delivered']}/{cell['sent']}"
    for (start, qos), by_size in rows.items():
        print(f"| {start} | {qos.replace('_', ' ')} | {' | '.join(by_size.get(s, '') for s in sizes)} |")
