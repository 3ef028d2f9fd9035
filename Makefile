# Skiff: the two commands of the README are `make up` and `make test`.
PYTHON ?= python3
PROTOS := $(shell find proto -name '*.proto' | sort)

.PHONY: install up down status test proto proto-check lint bench

install:
	./scripts/install.sh

# Ends with what `skiff up` prints: where the cluster is and the curl that answered.
# SKIFF_NODES=2 (and the other SKIFF_* settings of the README) pass through.
up: install
	$(PYTHON) -m skiff.cli.cluster up

down:
	$(PYTHON) -m skiff.cli.cluster down

status:
	$(PYTHON) -m skiff.cli.cluster status

test: install
	./scripts/test.sh

# Generated code lands next to the package it belongs to (proto/skiff/... ->
# skiff/...), with absolute imports, and is committed.
proto:
	$(PYTHON) -m grpc_tools.protoc -Iproto --python_out=. --pyi_out=. --grpc_python_out=. $(PROTOS)

# Fails when the committed generated code is not what `make proto` writes.
proto-check:
	@rm -rf .proto-check && mkdir -p .proto-check
	@$(PYTHON) -m grpc_tools.protoc -Iproto --python_out=.proto-check --pyi_out=.proto-check --grpc_python_out=.proto-check $(PROTOS)
	@cd .proto-check && find . -type f | sort | while read f; do \
	  cmp -s "$$f" "../$$f" || { echo "stale generated code: $$f (run make proto)"; exit 1; }; done
	@rm -rf .proto-check

# Style (ruff), then the import layering (lint-imports; contracts in pyproject.toml).
lint:
	ruff check .
	lint-imports --no-logo

bench:
	$(PYTHON) bench/store.py --start all
