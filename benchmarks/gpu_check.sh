#!/usr/bin/env bash
# The `base` recipe measured on one GPU, in at most 8 minutes all told: install what the
# machine lacks from carried wheels, train `base` from carried shards for a wall budget,
# then print speed, peak GPU memory, the final losses, validation per bitrate and the verdict.
# The GPU machines have torch but no deepspeed, webdataset, soundfile, soxr or zarr and cannot
# download: `python benchmarks/gpu_carry.py` fills .gpu_carry/ (wheels + a preprocess OUT) on a
# machine that can. docs/BENCHMARKS.md ("GPU check") gives the device command.
#
#   bash benchmarks/gpu_check.sh                              # GPU, `base`, 300 s of training
#   GPU_CHECK_COMPILE=1 bash benchmarks/gpu_check.sh          # the same with --compile
#   GPU_CHECK_MODEL=tiny GPU_CHECK_DATA=OUT GPU_CHECK_STEPS=3 bash benchmarks/gpu_check.sh  # CI
#
# Settings, all from the environment (default in brackets):
#   GPU_CHECK_MODEL    codec config [base]
#   GPU_CHECK_DATA     preprocess OUT [.gpu_carry/out]
#   GPU_CHECK_WHEELS   wheels of what the machine may lack [.gpu_carry/wheels]
#   GPU_CHECK_MODULES  what must import ["deepspeed webdataset soundfile soxr zarr pesq pystoi"]
#   GPU_CHECK_SITE     where missing wheels are installed, put on PYTHONPATH [/tmp/gpu_check_site]
#   GPU_CHECK_SECONDS  training wall budget, train_ds.py --max-seconds [300]; it includes
#                      start-up and any compilation of the first step
#   GPU_CHECK_LIMIT    hard cap on the whole check, seconds [480]: training is stopped there
#   GPU_CHECK_STEPS    --max-steps, the LR schedule's length [20000: the budget ends the run]
#   GPU_CHECK_BATCH    micro batch [ds_config.json's]
#   GPU_CHECK_WORKERS  decode workers [4]
#   GPU_CHECK_COMPILE  1: train with --compile [0]
#   GPU_CHECK_ARGS     more train_ds.py flags, e.g. "--segment-seconds 0.38" []
#   GPU_CHECK_RUNS     the run goes to RUNS/gpu_check [/tmp/gpu_check]
#   GPU_CHECK_REPORT   a folder to copy summary.txt, metrics.json, curves.png and train.log to
#                      (e.g. the device's $OUT), with run_config.json []
#   GPU_CHECK_PYTHON   interpreter [python3]
set -euo pipefail

