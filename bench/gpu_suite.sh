#!/usr/bin/env bash
# Every GPU check of the project in one command, for a lent GPU machine (or any CUDA box with torch + triton):
# bench.kernels, bench.engine and bench.tts, then bench.report (the issues' targets against this run, also written to
# $OUT/report.md), then the GPU tests. Run it from the repository's root. Each step has its own time limit so that one
# hang cannot eat the others; logs and JSON go to $OUT (default bench/results/gpu).
#
#   OUT=/tmp/gpu bash bench/gpu_suite.sh [--dry-run] [steps...]    # steps: info kernels engine tts report tests
#                                                     (default: all); diag (bench.diag_speech_stream) only when named
#   --dry-run: prints each step's command and its time limit, runs none and writes nothing (no GPU needed): the
#   lent machine's minutes are not the place to find a typo in this script.
#
# A lent machine gives a session 15 minutes of device time in all (its start, ~1-2 min, included) and 600 s per
# command. Run it as two calls, the figures first (run5 on an H100: 6 + 82 + 75 + 80 s; the tests 134 s; the
# speech-stream fault's bisect ~240 s):
#   OUT=$OUT bash bench/gpu_suite.sh info kernels engine tts report     (<= 575 s: timeout_s 590)
#   OUT=$OUT bash bench/gpu_suite.sh tests diag                         (<= 500 s: timeout_s 540)
# then, on any machine (it only reads JSON), `python -m bench.report DIR` if the first call's report step was cut off.
# The engine and tts steps share one 7 GB TTS-3B checkpoint, written in the background while the kernels step runs;
# the first of them waits for it within its own time limit (what is left of it is the step's), and when the writer
# failed or did not finish in that time, both are skipped and the other steps run.
# Environment: OUT (where logs and JSON go), PY (the Python with torch + triton; default .venv/bin/python when there
# is one, else python3), CKPT (the checkpoint folder, default /tmp/stepaudio-rt-bench-tts3b), CKPT_WAIT (at most
# this many seconds of that step's limit go to the wait; default all of it). The exit status is 1
# when a step failed (summary.txt says which), 2 for an unknown step or no GPU.
set -u
dry=0
if [ "${1:-}" = "--dry-run" ]; then
    dry=1
    shift
fi
if [ ! -f bench/gpu_suite.sh ]; then  # PYTHONPATH and .venv are found from here; elsewhere it read as "no CUDA"
    echo "gpu_suite.sh: run it from the repository's root (cd there, then bash bench/gpu_suite.sh)" >&2
    exit 2
fi
OUT=${OUT:-bench/results/gpu}
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
if [ -z "${PY:-}" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
steps=${*:-info kernels engine tts report tests}
for step in $steps; do
    case $step in
    info|kernels|engine|tts|report|tests|diag) ;;
    *) echo "gpu_suite.sh: unknown step '$step' (steps: info kernels engine tts report tests diag)" >&2; exit 2 ;;
    esac
done
if [ "$dry" = 0 ] && [ "$steps" != "report" ] \
        && ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_suite.sh: $PY sees no CUDA device: these steps need a GPU (only 'report' reads JSON anywhere)" >&2
    exit 2
fi
[ "$dry" = 1 ] || mkdir -p "$OUT"
[ "$dry" = 1 ] || echo "# $(date -u +%FT%TZ): $steps" >>"$OUT/summary.txt"
CKPT=${CKPT:-/tmp/stepaudio-rt-bench-tts3b}
writer=""
if [[ " $steps " == *" engine "* || " $steps " == *" tts "* ]] && [ ! -d "$CKPT" ]; then
    # bench.checkpoint writes it aside and renames it when complete: a writer cut off leaves no partial $CKPT
    write_ckpt="import pathlib, bench.checkpoint as c; c.bench_checkpoint(pathlib.Path('$CKPT'), 'full-random')"
    if [ "$dry" = 1 ]; then
        echo "=== checkpoint writer (in the background, log $OUT/ckpt-writer.log): $PY -c \"$write_ckpt\""
    else
        $PY -c "$write_ckpt" >"$OUT/ckpt-writer.log" 2>&1 &
        writer=$!
    fi
fi

