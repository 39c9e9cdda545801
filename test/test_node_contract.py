"""The node reads its flow settings from the model's input contract; a parameter that contradicts it runs,
with one warning naming both values and "contract overridden" in /diagnostics (the node as a process)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

pytest.importorskip("rclpy", reason="needs rclpy")

import torch  # noqa: E402
from contracts import contract_of  # noqa: E402

from mtl_perception.flow import COMMON  # noqa: E402
from mtl_perception.model import build_model, save_checkpoint  # noqa: E402
from mtl_perception.ros import harness  # noqa: E402

pytestmark = pytest.mark.ros
PARAMS_FILE = Path(__file__).resolve().parents[1] / "config" / "params.yaml"


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory):
    """A checkpoint whose contract differs from every project default: COMMON Farnebäck, forward-backward
    confidence, 1 frame at 10 Hz (flow_dt 0.1 s), 64x128."""
    torch.manual_seed(0)
    model = build_model(preset="lite")
    contract = contract_of(
        model,
        size=(64, 128),
        farneback=COMMON,
        confidence="forward_backward",
        partner_gap=1,
        frame_rate_hz=10.0,
    )
    return save_checkpoint(tmp_path_factory.mktemp("contract") / "trained.pt", model, contract=contract)


def _run(trained_checkpoint, tmp_path, *overrides: str) -> tuple[dict[str, str], str, str]:
    """(diagnostic values, status message, log) of the node on ``trained_checkpoint`` with ``overrides``."""
    namespace = f"/mtl_contract_{uuid.uuid4().hex[:8]}"
    log = tmp_path / "node.log"
    args = [
        "--params-file", str(PARAMS_FILE), "-p", f"model_file:={trained_checkpoint}",
        "-p", "backend:=torch", "-p", "device:=cpu", "-p", "warmup:=false", "-p", "diagnostics_period:=0.2",
        *overrides,
    ]  # fmt: skip
    with (
        harness.node_process(args, namespace=namespace, log_path=log) as process,
        harness.OutputRecorder([], namespace=namespace, name="contract") as recorder,
    ):
        assert recorder.wait_for(lambda: recorder.diagnostics, timeout=90, process=process), log.read_text()
        values = recorder.diagnostic_values()
        with recorder.lock:
            message = next(s.message for s in recorder.diagnostics[-1].status if "mtl_perception" in s.name)
    return values, message, log.read_text()


def test_the_node_follows_the_model_contract_by_default(trained_checkpoint, tmp_path):
    values, message, log = _run(trained_checkpoint, tmp_path)
    assert values["contract_overridden"] == "no" and "overrides the model's input contract" not in log
    assert values["network_size"] == "64x128"
    contract = values["input_contract"]
    assert "Farnebäck common" in contract and "confidence forward_backward" in contract
    assert "partner 1 frames at 10 Hz (flow_dt 0.1000 s)" in contract
    assert "contract overridden" not in message


def test_a_parameter_that_contradicts_the_model_runs_with_one_warning_and_a_diagnostic(
    trained_checkpoint, tmp_path
):
    values, message, log = _run(
        trained_checkpoint, tmp_path, "-p", "flow.levels:=5", "-p", "flow_dt:=0.2", "-p", "flow.winsize:=15"
    )  # winsize 15 is COMMON's own: not a contradiction
    assert log.count("flow.levels=5 overrides the model's input contract") == 1, log
    assert "was trained with flow.levels=3" in log
    assert log.count("flow_dt=0.2 overrides the model's input contract") == 1, log
    assert "flow.winsize" not in values["contract_overridden"]
    assert values["contract_overridden"] == "flow.levels=5 (model: 3); flow_dt=0.2 (model: 0.1)"
    assert message.endswith("; contract overridden: flow.levels=5 (model: 3); flow_dt=0.2 (model: 0.1)")
