"""mtl_perception.atomic: a failed write leaves the old file and no temporary behind; no silent overwrite."""

import pytest

from mtl_perception.atomic import atomic_path, atomic_write_bytes


def test_write_then_replace(tmp_path):
    target = tmp_path / "sub" / "file.bin"
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.bin"]


def test_failure_keeps_the_old_file(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"), atomic_path(target) as tmp:
        assert tmp.suffix == ".onnx" and tmp.parent == tmp_path
        tmp.write_bytes(b"half")
        raise RuntimeError("boom")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_refuses_to_overwrite_and_names_the_file(tmp_path):
    target = tmp_path / "ckpt.pt"
    target.write_bytes(b"keep")
    with pytest.raises(FileExistsError, match="ckpt.pt already exists; use --force"):
        with atomic_path(target, overwrite=False, how_to_overwrite="use --force"):
            pass
    assert target.read_bytes() == b"keep"


def test_missing_parent_named_when_not_created(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        with atomic_path(tmp_path / "missing" / "x.png", make_parents=False):
            pass
