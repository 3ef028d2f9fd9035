#!/usr/bin/env bash
# The whole test run: lint, generated code freshness, unit, integration, end-to-end
# (real Docker: the kubelet) and chaos tests.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1

ruff check .
make -s proto-check
python3 -m pytest tests/unit -q
python3 -m pytest tests/integration -q
python3 -m pytest tests/e2e -q
SKIFF_CHAOS_SECONDS="${SKIFF_CHAOS_SECONDS:-60}" python3 -m pytest tests/chaos -q -s
