"""Farnebäck parameters and OpenCV flag values, shared by the one-shot API, streaming and the CLI."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

OPTFLOW_USE_INITIAL_FLOW = 4
OPTFLOW_FARNEBACK_GAUSSIAN = 256
RESIZE_MODES = ("cpu", "cuda")


@dataclass(frozen=True)
class FarnebackParams:
    """Arguments of ``cv2.calcOpticalFlowFarneback``; the defaults are ``cv::cuda::FarnebackOpticalFlow``'s.

    ``resize_mode`` picks which OpenCV to reproduce: ``"cpu"`` (half-pixel resizes, 1/winsize² box
    normalisation, as ``cv2.calcOpticalFlowFarneback``) or ``"cuda"`` (corner-aligned resizes and
    1/(2m+1)² normalisation, as ``cv::cuda::FarnebackOpticalFlow``).
    """

    pyr_scale: float = 0.5
    levels: int = 5
    winsize: int = 13
    iterations: int = 10
    poly_n: int = 5
    poly_sigma: float = 1.1
    flags: int = 0
    resize_mode: str = "cpu"

    def __post_init__(self) -> None:
        validate_params(self)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> FarnebackParams:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown FarnebackParams keys: {unknown} (known: {sorted(known)})")
        return cls(**d)


class InvalidFlowParameter(ValueError):
    """A Farnebäck parameter OpenCV would reject; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def validate_params(p: FarnebackParams) -> None:
    """Raise InvalidFlowParameter naming the first parameter OpenCV would reject (or that cannot work)."""
    if not 0.0 < float(p.pyr_scale) < 1.0:
        raise InvalidFlowParameter("pyr_scale", f"pyr_scale must be in (0, 1), got {p.pyr_scale}")
    if int(p.levels) != p.levels or p.levels < 0:
        raise InvalidFlowParameter("levels", f"levels must be a non-negative integer, got {p.levels}")
    if int(p.winsize) != p.winsize or p.winsize < 1:
        raise InvalidFlowParameter("winsize", f"winsize must be a positive integer, got {p.winsize}")
    if int(p.iterations) != p.iterations or p.iterations < 1:
        raise InvalidFlowParameter("iterations", f"iterations must be a positive integer, got {p.iterations}")
    if int(p.poly_n) != p.poly_n or p.poly_n < 1 or p.poly_n % 2 == 0:
        raise InvalidFlowParameter(
            "poly_n", f"poly_n must be an odd positive integer (5 or 7 in practice), got {p.poly_n}"
        )
    if not float(p.poly_sigma) >= 0.0:
        raise InvalidFlowParameter(
            "poly_sigma", f"poly_sigma must be >= 0 (0 means 0.3*poly_n), got {p.poly_sigma}"
        )
    if int(p.flags) != p.flags or int(p.flags) & ~(OPTFLOW_USE_INITIAL_FLOW | OPTFLOW_FARNEBACK_GAUSSIAN):
        raise InvalidFlowParameter(
            "flags",
            f"flags may only combine OPTFLOW_USE_INITIAL_FLOW (4) and OPTFLOW_FARNEBACK_GAUSSIAN (256), "
            f"got {p.flags}",
        )
    if p.resize_mode not in RESIZE_MODES:
        raise InvalidFlowParameter(
            "resize_mode", f"resize_mode must be one of {RESIZE_MODES}, got {p.resize_mode!r}"
        )


CUDA_DEFAULTS = FarnebackParams()
COMMON = FarnebackParams(0.5, 3, 15, 3, 5, 1.2, 0)
