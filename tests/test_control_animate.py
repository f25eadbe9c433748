"""`shanshui animate` with the image-to-video module: default control, trained/none modes, dense flow,
speed in px/frame, still mask, and bad input (one line, exit 2, no output file). Tiny model + random I2V."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from shanshui.cli import main
from shanshui.errors import ShanshuiError


@pytest.fixture(scope="module")
def i2v_model(tmp_path_factory, tiny_components):
    """A tiny model folder with an ``i2v/`` module (random, non-zero control weights) + a T2V motion module."""
    import shutil

    from shanshui.models.control import build_control, save_control
    from shanshui.models.motion import build_video_unet
    from shanshui.models.motion_io import save_motion_module
    from shanshui.pipelines.loading import save_base_components

    root = tmp_path_factory.mktemp("i2v-model")
    save_base_components(tiny_components, root / "plain")
    video = build_video_unet(copy.deepcopy(tiny_components["unet"]), tiny_components["motion_config"])
    save_motion_module(video, root / "motion.safetensors")
    shutil.copytree(root / "plain", root / "with")
    model = build_control(build_video_unet(copy.deepcopy(tiny_components["unet"]), tiny_components["motion_config"]))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.control.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
    save_control(model, root / "with" / "i2v", tiny_components["motion_config"])
    return root


@pytest.fixture(scope="module")
def painting_png(tmp_path_factory):
    from PIL import Image

    rng = np.random.default_rng(0)
    img = (rng.random((48, 80, 3)) * 255).astype(np.uint8)
    path = tmp_path_factory.mktemp("p") / "p.png"
    Image.fromarray(img).save(path)
    return path


def _run(args, capsys):
    code = main(["animate", *args])
    out, err = capsys.readouterr()
    return code, err


BASE = ["--frames", "4", "--steps", "4", "--size", "64"]


def test_default_control_is_trained_with_the_module_and_training_free_without(i2v_model, painting_png, tmp_path,
                                                                            capsys):
    from shanshui.video_io import read_video

    common = [str(painting_png), "mist", "--arrow", "10,20,30,20", *BASE, "--motion-module",
              str(i2v_model / "motion.safetensors")]
    code, err = _run([*common, "--model", str(i2v_model / "with"), "-o", str(tmp_path / "a.gif")], capsys)
    assert code == 0, err
    assert "training-free" not in err
    code, err = _run([*common, "--model", str(i2v_model / "plain"), "-o", str(tmp_path / "b.gif")], capsys)
    assert code == 0, err
    notes = [line for line in err.splitlines() if "image-to-video" in line]
    assert notes == ["note: this model has no image-to-video module (i2v/); using training-free control"]
    assert read_video(tmp_path / "a.gif")[0].shape == (4, 40, 64, 3)
    code, err = _run([*common, "--model", str(i2v_model / "plain"), "--control", "trained",
                      "-o", str(tmp_path / "c.gif")], capsys)
    assert code == 2 and "needs a model with an image-to-video module" in err
    assert not (tmp_path / "c.gif").exists()


def test_trained_mode_conditions_and_keeps_frame0_and_still_region(i2v_model, painting_png):
    from shanshui.control.arrows import Arrow
    from shanshui.pipelines.painting_to_video import load_painting_pipeline

    pipe = load_painting_pipeline(i2v_model / "with", i2v_model / "motion.safetensors")
    assert pipe.i2v is not None
    still = np.zeros((48, 80), bool)
    still[:, 50:] = True
    kw = dict(num_frames=4, num_inference_steps=4, long_side=64, progress=False, seed=0)
    a = pipe(painting_png, "mist", arrows=[Arrow(10, 20, 30, 20)], still_mask=still, control="trained", **kw)
    b = pipe(painting_png, "mist", control="none", **kw)
    # the field reaches the I2V model: trained differs from none
    assert np.abs(a.frames - b.frames).max() > 1e-4
    # frame 0 is the painting's VAE round trip in both
    np.testing.assert_allclose(a.frames[0, 0], b.frames[0, 0], atol=1e-5)
    # still region (mapped to the 64x40 canvas: x >= 40) holds frame 0 exactly, 3 px inside the border
    np.testing.assert_array_equal(a.frames[0, :, :, 44:], np.repeat(a.frames[0, :1, :, 44:], 4, axis=0))
    assert not np.any(a.velocity[:, 41:])
    # the sampler is restored after a trained call
    assert pipe._i2v_ctx is None and pipe.scheduler is not pipe.i2v_scheduler


def test_speed_rescales_the_field_and_dense_flow_maps_to_the_canvas(i2v_model, painting_png):
    from shanshui.pipelines.painting_to_video import load_painting_pipeline, scale_to_speed

    v = np.zeros((10, 10, 2), np.float32)
    v[2:4, 2:4] = (3, 4)                                       # speed 5
    v[6, 6] = (0.1, 0)                                         # below 5 % of the maximum: not "moving"
    s = scale_to_speed(v, 1.0)
    np.testing.assert_allclose(np.linalg.norm(s[2:4, 2:4], axis=-1), 1.0, rtol=1e-6)
    assert not scale_to_speed(np.zeros((4, 4, 2), np.float32), 2.0).any()

    pipe = load_painting_pipeline(i2v_model / "with", i2v_model / "motion.safetensors")
    flow = np.zeros((48, 80, 2), np.float32)
    flow[:, :40] = (2.0, 0.0)                                  # px/frame at 80 px wide
    out = pipe(painting_png, "mist", flow=flow, control="trained", num_frames=4, num_inference_steps=4,
               long_side=64, progress=False, output_type="latent")
    assert out.velocity.shape == (40, 64, 2)
    sx = out.painting.geometry.scale[0]                        # 67/80: fit covers the 64x40 canvas
    assert out.velocity[20, 5, 0] == pytest.approx(2.0 * sx, rel=1e-5)        # vectors scaled with the canvas
    assert out.velocity[20, 60, 0] == 0


@pytest.mark.parametrize("args,message", [
    (["--arrow", "500,1,510,1"], "--arrow start (500, 1) lies outside the 80x48 image"),
    (["--arrow", "10,10,10,10"], "has zero length"),
    (["--flow", "WRONGFLOW"], "--flow has shape (48, 40, 2); expected (48, 80, 2) or (3, 48, 80, 2)"),
    (["--mask", "SQUAREMASK"], "--mask is 30x30 but the painting is 80x48"),
    (["--strength", "-1"], "--strength=-1.0 px/frame must be in [0, 32]"),
    (["--strength", "40"], "--strength=40.0 px/frame must be in [0, 32]"),
    (["--strength", "20", "--arrow", "10,20,30,20"], "strength=20 px/frame is absurd for a 64x40 canvas"),
    (["--arrow", "10,20,30,20", "--flow", "WRONGFLOW"], "--arrow and --flow contradict each other"),
    (["--control", "none", "--arrow", "10,20,30,20"], "--control none animates without a field"),
])
def test_bad_control_input_is_one_line_exit_2(i2v_model, painting_png, tmp_path, capsys, args, message):
    from PIL import Image

    np.save(tmp_path / "wrong.npy", np.zeros((48, 40, 2), np.float32))
    Image.fromarray(np.zeros((30, 30), np.uint8)).save(tmp_path / "square.png")
    args = [str(tmp_path / "wrong.npy") if a == "WRONGFLOW" else str(tmp_path / "square.png") if a == "SQUAREMASK"
            else a for a in args]
    out = tmp_path / "x.gif"
    code, err = _run([str(painting_png), "mist", *args, *BASE, "--model", str(i2v_model / "with"),
                      "--motion-module", str(i2v_model / "motion.safetensors"), "-o", str(out)], capsys)
    assert code == 2 and message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


def test_mask_of_the_same_aspect_is_resized_with_a_note(i2v_model, painting_png, tmp_path, capsys):
    from PIL import Image

    mask = np.zeros((24, 40), np.uint8)
    mask[:, 30:] = 255
    Image.fromarray(mask).save(tmp_path / "half.png")
    code, err = _run([str(painting_png), "mist", "--mask", str(tmp_path / "half.png"), "--arrow", "10,20,30,20",
                      *BASE, "--model", str(i2v_model / "with"), "--motion-module",
                      str(i2v_model / "motion.safetensors"), "-o", str(tmp_path / "m.gif")], capsys)
    assert code == 0, err
    assert "note: the mask (40x24) is resized to the painting's 80x48" in err


@pytest.mark.parametrize("side", [1, 8])
def test_too_small_paintings_are_refused(tmp_path, capsys, side):
    from PIL import Image

    Image.fromarray(np.full((side, side, 3), 200, np.uint8)).save(tmp_path / "tiny.png")
    code, err = _run([str(tmp_path / "tiny.png"), "mist", "-o", str(tmp_path / "t.gif")], capsys)
    assert code == 2
    assert err.strip() == f"error: the painting is {side}x{side} px, too small to animate: it needs at least " \
                          f"16 px on each side"
    assert not (tmp_path / "t.gif").exists()


def test_pipeline_refuses_bad_control_arguments(i2v_model, painting_png):
    from shanshui.pipelines.painting_to_video import load_painting_pipeline

    pipe = load_painting_pipeline(i2v_model / "plain", i2v_model / "motion.safetensors")
    with pytest.raises(ShanshuiError, match="control='sideways' must be one of trained, training-free, none"):
        pipe(painting_png, "x", control="sideways")
    with pytest.raises(ShanshuiError, match="needs a model with an image-to-video module"):
        pipe(painting_png, "x", control="trained")


def test_long_video_with_trained_control(i2v_model, painting_png, monkeypatch):
    """Longer than the T2V window: phased inference with the I2V model; frame 0 is the painting's latent."""
    from shanshui.control.arrows import Arrow
    from shanshui.pipelines.painting_to_video import load_painting_pipeline

    pipe = load_painting_pipeline(i2v_model / "with", i2v_model / "motion.safetensors")
    monkeypatch.setattr(type(pipe), "max_frames", property(lambda self: 4))   # a 4-frame window: 7 frames is long
    out = pipe(painting_png, "mist", arrows=[Arrow(10, 20, 30, 20)], control="trained", num_frames=7,
               num_inference_steps=4, long_side=64, progress=False, output_type="latent")
    assert out.frames.shape[2] == 7
    z0 = pipe.encode_images(out.painting.image[None])
    torch.testing.assert_close(out.frames[:, :, :1], z0)
    with pytest.raises(ShanshuiError, match=r"frames=7 must be in \[2, 4\]"):
        pipe(painting_png, "mist", control="training-free", num_frames=7, num_inference_steps=4, long_side=64)


