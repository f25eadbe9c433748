"""The evaluation networks load from each real file format, compute what the references compute, and
refuse the wrong file with a message that says what it is."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eval_standins import (TinyI3DScript, TinyInceptionScript, save_script, tiny_alexnet_state, tiny_clip_folder,
                           tiny_i3d_state, tiny_inception_state, tiny_lpips_linear)
from shanshui.errors import ShanshuiError
from shanshui.metrics.networks import inception_preprocess, load_i3d, load_inception, tats_preprocess


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("weights")
    return {
        "i3d_ts": save_script(TinyI3DScript(), d / "i3d_torchscript.pt"),
        "inc_ts": save_script(TinyInceptionScript(), d / "inception-2015-12-05.pt"),
        "i3d_sd": tiny_i3d_state(d / "i3d_pretrained_400.pt"),
        "inc_sd": tiny_inception_state(d / "pt_inception-2015-12-05-6726825d.pth"),
        "alex": tiny_alexnet_state(d / "alexnet-owt-7be5be79.pth"),
        "lin": tiny_lpips_linear(d / "alex.pth"),
        "junk": _write(d / "junk.pt", b"not a weight file at all"),
        "list": _save(d / "list.pt", [torch.zeros(2)]),
    }


def _write(path, data):
    path.write_bytes(data)
    return path


def _save(path, obj):
    torch.save(obj, path)
    return path


def _clips(n=2, t=16, h=24, w=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, t, h, w, 3), dtype=np.uint8)


# ------------------------------------------------------------------------------------------------ I3D
def test_i3d_torchscript_is_the_stylegan_v_protocol(files):
    net = load_i3d(files["i3d_ts"])
    assert (net.protocol, net.ddof, net.fd_method) == ("stylegan-v", 0, "sqrtm")
    clips = _clips()
    ref = torch.jit.load(str(files["i3d_ts"]))
    x = torch.from_numpy(clips).permute(0, 4, 1, 2, 3)  # uint8 B,3,T,H,W
    expected = ref(x, rescale=True, resize=True, return_features=True).detach().double().numpy()
    np.testing.assert_allclose(net.features(clips), expected, rtol=1e-6)


def test_i3d_state_dict_is_the_tats_protocol(files):
    from shanshui.metrics.i3d import InceptionI3d

    net = load_i3d(files["i3d_sd"])
    assert (net.protocol, net.ddof, net.fd_method) == ("tats", 1, "eigen")
    clips = _clips(n=2, h=32, w=40)
    ref = InceptionI3d(400, width=1 / 16)
    ref.load_state_dict(torch.load(files["i3d_sd"], weights_only=True))
    ref.eval()
    with torch.no_grad():
        expected = ref(tats_preprocess(torch.from_numpy(clips).permute(0, 4, 1, 2, 3))).double().numpy()
    got = net.features(clips)
    assert got.shape == (2, 400)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(got[0], got[1])  # different clips, different features


def test_i3d_architecture_shapes():
    from shanshui.metrics.i3d import InceptionI3d

    full = InceptionI3d(400).state_dict()
    # the published Inception-I3D layer table, as the pytorch_i3d port names it
    assert tuple(full["Conv3d_1a_7x7.conv3d.weight"].shape) == (64, 3, 7, 7, 7)
    assert tuple(full["Mixed_4f.b1b.conv3d.weight"].shape) == (320, 160, 3, 3, 3)
    assert tuple(full["Mixed_5c.b0.conv3d.weight"].shape) == (384, 832, 1, 1, 1)
    assert tuple(full["logits.conv3d.weight"].shape) == (400, 1024, 1, 1, 1)
    assert "logits.conv3d.bias" in full and "Conv3d_1a_7x7.conv3d.bias" not in full
    # "SAME" padding: 16x224x224 -> Mixed_5c map of 2x7x7 (so the 2x7x7 average leaves one step)
    tiny = InceptionI3d(400, width=1 / 16).eval()
    seen = {}
    tiny.Mixed_5c.register_forward_hook(lambda m, i, o: seen.update(shape=tuple(o.shape)))
    with torch.no_grad():
        out = tiny(torch.zeros(1, 3, 16, 224, 224))
    assert seen["shape"][2:] == (2, 7, 7) and out.shape == (1, 400)


def test_tats_preprocess_known_values():
    white = torch.full((1, 3, 4, 20, 30), 255, dtype=torch.uint8)
    black = torch.zeros((1, 3, 4, 20, 30), dtype=torch.uint8)
    assert torch.allclose(tats_preprocess(white), torch.ones(1, 3, 4, 224, 224))
    assert torch.allclose(tats_preprocess(black), -torch.ones(1, 3, 4, 224, 224))
    # a 32x64 frame, left half black, right half white: shorter side -> 224 (448 wide), centre crop
    half = torch.zeros((1, 3, 1, 32, 64), dtype=torch.uint8)
    half[..., 32:] = 255
    out = tats_preprocess(half)
    assert out.shape == (1, 3, 1, 224, 224)
    assert out[..., 0].max() == -1 and out[..., -1].min() == 1  # the edge sits in the middle of the crop
    assert abs(int((out[0, 0, 0, 0] > 0).float().sum()) - 112) <= 4


# ------------------------------------------------------------------------------------------------ Inception
def test_fid_inception_has_torchvision_names_and_size():
    from shanshui.metrics.inception import FIDInceptionV3

    m = FIDInceptionV3()
    # torchvision's Inception3 without AuxLogits has 23,834,568 parameters at 1000 classes; 1008 adds 8x2049
    assert sum(p.numel() for p in m.parameters()) == 23_834_568 + 8 * 2049
    keys = m.state_dict().keys()
    assert {"Conv2d_1a_3x3.conv.weight", "Mixed_7c.branch3x3dbl_3b.bn.running_var", "fc.weight"} <= set(keys)


def test_inception_state_dict_gives_logits_without_output_bias(files):
    from shanshui.metrics.inception import FIDInceptionV3

    net = load_inception(files["inc_sd"])
    assert (net.source, net.kind) == ("pytorch-fid-state-dict", "logits")
    frames = _clips(n=1, t=3, h=40, w=48)[0]
    got = net.outputs(frames)
    ref = FIDInceptionV3(1008, width=1 / 8)
    ref.load_state_dict(torch.load(files["inc_sd"], weights_only=True), strict=False)
    ref.eval()
    with torch.no_grad():
        x = torch.from_numpy(frames).permute(0, 3, 1, 2)
        feats, _ = ref(inception_preprocess(x))
        expected = (feats @ ref.fc.weight.T).double().numpy()  # the fc bias (50.0) is not added
        with_bias = ref.fc(feats).double().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert np.abs(got - with_bias).min() > 49
    assert inception_preprocess(torch.full((1, 3, 5, 5), 128, dtype=torch.uint8)).shape == (1, 3, 299, 299)
    assert float(inception_preprocess(torch.full((1, 3, 5, 5), 128, dtype=torch.uint8)).abs().max()) < 1e-6


def test_inception_torchscript_is_called_like_stylegan2_ada(files):
    net = load_inception(files["inc_ts"])
    assert (net.source, net.kind) == ("stylegan2-ada-torchscript", "probs")
    frames = _clips(n=1, t=4)[0]
    ref = torch.jit.load(str(files["inc_ts"]))
    expected = ref(torch.from_numpy(frames).permute(0, 3, 1, 2), no_output_bias=True).detach().double().numpy()
    np.testing.assert_allclose(net.outputs(frames), expected, rtol=1e-6)


# ------------------------------------------------------------------------------------------------ wrong files
@pytest.mark.parametrize("loader,key,match", [
    (load_i3d, "inc_ts", "is the StyleGAN2-ADA Inception TorchScript, not the StyleGAN-V I3D"),
    (load_i3d, "inc_sd", "is an Inception-v3 state dict, not the StyleGAN-V I3D"),
    (load_i3d, "alex", "is an AlexNet-like state dict"),
    (load_inception, "i3d_ts", "is the StyleGAN-V I3D TorchScript, not the StyleGAN2-ADA"),
    (load_inception, "i3d_sd", "is an Inception-I3D state dict, not the StyleGAN2-ADA"),
    (load_i3d, "junk", "is neither a TorchScript model nor a PyTorch state dict"),
    (load_i3d, "list", "holds a list, not a state dict"),
])
def test_wrong_weight_files_are_named(files, loader, key, match):
    with pytest.raises(ShanshuiError, match=match):
        loader(files[key])


def test_missing_weight_file(tmp_path):
    with pytest.raises(ShanshuiError, match="does not exist"):
        load_i3d(tmp_path / "nope.pt")


# ------------------------------------------------------------------------------------------------ LPIPS
def _lpips_reference(alex_state, lin_state, a, b):
    """LPIPS written out layer by layer with functional ops (an independent route to the same number)."""
    import torch.nn.functional as F

    def feats(x):
        x = (x - torch.tensor([-.030, -.088, -.188]).view(1, 3, 1, 1)) / torch.tensor([.458, .448, .450]).view(1, 3, 1, 1)
        s = alex_state
        r1 = F.relu(F.conv2d(x, s["features.0.weight"], s["features.0.bias"], stride=4, padding=2))
        r2 = F.relu(F.conv2d(F.max_pool2d(r1, 3, 2), s["features.3.weight"], s["features.3.bias"], padding=2))
        r3 = F.relu(F.conv2d(F.max_pool2d(r2, 3, 2), s["features.6.weight"], s["features.6.bias"], padding=1))
        r4 = F.relu(F.conv2d(r3, s["features.8.weight"], s["features.8.bias"], padding=1))
        r5 = F.relu(F.conv2d(r4, s["features.10.weight"], s["features.10.bias"], padding=1))
        return [r1, r2, r3, r4, r5]

    total = 0
    for i, (x, y) in enumerate(zip(feats(a), feats(b))):
        nx = x / (torch.sqrt((x ** 2).sum(1, keepdim=True)) + 1e-10)
        ny = y / (torch.sqrt((y ** 2).sum(1, keepdim=True)) + 1e-10)
        total = total + ((nx - ny) ** 2 * lin_state[f"lin{i}.model.1.weight"]).sum(1).mean(dim=(1, 2))
    return total


def test_lpips_matches_a_layer_by_layer_reference(files):
    from shanshui.metrics.lpips import load_lpips, lpips_frames

    model = load_lpips(files["alex"], files["lin"])
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-40, 40, a.shape), 0, 255).astype(np.uint8)
    got = lpips_frames(model, a, b)
    ta = torch.from_numpy(a).permute(0, 3, 1, 2).float() / 127.5 - 1
    tb = torch.from_numpy(b).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        ref = _lpips_reference(torch.load(files["alex"], weights_only=True), torch.load(files["lin"], weights_only=True),
                               ta, tb).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    assert (got > 0).all()
    np.testing.assert_allclose(lpips_frames(model, a, a), 0.0, atol=1e-7)


def test_lpips_wrong_alexnet_file(files):
    from shanshui.metrics.lpips import load_lpips

    with pytest.raises(ShanshuiError, match="--lpips-alexnet .* is an Inception-v3 state dict, not an AlexNet"):
        load_lpips(files["inc_sd"], files["lin"])
    with pytest.raises(ShanshuiError, match="lack 'lin0.model.1.weight'"):
        load_lpips(files["alex"], files["alex"])


def test_lpips_wheel_linear_weights_when_installed():
    pytest.importorskip("lpips.weights", reason="the lpips wheel is not installed") if False else None
    import importlib.util

    if importlib.util.find_spec("lpips") is None:
        pytest.skip("the lpips wheel is not installed (pip install --no-deps lpips==0.1.4)")
    from shanshui.metrics.lpips import CHANNELS, default_linear_weights

    state = torch.load(default_linear_weights(), map_location="cpu", weights_only=True)
    assert [tuple(state[f"lin{i}.model.1.weight"].shape) for i in range(5)] == [(1, c, 1, 1) for c in CHANNELS]
    assert all(float(v.min()) >= 0 for v in state.values())  # LPIPS clamps its linear weights at >= 0


# ------------------------------------------------------------------------------------------------ CLIP
@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return tiny_clip_folder(tmp_path_factory.mktemp("clip") / "clip-tiny")


def test_clip_embeddings_match_transformers(clip_dir):
    from transformers import CLIPModel, CLIPTokenizer
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    from shanshui.metrics.clip import ClipEmbedder

    emb = ClipEmbedder(clip_dir)
    frames = _clips(n=1, t=3, h=40, w=56)[0]
    model = CLIPModel.from_pretrained(clip_dir).eval()
    proc = CLIPImageProcessorPil.from_pretrained(clip_dir)
    px = proc(images=list(frames), return_tensors="pt")["pixel_values"]
    np.testing.assert_allclose(emb.pixel_values(frames).numpy(), px.numpy(), atol=2e-2)
    with torch.no_grad():
        ref = model.get_image_features(pixel_values=emb.pixel_values(frames))
        ref = getattr(ref, "pooler_output", ref)
        tok = CLIPTokenizer.from_pretrained(clip_dir)(["misty peaks", "a boat on the lake"], padding=True,
                                                      return_tensors="pt")
        tref = model.get_text_features(**tok)
        tref = getattr(tref, "pooler_output", tref)
    ref = torch.nn.functional.normalize(ref.double(), dim=-1).numpy()
    tref = torch.nn.functional.normalize(tref.double(), dim=-1).numpy()
    np.testing.assert_allclose(emb.image_embeddings(frames), ref, atol=1e-6)
    np.testing.assert_allclose(emb.text_embeddings(["misty peaks", "a boat on the lake"]), tref, atol=1e-6)


def test_clip_scores_known_answers():
    from shanshui.metrics.clip import clip_temporal_consistency, clip_text_score

    e = np.eye(3)
    same = [np.stack([e[0], e[0]]), np.stack([e[1], e[1], e[1]])]
    assert clip_text_score(same, np.stack([e[0], e[1]]))["value"] == pytest.approx(100.0)
    assert clip_text_score(same, np.stack([e[2], e[2]]))["value"] == pytest.approx(0.0)
    # the mean is over all frames (5), and only the mean is clamped
    mixed = clip_text_score(same, np.stack([e[0], -e[1]]))
    assert mixed["per_video"] == pytest.approx([100.0, -100.0]) and mixed["value"] == pytest.approx(0.0)
    r = clip_text_score([np.stack([e[0]] * 4), np.stack([e[1]])], np.stack([e[0], -e[1]]))
    assert r["value"] == pytest.approx((400 - 100) / 5)
    c = np.cos(0.3), np.sin(0.3)
    turning = np.array([[1, 0, 0], [c[0], c[1], 0], [1, 0, 0]])
    assert clip_temporal_consistency([turning, np.stack([e[2]] * 3)])["value"] == pytest.approx((c[0] + 1) / 2)


def test_clip_folder_errors(tmp_path, clip_dir):
    from shanshui.metrics.clip import ClipEmbedder

    with pytest.raises(ShanshuiError, match="not a folder"):
        ClipEmbedder(tmp_path / "none")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ShanshuiError, match="no config.json"):
        ClipEmbedder(tmp_path / "empty")
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ShanshuiError, match="holds a 'bert' model, not a CLIP model"):
        ClipEmbedder(tmp_path / "bert")
