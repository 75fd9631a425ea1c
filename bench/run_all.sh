#!/usr/bin/env bash
# Every benchmark of issue 11 and its variants, one after another, on a QUIET machine
# (nothing else running: the reports print "other load"). Takes about 1.5-2 hours, most of
# it the peak runs' drain and the 10-minute soak. Writes bench/results/latest-*.json, then
# prints one summary table (bench/summary.py). Exit code 1 if any benchmark failed to run.
#
#   bench/run_all.sh                       # everything
#   BENCH_PG=postgresql+asyncpg://postgres@127.0.0.1/notigate_bench bench/run_all.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
OUT=bench/results
PG=${BENCH_PG:-postgresql+asyncpg://postgres@127.0.0.1/notigate_bench}
mkdir -p "$OUT"
status=0
reports=()

run() {  # run NAME MODULE ARGS...: one benchmark, its report in $OUT/latest-NAME.json
    local name=$1
    shift
    echo
    echo "=== $name: $* ($(date -u +%H:%M:%S) UTC)"
    if "$PY" -m "$@" --output "$OUT/latest-$name.json"; then
        reports+=("$OUT/latest-$name.json")
    else
        echo "!!! $name exited $?" >&2
        status=1
    fi
}

run policy bench.policy
run delivery bench.delivery
run intake bench.intake --parts throughput redis baseline peak
run intake-soak bench.intake --parts soak
run intake-2api-2workers bench.intake --parts throughput peak --api-processes 2 --workers 2
# PostgreSQL: a database of the bench's own (its tables are emptied), created if missing.
psql "${PG/+asyncpg/}" -c 'select 1' >/dev/null 2>&1 ||
    createdb -h 127.0.0.1 -U postgres "${PG##*/}"
run intake-postgres bench.intake --parts throughput peak --database-url "$PG"

echo
echo "=== summary"
"$PY" -m bench.summary "${reports[@]}"
exit $status