ckpt_missing=""  # why the engine and tts steps have no checkpoint, once the writer's wait says so
waited=0
wait_checkpoint() {  # wait_checkpoint SECONDS: waits at most that long (a hung writer must not eat the call)
    waited=0
    [ -n "$writer" ] || return 0
    local t0=$SECONDS
    echo "=== waiting for the checkpoint writer ($CKPT, at most ${1}s)" | tee -a "$OUT/suite.log"
    while kill -0 "$writer" 2>/dev/null && [ $((SECONDS - t0)) -lt "$1" ]; do sleep 1; done
    if kill -0 "$writer" 2>/dev/null; then
        # killed outright: it writes aside (a .part folder the next writer clears), so nothing half-written stays
        kill -KILL "$writer"
        wait "$writer"
        ckpt_missing="the writer was still writing after ${1}s and was stopped"
    elif ! wait "$writer"; then
        ckpt_missing="the writer failed ($OUT/ckpt-writer.log): $(tail -1 "$OUT/ckpt-writer.log")"
    fi
    writer=""
    waited=$((SECONDS - t0))
    if [ -n "$ckpt_missing" ]; then
        echo "checkpoint: $ckpt_missing" | tee -a "$OUT/suite.log"
        echo "checkpoint failed after ${waited}s: $ckpt_missing" >>"$OUT/summary.txt"
        failed=1
    fi
}

with_checkpoint() {  # with_checkpoint NAME SECONDS CMD...: run, the writer's wait taken out of the step's limit
    local name=$1 secs=$2 limit=${CKPT_WAIT:-$2}
    shift 2
    [ "$limit" -le "$secs" ] || limit=$secs
    [ "$dry" = 1 ] || wait_checkpoint "$limit"
    if [ -n "$ckpt_missing" ]; then
        echo "=== $name skipped: no checkpoint ($ckpt_missing)" | tee -a "$OUT/suite.log"
        echo "$name skipped: no checkpoint" >>"$OUT/summary.txt"
        failed=1
    elif [ "$waited" -ge "$secs" ]; then
        echo "=== $name skipped: the wait for the checkpoint took its whole ${secs}s" | tee -a "$OUT/suite.log"
        echo "$name skipped: the checkpoint wait took its ${secs}s" >>"$OUT/summary.txt"
        failed=1
    else
        run "$name" $((secs - waited)) "$@"
    fi
}

run() {  # run NAME SECONDS CMD...: tee to $OUT/suite.log, record the exit status
    local name=$1 secs=$2
    shift 2
    if [ "$dry" = 1 ]; then
        echo "=== $name (limit ${secs}s): $*"
        return
    fi
    echo "=== $name (limit ${secs}s): $*" | tee -a "$OUT/suite.log"
    local t0=$SECONDS
    timeout -k 10 "$secs" "$@" 2>&1 | tee -a "$OUT/suite.log"
    local rc=${PIPESTATUS[0]}
    echo "=== $name rc=$rc in $((SECONDS - t0))s" | tee -a "$OUT/suite.log"
    echo "$name rc=$rc $((SECONDS - t0))s" >>"$OUT/summary.txt"
    [ "$rc" = 0 ] || failed=1
}
failed=0
# The tests spread over 12 workers with pytest-xdist when it is installed (the lent machines have it)
xdist=$($PY -c "import xdist" 2>/dev/null && echo "-n 12")

for step in $steps; do
    case $step in
    info) run info 35 bash -c "nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm \
        --format=csv; $PY -c 'import torch, triton; print(torch.__version__, triton.__version__, \
        torch.cuda.get_device_name())'; git rev-parse HEAD 2>/dev/null || true" ;;
    # per-test timeout well inside the step's, so that pytest itself ends and prints every failure's reason. The
    # sm_90 compile checks need no GPU and CI runs them; here they were the step's longest test (every GEMV tile,
    # in one pass and K-split: ~2x run5's compile time, near the 150 s limit)
    tests) run tests 240 $PY -m pytest -v -rfE -p no:cacheprovider -o addopts= --import-mode=importlib -W ignore \
        --timeout 150 $xdist --ignore tests/kernels/test_compile_hopper.py tests/kernels \
        tests/lm_engine/test_engine_gpu.py \
        tests/speech_decoder/test_flow_graphs_gpu.py tests/speech_decoder/test_hift.py ;;
    kernels) run kernels 170 $PY -m bench.kernels --seqs 16384 --out "$OUT/kernels.json" ;;
    engine) with_checkpoint engine 170 $PY -m bench.engine --ckpt "$CKPT" --out "$OUT/engine.json" ;;
    tts) with_checkpoint tts 170 $PY -m bench.tts --tts-ckpt "$CKPT" --out "$OUT/tts.json" ;;
    report) run report 30 $PY -m bench.report "$OUT" ;;
    diag) run diag 260 $PY -m bench.diag_speech_stream --seconds 200 --out "$OUT/diag.json" ;;
    esac
done
[ "$dry" = 1 ] || cat "$OUT/summary.txt"
exit $failed
