#!/usr/bin/env bash
# The whole test run: lint, generated code freshness, unit, integration, end-to-end
# (real Docker: the kubelet) and chaos tests.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1

make -s lint
make -s proto-check
python3 -m pytest tests/unit -q
python3 -m pytest tests/integration -q
python3 -m pytest tests/e2e -q
# The store's chaos for a minute, then the whole cluster's for five (issue [8/8]).
SKIFF_CHAOS_SECONDS="${SKIFF_CHAOS_SECONDS:-60}" \
  SKIFF_CLUSTER_CHAOS_SECONDS="${SKIFF_CLUSTER_CHAOS_SECONDS:-300}" \
  python3 -m pytest tests/chaos -q -s
