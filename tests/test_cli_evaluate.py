"""``shanshui evaluate`` end to end with tiny stand-in networks: the numbers equal the library functions on
the same features, only metrics with weights run, and bad input fails with one line and exit 2."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from eval_standins import (TinyI3DScript, TinyInceptionScript, save_script, tiny_alexnet_state, tiny_clip_folder,
                           tiny_lpips_linear)
from shanshui.cli import main
from shanshui.metrics import frechet_distance, inception_score, kernel_distance
from shanshui.video_io import write_video


def _videos(folder, n, frames=16, size=32, seed=0, shift=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    clips = []
    for i in range(n):
        base = rng.integers(0, 200, (1, size, size, 3)) + shift
        drift = np.arange(frames)[:, None, None, None] * rng.integers(1, 4)
        noise = rng.integers(0, 12, (frames, size, size, 3))  # every frame differs (GIF writers merge repeats)
        clip = np.clip(base + drift + noise, 0, 255).astype(np.uint8)
        write_video(clip, folder / f"v{i:03d}.gif", fps=8)
        clips.append(clip)
    return clips


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("eval")
    gen = _videos(d / "gen", 6, seed=1)
    real = _videos(d / "real", 7, seed=2, shift=40)
    w = {"i3d": save_script(TinyI3DScript(), d / "i3d_torchscript.pt"),
         "inc": save_script(TinyInceptionScript(), d / "inception-2015-12-05.pt"),
         "alex": tiny_alexnet_state(d / "alexnet.pth"), "lin": tiny_lpips_linear(d / "alex_lin.pth"),
         "clip": tiny_clip_folder(d / "clip")}
    (d / "prompts.txt").write_text("\n".join(f"misty peaks {i}" for i in range(6)) + "\n")
    return d, gen, real, w


def _read_back(folder):
    from shanshui.metrics.suite import list_videos, read_clip

    return np.stack([read_clip(p, 16) for p in list_videos(folder, "x")])


def test_evaluate_fvd_kvd_is_match_the_library(setup, capsys):
    d, _, _, w = setup
    out = d / "res.json"
    rc = main(["evaluate", str(d / "gen"), "--real", str(d / "real"), "--i3d", str(w["i3d"]), "--inception",
               str(w["inc"]), "--is-splits", "2", "--json", str(out), "--no-progress"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    res = json.loads(out.read_text())
    m = res["metrics"]
    # the same numbers from the stand-in network and the library functions directly
    ts = torch.jit.load(str(w["i3d"]))
    feats = lambda v: ts(torch.from_numpy(v).permute(0, 4, 1, 2, 3), rescale=True, resize=True,  # noqa: E731
                         return_features=True).detach().double().numpy()
    fg, fr = feats(_read_back(d / "gen")), feats(_read_back(d / "real"))
    assert m["FVD16"]["value"] == pytest.approx(frechet_distance(fg, fr, ddof=0, method="sqrtm"), rel=1e-6)
    assert m["FVD16"]["protocol"] == "stylegan-v" and m["FVD16"]["covariance"] == "biased (/N)"
    assert m["KVD16"]["value"] == pytest.approx(kernel_distance(fg, fr)["value"], rel=1e-6)
    frames = _read_back(d / "gen").reshape(-1, 32, 32, 3)
    inc = torch.jit.load(str(w["inc"]))
    probs = inc(torch.from_numpy(frames).permute(0, 3, 1, 2), no_output_bias=True).detach().double().numpy()
    assert (m["IS"]["value"], m["IS"]["std"]) == pytest.approx(inception_score(probs, splits=2), rel=1e-6)
    assert m["IS"]["n_frames"] == 6 * 16
    # 6 and 7 videos for 8-dim features: the covariance warning is printed and stored
    assert "only 6 samples for 8-dimensional features" in cap.err and "warning" in m["FVD16"]
    # skipped metrics are named with the reason, the table names the protocol
    assert res["skipped"] == {"clip-text": "no --clip given", "clip-temp": "no --clip given",
                              "lpips": "no --lpips-alexnet given"}
    assert "skipped lpips: no --lpips-alexnet given" in cap.err
    assert "| FVD16 [stylegan-v] ↓ | KVD16 [stylegan-v] ↓ | IS [stylegan2-ada-torchscript] ↑ |" in cap.out
    assert f"| gen | {m['FVD16']['value']:.2f}" in cap.out or f"| gen | {m['FVD16']['value']:.4f}" in cap.out


def test_evaluate_clip_and_lpips(setup, capsys):
    from shanshui.metrics.clip import ClipEmbedder, clip_temporal_consistency, clip_text_score
    from shanshui.metrics.lpips import load_lpips, lpips_frames

    d, gen, _, w = setup
    # LPIPS pairs by file name: a "ground truth" folder with the same names
    gt = d / "gt"
    _videos(gt, 6, seed=1, shift=5)
    out = d / "clip.json"
    rc = main(["evaluate", str(d / "gen"), "--real", str(gt), "--clip", str(w["clip"]), "--prompts",
               str(d / "prompts.txt"), "--lpips-alexnet", str(w["alex"]), "--lpips-linear", str(w["lin"]),
               "--metrics", "clip-text,clip-temp,lpips", "--json", str(out), "--no-progress"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    m = json.loads(out.read_text())["metrics"]
    emb = ClipEmbedder(w["clip"])
    clips = _read_back(d / "gen")
    img = [emb.image_embeddings(c) for c in clips]
    txt = emb.text_embeddings([f"misty peaks {i}" for i in range(6)])
    assert m["CLIP-text"]["value"] == pytest.approx(clip_text_score(img, txt)["value"], rel=1e-6)
    assert m["CLIP-temp"]["value"] == pytest.approx(clip_temporal_consistency(img)["value"], rel=1e-6)
    model = load_lpips(w["alex"], w["lin"])
    ref = np.mean([lpips_frames(model, a, b).mean() for a, b in zip(clips, _read_back(gt))])
    assert m["LPIPS"]["value"] == pytest.approx(ref, rel=1e-5) and m["LPIPS"]["n_pairs"] == 6
    assert "skipped" not in cap.err


def _fails(args, capsys, match):
    rc = main(args)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert match in err, err


def test_evaluate_bad_input(setup, tmp_path, capsys):
    d, _, _, w = setup
    gen, real = str(d / "gen"), str(d / "real")
    out = tmp_path / "r.json"
    # an Inception file given as --i3d
    _fails(["evaluate", gen, "--real", real, "--i3d", str(w["inc"]), "--json", str(out)], capsys,
           "is the StyleGAN2-ADA Inception TorchScript, not the StyleGAN-V I3D")
    # videos shorter than 16 frames
    short = tmp_path / "short"
    _videos(short, 3, frames=8)
    _fails(["evaluate", str(short), "--real", real, "--i3d", str(w["i3d"]), "--json", str(out), "--no-progress"],
           capsys, "has 8 frames; the protocol needs 16")
    # mismatched sizes inside one folder
    mixed = tmp_path / "mixed"
    _videos(mixed, 2, size=32)
    write_video(np.random.default_rng(0).integers(0, 255, (16, 40, 40, 3), dtype=np.uint8), mixed / "z.gif")
    _fails(["evaluate", str(mixed), "--real", real, "--i3d", str(w["i3d"]), "--json", str(out), "--no-progress"],
           capsys, "'z.gif' is 40x40 but 'v000.gif' is 32x32")
    # a single video: no covariance at all
    one = tmp_path / "one"
    _videos(one, 1)
    _fails(["evaluate", str(one), "--real", real, "--i3d", str(w["i3d"]), "--json", str(out), "--no-progress"],
           capsys, "at least 2 rows")
    # nothing to compute, unknown metric, prompts count, missing folder
    _fails(["evaluate", gen, "--real", real, "--json", str(out)], capsys, "no metric of --metrics fvd,kvd,is,clip-text,clip-temp,lpips can be computed")
    _fails(["evaluate", gen, "--metrics", "fvd,bleu"], capsys, "--metrics 'fvd,bleu' must be a comma list")
    (tmp_path / "p.txt").write_text("one prompt\n")
    _fails(["evaluate", gen, "--clip", str(w["clip"]), "--prompts", str(tmp_path / "p.txt"), "--metrics",
            "clip-text", "--no-progress"], capsys, "has 1 prompts for 6 videos")
    _fails(["evaluate", str(tmp_path / "nope"), "--i3d", str(w["i3d"])], capsys, "is not a folder of videos")
    assert not out.exists()  # no partial result file after any error


def test_generated_and_real_of_different_sizes_warn(setup, tmp_path, capsys):
    d, _, _, w = setup
    big = tmp_path / "real48"
    _videos(big, 3, size=48, seed=5)
    rc = main(["evaluate", str(d / "gen"), "--real", str(big), "--i3d", str(w["i3d"]), "--metrics", "fvd",
               "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "warning: generated videos are 32x32, real ones 48x48" in err
