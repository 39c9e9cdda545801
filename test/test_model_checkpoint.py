"""Checkpoints: exact round trip from the file alone, atomic/no-overwrite saves, weights_only security."""

import os

import pytest
import torch
from contracts import contract_of

from mtl_perception.model import CheckpointError, build_model, load_checkpoint, save_checkpoint
from mtl_perception.model.checkpoint import FORMAT, VERSION


def _model():
    torch.manual_seed(1)
    model = build_model(
        preset="lite", tasks=("depth", "semantic"), num_semantic_classes=7, activation="relu6"
    )
    # Make BN statistics non-trivial so the round trip covers buffers too.
    model.train()
    with torch.no_grad():
        model(torch.rand(2, 3, 32, 64) * 255, torch.randn(2, 3, 32, 64))
    return model.eval()


def test_round_trip_rebuilds_exact_network(tmp_path):
    model = _model()
    path = save_checkpoint(
        tmp_path / "m.pt", model, contract=contract_of(model), epoch=3, metrics={"miou": 0.5}, note="x"
    )
    loaded, extra = load_checkpoint(path)
    assert extra == {"epoch": 3, "metrics": {"miou": 0.5}, "note": "x"}
    assert loaded.config == model.config and not loaded.training
    image, flow = torch.rand(1, 3, 32, 64) * 255, torch.randn(1, 3, 32, 64)
    with torch.no_grad():
        a, b = model(image, flow), loaded(image, flow)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert sorted(os.listdir(tmp_path)) == ["m.pt"]  # no temp file left behind


def test_refuses_to_overwrite(tmp_path):
    model = _model()
    path = tmp_path / "m.pt"
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="m.pt"):
        save_checkpoint(path, model, contract=contract_of(model))
    assert path.read_bytes() == b"precious"
    save_checkpoint(path, model, contract=contract_of(model), overwrite=True)
    load_checkpoint(path)


def test_extra_must_be_plain_data(tmp_path):
    with pytest.raises(ValueError, match="extra"):
        save_checkpoint(tmp_path / "m.pt", _model(), contract=contract_of(_model()), optimizer=object())
    assert not (tmp_path / "m.pt").exists()


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_malicious_pickle_is_refused_and_code_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save(
        {"format": FORMAT, "version": VERSION, "config": {}, "state_dict": {}, "extra": _Exploit(marker)},
        path,
    )
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_checkpoint(path)
    assert not marker.exists()


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")


def test_truncated_and_garbage_files(tmp_path):
    model = _model()
    path = save_checkpoint(tmp_path / "m.pt", model, contract=contract_of(model))
    data = path.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated.pt"):
        load_checkpoint(truncated)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(os.urandom(1000))
    with pytest.raises(CheckpointError, match="garbage.pt"):
        load_checkpoint(garbage)


def test_wrong_format_version_and_shapes(tmp_path):
    model = _model()
    good = torch.load(
        save_checkpoint(tmp_path / "m.pt", model, contract=contract_of(model)), weights_only=True
    )

    def write(name, payload):
        torch.save(payload, tmp_path / name)
        return tmp_path / name

    with pytest.raises(CheckpointError, match="format"):
        load_checkpoint(write("fmt.pt", {**good, "format": "other"}))
    with pytest.raises(CheckpointError, match="version 99"):
        load_checkpoint(write("ver.pt", {**good, "version": 99}))
    with pytest.raises(CheckpointError, match="format"):
        load_checkpoint(write("plain.pt", model.state_dict()))
    # Same weights, config claims 19 classes: the semantic head's shape does not match.
    config = dict(good["config"], num_semantic_classes=19)
    with pytest.raises(CheckpointError, match=r"shape.pt.*decoders\.semantic\.predict\.weight.*\(19, "):
        load_checkpoint(write("shape.pt", {**good, "config": config}))
    # Config claims a task that has no weights.
    config = dict(good["config"], tasks=["depth", "semantic", "motion"])
    with pytest.raises(CheckpointError, match="missing.*decoders.motion"):
        load_checkpoint(write("task.pt", {**good, "config": config}))
    with pytest.raises(CheckpointError, match="invalid model config"):
        load_checkpoint(write("cfg.pt", {**good, "config": {"preset": "ti", "width": -1}}))


def test_the_input_contract_travels_in_the_file(tmp_path):
    from mtl_perception.flow import COMMON
    from mtl_perception.model import open_checkpoint

    model = _model()
    contract = contract_of(
        model, size=(64, 96), farneback=COMMON, confidence="forward_backward", partner_gap=1
    )
    path = save_checkpoint(tmp_path / "m.pt", model, contract=contract)
    _, _, found = open_checkpoint(path)
    assert found == contract and found.flow.flow_dt == pytest.approx(1 / 17)
    payload = torch.load(path, weights_only=True)
    assert payload["version"] == VERSION == 2 and payload["contract"]["flow"]["farneback"]["levels"] == 3


def test_a_contract_that_does_not_describe_the_network_is_refused(tmp_path):
    from mtl_perception.model import ContractError

    model = _model()  # depth + semantic, 7 classes
    three_tasks = contract_of(build_model(preset="lite", num_semantic_classes=7))
    with pytest.raises(ContractError, match="tasks"):
        save_checkpoint(tmp_path / "m.pt", model, contract=three_tasks)
    assert not (tmp_path / "m.pt").exists()
    good = torch.load(
        save_checkpoint(tmp_path / "m.pt", model, contract=contract_of(model)), weights_only=True
    )
    torch.save({**good, "contract": {**good["contract"], "semantic_mode": "trainid"}}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="bad.pt"):
        from mtl_perception.model import open_checkpoint

        open_checkpoint(tmp_path / "bad.pt")


def test_a_format_1_file_gets_the_assumed_contract_and_one_warning(tmp_path):
    """Files made before contracts existed still load: the project's flow defaults at the size the file
    records, said once (naming the assumption), however many times the file is read."""
    from mtl_perception.model import open_checkpoint

    model = _model()
    good = torch.load(
        save_checkpoint(tmp_path / "m.pt", model, contract=contract_of(model)), weights_only=True
    )
    old = {k: v for k, v in good.items() if k != "contract"}
    torch.save({**old, "version": 1, "extra": {"img_resize": [64, 128]}}, tmp_path / "old.pt")
    warnings = []
    for _ in range(2):
        _, _, contract = open_checkpoint(tmp_path / "old.pt", warn=warnings.append)
    assert contract.network_size == (64, 128) and contract.flow.partner_gap == 2
    assert (
        len(warnings) == 1 and "old.pt records no input contract" in warnings[0] and "64x128" in warnings[0]
    )
