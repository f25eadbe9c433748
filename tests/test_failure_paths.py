"""Failure paths (issue 18): every command that fails while writing its output — parent is a file, a folder it
may not write into, a disk that fills up (a small RLIMIT_FSIZE in a subprocess) — prints one line, exits 2,
leaves no partial file and no traceback; the NaN guard also catches inf and a non-finite L_con alone; an
interrupted save_motion_module keeps the previous file."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from shanshui.cli import main
from shanshui.errors import ShanshuiError
from shanshui.video_io import atomic_output, check_mp4_complete, write_video

ROOT = Path(__file__).resolve().parents[1]


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_model_files):
    """Inputs every command can read: a gif, a painting, a tiny dataset, the tiny model files, configs."""
    from PIL import Image

    from shanshui.flow.testscenes import render_scene

    root = tmp_path_factory.mktemp("inputs")
    write_video(render_scene("boat", 64, 4), root / "in.gif", fps=4)
    Image.fromarray(render_scene("mist", 64, 3)[0]).save(root / "painting.png")
    data = root / "data"
    data.mkdir()
    for k in range(2):
        write_video(render_scene("pan", 32, 6, seed=k), data / f"c{k}.gif")
        (data / f"c{k}.txt").write_text("misty peaks")
    assert main(["data", "synth", "--n", "1", "--out", str(root / "synth"), "--size", "32", "--frames", "4",
                 "--format", "frames", "--workers", "1"]) == 0
    (root / "prompts.txt").write_text("misty peaks\n")
    model, motion = tiny_model_files
    return {"root": root, "prompts": root / "prompts.txt", "gif": root / "in.gif", "painting": root / "painting.png", "data": data,
            "synth": root / "synth", "model": model, "motion": motion}


def unwritable_folder(tmp_path: Path) -> Path:
    """A folder this process cannot create files in: a read-only (0555) folder, or — when running as root,
    whom permission bits do not stop — /sys, which refuses new files even to root."""
    ro = tmp_path / "read-only"
    ro.mkdir()
    ro.chmod(0o555)
    for candidate in (ro, Path("/sys")):
        try:
            tempfile.TemporaryFile(dir=candidate).close()
        except OSError:
            return candidate
    pytest.skip("no folder here refuses new files")


def commands(w: dict, target: Path) -> dict[str, list[str]]:
    """Every command with its output placed at ``target`` (a path whose parent cannot be written)."""
    model = ["--model", str(w["model"]), "--motion-module", str(w["motion"])]
    train_cfg = {"output_dir": str(target / "run"), "model": {"preset": "tiny"},
                 "data": {"root": str(w["data"]), "frames": 4, "stride": 1, "size": 32},
                 "loss": {"m": 1}, "schedule": {"max_steps": 1, "warmup_steps": 0}, "validation": {"prompts": []}}
    cfg = w["root"] / f"train-{abs(hash(str(target)))}.json"
    cfg.write_text(json.dumps(train_cfg))
    return {
        "interpolate": ["interpolate", str(w["gif"]), "-o", str(target / "out.mp4")],
        "generate": ["generate", "boats", *model, "--frames", "2", "--size", "32", "--steps", "1",
                     "--no-interpolate", "-o", str(target / "out.gif")],
        "generate-long": ["generate", "boats", *model, "--frames", "40", "--size", "32", "--steps", "1",
                          "-o", str(target / "long.mp4")],
        "animate": ["animate", str(w["painting"]), "mist", *model, "--frames", "2", "--size", "64", "--steps", "2",
                    "-o", str(target / "out.gif")],
        "demo": ["demo", "--out", str(target / "demo"), "--steps", "1", "--frames", "2"],
        "data synth": ["data", "synth", "--n", "1", "--out", str(target / "synth"), "--size", "32", "--frames", "2",
                       "--format", "frames", "--workers", "1"],
        "data check": ["data", "check", str(w["data"]), "--frames", "2", "--json", str(target / "stats.json")],
        "data cache": ["data", "cache", str(w["data"]), "--preset", "tiny", "-o", str(target / "cache"),
                       "--frames", "2", "--size", "32"],
        "train": ["train", "--config", str(cfg), "--no-progress"],
        "train-image": ["train-image", "--config", str(ROOT / "configs" / "bundled_stage1.yaml"),
                        f"data.root={w['synth']}", f"output_dir={target / 's1'}"],
        "train-control": ["train-control", "--config", str(ROOT / "configs" / "tiny_control_cpu.yaml"),
                          f"data.root={w['synth']}", f"output_dir={target / 'ctl'}"],
        "generate-batch": ["generate", "--prompts", str(w["prompts"]), *model, "--frames", "2", "--size", "32",
                           "--steps", "1", "--out-dir", str(target / "batch")],
        "evaluate": ["evaluate", str(w["data"]), "--json", str(target / "metrics.json")],
        "ui": ["ui", "--out", str(target / "ui")],
    }


def test_every_command_is_covered():
    from shanshui.cli import COMMANDS

    w = {k: Path(tempfile.gettempdir()) for k in ("model", "motion", "data", "synth", "gif", "painting", "prompts")}
    w["root"] = Path(tempfile.gettempdir())
    assert set(COMMANDS) <= {argv[0] for argv in commands(w, Path("t")).values()}


ALL = ["interpolate", "generate", "generate-long", "generate-batch", "animate", "demo", "data synth", "data check",
       "data cache", "train", "train-image", "train-control", "evaluate", "ui"]


@pytest.mark.parametrize("name", ALL)
def test_parent_is_a_file(name, workdir, tmp_path, capsys):
    blocker = tmp_path / "some_file"
    blocker.write_text("I am a file")
    argv = commands(workdir, blocker)[name]
    assert main(argv) == 2
    line = one_error_line(capsys)
    assert f"'{blocker}' is a file, not a folder" in line, line
    assert blocker.read_text() == "I am a file" and files_under(tmp_path) == ["some_file"]


@pytest.mark.parametrize("name", [n for n in ALL if n != "generate-long"])
def test_folder_that_refuses_new_files(name, workdir, tmp_path, capsys):
    target = unwritable_folder(tmp_path)
    before = files_under(target) if target != Path("/sys") else None
    argv = commands(workdir, target)[name]
    assert main(argv) == 2
    line = one_error_line(capsys)
    assert "cannot write" in line and str(target) in line and "permission denied" in line, line
    if before is not None:
        assert files_under(target) == before


RLIMIT_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    import numpy as np
    from shanshui.cli import main
    from shanshui.errors import ShanshuiError
    from shanshui.video_io import open_video_writer
    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # inherited by the ffmpeg encoder
    results = {}
    for name, argv in json.loads(sys.argv[2]).items():
        sys.stderr.write("@@" + name + "\\n")
        if argv[0] == "stream":  # the chunked writer behind long videos (generate --frames 128)
            noise = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
            try:
                with open_video_writer(argv[1], fps=8) as writer:
                    for _ in range(8):
                        writer.append(noise)
                results[name] = 0
            except ShanshuiError as exc:
                sys.stderr.write(f"error: {exc}\\n")
                results[name] = 2
        else:
            results[name] = main(argv)
    print(json.dumps(results))
""")


