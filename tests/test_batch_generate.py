"""Batch generation for evaluation: plan, shards, resume, manifest; and two real processes under
``accelerate launch`` generating each item exactly once."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from shanshui.cli import main
from shanshui.errors import ShanshuiError
from shanshui.pipelines.batch import parse_seeds, plan_items, read_prompt_file, run_batch, shard


def test_parse_seeds_and_plan():
    assert parse_seeds("0-2,10") == [0, 1, 2, 10] and parse_seeds("7") == [7]
    for bad, msg in (("a", "must be integers"), ("3-1", "must go up"), ("1,1", "repeats"), ("-1", "must give seeds >= 0")):
        with pytest.raises(ShanshuiError, match=msg):
            parse_seeds(bad)
    items = plan_items(["a", "b", "c"], [0, 5], "gif")
    assert [(i.prompt, i.seed, i.file) for i in items[:3]] == [("a", 0, "p00000_s0.gif"), ("a", 5, "p00000_s5.gif"),
                                                               ("b", 0, "p00001_s0.gif")]
    # shards partition the plan: every item in exactly one shard, whatever the world size
    for world in (1, 2, 3, 4, 7):
        got = sorted(i.index for r in range(world) for i in shard(items, r, world))
        assert got == list(range(6))


def test_prompt_file(tmp_path):
    p = tmp_path / "p.txt"
    p.write_text("# heading\nMisty peaks\n\n  Boat on the lake  \n")
    assert read_prompt_file(p) == ["Misty peaks", "Boat on the lake"]
    p.write_text("\n# only a comment\n")
    with pytest.raises(ShanshuiError, match="holds no prompts"):
        read_prompt_file(p)


def _fake_writer(calls):
    def make(item, path):
        calls.append(item.file)
        path.write_text(item.prompt)

    return make


def test_run_batch_resumes_and_refuses_a_different_plan(tmp_path):
    calls = []
    settings = {"frames": 8, "steps": 2, "guidance": 1.0}
    # "interrupted": the first run writes only two files, then fails
    def flaky(item, path):
        if len(calls) == 2:
            raise KeyboardInterrupt
        _fake_writer(calls)(item, path)

    with pytest.raises(KeyboardInterrupt):
        run_batch(["a", "b"], [0, 1], tmp_path, settings, flaky, ext="gif", log=lambda s: None)
    assert not (tmp_path / "manifest.jsonl").exists()
    done = list(calls)
    counts = run_batch(["a", "b"], [0, 1], tmp_path, settings, _fake_writer(calls), ext="gif", log=lambda s: None)
    assert counts == {"planned": 4, "mine": 4, "generated": 2, "skipped": 2}
    assert sorted(calls) == sorted(["p00000_s0.gif", "p00000_s1.gif", "p00001_s0.gif", "p00001_s1.gif"])
    assert calls[:2] == done  # nothing generated twice
    rows = [json.loads(x) for x in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert [(r["file"], r["prompt"], r["seed"], r["frames"]) for r in rows] == [
        ("p00000_s0.gif", "a", 0, 8), ("p00000_s1.gif", "a", 1, 8), ("p00001_s0.gif", "b", 0, 8),
        ("p00001_s1.gif", "b", 1, 8)]
    with pytest.raises(ShanshuiError, match="holds a batch with different prompts"):
        run_batch(["a", "c"], [0, 1], tmp_path, settings, _fake_writer(calls), ext="gif")
    with pytest.raises(ShanshuiError, match="holds a batch with different settings"):
        run_batch(["a", "b"], [0, 1], tmp_path, {**settings, "steps": 3}, _fake_writer(calls), ext="gif")


def _tiny_args(tiny_model_files, prompts, out_dir, seeds="0,1"):
    base, motion = tiny_model_files
    return ["generate", "--prompts", str(prompts), "--out-dir", str(out_dir), "--seeds", seeds, "--model", str(base),
            "--motion-module", str(motion), "--frames", "4", "--steps", "2", "--size", "32", "--format", "gif"]


def test_generate_batch_cli_writes_one_video_per_prompt_and_seed(tiny_model_files, tmp_path, capsys):
    from shanshui.video_io import read_video

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("misty peaks\nboat on the lake\n")
    out = tmp_path / "vids"
    assert main(_tiny_args(tiny_model_files, prompts, out)) == 0
    files = sorted(p.name for p in out.glob("*.gif"))
    assert files == ["p00000_s0.gif", "p00000_s1.gif", "p00001_s0.gif", "p00001_s1.gif"]
    frames = {f: read_video(out / f)[0] for f in files}
    assert all(v.shape == (4, 32, 32, 3) for v in frames.values())  # no interpolation in batch mode
    assert not np.array_equal(frames["p00000_s0.gif"], frames["p00000_s1.gif"])  # seeds differ
    # the same (prompt, seed) as a single `generate` gives the same video
    single = tmp_path / "one.gif"
    base, motion = tiny_model_files
    assert main(["generate", "boat on the lake", "--model", str(base), "--motion-module", str(motion), "--frames", "4",
                 "--steps", "2", "--size", "32", "--seed", "1", "--no-interpolate", "-o", str(single)]) == 0
    assert np.array_equal(read_video(single)[0], frames["p00001_s1.gif"])
    # a rerun generates nothing
    capsys.readouterr()
    assert main(_tiny_args(tiny_model_files, prompts, out)) == 0
    assert "resuming: 4 of 4 videos already exist" in capsys.readouterr().err
    # bad input
    assert main(["generate", "--prompts", str(prompts)]) == 2
    assert "needs both --prompts FILE and --out-dir DIR" in capsys.readouterr().err
    assert main(["generate", "x", "--prompts", str(prompts), "--out-dir", str(out)]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["generate", "--prompts", str(prompts), "--out-dir", str(out), "--seeds", "x"]) == 2


def test_two_accelerate_processes_generate_each_item_once(tiny_model_files, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("misty peaks\nboat on the lake\nred sun\n")
    out = tmp_path / "vids"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29531",
           "-m", "shanshui.cli", *_tiny_args(tiny_model_files, prompts, out, seeds="0-1")]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    logs = [json.loads(line) for r in (0, 1) for line in (out / ".batch" / f"rank{r}.jsonl").read_text().splitlines()]
    files = [r["file"] for r in logs]
    assert len(files) == 6 and len(set(files)) == 6  # 3 prompts x 2 seeds, each generated exactly once
    assert {r["rank"] for r in logs} == {0, 1} and all(r["world"] == 2 for r in logs)
    assert sum(r["rank"] == 0 for r in logs) == 3
    manifest = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted(m["file"] for m in manifest) == sorted(files)
    assert proc.stdout.count("wrote ") == 1  # only the main process reports
