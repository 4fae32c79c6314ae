# Two commands: `make demo` and `make test`. Both start with `make setup` (idempotent).
SHELL := /bin/bash
VENV := .venv
RUN := . $(VENV)/bin/activate && . scripts/ros_env.sh &&

.PHONY: setup demo test bench clean
setup:
	@bash scripts/setup.sh

demo: setup
	@$(RUN) fmdrive demo --out runs/demo

test: setup
	@$(RUN) python -m pytest -q tests

bench: setup
	@$(RUN) for b in sim transport pipeline; do fmdrive bench $$b --quick --json; done

clean:
	rm -rf runs .pytest_cache