def test_disk_full_while_writing(tmp_path):
    """A 16 KiB file-size limit: each output below grows past it while being written (noise compresses badly).
    The commands share these writers (generate and animate write through write_video, long videos through
    open_video_writer); the command-specific paths are covered by the two tests above."""
    rng = np.random.default_rng(0)
    noise = tmp_path / "noise.gif"
    write_video(rng.integers(0, 256, (6, 64, 64, 3), dtype=np.uint8), noise)
    out = tmp_path / "out"
    out.mkdir()
    runs = {
        "interpolate mp4": ["interpolate", str(noise), "-o", str(out / "a.mp4"), "--times", "4", "--method", "linear"],
        "interpolate gif": ["interpolate", str(noise), "-o", str(out / "a.gif"), "--times", "4", "--method", "linear"],
        "interpolate png": ["interpolate", str(noise), "-o", str(out / "a.png"), "--times", "4", "--method", "linear"],
        "stream mp4": ["stream", str(out / "s.mp4")],
        "stream gif": ["stream", str(out / "s.gif")],
    }
    # an earlier good file of the same name must survive
    (out / "a.gif").write_bytes(b"previous good file")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", RLIMIT_SCRIPT, str(16 * 1024), json.dumps(runs)],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert results == {name: 2 for name in runs}, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    for chunk in proc.stderr.split("@@")[1:]:
        name, _, err = chunk.partition("\n")
        errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1 and ("file too large" in errors[0] or "stopped early" in errors[0]), (name, err)
    assert files_under(out) == ["a.gif"] and (out / "a.gif").read_bytes() == b"previous good file"


# ------------------------------------------------------------------------------------ atomic writers
def test_atomic_output_turns_a_failing_writer_into_one_error_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "v.gif"
    target.write_bytes(b"old")

    with pytest.raises(ShanshuiError, match="cannot write '.*v.gif': no space left on the device"):
        with atomic_output(target) as tmp:
            tmp.write_bytes(b"half a fi")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert target.read_bytes() == b"old" and files_under(tmp_path) == ["v.gif"]
    with pytest.raises(RuntimeError, match="not a write error"):  # other errors pass through untouched
        with atomic_output(target) as tmp:
            raise RuntimeError("not a write error")
    assert target.read_bytes() == b"old" and files_under(tmp_path) == ["v.gif"]


