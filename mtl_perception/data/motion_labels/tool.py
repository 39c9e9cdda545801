"""``make_motion_labels`` as a function: every annotated frame of a split -> its motion label, in parallel
processes on request, resuming where an earlier run stopped; a frame whose inputs are missing or corrupt is
skipped and reported, the others are labelled."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2

from mtl_perception.atomic import atomic_path
from mtl_perception.data.cityscapes import FrameId
from mtl_perception.signals import WorkerPool

from .frame import FrameDecisions, FrameLabeller, Settings
from .inputs import InputProblem, annotated_frames, check_layout, read_frame_inputs
from .records import (
    frame_state,
    label_path,
    read_record,
    read_settings,
    record_path,
    settings_path,
    write_json,
)


@dataclass
class RunResult:
    """What one run found: every frame's decisions (this run's and earlier runs'), the skipped frames by
    kind of problem, and how many frames this run labelled."""

    decisions: list[FrameDecisions] = field(default_factory=list)
    skipped: list[InputProblem] = field(default_factory=list)
    labelled_now: int = 0
    already_done: int = 0
    elapsed_s: float = 0.0
    flow: dict = field(default_factory=dict)


_WORKER_LABELLER: dict = {}  # one flow engine per process, made by its first frame


def flow_engine(device: str):
    """(FlowInput, description): the project's Farnebäck with the node's default parameters and
    confidence; on the CPU OpenCV's own implementation behind the same interface (bit-exact with
    ``cv2.calcOpticalFlowFarneback``), on a GPU the torch port."""
    import torch

    from mtl_perception.device import resolve_device
    from mtl_perception.flow import CUDA_DEFAULTS, DEFAULT_CONFIDENCE_MODE
    from mtl_perception.pipeline import FlowInput

    resolved = resolve_device(device)
    implementation = "torch" if resolved.type == "cuda" else "cv2"
    engine = FlowInput(
        CUDA_DEFAULTS,
        device=torch.device(resolved),
        confidence_mode=DEFAULT_CONFIDENCE_MODE,
        implementation=implementation,
    )
    description = {
        "farneback": CUDA_DEFAULTS.to_dict(),
        "confidence": DEFAULT_CONFIDENCE_MODE,
        "implementation": implementation,
        "device": str(resolved),
    }
    return engine, description


def label_one(
    *, root: Path, split: str, out: Path, frame: FrameId, settings: Settings, device: str, threads: int = 0
) -> FrameDecisions | InputProblem:
    """Label one frame and write its record, then its label (both atomic); an input problem is returned,
    not raised, so that the run goes on with the other frames."""
    key = (device, settings)
    if key not in _WORKER_LABELLER:
        if threads:
            import torch

            torch.set_num_threads(threads)
            cv2.setNumThreads(threads)
        _WORKER_LABELLER.clear()
        _WORKER_LABELLER[key] = FrameLabeller(flow_engine(device)[0], settings)
    try:
        inputs = read_frame_inputs(root, split, frame, settings.gap)
    except InputProblem as problem:
        return problem
    labels, decisions = _WORKER_LABELLER[key].label(inputs)
    write_json(record_path(out, split, frame), decisions.to_json())
    path = label_path(out, split, frame)
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), labels):
            raise OSError(f"could not write {path}")
    return decisions


def _check_settings(out: Path, split: str, settings: Settings, overwrite: bool) -> None:
    recorded = None if overwrite else read_settings(settings_path(out, split))
    if recorded is not None and recorded["settings"] != settings.to_json():
        before = recorded["settings"]
        differ = ", ".join(
            f"{k} {before.get(k)!r} (now {v!r})" for k, v in settings.to_json().items() if before.get(k) != v
        )
        raise ValueError(
            f"{settings_path(out, split)}: the labels of split {split} were made with other settings: "
            f"{differ}; rerun with those, or pass --overwrite to relabel the split"
        )


def make_motion_labels(
    root: str | Path,
    split: str,
    out: str | Path | None = None,
    *,
    settings: Settings | None = None,
    overwrite: bool = False,
    workers: int = 1,
    device: str = "auto",
    show_progress: bool = True,
) -> RunResult:
    """Label every annotated frame of ``split`` under ``root`` into ``out`` (default ``root``)."""
    from tqdm import tqdm

    root, settings = Path(root), settings or Settings()
    out = Path(out) if out is not None else root
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    if settings.gap < 1:
        raise ValueError(f"--gap must be >= 1, got {settings.gap}")
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} does not exist")
    check_layout(root, split)
    frames = annotated_frames(root, split)
    if not frames:
        raise FileNotFoundError(
            f"no annotated frames (*_leftImg8bit.png) under {root / 'leftImg8bit' / split}"
        )
    _check_settings(out, split, settings, overwrite)
    states = {f: ("todo" if overwrite else frame_state(out, split, f)) for f in frames}
    foreign = [f for f, state in states.items() if state == "foreign"]
    if foreign:  # checked before anything is written
        raise FileExistsError(
            f"{len(foreign)} motion labels exist that make_motion_labels did not make (no decisions record), "
            f"e.g. {label_path(out, split, foreign[0])}; pass --overwrite to replace them, or --out elsewhere"
        )
    _, flow = flow_engine(device)
    if overwrite:  # old labels go before the new settings are recorded: an interrupted run never mixes them
        for frame in frames:
            record_path(out, split, frame).unlink(missing_ok=True)
            label_path(out, split, frame).unlink(missing_ok=True)
    sidecar = {"settings": settings.to_json(), "flow": flow}
    write_json(settings_path(out, split), {**sidecar, "complete": False})

    result = RunResult(flow=flow)
    todo = [f for f in frames if states[f] == "todo"]
    result.already_done = len(frames) - len(todo)
    start = time.perf_counter()
    job = dict(root=root, split=split, out=out, settings=settings, device=device)
    bar = tqdm(
        total=len(frames),
        initial=result.already_done,
        desc=f"motion labels {split}",
        unit="frame",
        disable=not show_progress,
    )
    outcomes: dict[FrameId, FrameDecisions | InputProblem] = {}
    with bar:
        if workers == 1 or len(todo) <= 1:
            for frame in todo:
                outcomes[frame] = label_one(frame=frame, **job)
                bar.update(1)
        else:
            from concurrent.futures import as_completed

            threads = max(1, (os.cpu_count() or 1) // workers)
            with WorkerPool(workers, start_method="spawn") as pool:
                futures = {pool.submit(label_one, frame=f, threads=threads, **job): f for f in todo}
                for future in as_completed(futures):
                    outcomes[futures[future]] = future.result()
                    bar.update(1)
    result.elapsed_s = time.perf_counter() - start
    for frame in frames:
        outcome = outcomes.get(frame)
        if isinstance(outcome, InputProblem):
            result.skipped.append(outcome)
            continue
        if outcome is None:
            outcome = read_record(record_path(out, split, frame))
            if outcome is None:  # removed since the start of this run
                continue
        else:
            result.labelled_now += 1
        result.decisions.append(outcome)
    write_json(settings_path(out, split), {**sidecar, "complete": not result.skipped})
    return result
