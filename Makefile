# The two commands of the README. Both set everything up first (scripts/setup.sh, idempotent).
VENV ?= .venv
OUT ?= out/demo

.PHONY: setup demo test bench

setup:
	bash scripts/setup.sh

## Detect loop closures in the embedded Corridor sequence (multi-session) and report precision/recall.
demo: setup
	OMP_WAIT_POLICY=PASSIVE $(VENV)/bin/vpr-ros demo --out $(OUT)

## The whole test suite, inside a private network namespace (only loopback) so no DDS packet leaves;
## then the ROS-free core tests again with numpy 1.26 (.venv-np126, the ROS-distribution set).
test: setup
	bash scripts/test.sh
	bash scripts/test_np126.sh

bench: setup
	OMP_WAIT_POLICY=PASSIVE $(VENV)/bin/vpr-ros bench pipeline
