"""The files of ``--output_dir`` and the rules that protect them.

Nothing in an existing output folder is replaced without ``--overwrite`` (or ``--resume`` from the
``checkpoint.pt`` in it); every file is written atomically, so an interrupted run leaves the previous
complete version of each file. A folder holding only what a run that failed before its first checkpoint
leaves (``tensorboard/``, the lock file) is no run to protect: the rerun starts afresh in it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from mtl_perception.atomic import atomic_path, temporary_name_of
from mtl_perception.folder_lock import LOCK_NAME

CHECKPOINT, BEST, ONNX, METRICS, TENSORBOARD = (
    "checkpoint.pt",
    "best.pt",
    "best.onnx",
    "metrics.json",
    "tensorboard",
)
OUTPUTS = (CHECKPOINT, BEST, ONNX, METRICS, TENSORBOARD)


def _resumes_here(output_dir: Path, resume: str | None) -> bool:
    return bool(resume) and Path(resume).resolve().parent == output_dir.resolve()


def _present(output_dir: Path) -> list[str]:
    """What the folder holds, without the lock file and the temporaries of atomic writes."""
    return sorted(
        p.name for p in output_dir.iterdir() if p.name != LOCK_NAME and not temporary_name_of(p.name)
    )


def _failed_start(output_dir: Path) -> bool:
    """Only the TensorBoard events of a run that stopped before its first checkpoint."""
    return output_dir.is_dir() and set(_present(output_dir)) <= {TENSORBOARD}


def check_output_dir(output_dir: Path, *, overwrite: bool, resume: str | None) -> None:
    """Raise FileExistsError unless the run may write into ``output_dir``."""
    if output_dir.exists() and not output_dir.is_dir():
        raise FileExistsError(f"--output_dir {output_dir} is a file, not a folder")
    if not output_dir.is_dir() or overwrite or _resumes_here(output_dir, resume):
        return
    present = _present(output_dir)
    if present and not _failed_start(output_dir):
        shown = ", ".join(present[:5]) + (", ..." if len(present) > 5 else "")
        raise FileExistsError(
            f"--output_dir {output_dir} already holds {shown}; pass --overwrite to replace them, "
            f"or --resume {output_dir / CHECKPOINT} to continue that run"
        )


def prepare_output_dir(output_dir: Path, *, overwrite: bool, resume: str | None) -> None:
    """Create the folder; with --overwrite or after a failed start (and not resuming in it) remove the
    previous run's outputs so none of its files (an old best.pt, old TensorBoard curves) mixes with the new
    run's."""
    output_dir.mkdir(parents=True, exist_ok=True)
    if (overwrite or _failed_start(output_dir)) and not _resumes_here(output_dir, resume):
        for name in OUTPUTS:
            path = output_dir / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()


def carry_best_checkpoint(source_dir: Path, output_dir: Path) -> None:
    """Resuming into another folder: bring the run's best.pt along, so best.pt always matches the best
    score recorded in checkpoint.pt (a later epoch replaces it only when it does better)."""
    source, target = source_dir / BEST, output_dir / BEST
    if source.is_file() and source.resolve() != target.resolve():
        with atomic_path(target, overwrite=True) as tmp:
            shutil.copyfile(source, tmp)


def last_checkpoint_note(output_dir: Path) -> str:
    """What a stopped run leaves behind, for its error message."""
    path = output_dir / CHECKPOINT
    if path.is_file():
        return f"the last finite checkpoint is kept: {path}"
    return (
        f"no checkpoint was written yet (the first epoch did not finish) in {output_dir}; the same command "
        "starts the run again there"
    )
