"""Procedural ink-wash clips: determinism, captions, exact flow, and the dataset written by `data synth`."""

from __future__ import annotations

import dataclasses
import json
import os

import cv2
import numpy as np
import pytest

from shanshui.cli import main
from shanshui.data.procedural import (
    ATTRIBUTES,
    DEFAULTS,
    attributes,
    caption,
    clip_seed,
    parse_caption,
    render_clip,
    sample_scene,
    scene_from_caption,
    write_dataset,
)
from shanshui.errors import ShanshuiError
from shanshui.video_io import read_video

DEMO_PROMPT = "Mountains, dense fog, red sun, boat on the lake, flying birds."


def backward_warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Sample ``image`` at ``p + flow(p)`` (bilinear): warps frame k+1 back onto frame k."""
    h, w = flow.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(image.astype(np.float32), gx + flow[..., 0], gy + flow[..., 1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


def warp_errors(frames, flow, valid):
    """Mean abs error on valid pixels: with the flow, and with zero flow (the no-motion baseline)."""
    with_flow, without = [], []
    for k in range(len(flow)):
        m = valid[k]
        with_flow.append(np.abs(backward_warp(frames[k + 1], flow[k]) - frames[k])[m].mean())
        without.append(np.abs(frames[k + 1].astype(np.float32) - frames[k])[m].mean())
    return float(np.mean(with_flow)), float(np.mean(without))


# --- scenes and captions -----------------------------------------------------------------------------

def test_caption_round_trips_over_many_seeds():
    for seed in range(400):
        scene = sample_scene(seed)
        labels = attributes(scene)
        assert set(labels) == set(ATTRIBUTES)
        for key, value in labels.items():
            assert value in ATTRIBUTES[key], (key, value)
        assert parse_caption(caption(scene)) == labels, caption(scene)


def test_every_label_value_occurs():
    seen = {key: set() for key in ATTRIBUTES}
    for seed in range(400):
        for key, value in attributes(sample_scene(seed)).items():
            seen[key].add(value)
    for key, values in ATTRIBUTES.items():
        assert seen[key] == set(values), key


def test_demo_prompt_parses():
    expected = dict(DEFAULTS, mountains="mountains", fog="dense", sun="red sun", lake=True, boat=True,
                    birds=True)
    assert parse_caption(DEMO_PROMPT) == expected
    scene = scene_from_caption(DEMO_PROMPT, seed=3)
    assert caption(scene) == DEMO_PROMPT


@pytest.mark.parametrize("prompt, expected", [
    ("misty hills at sunset with a sampan", {"mountains": "gentle hills", "fog": "light", "sun": "red sun",
                                             "sun_motion": "setting", "lake": True, "boat": True}),
    ("Moonlit peaks, thick mist, cranes, waterfall, rainy", {"mountains": "steep peaks", "fog": "dense",
                                                             "sun": "moon", "birds": True, "waterfall": True,
                                                             "rain": True}),
    ("a river among pines, the scroll pans to the right",
     {"lake": True, "pines": True, "camera": "pan right"}),
    ("mountains", {}),
])
def test_free_prompts_parse(prompt, expected):
    assert parse_caption(prompt) == dict(DEFAULTS, **expected)


def test_sampling_is_deterministic_and_fixed_values_win():
    assert sample_scene(11) == sample_scene(11)
    assert sample_scene(11) != sample_scene(12)
    fixed = sample_scene(11, fog="dense", boat=True)
    assert fixed.fog == "dense" and fixed.boat and fixed.lake
    assert fixed.pan_speed == sample_scene(11).pan_speed  # unlabelled variation untouched
    with pytest.raises(ShanshuiError, match="fog='thick'"):
        sample_scene(1, fog="thick")
    with pytest.raises(ShanshuiError, match="unknown scene attribute"):
        sample_scene(1, volcano=True)


# --- rendering ---------------------------------------------------------------------------------------

def test_same_seed_gives_identical_clip_and_shapes():
    scene = sample_scene(5)
    a_frames, a_flow = render_clip(scene, frames=5, size=64)
    b_frames, b_flow = render_clip(sample_scene(5), frames=5, size=64)
    assert a_frames.shape == (5, 64, 64, 3) and a_frames.dtype == np.uint8
    assert a_flow.shape == (4, 64, 64, 2) and a_flow.dtype == np.float32
    np.testing.assert_array_equal(a_frames, b_frames)
    np.testing.assert_array_equal(a_flow, b_flow)
    c_frames, _ = render_clip(sample_scene(6), frames=5, size=64)
    assert np.abs(a_frames.astype(int) - c_frames).mean() > 5


def test_values_look_like_ink_on_paper():
    scene = sample_scene(2, sun="red sun", sun_motion="still", rain=False, fog="light", lake=False)
    frames, _ = render_clip(scene, frames=2, size=96)
    rgb = frames[0].astype(np.int32)
    lum = rgb.mean(-1)
    assert 20 < lum.min() and lum.max() < 255  # ink never pure black, paper never pure white
    assert np.median(lum[:10]) > 180  # the sky is (mostly) blank paper
    assert lum[-20:].mean() < lum[:20].mean() - 25  # near mountains are darker than the sky
    red = (rgb[..., 0] - rgb[..., 1] > 80).sum()
    assert red > 30  # the cinnabar sun
    no_sun, _ = render_clip(dataclasses.replace(scene, sun="none"), frames=2, size=96)
    assert (no_sun[0, ..., 0].astype(int) - no_sun[0, ..., 1] > 80).sum() == 0


@pytest.mark.parametrize("size", [32, (48, 80), 256])
def test_other_sizes(size):
    frames, flow = render_clip(sample_scene(9), frames=3, size=size)
    h, w = (size, size) if isinstance(size, int) else size
    assert frames.shape == (3, h, w, 3) and flow.shape == (2, h, w, 2)
    assert frames.std() > 10


@pytest.mark.parametrize("bad, match", [(dict(size=100), "multiple of 8"), (dict(size=16), "32..1024"),
                                        (dict(frames=1), "frames=1")])
def test_bad_render_arguments(bad, match):
    with pytest.raises(ShanshuiError, match=match):
        render_clip(sample_scene(0), **{"frames": 4, "size": 64, **bad})


def test_pan_flow_is_exact_translation():
    # Nothing moves but the camera: every pixel's flow is the pan, and warping is exact (integer speed).
    scene = sample_scene(0, camera="pan right", fog="none", clouds=False, boat=False, lake=False, birds=False,
                         rain=False, sun="none", waterfall=False)
    scene = dataclasses.replace(scene, pan_speed=1.0)
    frames, flow, valid = render_clip(scene, frames=4, size=128, return_valid=True)
    np.testing.assert_allclose(flow[..., 0], -1.0)
    np.testing.assert_allclose(flow[..., 1], 0.0)
    assert valid[:, :, 1:].all() and not valid[:, :, 0].any()  # the left column leaves the frame
    err, baseline = warp_errors(frames, flow, valid)
    assert err < 0.3 and baseline > 3.0


def test_moving_layers_have_their_own_exact_flow():
    # Integer speeds everywhere, so that bilinear resampling adds no blur and the warp must be near exact.
    scene = sample_scene(3, camera="pan left", fog="dense", boat=True, birds=True, sun="red sun",
                         sun_motion="rising", rain=False)
    scene = dataclasses.replace(scene, pan_speed=1.0, mist_speed=2.0, boat_speed=2.0,
                                bird_velocity=(3.0, -1.0), sun_speed=1.0)
    frames, flow, valid = render_clip(scene, frames=5, size=128, return_valid=True)
    exact = {tuple(float(x) for x in np.round(v, 3)) for v in flow[valid].reshape(-1, 2)}
    every = {tuple(float(x) for x in np.round(v, 3)) for v in flow.reshape(-1, 2)}
    # camera (+1 px: the pan goes left), boat (+2 + 1), rising sun (0 + 1, -1) are solid and exact;
    # the birds (+3 + 1, -1) are hair-thin strokes: present in the flow, but never one layer's pure colour.
    assert {(1.0, 0.0), (3.0, 0.0), (1.0, -1.0)} <= exact
    assert (4.0, -1.0) in every and (4.0, -1.0) not in exact
    assert valid.mean() > 0.5
    err, baseline = warp_errors(frames, flow, valid)
    assert err < 0.5 and baseline > 10 * err
    # Invalid pixels exist exactly where a moving object hides or uncovers the scroll.
    assert 0.0 < (~valid).mean() < 0.5


@pytest.mark.parametrize("seed", [1, 4, 6])
def test_flow_explains_motion_of_random_scenes(seed):
    frames, flow, valid = render_clip(sample_scene(seed), frames=4, size=96, return_valid=True)
    err, baseline = warp_errors(frames, flow, valid)
    assert valid.mean() > 0.3
    assert err < 2.0 and err < 0.6 * baseline + 0.1


# --- the dataset ---------------------------------------------------------------------------------------

def read_metadata(root):
    return [json.loads(line) for line in (root / "metadata.jsonl").read_text().splitlines()]


def test_dataset_layout_mp4(tmp_path):
    root = tmp_path / "ink"
    write_dataset(root, n=3, seed=4, size=32, frames=4, fmt="mp4", workers=1, progress=False)
    records = read_metadata(root)
    assert [r["video"] for r in records] == ["clips/000000.mp4", "clips/000001.mp4", "clips/000002.mp4"]
    settings = json.loads((root / "synth.json").read_text())
    assert settings["size"] == 32 and settings["frames"] == 4 and settings["format"] == "mp4"
    for i, r in enumerate(records):
        assert set(r) >= {"video", "caption", "attributes", "flow", "seed", "fps"}
        assert r["seed"] == clip_seed(4, i) and r["fps"] == 8
        assert parse_caption(r["caption"]) == r["attributes"] == attributes(sample_scene(r["seed"]))
        frames, fps = read_video(root / r["video"])
        assert frames.shape == (4, 32, 32, 3) and fps == pytest.approx(8.0)
        with np.load(root / r["flow"]) as z:
            assert z["flow"].shape == (3, 32, 32, 2) and z["flow"].dtype == np.float16
            assert z["valid"].shape == (3, 32, 32) and z["valid"].dtype == bool
        expected, _ = render_clip(sample_scene(r["seed"]), frames=4, size=32)
        assert np.abs(frames.astype(int) - expected).mean() < 6  # lossy, but the same clip


def test_dataset_independent_of_workers_and_resumable(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    write_dataset(one, n=3, seed=9, size=32, frames=3, fmt="frames", workers=1, progress=False)
    write_dataset(two, n=3, seed=9, size=32, frames=3, fmt="frames", workers=2, progress=False)
    assert (one / "metadata.jsonl").read_text() == (two / "metadata.jsonl").read_text()
    for r in read_metadata(one):
        assert sorted(os.listdir(one / r["video"])) == ["0000.png", "0001.png", "0002.png"]
        np.testing.assert_array_equal(read_video(one / r["video"])[0], read_video(two / r["video"])[0])
        np.testing.assert_array_equal(np.load(one / r["flow"])["flow"], np.load(two / r["flow"])["flow"])

    # Resume: complete clips are kept as they are, a missing one is rewritten, --n can grow.
    kept = one / "clips" / "000000" / "0000.png"
    stamp = kept.stat().st_mtime_ns
    (one / "flow" / "000001.npz").unlink()
    write_dataset(one, n=4, seed=9, size=32, frames=3, fmt="frames", workers=1, progress=False)
    assert kept.stat().st_mtime_ns == stamp
    assert (one / "flow" / "000001.npz").exists()
    records = read_metadata(one)
    assert len(records) == 4 and records[3]["video"] == "clips/000003"
    assert not [p for p in one.rglob("*") if ".part" in p.name]

    with pytest.raises(ShanshuiError, match="size=32, not 64"):
        write_dataset(one, n=4, seed=9, size=64, frames=3, fmt="frames", workers=1, progress=False)


@pytest.mark.parametrize("args, message", [
    (["--n", "0"], "n=0"), (["--size", "100"], "size=100"), (["--size", "2048"], "32..1024"),
    (["--frames", "1"], "frames=1"),
])
def test_cli_rejects_bad_values(tmp_path, capsys, args, message):
    assert main(["data", "synth", "--out", str(tmp_path / "x"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_cli_writes_dataset(tmp_path):
    out = tmp_path / "d"
    assert main(["data", "synth", "--n", "2", "--out", str(out), "--size", "32", "--frames", "2",
                 "--format", "frames", "--workers", "1"]) == 0
    assert len(read_metadata(out)) == 2
