#!/usr/bin/env bash
# Every benchmark, one after the other (PostgreSQL and Redis on loopback needed for store and levers).
# Issue 18's comparison against an earlier commit: BASELINE=/path/to/checkout bash bench/run_all.sh
# (a plain checkout, e.g. `git archive <commit> | tar -x -C /tmp/base`); bench_speed.py then alternates the two.
set -euo pipefail
cd "$(dirname "$0")"
PY=../.venv/bin/python
for b in bench_core.py bench_engine.py bench_levers.py bench_pipeline.py bench_universe.py bench_replay.py bench_evaluate.py bench_sources.py bench_store.py; do
  echo "== $b"; $PY "$b"
done
echo "== bench_speed.py (issue 18)"
if [ -n "${BASELINE:-}" ]; then
  $PY bench_speed.py --baseline "$BASELINE" --repeat 5
else
  $PY bench_speed.py --repeat 5
fi
