"""Attribute probe, Fréchet distance and the flow camera rule (shanshui.metrics.probe)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shanshui.data.procedural import ATTRIBUTES
from shanshui.errors import ShanshuiError
from shanshui.metrics.probe import (
    APPEARANCE_KEYS,
    AttributeProbe,
    AugmentConfig,
    ProbeConfig,
    TrainConfig,
    appearance_attributes,
    camera_direction,
    class_weights,
    clip_features,
    decode_labels,
    encode_labels,
    frechet_distance,
    load_probe,
    predict_clip,
    random_blur,
    save_probe,
    temporal_cosine,
    train_probe,
)

SMALL = ProbeConfig(widths=(8, 8, 16), groups=4, size=32)


# ------------------------------------------------------------------------------------------- Fréchet
def _exact_gaussian_sample(mean, cov_diag, n=50, seed=0):
    """Rows whose sample mean and (ddof 1) covariance are exactly ``mean`` and ``diag(cov_diag)``."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(mean)))
    x -= x.mean(0)
    chol = np.linalg.cholesky(np.cov(x, rowvar=False))
    white = x @ np.linalg.inv(chol).T  # sample covariance = identity
    return white * np.sqrt(cov_diag) + mean


def test_frechet_identical_sets_is_zero():
    a = np.random.default_rng(1).normal(size=(40, 6))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)


def test_frechet_closed_form_for_diagonal_gaussians():
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([3.0, 1.0, 0.0])
    v1, v2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    a, b = _exact_gaussian_sample(mu1, v1, seed=2), _exact_gaussian_sample(mu2, v2, n=70, seed=3)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)  # 13 + 4 + 1
    assert expected == pytest.approx(18.0)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)


def test_frechet_mean_shift_only_and_symmetry():
    rng = np.random.default_rng(4)
    a = rng.normal(size=(30, 5)) @ rng.normal(size=(5, 5))  # correlated features
    b = a + np.array([1.0, 0.0, 2.0, 0.0, 0.0])
    assert frechet_distance(a, b) == pytest.approx(5.0, rel=1e-6)
    c = rng.normal(size=(25, 5)) * 2
    assert frechet_distance(a, c) == pytest.approx(frechet_distance(c, a), rel=1e-9)
    assert frechet_distance(a, c) > 1.0


def test_frechet_validates_inputs():
    with pytest.raises(ShanshuiError, match="at least 2 rows"):
        frechet_distance(np.zeros((1, 3)), np.zeros((5, 3)))
    with pytest.raises(ShanshuiError, match="dimensions differ"):
        frechet_distance(np.zeros((4, 3)), np.zeros((4, 2)))
    with pytest.raises(ShanshuiError, match="2-D"):
        frechet_distance(np.zeros(4), np.zeros((4, 1)))
    with pytest.raises(ShanshuiError, match="finite"):
        frechet_distance(np.full((3, 2), np.nan), np.zeros((3, 2)))


# ------------------------------------------------------------------------------------------- labels
def test_appearance_keys_leave_out_motion():
    assert set(APPEARANCE_KEYS) == set(ATTRIBUTES) - {"sun_motion", "camera"}
    assert len(APPEARANCE_KEYS) == 10
    assert appearance_attributes() == {k: list(ATTRIBUTES[k]) for k in APPEARANCE_KEYS}


def test_label_round_trip_over_every_value():
    label_set = {k: list(v) for k, v in ATTRIBUTES.items()}
    for key, values in ATTRIBUTES.items():
        for i, value in enumerate(values):
            attrs = {k: v[0] for k, v in ATTRIBUTES.items()}
            attrs[key] = value
            idx = encode_labels(attrs, label_set)
            assert idx[key] == i
            assert decode_labels(idx, label_set) == attrs


