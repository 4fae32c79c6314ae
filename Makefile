# Two commands: `make demo` and `make test`. Both start with `make setup` (idempotent).
SHELL := /bin/bash
VENV := .venv
RUN := . $(VENV)/bin/activate && . scripts/ros_env.sh &&

.PHONY: setup demo test fuzz bench clean
setup:
	@bash scripts/setup.sh

demo: setup
	@$(RUN) fmdrive demo --out runs/demo -p planner.primary:=llm -p lidar_encoder.backend:=onnxruntime

# The suite fuzzes every input topic with 200 derandomised messages (about 2 minutes); `make fuzz`
# runs the issue's 1000 per topic (about 7 minutes); scripts/fuzz_nodes.sh runs more from a seed.
test: setup
	@$(RUN) FMDRIVE_FUZZ_EXAMPLES=$${FMDRIVE_FUZZ_EXAMPLES:-200} python -m pytest -q tests

fuzz: setup
	@$(RUN) FMDRIVE_FUZZ_EXAMPLES=1000 python -m pytest -q -p no:cacheprovider tests/test_fuzz.py

bench: setup
	@$(RUN) for b in sim transport pipeline; do fmdrive bench $$b --quick --json; done

clean:
	rm -rf runs .pytest_cache
