"""mtl_perception.atomic: a failed write leaves the old file and no temporary behind; no silent overwrite."""

import os
import signal
import stat
import subprocess
import sys

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


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it afterwards."""
    saved = os.umask(0o022)
    yield os.umask
    os.umask(saved)


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002, 0o027], ids=oct)
def test_new_files_get_the_mode_plain_open_gives(tmp_path, umask, mask):
    """Oracle: a file created by ``open(path, "w")`` under the same umask (mkstemp would give 0600)."""
    umask(mask)
    plain = tmp_path / "plain.onnx"
    with open(plain, "w") as f:
        f.write("x")
    atomic_write_bytes(tmp_path / "model.onnx", b"x")
    with atomic_path(tmp_path / "engine.plan") as tmp:
        tmp.write_bytes(b"x")
    assert _mode(plain) == 0o666 & ~mask
    assert _mode(tmp_path / "model.onnx") == _mode(plain)
    assert _mode(tmp_path / "engine.plan") == _mode(plain)


def test_new_files_honour_the_umask_in_a_fresh_process(tmp_path):
    """The umask a user's shell sets (here 0o022: others may read) reaches the written checkpoint."""
    code = (
        "import os, sys; os.umask(0o022); "
        "from mtl_perception.atomic import atomic_write_bytes; atomic_write_bytes(sys.argv[1], b'x')"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "ckpt.pt")], check=True)
    assert _mode(tmp_path / "ckpt.pt") == 0o644


def test_replacing_keeps_the_existing_mode(tmp_path, umask):
    """``open(path, "w")`` on an existing file keeps its mode; so does the atomic replace."""
    umask(0o077)
    for name in ("plain.pt", "atomic.pt"):
        (tmp_path / name).write_bytes(b"old")
        os.chmod(tmp_path / name, 0o640)
    with open(tmp_path / "plain.pt", "w") as f:
        f.write("new")
    atomic_write_bytes(tmp_path / "atomic.pt", b"new")
    assert _mode(tmp_path / "atomic.pt") == _mode(tmp_path / "plain.pt") == 0o640
    assert (tmp_path / "atomic.pt").read_bytes() == b"new"


def test_a_signal_while_the_temporary_is_made_leaves_nothing(tmp_path, monkeypatch):
    """Regression (a flaky export SIGTERM test): a signal right after the temporary file was created, before
    atomic_path's cleanup knew its name, left the hidden file behind."""
    from mtl_perception import atomic

    real = atomic._make_file

    def make_then_interrupt(name):
        real(name)
        signal.raise_signal(signal.SIGINT)  # Python's default handler: KeyboardInterrupt

    monkeypatch.setattr(atomic, "_make_file", make_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        with atomic.atomic_path(tmp_path / "m.onnx"):
            pytest.fail("the deferred signal is raised before the block runs")
    assert list(tmp_path.iterdir()) == []


def test_a_group_of_writes_replaces_all_files_or_none(tmp_path):
    """atomic_group: files that refer to each other (a checkpoint and its records) move together; an error
    or a signal before the end of the block leaves every old file and no temporary."""
    from mtl_perception.atomic import atomic_group
    from mtl_perception.signals import signals_raise

    a, b = tmp_path / "checkpoint.pt", tmp_path / "metrics.json"
    atomic_write_bytes(a, b"a1")
    atomic_write_bytes(b, b"b1")
    for stop in (RuntimeError("disk full"), "SIGINT"):
        with pytest.raises((RuntimeError, KeyboardInterrupt)), signals_raise(), atomic_group():
            atomic_write_bytes(a, b"a2")
            assert a.read_bytes() == b"a1"  # not yet in place
            with atomic_group():  # an inner group joins the outer one
                atomic_write_bytes(b, b"b2")
            if stop == "SIGINT":
                os.kill(os.getpid(), signal.SIGINT)
            else:
                raise stop
        assert (a.read_bytes(), b.read_bytes()) == (b"a1", b"b1")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "metrics.json"]
    with atomic_group():
        atomic_write_bytes(a, b"a2")
        atomic_write_bytes(b, b"b2")
    assert (a.read_bytes(), b.read_bytes()) == (b"a2", b"b2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "metrics.json"]
