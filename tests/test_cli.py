"""The command line: generate end to end on tiny files, one-line errors with exit code 2."""

import pytest

from shanshui.cli import main
from shanshui.video_io import read_video


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_help_shows_examples(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "Examples:" in out and "generate" in out
    code, out, _ = run(capsys, "generate", "--help")
    assert code == 0 and "--sparse-causal" in out and "Examples:" in out


def test_generate_writes_a_video(capsys, tmp_path, tiny_model_files):
    model, motion = tiny_model_files
    out = tmp_path / "v.gif"
    code, stdout, err = run(capsys, "generate", "Mountains, dense fog", "--model", str(model), "--motion-module",
                            str(motion), "--frames", "4", "--size", "32", "--steps", "2", "--no-interpolate",
                            "-o", str(out))
    assert code == 0, err
    frames, _ = read_video(out)
    assert frames.shape == (4, 32, 32, 3)
    assert f"wrote {out}" in stdout


@pytest.mark.parametrize("args,message", [
    (["--size", "30"], "--size width=30 must be a positive multiple of 8"),
    (["--size", "abc"], "--size 'abc' must be N or WxH"),
    (["--frames", "1"], "frames=1 must be >= 2"),
    (["--steps", "0"], "steps=0 must be >= 1"),
    (["--guidance", "-2"], "guidance=-2.0 must be a finite number >= 0"),
    (["--sparse-causal", "sideways"], "'sideways' is not one of"),
    (["-o", "video.avi"], "must end in one of .mp4, .gif, .webp, .png"),
])
def test_bad_input_is_one_line_exit_2(capsys, tmp_path, tiny_model_files, args, message):
    model, motion = tiny_model_files
    base = ["generate", "boats", "--model", str(model), "--motion-module", str(motion), "--size", "32",
            "--frames", "2", "--steps", "1", "-o", str(tmp_path / "x.gif")]
    code, _, err = run(capsys, *base, *args)
    assert code == 2
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "x.gif").exists()


def test_missing_model_files(capsys, tmp_path, tiny_model_files):
    model, motion = tiny_model_files
    code, _, err = run(capsys, "generate", "x", "--model", str(tmp_path / "nope"), "--motion-module", str(motion),
                       "-o", str(tmp_path / "a.gif"))
    assert code == 2 and "does not exist" in err and err.count("\n") == 1
    bad = tmp_path / "mm.safetensors"
    bad.write_bytes(b"junk")
    code, _, err = run(capsys, "generate", "x", "--model", str(model), "--motion-module", str(bad),
                       "-o", str(tmp_path / "a.gif"))
    assert code == 2 and "cannot read motion module" in err


def test_unknown_command(capsys):
    code, _, err = run(capsys, "paint")
    assert code == 2 and "No such command 'paint'" in err
