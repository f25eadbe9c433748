"""scripts/train_bundled_gpu.sh at tiny scale on the CPU: every stage runs (with two extensions, as the shipped
model was made), the bundle it packs loads back."""

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bundled_gpu_script_runs_every_stage_at_tiny_scale(tmp_path):
    import torch
    from safetensors.torch import load_file

    from shanshui.pipelines.text_to_video import load_pipeline

    env = {**os.environ, "SHANSHUI_RUNS": str(tmp_path / "runs"), "PYTHON": sys.executable, "EXTEND": "6:2 8:3",
           "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    res = tmp_path / "results"
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "train_bundled_gpu.sh"), str(res), "tiny"], env=env,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((res / "summary.json").read_text())
    ablation = json.loads((res / "stage1_ablation.json").read_text())
    assert summary["winner"] == ablation["winner"] in ("eps", "v", "vminsnr")
    assert summary["stage2_ablations_ok"] is True
    stages = list(summary["seconds_at_end_of"])
    assert stages == ["data", "stage1_base", "ablation", "stage1", "stage2", "stage2_ablations", "control",
                      "extensions", "export"]
    # the control model trained on the first image model is left out of a bundle made from a later one
    assert summary["control_ok"] is False and (tmp_path / "runs" / "bundled2-tiny" / "control" / "final").is_dir()
    assert summary["extended_to_unet_steps"] == [6, 8]

    # the three objectives really trained with their own parameterisation, on copies of one base run
    runs = tmp_path / "runs" / "bundled2-tiny"
    for name, pred in (("eps", "epsilon"), ("v", "v_prediction"), ("vminsnr", "v_prediction")):
        cfg = json.loads((runs / f"stage1-{name}" / "model" / "scheduler" / "scheduler_config.json").read_text())
        assert cfg["prediction_type"] == pred
    assert (runs / "stage2-sc-off" / "final" / "motion_module.safetensors").is_file()
    assert (runs / "stage2-con-off" / "final" / "motion_module.safetensors").is_file()

    # extensions: the UNet continued to 6 then 8 steps (snapshots), stage 2 on each, the second warm-started
    win = summary["winner"]
    log = [json.loads(line) for line in (runs / f"stage1-{win}" / "log.jsonl").read_text().splitlines()]
    assert max(row["step"] for row in log if row.get("phase") == "unet") == 8
    for steps in (6, 8):
        assert (runs / f"stage1-{win}" / f"model-{steps}" / "unet").is_dir(), steps
    unet6 = load_file(str(next((runs / f"stage1-{win}" / "model-6" / "unet").glob("*.safetensors"))))
    unet8 = load_file(str(next((runs / f"stage1-{win}" / "model-8" / "unet").glob("*.safetensors"))))
    assert any(not torch.equal(unet6[k], unet8[k]) for k in unet6)                 # two different snapshots
    config6 = (runs / "stage2-6" / "config.yaml").read_text()
    config8 = (runs / "stage2-8" / "config.yaml").read_text()
    assert "stage2-6/final/motion_module.safetensors" in config8 and "motion_module: null" in config6
    assert "max_steps: 3" in config8 and "model-8" in config8
    for arm, key in (("base", None), ("sc-off", "sparse_causal: 'off'"), ("con-off", "lambda_con: 0.0")):
        config = (runs / f"stage2-8-abl-{arm}" / "config.yaml").read_text()
        assert "model-8" in config and "motion_module: null" in config and "max_steps: 3" in config
        if key:
            assert key in config, (arm, config)
    assert summary["bundle"].endswith("bundle-8")

    # the split parts reassemble into the exported bundle; every file is under 16 MiB; it generates
    parts = sorted(res.glob("bundle.tar.part*"))
    assert parts and all(p.stat().st_size <= 15 * 2**20 for p in parts)
    tar_path = tmp_path / "bundle.tar"
    tar_path.write_bytes(b"".join(p.read_bytes() for p in parts))
    with tarfile.open(tar_path) as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    bundle = tmp_path / "unpacked" / "bundle-8"
    mm_state = load_file(str(bundle / "motion_module.safetensors"))
    trained = load_file(str(runs / "stage2-8" / "final" / "motion_module.safetensors"))
    assert mm_state.keys() == trained.keys()
    assert all(torch.equal(mm_state[k], trained[k].half()) for k in trained)      # the last extension's module
    assert all(f.stat().st_size <= 16 * 2**20 for f in bundle.rglob("*") if f.is_file())
    for cfg in bundle.glob("*/config.json"):                  # no path of the exporting machine is shipped
        assert "_name_or_path" not in json.loads(cfg.read_text()), cfg
    sched = json.loads((bundle / "scheduler" / "scheduler_config.json").read_text())
    assert sched["prediction_type"] == ("epsilon" if summary["winner"] == "eps" else "v_prediction")
    pipe = load_pipeline(bundle, bundle / "motion_module.safetensors")
    assert pipe.scheduler.config.prediction_type == sched["prediction_type"]
    frames = pipe("red sun", num_frames=4, num_inference_steps=2, seed=0, progress=False).frames[0]
    assert frames.shape[0] == 4 and 0.0 <= frames.min() and frames.max() <= 1.0
