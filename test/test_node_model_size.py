"""The model file defines the network, as a user meets it: installed node, packaged params.yaml unchanged.

``ros2 launch mtl_perception node.launch.py model_file:=my.onnx`` used to exit for any export that was not
384x768, because params.yaml set network_height/width. Here the node runs with the packaged file plus only
the model file (and, for a checkpoint, the size the user chose) and must publish at the model's size.
"""

import uuid
from pathlib import Path

import pytest
import torch

rclpy = pytest.importorskip("rclpy")
from contracts import contract_of  # noqa: E402
from test_node_process import Probe, make_image, send_and_wait  # noqa: E402

from mtl_perception.inference.export import export_onnx  # noqa: E402
from mtl_perception.model import build_model, save_checkpoint  # noqa: E402
from mtl_perception.ros.harness import start_node, stop_process  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]

PARAMS_FILE = Path(__file__).resolve().parents[1] / "config" / "params.yaml"
TASK_TOPICS = ["depth", "semantic", "motion"]


def test_packaged_params_publish_at_the_model_size(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = build_model(preset="lite", num_semantic_classes=5)
    onnx_file = export_onnx(
        model, tmp_path / "exported_192x384.onnx", contract=contract_of(model, size=(192, 384))
    )
    checkpoint = save_checkpoint(tmp_path / "lite.pt", model, contract=contract_of(model, size=(192, 384)))
    cases = {  # name: (parameter overrides, size the outputs must have)
        "onnx": (["-p", f"model_file:={onnx_file}"], (192, 384)),
        "onnx, other size set": (
            ["-p", f"model_file:={onnx_file}", "-p", "network_height:=96", "-p", "network_width:=192"],
            (192, 384),
        ),
        "checkpoint at a chosen size": (
            ["-p", f"model_file:={checkpoint}", "-p", "network_height:=128", "-p", "network_width:=256"],
            (128, 256),
        ),
    }
    monkeypatch.setenv("MTL_PERCEPTION_CACHE", str(tmp_path / "cache"))  # the checkpoint's ONNX export
    runs = {}
    for name, (overrides, _) in cases.items():  # side by side: each start pays the torch import
        namespace = f"/mtl_size_{uuid.uuid4().hex[:8]}"
        log = tmp_path / f"{namespace[1:]}.log"
        process = start_node(
            ["--params-file", str(PARAMS_FILE), *overrides], namespace=namespace, log_path=log
        )
        runs[name] = (process, namespace, log)
    try:
        for name, (process, namespace, log) in runs.items():
            probe = Probe(namespace)
            try:
                stamp = 1_700_000_300_000_000_000 + len(name)
                arrived = send_and_wait(probe, make_image(stamp), topics=TASK_TOPICS, timeout=180)
                assert arrived, f"{name}: no outputs (exit code {process.poll()}):\n{log.read_text()}"
                for topic in TASK_TOPICS:
                    msg = probe.outputs[topic][stamp]
                    assert (msg.height, msg.width) == cases[name][1], (name, topic)
            finally:
                probe.close()
    finally:
        for process, _, _ in runs.values():
            stop_process(process)
    logs = {name: log.read_text() for name, (_, _, log) in runs.items()}
    for name, (process, _, _) in runs.items():
        assert process.returncode == 0, (name, logs[name])
    warning = "network_height/width 96x192 is ignored"
    assert logs["onnx, other size set"].count(warning) == 1, logs["onnx, other size set"]
    assert "is ignored" not in logs["onnx"] and "is ignored" not in logs["checkpoint at a chosen size"]
    assert "network=192x384" in logs["onnx"] and "network=128x256" in logs["checkpoint at a chosen size"]
    # a checkpoint run at another size than it was trained at: the user's choice runs, and is named once
    override = "network_height/width=128x256 overrides the model's input contract"
    assert logs["checkpoint at a chosen size"].count(override) == 1, logs["checkpoint at a chosen size"]
    assert "overrides the model's input contract" not in logs["onnx"]
