"""Reading image files with errors that name the file (cv2.imread alone returns None)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np


def read_image(path: str | os.PathLike, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    """cv2.imread that names the file: FileNotFoundError if missing, ValueError if unreadable or truncated."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing file: {path}")
    img = cv2.imread(str(path), flags)
    if img is None:
        raise ValueError(f"unreadable or truncated image: {path}")
    return img
