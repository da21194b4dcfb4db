# Two entry points for a fresh machine (Debian/Ubuntu, Python >= 3.11, run as root for the lab):
#   make demo   the main job on the built-in local lab fleet
#   make test   the whole test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test bench clean

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/tierfleet preflight -i inventory/local.py

test: $(BIN)/.installed
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .pytest_cache
