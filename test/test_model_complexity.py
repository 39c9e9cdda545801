"""GMACs (fvcore, an independent counter) against TI's published numbers at 768x384 per input."""

import json

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


def test_macs_scale_with_pixels():
    lite = build_model(preset="lite", tasks=("depth",), streams=("image",))
    assert count_macs(lite, 128, 256) == 4 * count_macs(lite, 64, 128)


def test_model_complexity_cli_prints_table(tmp_path, monkeypatch, capsys):
    from mtl_perception.model import complexity as module

    # Two rows keep the tracing time down; the full table is the same code path.
    monkeypatch.setattr(module, "TABLE_ROWS", (module.TABLE_ROWS[3], module.TABLE_ROWS[-1]))
    out = tmp_path / "c.json"
    assert module.main(["--height", "64", "--width", "128", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "GMACs" in printed and "lite MTL" in printed and "ti depth, RGB only" in printed
    rows = json.loads(out.read_text())
    assert [r["model"] for r in rows] == ["ti depth, RGB only", "lite MTL (1,5,2), flow+RGB"]
    assert rows[0]["gmacs"] == pytest.approx(3.445 / 36, rel=0.01)  # 64x128 is 1/36 of 384x768