def test_label_errors():
    attrs = {k: v[0] for k, v in ATTRIBUTES.items()}
    with pytest.raises(ShanshuiError, match="fog"):
        encode_labels({**attrs, "fog": "thick"})
    with pytest.raises(ShanshuiError, match="lack 'rain'"):
        encode_labels({k: v for k, v in attrs.items() if k != "rain"})
    with pytest.raises(ShanshuiError, match="lake"):
        encode_labels({**attrs, "lake": 1})  # 1 is not the boolean True
    with pytest.raises(ShanshuiError, match="outside"):
        decode_labels({**encode_labels(attrs), "sun": 3})


# ------------------------------------------------------------------------------------------- network
def test_probe_shapes_and_heads_read_features():
    torch.manual_seed(0)
    probe = AttributeProbe(config=SMALL).eval()
    x = torch.randn(3, 3, 32, 32)
    logits = probe(x)
    assert list(logits) == list(APPEARANCE_KEYS)
    for k, v in logits.items():
        assert v.shape == (3, len(ATTRIBUTES[k]))
    feats = probe.features(x)
    assert feats.shape == (3, SMALL.feature_dim)
    for k, head in probe.heads.items():
        torch.testing.assert_close(head(feats), logits[k])
    assert sum(p.numel() for p in AttributeProbe().parameters()) < 400_000  # the default stays small


def _toy_frames(n=24, size=32, seed=0):
    """Frames whose 'sun' label is their colour (grey, red, blue); 'rain' is drawn as vertical stripes."""
    rng = np.random.default_rng(seed)
    colours = np.array([[128, 128, 128], [200, 40, 40], [40, 40, 200]], np.uint8)
    sun = np.arange(n) % 3
    rain = (np.arange(n) // 3) % 2
    frames = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        img = colours[sun[i]].astype(np.int16) + rng.integers(-10, 11, (size, size, 3))
        if rain[i]:
            img[:, ::4] -= 60
        frames[i] = np.clip(img, 0, 255)
    return frames, sun, rain


def test_train_probe_fits_a_separable_toy_label():
    label_set = {"sun": list(ATTRIBUTES["sun"]), "rain": [False, True]}
    frames, sun, rain = _toy_frames()
    labels = np.stack([sun, rain], 1)
    cfg = TrainConfig(epochs=12, batch_size=8, lr=1e-2, warmup_steps=2, seed=0, threads=1,
                      augment=AugmentConfig(blur_p=0.3, blur_max_sigma=1.0))
    probe, history = train_probe(frames, labels, label_set, cfg, SMALL)
    assert history[-1] < 0.5 * history[0]
    preds = [predict_clip(probe, frames[i : i + 1]) for i in range(len(frames))]
    acc_sun = np.mean([p["sun"] == label_set["sun"][s] for p, s in zip(preds, sun)])
    assert acc_sun == 1.0
    # deterministic for a seed
    probe2, history2 = train_probe(frames, labels, label_set, cfg, SMALL)
    assert history2 == history


def test_train_probe_rejects_bad_labels():
    frames, sun, _ = _toy_frames(n=4)
    with pytest.raises(ShanshuiError, match="labels of 'sun'"):
        train_probe(frames, np.full((4, 1), 5), {"sun": list(ATTRIBUTES["sun"])}, TrainConfig(epochs=1),
                    SMALL)
    with pytest.raises(ShanshuiError, match="uint8"):
        train_probe(frames.astype(np.float32), sun[:, None], {"sun": list(ATTRIBUTES["sun"])}, None, SMALL)


def test_class_weights():
    labels = np.array([[0, 1], [0, 1], [0, 0], [1, 1]])
    label_set = {"clouds": [False, True], "fog": list(ATTRIBUTES["fog"])}
    w = class_weights(labels, label_set, power=1.0)
    np.testing.assert_allclose(w["clouds"].numpy(), [2 / 3, 2.0], rtol=1e-6)  # 0.75·w0 + 0.25·w1 = 1
    assert w["fog"][2] == w["fog"].max()  # an unseen class gets the largest weight
    assert class_weights(labels, label_set, power=0.0) == {}


def test_random_blur_keeps_mean_and_softens():
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(2, 3, 16, 16)
    x[:, :, :, ::2] = 1.0
    y = random_blur(x, max_sigma=2.0, p=1.0, gen=g)
    assert y.shape == x.shape
    torch.testing.assert_close(y.mean(), x.mean(), atol=1e-4, rtol=0)
    assert y.std() < 0.5 * x.std()
    same = random_blur(x, max_sigma=2.0, p=0.0, gen=g)  # p = 0: identity
    torch.testing.assert_close(same, x)


# ------------------------------------------------------------------------------------------- files
def test_save_load_round_trip(tmp_path):
    torch.manual_seed(1)
    probe = AttributeProbe(config=SMALL).eval()
    frames = np.random.default_rng(0).integers(0, 256, (3, 40, 40, 3), dtype=np.uint8)  # resized to 32
    path = save_probe(probe, tmp_path / "p.safetensors", extra={"note": "test"})
    loaded = load_probe(path)
    assert loaded.config == probe.config
    np.testing.assert_array_equal(clip_features(loaded, frames), clip_features(probe, frames))
    assert predict_clip(loaded, frames) == predict_clip(probe, frames)


def test_load_errors(tmp_path):
    probe = AttributeProbe(config=SMALL)
    path = save_probe(probe, tmp_path / "p.safetensors")
    with pytest.raises(ShanshuiError, match="do not exist"):
        load_probe(tmp_path / "missing.safetensors")
    # mismatched attribute set
    with pytest.raises(ShanshuiError, match="retrain"):
        load_probe(path, label_set={"fog": list(ATTRIBUTES["fog"])})
    # corrupt weights
    path.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ShanshuiError, match="not a readable .safetensors"):
        load_probe(path)
    # corrupt sidecar
    path2 = save_probe(probe, tmp_path / "q.safetensors")
    path2.with_suffix(".json").write_text("{broken")
    with pytest.raises(ShanshuiError, match="not readable JSON"):
        load_probe(path2)
    # weights of another architecture
    path3 = save_probe(AttributeProbe(config=ProbeConfig(widths=(8, 16, 16), groups=4, size=32)),
                       tmp_path / "r.safetensors")
    path3.with_suffix(".json").write_text((tmp_path / "p.json").read_text())
    with pytest.raises(ShanshuiError, match="do not fit"):
        load_probe(path3)


