# Every target creates .venv on first use. torch is installed before the package so
# that pip takes the pinned CPU wheel where one is offered, not a multi-GB CUDA build.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0

.PHONY: venv test test-gpu demo bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)" || $(PY) -m pip install -q "torch>=2.4"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

venv: $(VENV)/.installed

test: venv
	$(PY) -m pytest -q -m "not gpu"

test-gpu: venv
	$(PY) -m pytest -q -m gpu

demo: venv
	$(VENV)/bin/flowvid path-stats -c configs/demo.yaml

bench: venv
	$(PY) tools/bench_path.py

clean:
	rm -rf $(VENV) outputs lightning_logs .pytest_cache
