"""benchmarks/gpu_check.sh must not break: its tiny CPU mode runs every section of the real GPU check."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(sys.platform == "win32", reason="bash script")
def test_gpu_check_script_tiny_run(tmp_path):
    out = tmp_path / "gpu"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1",
           "SHANSHUI_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(out), "--tiny"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((out / "gpu_check.json").read_text())
    sections = result["sections"]
    assert set(sections) == {"memory_default", "speed", "memory_split", "memory_low_vram", "train", "sofp"}
    assert not [k for k, v in sections.items() if "error" in v]
    assert result["meta"]["tiny"] and result["meta"]["dtype"] == "bf16"
    assert sections["memory_default"]["frames_finite"] and sections["memory_low_vram"]["frames_finite"]
    speed = sections["speed"]
    assert speed["ours"]["s_per_step_median"] > 0 and speed["peer"]["s_per_step_median"] > 0
    assert speed["ratio_time_ours_over_peer"] == pytest.approx(
        speed["ours"]["s_per_step_median"] / speed["peer"]["s_per_step_median"])
    train = sections["train"]
    assert train["batch1"]["s_per_step_median"] > 0 and train["trainable_params_m"] > 0
    assert sections["sofp"]["generated_frames"] == 4 and sections["sofp"]["ms_per_generated_frame"] > 0
    md = (out / "gpu_check.md").read_text()
    for row in ("peak VRAM, default options", "peak VRAM, --low-vram", "time ratio ours/peer",
                "NADM training step", "SOFP ms per generated"):
        assert row in md
    assert "torch" in (out / "env.txt").read_text()