die() {
    echo "gpu_check.sh: error: $*" >&2
    exit 2
}
absolute() { [[ $1 = /* ]] && echo "$1" || echo "$PWD/$1"; }

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MODEL=${GPU_CHECK_MODEL:-base}
DATA=$(absolute "${GPU_CHECK_DATA:-$REPO/.gpu_carry/out}")
WHEELS=$(absolute "${GPU_CHECK_WHEELS:-$REPO/.gpu_carry/wheels}")
MODULES=${GPU_CHECK_MODULES:-deepspeed webdataset soundfile soxr zarr pesq pystoi}
SITE=$(absolute "${GPU_CHECK_SITE:-/tmp/gpu_check_site}")
SECONDS_BUDGET=${GPU_CHECK_SECONDS:-300}
LIMIT=${GPU_CHECK_LIMIT:-480}
STEPS=${GPU_CHECK_STEPS:-20000}
WORKERS=${GPU_CHECK_WORKERS:-4}
RUNS=$(absolute "${GPU_CHECK_RUNS:-/tmp/gpu_check}")
REPORT=${GPU_CHECK_REPORT:+$(absolute "$GPU_CHECK_REPORT")}
PY=${GPU_CHECK_PYTHON:-python3}
NAME=gpu_check
cd "$REPO"
started=$(date +%s)

for setting in SECONDS_BUDGET LIMIT; do
    [[ ${!setting} =~ ^[0-9]+$ ]] || die "GPU_CHECK_SECONDS and GPU_CHECK_LIMIT are whole seconds, got '${!setting}'"
done
[[ -f $DATA/index.json ]] ||
    die "no preprocess OUT at $DATA (no index.json); run python benchmarks/gpu_carry.py or set GPU_CHECK_DATA"
command -v "$PY" >/dev/null || die "no Python interpreter '$PY' (GPU_CHECK_PYTHON)"

# 1. Install, only when a module does not import: every carried wheel whose distribution is
# not installed yet, and carried dependencies whose installed version is too old for them
# (benchmarks/gpu_check_wheels.py); --no-deps so pip never reaches for an index, into a
# folder of its own put first on PYTHONPATH, so the machine's environment stays as it was.
missing_modules() {
    # shellcheck disable=SC2086  # one argument per module
    "$PY" - $MODULES 2>/dev/null <<'EOF' | tail -n 1
import importlib
import sys

missing = []
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception:
        missing.append(name)
print(" ".join(missing))
EOF
}
missing=$(missing_modules) || die "cannot run $PY to probe which modules import"
if [[ -n $missing ]]; then
    [[ -d $WHEELS ]] || die "cannot import $missing, and there is no wheel folder $WHEELS"
    chosen=$("$PY" benchmarks/gpu_check_wheels.py "$WHEELS") ||
        die "benchmarks/gpu_check_wheels.py could not choose the wheels of $WHEELS"
    mapfile -t wheels <<<"$chosen"
    [[ -n $chosen ]] || wheels=()
    ((${#wheels[@]})) || die "cannot import $missing, and $WHEELS holds no wheel that is not installed already"
    echo "installing ${#wheels[@]} carried wheels for: $missing"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" "${wheels[@]}" >/dev/null || die "pip could not install the wheels from $WHEELS"
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
    still=$(missing_modules) || die "cannot run $PY to probe which modules import"
    [[ -z $still ]] || die "still cannot import $still after installing the wheels of $WHEELS"
fi
install_done=$(date +%s)
echo "modules present: $MODULES ($((install_done - started)) s)"

# 2. Train under the wall budget, one validation at the end. The full log goes to a file:
# its progress bar would bury the summary.
flags=(--deepspeed-config ds_config.json --data-dir "$DATA" --checkpoint-dir "$RUNS"
    --experiment-name "$NAME" --model-config "$MODEL" --max-steps "$STEPS"
    --max-seconds "$SECONDS_BUDGET" --val-every 0 --num-workers "$WORKERS")
[[ -n ${GPU_CHECK_BATCH:-} ]] && flags+=(--batch-size "$GPU_CHECK_BATCH")
[[ ${GPU_CHECK_COMPILE:-0} == 1 ]] && flags+=(--compile)
# shellcheck disable=SC2206  # word-split on purpose: a list of flags
flags+=(${GPU_CHECK_ARGS:-})
rm -rf "${RUNS:?}/$NAME"
mkdir -p "$RUNS/$NAME"
log=$RUNS/$NAME.log
# What is left of GPU_CHECK_LIMIT, less 10 s for the summary: start-up, the final validation
# (a second compilation with --compile: eval mode, whole segments), checkpoint and export
# must fit in it beside the budget.
limit=$((LIMIT - (install_done - started) - 10))
((limit > SECONDS_BUDGET)) || die "GPU_CHECK_LIMIT $LIMIT s leaves no room past GPU_CHECK_SECONDS $SECONDS_BUDGET s"
echo "training $MODEL for up to $SECONDS_BUDGET s (log: $log)"
status=0
PYTHONUNBUFFERED=1 timeout --kill-after 15 "$limit" "$PY" train_ds.py "${flags[@]}" >"$log" 2>&1 || status=$?
train_done=$(date +%s)
if ((status != 0)); then
    [[ -n $REPORT ]] && mkdir -p "$REPORT" && cp "$log" "$REPORT/train.log"
    tail -n 25 "$log" >&2
    ((status == 124 || status == 137)) &&
        die "training stopped at $limit s, the rest of the $LIMIT s limit of the whole check (GPU_CHECK_LIMIT); full log: $log"
    die "training failed (exit $status); full log: $log"
fi

# 3. The summary, read from metrics.json and run_config.json.
summary=$("$PY" benchmarks/gpu_check_summary.py "$RUNS/$NAME") || exit 2
echo "$summary"
echo "gpu_check: done in $((train_done - started)) s (install $((install_done - started)) s, training $((train_done - install_done)) s)"
if [[ -n $REPORT ]]; then
    mkdir -p "$REPORT"
    echo "$summary" >"$REPORT/summary.txt"
    cp "$RUNS/$NAME"/{metrics.json,run_config.json,curves.png} "$REPORT"/
    cp "$log" "$REPORT/train.log"
fi
