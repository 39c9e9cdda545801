"""Which frames of a snippet carry ground truth: Cityscapes annotates one frame (the 20th) per 30-frame
snippet; ``annotate="all"`` annotates every frame whose flow partner (frame f - flow_gap) exists."""

from __future__ import annotations

ANNOTATE_MODES = ("cityscapes", "all")
#: the frame distance of the flow input (TI's and ``make_flow_dataset``'s default ``--gap``)
DEFAULT_FLOW_GAP = 2


def annotated_index(num_frames: int) -> int:
    """Cityscapes annotates the 20th frame (index 19) of each 30-frame snippet."""
    return 19 if num_frames >= 20 else num_frames - 1


def annotated_frames(
    num_frames: int, annotate: str = "cityscapes", flow_gap: int = DEFAULT_FLOW_GAP
) -> list[int]:
    """Indices of the annotated frames of a ``num_frames`` snippet.

    ``"cityscapes"``: the single frame of ``annotated_index``; ``"all"``: every frame f >= ``flow_gap``, so
    that each annotated frame has the earlier frame f - flow_gap its flow input is computed from.
    """
    if annotate not in ANNOTATE_MODES:
        raise ValueError(f"annotate must be one of {ANNOTATE_MODES}, got {annotate!r}")
    if annotate == "cityscapes":
        return [annotated_index(num_frames)]
    if flow_gap < 1:
        raise ValueError(f"flow_gap must be >= 1, got {flow_gap}")
    if num_frames <= flow_gap:
        raise ValueError(
            f"annotate='all' needs more frames than flow_gap (frame f is annotated when f - {flow_gap} "
            f"exists), got frames={num_frames}"
        )
    return list(range(flow_gap, num_frames))
