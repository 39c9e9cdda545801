"""GMACs (fvcore, an independent counter) against TI's published numbers at 768x384 per input."""

import subprocess
import sys

import pytest

from mtl_perception.model import build_model
from mtl_perception.model.complexity import complexity, count_macs


@pytest.mark.parametrize(
    "kwargs,published",
    [
        (dict(), 5.48),  # TI analytic count for the torchvision-block (1,5,2) model
        (dict(tasks=("depth",), streams=("image",)), 3.44),
        (dict(tasks=("semantic",), streams=("image",), num_semantic_classes=19), 3.54),
        (dict(tasks=("motion",)), 3.92),
        (dict(num_semantic_classes=19, always_expand=True), 5.71),  # TI's published MTL number
    ],
)
def test_gmacs_match_ti(kwargs, published):
    c = complexity(build_model(**kwargs))
    assert c.gmacs == pytest.approx(published, rel=0.02)


def test_macs_scale_with_pixels_and_lite_is_cheaper():
    lite = build_model(preset="lite")
    full = count_macs(lite, 128, 256)
    quarter = count_macs(lite, 64, 128)
    assert full == 4 * quarter
    assert count_macs(build_model(), 64, 128) > 3 * quarter


def test_model_complexity_cli_prints_table(tmp_path):
    out = tmp_path / "c.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mtl_perception.model.complexity",
            "--height",
            "64",
            "--width",
            "128",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "GMACs" in result.stdout and "lite MTL" in result.stdout and out.exists()