def test_truncated_mp4_is_recognised(tmp_path):
    from shanshui.flow.testscenes import render_scene

    path = write_video(render_scene("boat", 64, 6), tmp_path / "v.mp4")
    check_mp4_complete(path, path)                                     # a whole file passes
    data = path.read_bytes()
    for cut in (len(data) // 3, len(data) - 9, 20):
        (tmp_path / "cut.mp4").write_bytes(data[:cut])
        with pytest.raises(ShanshuiError, match="stopped early"):
            check_mp4_complete(tmp_path / "cut.mp4", path)


def test_interrupted_save_motion_module_keeps_the_previous_file(tiny_video_unet, tmp_path, monkeypatch):
    import safetensors.torch

    from shanshui.models.motion_io import load_motion_module, motion_state_dict, save_motion_module

    path = save_motion_module(tiny_video_unet, tmp_path / "mm.safetensors")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with torch.no_grad():
        for p in tiny_video_unet.parameters():
            p.add_(1.0)

    def failing_writer(tensors, filename, metadata=None):
        with open(filename, "wb") as fh:                              # half a file, then the disk is full
            fh.write(b"\x00" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", failing_writer)
    with pytest.raises(ShanshuiError, match="no space left"):
        save_motion_module(tiny_video_unet, path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no partial file, old one intact
    monkeypatch.undo()
    state, _ = load_motion_module(path)
    current = motion_state_dict(tiny_video_unet)
    assert all(torch.equal(state[k] + 1.0, current[k]) for k in state)   # still the previous weights


# --------------------------------------------------------------------------------------- NaN guard
@pytest.mark.parametrize("term,value", [("loss", float("inf")), ("loss", float("-inf")),
                                        ("loss_con", float("nan")), ("loss_con", float("inf")),
                                        ("loss_diff", float("nan"))])
def test_non_finite_terms_stop_training(term, value, workdir, tmp_path, monkeypatch, capsys):
    """Only ``term`` is poisoned (the total stays finite for the L_con/L_diff cases): the guard must look at
    every logged term, not only at the total."""
    import shanshui.training.loop as loop
    from shanshui.training.step import training_step

    calls = {"n": 0}

    def poisoned(batch, models, scheduler, cfg, generator, net=None):
        calls["n"] += 1
        out = training_step(batch, models, scheduler, cfg, generator, net=net)
        if calls["n"] == 2:
            out[term] = out[term] * 0 + value
        return out

    monkeypatch.setattr(loop, "training_step", poisoned)
    out_dir = tmp_path / "run"
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"output_dir": str(out_dir), "model": {"preset": "tiny"},
                               "data": {"root": str(workdir["data"]), "frames": 4, "stride": 1, "size": 32},
                               "loss": {"m": 1}, "schedule": {"max_steps": 3, "warmup_steps": 0},
                               "checkpoint": {"every": 10}, "validation": {"prompts": []}}))
    assert main(["train", "--config", str(cfg), "--no-progress"]) == 3
    err = capsys.readouterr().err
    assert "at step 2" in err and "training stopped" in err
    assert not (out_dir / "final").exists()


def test_published_outputs_get_the_umasks_permissions(tiny, tiny_video_unet, tmp_path):
    """mkstemp/mkdtemp and safetensors create private (0600/0700) files; what Shanshui publishes must not be."""
    from shanshui.data.procedural_dataset import write_dataset
    from shanshui.models.motion_io import save_motion_module
    from shanshui.pipelines.loading import save_base_components
    from shanshui.training.checkpoint import replace_dir

    old = os.umask(0o022)
    try:
        save_motion_module(tiny_video_unet, tmp_path / "mm" / "m.safetensors", tiny["motion_config"])
        save_base_components(tiny, tmp_path / "base")
        private = Path(tempfile.mkdtemp(dir=tmp_path))
        from safetensors.torch import save_file

        save_file({"a": torch.zeros(1)}, str(private / "w.safetensors"))
        replace_dir(private, tmp_path / "published")
        write_dataset(tmp_path / "data", n=1, seed=0, size=32, frames=2, fmt="frames", workers=1, progress=False)
    finally:
        os.umask(old)
    modes = {p.relative_to(tmp_path).as_posix(): p.stat().st_mode & 0o777 for p in tmp_path.rglob("*")}
    assert modes["published"] == 0o755 and modes["published/w.safetensors"] == 0o644
    assert modes["mm/m.safetensors"] == 0o644
    assert [m for m in modes if m.startswith("base/") and modes[m] not in (0o644, 0o755)] == []
    assert any(m.startswith("base/unet/") and m.endswith(".safetensors") for m in modes)
    frames = [m for m in modes if m.startswith("data/clips/")]
    assert frames and all(modes[m] in (0o644, 0o755) for m in frames)
