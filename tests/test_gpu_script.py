"""scripts/train_bundled_gpu.sh at tiny scale on the CPU: every stage runs, the bundle it packs loads back."""

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
    from shanshui.pipelines.text_to_video import load_pipeline

    env = {**os.environ, "SHANSHUI_RUNS": str(tmp_path / "runs"), "PYTHON": sys.executable,
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
    assert stages == ["data", "stage1_base", "ablation", "stage1", "stage2", "stage2_ablations", "control", "export"]
    assert summary["control_ok"] is True

    # the three objectives really trained with their own parameterisation, on copies of one base run
    runs = tmp_path / "runs" / "bundled2-tiny"
    for name, pred in (("eps", "epsilon"), ("v", "v_prediction"), ("vminsnr", "v_prediction")):
        cfg = json.loads((runs / f"stage1-{name}" / "model" / "scheduler" / "scheduler_config.json").read_text())
        assert cfg["prediction_type"] == pred
    assert (runs / "stage2-sc-off" / "final" / "motion_module.safetensors").is_file()
    assert (runs / "stage2-con-off" / "final" / "motion_module.safetensors").is_file()

    # the split parts reassemble into the exported bundle; every file is under 16 MiB; it generates
    parts = sorted(res.glob("bundle.tar.part*"))
    assert parts and all(p.stat().st_size <= 15 * 2**20 for p in parts)
    tar_path = tmp_path / "bundle.tar"
    tar_path.write_bytes(b"".join(p.read_bytes() for p in parts))
    with tarfile.open(tar_path) as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    bundle = tmp_path / "unpacked" / "bundle"
    assert all(f.stat().st_size <= 16 * 2**20 for f in bundle.rglob("*") if f.is_file())
    sched = json.loads((bundle / "scheduler" / "scheduler_config.json").read_text())
    assert sched["prediction_type"] == ("epsilon" if summary["winner"] == "eps" else "v_prediction")
    pipe = load_pipeline(bundle, bundle / "motion_module.safetensors")
    assert pipe.scheduler.config.prediction_type == sched["prediction_type"]
    frames = pipe("red sun", num_frames=4, num_inference_steps=2, seed=0, progress=False).frames[0]
    assert frames.shape[0] == 4 and 0.0 <= frames.min() and frames.max() <= 1.0
