#!/usr/bin/env bash
# README's wall-clock figures, measured the way a new user meets them: each run starts
# from a fresh clone of this repository's committed HEAD (no runs/, no caches: a private
# TMPDIR, so jieba's dictionary cache is rebuilt too) and runs README's commands exactly
# as written:
#   the install:     pip install -e '.[cpu,examples]'   (skipped with --venv)
#   the main job:    python examples/seq2seq_autotitle.py
#   KgCLUE example:  python examples/kgclue_qa.py
# It prints every wall time and, per command, the range over the runs (min - max), with
# the load average before and after each command, so a figure can be labelled "quiet"
# or "loaded". Run it on a quiet machine (nothing else running) for README's figures.
#
# Usage: bash bench/readme_timings.sh [--runs N] [--venv PATH] [--keep]
#   --runs N     runs per command (default 2; README states a range over at least two)
#   --venv PATH  use this existing virtual environment instead of a fresh one with
#                README's pip install (e.g. on a machine without network access);
#                the clone is put first on PYTHONPATH so the clone's code is what runs
#   --keep       keep the temporary clones (their runs/ hold the examples' outputs)
# The shared data (KgCLUE) is read from $KERASNLP_PLUS_SHARED_DATA, else from
# ../shared/data beside this repository, as README says.
set -euo pipefail

RUNS=2
VENV=""
KEEP=0
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS="$2"; shift 2 ;;
        --venv) VENV="$(cd "$2" && pwd)"; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "readme_timings.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
case "$RUNS" in ''|*[!0-9]*|0) echo "readme_timings.sh: --runs must be a positive integer, got '$RUNS'" >&2; exit 2 ;; esac

REPO="$(cd "$(dirname "$0")/.." && pwd)"
SHARED="${KERASNLP_PLUS_SHARED_DATA:-$REPO/../shared/data}"
if [ ! -d "$SHARED/kgclue" ]; then
    echo "readme_timings.sh: no KgCLUE data at $SHARED/kgclue; set KERASNLP_PLUS_SHARED_DATA" >&2
    exit 1
fi
SHARED="$(cd "$SHARED" && pwd)"
if ! git -C "$REPO" diff --quiet HEAD; then
    echo "readme_timings.sh: note: uncommitted changes in $REPO are NOT in the clone (HEAD is measured)" >&2
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/readme_timings.XXXXXX")"
cleanup() { if [ "$KEEP" = 1 ]; then echo "clones kept in $WORK"; else rm -rf "$WORK"; fi; }
trap cleanup EXIT
RESULTS="$WORK/results.tsv"
: > "$RESULTS"

load() { cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || uptime | sed 's/.*average[s]*: //'; }

# timed NAME RUN LOG COMMAND...: runs COMMAND in the current directory, appends
# "NAME<TAB>seconds" to the results, fails loudly (with the log's tail) if it fails.
timed() {
    local name="$1" run="$2" log="$3"; shift 3
    local before start end status=0
    before="$(load)"
    start="$(date +%s.%N)"
    "$@" > "$log" 2>&1 || status=$?
    end="$(date +%s.%N)"
    local secs
    secs="$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')"
    echo "run $run  $name: ${secs} s  (load average before: $before; after: $(load))"
    if [ "$status" != 0 ]; then
        echo "readme_timings.sh: '$name' failed with status $status in run $run; last lines of $log:" >&2
        tail -n 30 "$log" >&2
        exit 1
    fi
    printf '%s\t%s\n' "$name" "$secs" >> "$RESULTS"
}

echo "machine: $(nproc) cores; measuring $(git -C "$REPO" rev-parse --short HEAD); $RUNS run(s) per command"
for run in $(seq 1 "$RUNS"); do
    CLONE="$WORK/run$run/kerasnlp_plus"
    mkdir -p "$WORK/run$run/tmp"
    git clone -q --no-local "$REPO" "$CLONE"
    cd "$CLONE"
    export TMPDIR="$WORK/run$run/tmp" KERASNLP_PLUS_SHARED_DATA="$SHARED"
    if [ -z "$VENV" ]; then
        python3 -m venv "$WORK/run$run/venv"
        # shellcheck disable=SC1091
        . "$WORK/run$run/venv/bin/activate"
        timed "install: pip install -e '.[cpu,examples]'" "$run" "$WORK/run$run/install.log" \
            pip install -q -e '.[cpu,examples]'
        unset PYTHONPATH
    else
        # shellcheck disable=SC1091
        . "$VENV/bin/activate"
        export PYTHONPATH="$CLONE"
    fi
    timed "main job: python examples/seq2seq_autotitle.py" "$run" "$WORK/run$run/autotitle.log" \
        python examples/seq2seq_autotitle.py
    timed "KgCLUE: python examples/kgclue_qa.py" "$run" "$WORK/run$run/kgclue.log" \
        python examples/kgclue_qa.py
    deactivate
    cd "$REPO"
done

echo
echo "wall time over $RUNS fresh-clone run(s) (min - max):"
awk -F'\t' '{
    if (!($1 in lo) || $2 + 0 < lo[$1]) lo[$1] = $2 + 0
    if (!($1 in hi) || $2 + 0 > hi[$1]) hi[$1] = $2 + 0
    if (!($1 in seen)) { order[++n] = $1; seen[$1] = 1 }
} END {
    for (i = 1; i <= n; i++) {
        k = order[i]
        printf "  %s: %dm%02ds - %dm%02ds\n", k, lo[k] / 60, lo[k] % 60, hi[k] / 60, hi[k] % 60
    }
}' "$RESULTS"
