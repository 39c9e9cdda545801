"""``python -m mtl_perception.demo --out demo_output``: the flow demo (first version of the project demo).

Warps a real photo by a known smooth flow, recovers it with the OpenCV-exact PyTorch Farnebäck, writes
``flow.png`` (16-bit KITTI-style), ``flow_color.png`` (image | ground truth | ours | confidence) and
``demo.json`` with the errors against the ground truth and against cv2. CPU, a few seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mtl_perception.flow.cli import PRESETS, run_demo


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mtl_perception.demo", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="demo_output", help="output folder")
    p.add_argument("--params", choices=sorted(PRESETS), default="common")
    p.add_argument("--device", default="cpu")
    p.add_argument("--overwrite", action="store_true", help="replace files from an earlier run")
    args = p.parse_args(argv)
    out = Path(args.out)
    stats = run_demo(out, PRESETS[args.params], args.device, (256, 320), args.overwrite)
    json_path = out / "demo.json"
    if json_path.exists() and not args.overwrite:
        raise FileExistsError(f"{json_path} exists; pass --overwrite to replace it")
    json_path.write_text(json.dumps(stats, indent=2))
    print(json.dumps(stats, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
