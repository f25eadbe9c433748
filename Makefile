# Shanshui — every set-up step lives here, so that a fresh machine with only Python can run
# `make demo` or `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PROMPT ?= Mountains, dense fog, red sun, boat on the lake, flying birds.
OUT    ?= out

.PHONY: install demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned: it resolves to the local CPU build; a loose requirement pulls CUDA wheels.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/shanshui demo --prompt "$(PROMPT)" --out $(OUT)

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -n 2 -q tests

bench: $(STAMP)
	$(PY) benchmarks/t2v_speed.py

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache
