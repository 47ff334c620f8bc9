#!/usr/bin/env bash
# Set up (see .ci/setup) and run the linter and the whole test suite, slow tests included.
# --quick: everything not marked slow (no real training runs, no `python -m st_hpo` processes), for a warm
# .venv while working; the whole suite is what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
select=""
if [ "${1:-}" = "--quick" ]; then
  shift
  select=" and not slow"
fi
bash .ci/setup
.venv/bin/ruff check src tests studies examples benchmarks
# PostgreSQL (used by the multi-machine tests) is started by the machine; start it if it is not.
if command -v pg_ctlcluster >/dev/null && ! pg_isready -q -h 127.0.0.1 2>/dev/null; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
fi
# The tests marked serial (signals, kills, timeouts, several processes) run alone, after the others, which
# run two at a time (pytest-xdist; TEST_WORKERS=0: one at a time, in pytest's process). Each test's torch
# uses one thread unless OMP_NUM_THREADS says otherwise, so that two tests do not oversubscribe 2 cores.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
phase() {  # pytest's exit code 5 is "no test selected": a test path given here may hold only one kind
  local rc=0
  .venv/bin/python -m pytest -q --durations=15 "$@" || rc=$?
  [ "$rc" = 0 ] || [ "$rc" = 5 ]
}
failed=0
phase -n "${TEST_WORKERS:-2}" --dist worksteal -m "not serial$select" "$@" || failed=1
phase -m "serial$select" "$@" || failed=1
exit "$failed"
