#!/usr/bin/env bash
# The GPU checks of issue 3 in one command, for a lent GPU machine (the device tool):
#   1. the CUDA tests (every method end to end on CUDA against its CPU run, placement tests);
#   2. sim1 at full size, LoREIN (or METHODS) end to end on the GPU (target: at most 5 minutes);
#   3. sim2 at full size, LoREIN end to end (target: at most 15 minutes), in the time left of
#      LIMIT seconds (STEPS2 runs only that many optimisation steps; the row then estimates the
#      configured run as warm-up + steps x seconds per step).
# Rows go to docs/BENCHMARKS.md (section full_size); logs, records and the updated file are packed
# into $OUT/gpu-check.tgz after each stage, so a run stopped at its time limit still returns what
# it finished. A failed CUDA test does not stop the full runs (it may be a tolerance).
#
# Usage (repository root):  OUT=/tmp/gpu bash benchmarks/gpu_check.sh
# Other methods too:        METHODS="lorein summit lrt fit" ... (default: lorein; each method
#                           of stage 3 may take the whole time left, so LIMIT bounds one run)
# Dry run on a CPU:         DEVICE=cpu SIM1=sim1-small SIM2=sim2-small STEPS1=3 STEPS2=3 ...
# Wheels of packages the machine lacks may lie in .whl/ (installed to /tmp/site first).
set -u
OUT=${OUT:-/tmp/gpu-check}
DEVICE=${DEVICE:-cuda}
SIM1=${SIM1:-sim1}
SIM2=${SIM2:-sim2}
R1=${R1:-27}
R2=${R2:-160}
STEPS1=${STEPS1:-}
STEPS2=${STEPS2:-}
LIMIT=${LIMIT:-570}
WORK=${WORK:-benchmarks/work-gpu}
METHODS=${METHODS:-lorein}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT" "$WORK"
LOG="$OUT/gpu-check.log"
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

pack() {
    tar czf "$OUT/gpu-check.tgz" docs/BENCHMARKS.md \
        $(find "$WORK" \( -name '*.json' -o -name '*.log' -o -name '*.png' -o -name '*.toml' \) \
            -not -path '*/checkpoint*')
}

if compgen -G ".whl/*.whl" >/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
{
    date -u
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
        --format=csv,noheader
    "$PYTHON" -c "import sys, torch; print(sys.version.split()[0], torch.__version__, \
torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU', \
torch.get_num_threads(), 'threads')"
} 2>&1 | tee "$LOG"

echo "== stage 1: CUDA tests" | tee -a "$LOG"
start=$SECONDS
if [ "$DEVICE" = cuda ]; then
    "$PYTHON" -m pytest -q -p no:cacheprovider -m cuda tests 2>&1 | tee -a "$LOG"
    status=${PIPESTATUS[0]}
    echo "stage 1: rc $status, $((SECONDS - start)) s" | tee -a "$LOG"
    pack
fi

run_full() {  # preset R steps timeout
    local steps=()
    [ -n "$3" ] && steps=(--iterations "$3")
    start=$SECONDS
    "$PYTHON" benchmarks/full_size.py --preset "$1" --R "$2" --methods $METHODS --device "$DEVICE" \
        --workdir "$WORK" --quiet --timeout-s "$4" "${steps[@]}" 2>&1 | tee -a "$LOG"
    echo "$1 R = $2: rc ${PIPESTATUS[0]}, $((SECONDS - start)) s" | tee -a "$LOG"
    pack
}
echo "== stage 2: $SIM1 R = $R1, $METHODS on $DEVICE" | tee -a "$LOG"
run_full "$SIM1" "$R1" "$STEPS1" 270
echo "== stage 3: $SIM2 R = $R2, $METHODS on $DEVICE, ${STEPS2:-all} steps" | tee -a "$LOG"
run_full "$SIM2" "$R2" "$STEPS2" $((LIMIT - SECONDS))
