#!/usr/bin/env bash
# Re-create the model the package ships (mtl_perception/model/weights/shipped.pt + .onnx + .json):
# generated data (train seed 1000, val seed 2000) -> flow -> training/train.py (lite, 128x256) -> held-out
# evaluation (seed 3000, never trained or validated on) -> training/package_model.py (provenance in the file).
#
#   make shipped-model                              # EPOCHS=30 MILESTONES=24, work files in data/shipped_model
#   EPOCHS=40 MILESTONES="24 34" make shipped-model
#   scripts/make_shipped_model.sh --package-only RUN_DIR TRAINING_SECONDS
#       # a run already trained with this recipe (same EPOCHS/MILESTONES): held-out evaluation + packaging only
#
# Variables: EPOCHS, MILESTONES, TRAIN_SEQUENCES (generated training streets, 30 frames each), WORK (data and
# run folder), PY (interpreter; default .venv/bin/python), SHIPPED_DIR (where the three files go; default the
# package's mtl_perception/model/weights), COMMIT (the git commit the run trained at; default this HEAD).
set -euo pipefail
cd "$(dirname "$0")/.."

EPOCHS=${EPOCHS:-30}
MILESTONES=${MILESTONES:-24}
TRAIN_SEQUENCES=${TRAIN_SEQUENCES:-48}
WORK=${WORK:-data/shipped_model}
PY=${PY:-.venv/bin/python}
BIN=$(dirname "$PY")
ROOT=$WORK/data
RUN=$WORK/run
HELD_OUT_SEED=3000

DATA_FLAGS=(--frames 30 --height 256 --width 512 --annotate all --workers 2)
TRAIN_DATA=(--split train --sequences "$TRAIN_SEQUENCES" --seed 1000 --city synthtrain)
VAL_DATA=(--split val --sequences 4 --seed 2000 --city synthval)
HELD_OUT_DATA=(--split test --sequences 4 --seed "$HELD_OUT_SEED" --city synthheldout)
FLOW_FLAGS=(--height 128 --width 256 --device cpu)
# shellcheck disable=SC2206  # MILESTONES is a space-separated list on purpose
TRAIN_FLAGS=(--data_path "$ROOT" --preset lite --img_resize 128 256 --output_size 256 512 --batch_size 8
    --lr 1e-3 --warmup_epochs 1 --warmup_factor 0.1 --epochs "$EPOCHS" --milestones $MILESTONES
    --multi_task_type uncertainty --workers 1 --evaluate_every 2 --output_dir "$RUN")

package_only=""
if [[ "${1:-}" == "--package-only" ]]; then
    if [[ $# -ne 3 ]]; then
        echo "usage: $0 --package-only RUN_DIR TRAINING_SECONDS" >&2
        exit 2
    fi
    package_only=1
    RUN=$2
    TRAINING_SECONDS=$3
    TRAIN_FLAGS=("${TRAIN_FLAGS[@]:0:${#TRAIN_FLAGS[@]}-1}" "$RUN")
elif [[ $# -ne 0 ]]; then
    echo "usage: $0 [--package-only RUN_DIR TRAINING_SECONDS]" >&2
    exit 2
fi

mkdir -p "$WORK"
recipe=$WORK/recipe.txt
{
    echo "make_synthetic_cityscapes --out $ROOT ${TRAIN_DATA[*]} ${DATA_FLAGS[*]}"
    echo "make_synthetic_cityscapes --out $ROOT ${VAL_DATA[*]} ${DATA_FLAGS[*]}"
    echo "make_flow_dataset --root $ROOT --split train ${FLOW_FLAGS[*]}"
    echo "make_flow_dataset --root $ROOT --split val ${FLOW_FLAGS[*]}"
    echo "python training/train.py ${TRAIN_FLAGS[*]}"
} >"$recipe"

if [[ -z "$package_only" ]]; then
    "$BIN/make_synthetic_cityscapes" --out "$ROOT" "${TRAIN_DATA[@]}" "${DATA_FLAGS[@]}" --overwrite
    "$BIN/make_synthetic_cityscapes" --out "$ROOT" "${VAL_DATA[@]}" "${DATA_FLAGS[@]}" --overwrite
    "$BIN/make_flow_dataset" --root "$ROOT" --split train "${FLOW_FLAGS[@]}"
    "$BIN/make_flow_dataset" --root "$ROOT" --split val "${FLOW_FLAGS[@]}"
    start=$(date +%s)
    "$PY" training/train.py "${TRAIN_FLAGS[@]}" --overwrite
    TRAINING_SECONDS=$(($(date +%s) - start))
fi

# The held-out set: its own seed and city, the quality targets' 256x512 (docs/training.md, "The shipped model").
"$BIN/make_synthetic_cityscapes" --out "$ROOT" "${HELD_OUT_DATA[@]}" "${DATA_FLAGS[@]}" --overwrite
# the held-out flow made as best.pt's input contract says (its size and flow settings)
"$BIN/make_flow_dataset" --root "$ROOT" --split test --model "$RUN/best.pt" --device cpu
"$PY" training/evaluate.py --checkpoint "$RUN/best.pt" --data_path "$ROOT" --split test \
    --output_size 256 512 --workers 1 --json "$WORK/held_out.json"

"$PY" training/package_model.py --run "$RUN" --training-seconds "$TRAINING_SECONDS" \
    --held-out "$WORK/held_out.json" --recipe "$recipe" \
    --data-seeds train=1000 val=2000 test=$HELD_OUT_SEED \
    ${SHIPPED_DIR:+--out-dir "$SHIPPED_DIR"} ${COMMIT:+--commit "$COMMIT"}
