"""docs/training.md "Reproducing the table on Cityscapes", run as written: its command block, taken from the
document, on a small generated root packed as the Cityscapes downloads are (the same zip names and member
paths, no synthetic-only file), with the flow at 64x128 instead of 384x768 and the table shrunk to one short
run of TI's network as test_evaluate_table.py's ti test does (no GPU here: --gpus is left out)."""

from __future__ import annotations

import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PACKAGES = {
    "leftImg8bit_trainvaltest": ("leftImg8bit",),
    "gtFine_trainvaltest": ("gtFine",),
    "disparity_trainvaltest": ("disparity",),
    "camera_trainvaltest": ("camera",),
    "vehicle_sequence": ("vehicle_sequence",),
    "timestamp_sequence": ("timestamp_sequence",),
    "leftImg8bit_sequence_trainvaltest": ("leftImg8bit_sequence",),
}


def recipe() -> str:
    text = (REPO / "docs" / "training.md").read_text()
    section = text[text.index("### Reproducing the table on Cityscapes") :]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1)


def _downloads(generated: Path, root: Path) -> int:
    """Zip the generated tree as Cityscapes packages it; returns the number of annotated frames."""
    root.mkdir()
    for package, folders in PACKAGES.items():
        with zipfile.ZipFile(root / f"{package}.zip", "w", zipfile.ZIP_STORED) as archive:
            archive.writestr("license.txt", "the Cityscapes licence\n")  # in every real package
            for folder in folders:
                for path in sorted((generated / folder).rglob("*")):
                    if path.is_file() and not path.name.endswith("_labelTrainIds_motion.png"):
                        archive.write(path, path.relative_to(generated).as_posix())
    return len(list((generated / "leftImg8bit").rglob("*_leftImg8bit.png")))


@pytest.mark.timeout(600)  # about 15 s on 2 quiet cores
def test_the_documented_cityscapes_recipe_runs_as_written(tmp_path):
    pytest.importorskip("mtl_perception_training.train")
    if shutil.which("unzip") is None:
        pytest.fail("the recipe unpacks with unzip (Info-ZIP), which this machine lacks")
    from mtl_perception.data.synthetic import generate
    from mtl_perception.learning.results_table import TI_ROWS
    from mtl_perception_training.make_table import parse_args, run_one

    generated = tmp_path / "generated"
    generate(generated, "train", 2, 20, 128, 256, seed=21, city="tubingen", show_progress=False)
    generate(generated, "val", 1, 20, 128, 256, seed=22, city="lindau", show_progress=False)
    root = tmp_path / "cityscapes"
    annotated = _downloads(generated, root)

    commands = recipe()
    table_line = commands.strip().splitlines()[-1]
    assert table_line.startswith("mtl_make_table ")
    shell = commands.replace(table_line, "").replace("--height 384 --width 768", "--height 64 --width 128")
    env = {
        **os.environ,
        "ROOT": str(root),
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "OMP_NUM_THREADS": "1",
    }
    run = subprocess.run(["bash", "-euo", "pipefail", "-c", shell], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stdout + run.stderr

    sequence = sorted(p.name for p in (root / "leftImg8bit_sequence").rglob("*.png"))
    assert len(sequence) == annotated == 3 and all(
        name.endswith("_000017_leftImg8bit.png") for name in sequence
    )
    labels = list((root / "gtFine").rglob("*_gtFine_labelTrainIds_motion.png"))
    flows = list((root / "leftImg8bit_flow_farneback_confidence").rglob("*_flow.png"))
    assert len(labels) == len(flows) == annotated
    assert "val: 1 of 1 frames labelled" in run.stdout

    argv = shlex.split(table_line.replace("$ROOT", str(root)))[1:]
    gpus = argv.index("--gpus")
    del argv[gpus : gpus + 3]  # --gpus 0 1: this machine has none
    args = parse_args(
        [
            *argv, "--img_resize", "64", "128", "--output_size", "128", "256", "--epochs", "1",
            "--batch_size", "2", "--warmup_epochs", "0", "--milestones", "--workers", "0",
        ]
    )  # fmt: skip
    assert (args.preset, args.data_path, args.split) == ("ti", root, "val")
    assert args.out.resolve() == (tmp_path / "table_ti").resolve()
    result = run_one(args, TI_ROWS[0], 0, root)  # vanilla MTL, seed 0: trained on the generated labels
    assert all(math.isfinite(result["metrics"][k]) for k in ("depth_ard", "semantic_miou", "motion_miou"))
