# Two entry points for a fresh machine (Debian/Ubuntu, Python >= 3.11, run as root for the lab):
#   make demo   the main job on the built-in local lab fleet
#   make test   the whole test suite
#   make bench  tier_basic against Ansible on lab hosts, by fleet size, and the older rows (BENCH_ARGS=--reps 1)
#   make mutate mutation scores of the safety-critical modules (slow; not part of `make test`)
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test runtime bench mutate clean

$(BIN)/.installed: pyproject.toml ops/pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ./ops -e '.[test]'
	touch $@

# the lab fleet (7 hosts, one per profile), its artifacts, preflight, then the basic tier on every host that fits;
# cpu-small is in the lab to be refused by preflight, so the deploy leaves it out
demo: runtime
	$(BIN)/tierfleet lab up --publish
	-$(BIN)/tierfleet preflight -i inventory/lab.py --data tier=basic
	$(BIN)/pyinfra -y inventory/lab.py deploys/tier_basic.py --exclude cpu-small
	$(BIN)/tierfleet lab status

# llama.cpp's llama-server, built once from the llama-cpp-python sdist (4-10 min on 2 cores), then cached
runtime: $(BIN)/.installed
	$(BIN)/python -m tierfleet.artifacts.llama_build .cache/runtime

test: runtime
	$(BIN)/pytest

# prints the table, writes bench/results/bench.{json,png,txt}
bench: runtime
	$(BIN)/python -m bench.harness $(BENCH_ARGS)

# seeded mutants (60 per module) of the sysfs allowlist, selector, topology, preflight and release operations,
# each run against the module's own tests on a copy of the tree; prints the score per module and the survivors.
# Run before resolving an issue that touches those modules. Options: MUTATE_ARGS="-m selector --sample 30"
mutate: $(BIN)/.installed
	$(BIN)/python bench/mutate.py $(MUTATE_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