def test_temporal_cosine():
    f = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert temporal_cosine(f) == pytest.approx(0.5)
    assert temporal_cosine(f + 5, centre=np.array([5.0, 5.0])) == pytest.approx(0.5)
    with pytest.raises(ShanshuiError):
        temporal_cosine(f[:1])


# ------------------------------------------------------------------------------------------- camera
def _flows(dx, n=3, size=128, moving_fraction=0.0, other=3.0):
    f = np.zeros((n, size, size, 2), np.float32)
    f[..., 0] = dx
    rows = int(moving_fraction * size)
    f[:, :rows, :, 0] = other  # a drifting element over a minority of the frame
    return f


def test_camera_direction_signs_follow_the_renderer():
    # "pan left" moves the picture right (dx > 0), "pan right" moves it left
    assert camera_direction(_flows(0.5)) == "pan left"
    assert camera_direction(_flows(-0.5)) == "pan right"
    assert camera_direction(_flows(0.0, moving_fraction=0.3)) == "still"
    assert camera_direction(_flows(0.05)) == "still"
    assert camera_direction(_flows(0.3), threshold=0.5) == "still"


def test_camera_direction_agrees_with_rendered_flow():
    from shanshui.data.procedural import render_clip, sample_scene

    for camera in ("pan left", "pan right", "still"):
        scene = sample_scene(3, camera=camera, rain=False)
        _, flow = render_clip(scene, frames=3, size=32)
        assert camera_direction(flow) == camera
    with pytest.raises(ShanshuiError):
        camera_direction(np.zeros((2, 8, 8)))
