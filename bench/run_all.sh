#!/usr/bin/env bash
# Every benchmark, one after the other (PostgreSQL and Redis on loopback needed for store and levers).
set -euo pipefail
cd "$(dirname "$0")"
PY=../.venv/bin/python
for b in bench_core.py bench_engine.py bench_levers.py bench_pipeline.py bench_replay.py bench_evaluate.py bench_sources.py bench_store.py; do
  echo "== $b"; $PY "$b"
done