def test_long_video_with_a_v_prediction_i2v_model(i2v_model, painting_png, monkeypatch):
    """A v-prediction, zero-terminal-SNR, trailing I2V model (the v2 bundled recipe) runs long videos: every
    phased DDIM step uses the I2V model's schedule, and the result is finite with frame 0 = the painting."""
    from shanshui.control.arrows import Arrow
    from shanshui.pipelines import long_video as lv
    from shanshui.pipelines.painting_to_video import load_painting_pipeline
    from shanshui.schedulers import make_scheduler

    pipe = load_painting_pipeline(i2v_model / "with", i2v_model / "motion.safetensors")
    pipe.i2v_scheduler = make_scheduler("ddim", objective={"prediction_type": "v_prediction",
                                                           "rescale_betas_zero_snr": True,
                                                           "timestep_spacing": "trailing"})
    monkeypatch.setattr(type(pipe), "max_frames", property(lambda self: 4))
    seen, real = [], lv.ddim_update

    def recording(scheduler, t, x0, direction):
        seen.append((scheduler.config.prediction_type, int(t)))
        return real(scheduler, t, x0, direction)

    monkeypatch.setattr(lv, "ddim_update", recording)
    out = pipe(painting_png, "mist", arrows=[Arrow(10, 20, 30, 20)], control="trained", num_frames=7,
               num_inference_steps=4, long_side=64, progress=False, output_type="latent")
    assert {p for p, _ in seen} == {"v_prediction"}
    assert sorted({t for _, t in seen}, reverse=True) == [999, 749, 499, 249]   # trailing spacing
    assert torch.isfinite(out.frames).all() and out.frames.shape[2] == 7
    torch.testing.assert_close(out.frames[:, :, :1], pipe.encode_images(out.painting.image[None]))
    assert pipe.scheduler is not pipe.i2v_scheduler    # the base scheduler is restored afterwards
