"""What ``make_motion_labels`` keeps on disk besides the labels, so that a rerun resumes and never mixes:
the split's settings sidecar and one decisions record per labelled frame.

* ``OUT/motion_label_decisions/SPLIT/settings.json``: the settings every record of the split was made with
  (``"complete"`` false while a run is under way). A run with other settings is refused unless
  ``--overwrite``, which deletes the split's labels and records before recording its settings (so that a
  stopped ``--overwrite`` never leaves an old label counted as done).
* ``OUT/motion_label_decisions/SPLIT/CITY/STEM_decisions.json``: the frame's decisions, written (atomically)
  before its label. A frame is done when both exist; a label without a record was not made by the tool (the
  synthetic generator's exact ground truth lives at the same path) and is never replaced without
  ``--overwrite``; a record without a label (a run stopped between the two writes) is recomputed.
"""

from __future__ import annotations

import json
from pathlib import Path

from mtl_perception.atomic import atomic_write_bytes
from mtl_perception.data.cityscapes import FrameId, cityscapes_path

from .frame import FrameDecisions

DECISIONS_FOLDER = "motion_label_decisions"
SETTINGS_FILE = "settings.json"


def label_path(out: Path, split: str, frame: FrameId) -> Path:
    return cityscapes_path(out, "motion", split, frame)


def record_path(out: Path, split: str, frame: FrameId) -> Path:
    return Path(out) / DECISIONS_FOLDER / split / frame.city / f"{frame.stem}_decisions.json"


def settings_path(out: Path, split: str) -> Path:
    return Path(out) / DECISIONS_FOLDER / split / SETTINGS_FILE


def write_json(path: Path, data: dict) -> None:
    atomic_write_bytes(path, json.dumps(data, indent=1, sort_keys=True, allow_nan=True).encode())


def _json_object(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def read_settings(path: Path) -> dict | None:
    """The recorded settings, None when there are none; a damaged file is a ValueError naming it."""
    if not path.exists():
        return None
    data = _json_object(path)
    if data is None or not isinstance(data.get("settings"), dict):
        raise ValueError(f"{path}: unreadable, or not a make_motion_labels settings file; pass --overwrite")
    return data


def read_record(path: Path) -> FrameDecisions | None:
    """A frame's decisions, None when the record is missing or unreadable (the frame is then redone)."""
    data = _json_object(path)
    try:
        return None if data is None else FrameDecisions.from_json(data)
    except (KeyError, TypeError):
        return None


def frame_state(out: Path, split: str, frame: FrameId) -> str:
    """ "done" (label and readable record), "foreign" (a label the tool did not make) or "todo"."""
    label, record = label_path(out, split, frame), record_path(out, split, frame)
    if not label.exists():
        return "todo"
    if not record.exists():
        return "foreign"
    return "done" if read_record(record) is not None else "todo"
