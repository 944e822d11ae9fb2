# Every target makes .venv itself when it is missing, so a fresh clone needs nothing else.
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: test demo bench clean

$(PY):
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# A stamp per extra: reinstall only when pyproject.toml changes.
$(VENV)/.installed-%: pyproject.toml | $(PY)
	$(PIP) install -q -e ".[$*]"
	touch $@

# One pytest worker per core (pytest-xdist); a run that several tests read is made once
# for all workers (the once_per_session fixture in tests/conftest.py).
test: $(VENV)/.installed-test
	$(PY) -m pytest -n auto

demo: $(VENV)/.installed-examples
	$(PY) examples/overfitting.py

bench: $(VENV)/.installed-bench
	$(PY) -m benchmarks.run

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis out
