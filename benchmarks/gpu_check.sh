#!/usr/bin/env bash
# The GPU check from the repository root with the machine's own python3 (nothing installed, no ROS):
#   bash benchmarks/gpu_check.sh            # report in $OUT (or gpu_check_out/)
#   bash benchmarks/gpu_check.sh --dry-run  # toy sizes, seconds, any machine
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
exec "${PYTHON:-python3}" benchmarks/gpu_check.py --out "${OUT:-gpu_check_out}" "$@"
