"""(video, caption) datasets: scanning, clip sampling, bad files, statistics and ``shanshui data check``.

Every synthetic video encodes its frame number in its pixels (frame ``i`` is a flat grey of ``STEP * i``),
so a decoded clip tells exactly which source frames it holds.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from shanshui.cli import main
from shanshui.data.dataset import VideoTextDataset, collate, dataset_stats, scan_dataset
from shanshui.data.decode import VideoInfo, probe_video, read_frames, resize_center_crop
from shanshui.errors import ShanshuiError
from shanshui.video_io import write_video

STEP = 5  # grey level per frame number: 40 frames -> 0..195


def grey_frames(n: int, h: int, w: int) -> np.ndarray:
    frames = np.zeros((n, h, w, 3), np.uint8)
    for i in range(n):
        frames[i] = STEP * i
    return frames


def frame_numbers(clip: np.ndarray) -> list[int]:
    """Frame numbers of a uint8 clip (F, H, W, 3) or a [-1, 1] tensor (F, 3, H, W)."""
    if isinstance(clip, torch.Tensor):
        clip = ((clip + 1) * 127.5).numpy()
    return [int(round(float(np.mean(f)) / STEP)) for f in clip]


def write_frame_folder(folder: Path, frames: np.ndarray) -> None:
    folder.mkdir(parents=True)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"frame_{i}.png")  # unpadded: order must be natural, not lexical


@pytest.fixture(scope="module")
def sidecar_dir(tmp_path_factory) -> Path:
    """mp4 + gif + frame folder with captions, a corrupt mp4, a too-short mp4 and a caption-less mp4."""
    root = tmp_path_factory.mktemp("sidecars")
    write_video(grey_frames(40, 48, 64), root / "a.mp4", fps=10)
    (root / "a.txt").write_text("Mountains, dense fog, red sun.\n")
    (root / "sub").mkdir()
    write_video(grey_frames(30, 32, 32), root / "sub" / "b.gif", fps=10)
    (root / "sub" / "b.txt").write_text("Pines by a waterfall")
    write_frame_folder(root / "sub" / "c", grey_frames(33, 40, 40))
    (root / "sub" / "c.txt").write_text("  Boat on the lake,\n flying birds, mist over the river.  ")
    (root / "corrupt.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, np.uint8).tobytes())
    (root / "corrupt.txt").write_text("Broken file")
    write_video(grey_frames(10, 48, 64), root / "short.mp4", fps=10)
    (root / "short.txt").write_text("Too short to sample")
    write_video(grey_frames(40, 48, 64), root / "nocap.mp4", fps=10)
    (root / "notes.md").write_text("not a video")
    return root


# ---------------------------------------------------------------------------------------------------
# Decoding


@pytest.mark.parametrize("name", ["a.mp4", "sub/b.gif", "sub/c"])
def test_read_frames_returns_exactly_the_requested_frames(sidecar_dir, name):
    path = sidecar_dir / name
    n = probe_video(path).num_frames
    for wanted in ([0, 1, 2], [3, 7, 11, 15], [17, 21, 25, 29], [n - 9, n - 5, n - 1]):
        assert frame_numbers(np.stack(read_frames(path, wanted))) == wanted  # [17, ...] takes the seek path
    with pytest.raises(ShanshuiError, match="frame"):
        read_frames(path, [n - 1, n])


def test_probe_reports_size_fps_and_count(sidecar_dir):
    assert probe_video(sidecar_dir / "a.mp4") == VideoInfo(40, 64, 48, 10.0)
    assert probe_video(sidecar_dir / "a.mp4", count_frames=True).num_frames == 40
    assert probe_video(sidecar_dir / "sub/b.gif") == VideoInfo(30, 32, 32, 10.0)
    assert probe_video(sidecar_dir / "sub/c") == VideoInfo(33, 40, 40, None)
    assert probe_video(sidecar_dir / "sub/c", fps=25).duration == pytest.approx(33 / 25)
    with pytest.raises(ShanshuiError, match="corrupt.mp4"):
        probe_video(sidecar_dir / "corrupt.mp4")


def test_center_crop_geometry_landscape_and_portrait():
    # column x carries red 4x, row y carries green 4y; 64 wide x 48 high, cropped to 24
    y, x = np.mgrid[0:48, 0:64]
    frame = np.stack([4 * x, 4 * y, np.zeros_like(x)], -1).astype(np.uint8)
    out = resize_center_crop(frame, 24)
    # 48 -> 24 halves the image (64 -> 32); the 24-wide crop starts at (32 - 24) // 2 = 4, i.e. source
    # column 8. INTER_AREA averages each 2x2 block: red = 4 * (2j + 8 + 0.5), green = 4 * (2i + 0.5).
    assert out.shape == (24, 24, 3)
    np.testing.assert_array_equal(out[0, :, 0], 8 * np.arange(24) + 34)
    np.testing.assert_array_equal(out[:, 0, 1], 8 * np.arange(24) + 2)
    portrait = resize_center_crop(np.ascontiguousarray(frame.transpose(1, 0, 2)), 24)
    np.testing.assert_array_equal(portrait, out.transpose(1, 0, 2))
    # the exact size is a pure crop, a smaller frame is enlarged
    np.testing.assert_array_equal(resize_center_crop(frame, 48), frame[:, 8:56])
    assert resize_center_crop(frame[:20, :30], 40).shape == (40, 40, 3)


# ---------------------------------------------------------------------------------------------------
# Scanning and skipping


def test_scan_sidecars_finds_pairs_and_reasons(sidecar_dir):
    index = scan_dataset(sidecar_dir)
    rel = sorted(str(it.video.relative_to(sidecar_dir)) for it in index.items)
    assert rel == ["a.mp4", "corrupt.mp4", "short.mp4", "sub/b.gif", "sub/c"]
    captions = {it.video.name: it.caption for it in index.items}
    assert captions["c"] == "Boat on the lake, flying birds, mist over the river."
    assert [(p.name, r) for p, r in index.skipped] == [("nocap.mp4", "no caption (expected 'nocap.txt')")]


def test_folder_of_clips_with_a_thumbnail_is_not_a_frame_folder(tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    write_video(grey_frames(4, 8, 8), clips / "x.gif", fps=10)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(clips / "thumb.png")
    write_frame_folder(tmp_path / "frames", grey_frames(3, 8, 8))
    (tmp_path / "frames.txt").write_text("a frame folder")
    index = scan_dataset(tmp_path)
    assert [it.video.name for it in index.items] == ["frames"]
    assert [(p.name, r) for p, r in index.skipped] == [("x.gif", "no caption (expected 'clips/x.txt')")]


def test_dataset_skips_and_counts_corrupt_short_and_captionless(sidecar_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="shanshui.data"):
        ds = VideoTextDataset(sidecar_dir, size=32, seed=1)
    assert sorted(it.video.name for it in ds.items) == ["a.mp4", "b.gif", "c"]
    reasons = {p.name: r for p, r in ds.skipped}
    assert set(reasons) == {"nocap.mp4", "corrupt.mp4", "short.mp4"}
    assert reasons["corrupt.mp4"].startswith("unreadable: cannot open video")
    assert reasons["short.mp4"] == "too short: 10 frame(s), one clip of 8 frames at stride 4 needs 29"
    assert ds.counters() == {"items": 3, "skipped": 3, "bad_at_load": 0, "replaced_samples": 0}
    assert "skipped 3 of 6 entries" in caplog.text


def test_clip_shape_range_and_stride_sampling(sidecar_dir):
    ds = VideoTextDataset(sidecar_dir, size=32, seed=5)
    assert len(ds) == 3 and ds.span == 29
    for i in range(len(ds)):
        for epoch in range(3):
            ds.set_epoch(epoch)
            s = ds[i]
            px = s["pixel_values"]
            assert px.shape == (8, 3, 32, 32) and px.dtype == torch.float32
            assert -1.0 <= px.min() and px.max() <= 1.0
            n = ds.infos[i].num_frames
            assert 0 <= s["start"] <= n - 29 and s["index"] == i and s["replaced"] is False
            assert frame_numbers(px) == [s["start"] + 4 * k for k in range(8)]
            assert s["caption"] == ds.items[i].caption
    # without random starts every clip begins at frame 0
    fixed = VideoTextDataset(sidecar_dir, frames=4, stride=2, size=16, random_start=False)
    assert [fixed[i]["start"] for i in range(3)] == [0, 0, 0]
    assert frame_numbers(fixed[0]["pixel_values"]) == [0, 2, 4, 6]


def test_starts_are_deterministic_per_seed_epoch_index(sidecar_dir):
    def starts(seed, epoch):
        ds = VideoTextDataset(sidecar_dir, frames=3, stride=2, size=16, seed=seed)
        ds.set_epoch(epoch)
        return [ds.clip_start(i) for i in range(len(ds))]

    assert starts(7, 0) == starts(7, 0)
    assert starts(7, 1) == starts(7, 1)
    assert starts(7, 0) != starts(7, 1) and starts(7, 0) != starts(8, 0)
    a, b = (VideoTextDataset(sidecar_dir, frames=3, stride=2, size=16, seed=7) for _ in range(2))
    b.set_epoch(1)
    b.set_epoch(0)  # going back to an epoch (resume) gives its clips again
    torch.testing.assert_close(a[2]["pixel_values"], b[2]["pixel_values"], rtol=0, atol=0)
    # over many epochs the starts spread over every valid position (40-frame mp4: 0..35)
    ds = VideoTextDataset(sidecar_dir, frames=3, stride=2, size=16, seed=7)
    i = [it.video.name for it in ds.items].index("a.mp4")
    seen = set()
    for e in range(300):
        ds.set_epoch(e)
        seen.add(ds.clip_start(i))
    assert min(seen) == 0 and max(seen) == 35 and len(seen) > 30


def test_dataloader_workers_draw_the_same_clips(sidecar_dir):
    ds = VideoTextDataset(sidecar_dir, frames=4, stride=3, size=16, seed=3)
    ds.set_epoch(2)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate)
    batches = list(loader)
    assert batches[0]["pixel_values"].shape == (2, 4, 3, 16, 16)
    assert [c for b in batches for c in b["caption"]] == [it.caption for it in ds.items]
    assert [int(s) for b in batches for s in b["start"]] == [ds.clip_start(i) for i in range(len(ds))]


def test_file_broken_mid_stream_is_replaced_deterministically(tmp_path, caplog):
    root = tmp_path / "ds"
    write_frame_folder(root / "broken", grey_frames(20, 24, 24))
    for f in sorted((root / "broken").iterdir())[1:]:  # frame 0 is fine (probe passes), the rest is garbage
        f.write_bytes(b"\x89PNG not really")
    (root / "broken.txt").write_text("broken frames")
    for name in ("x", "y"):
        write_frame_folder(root / name, grey_frames(20, 24, 24))
        (root / f"{name}.txt").write_text(f"caption {name}")
    with caplog.at_level(logging.WARNING, logger="shanshui.data"):
        ds = VideoTextDataset(root, frames=4, stride=2, size=16, seed=0)
        bad = [it.video.name for it in ds.items].index("broken")
        first, again = ds[bad], ds[bad]
    assert first["replaced"] and first["index"] != bad
    assert first["caption"] == ds.items[first["index"]].caption
    assert again["index"] == first["index"] and again["start"] == first["start"]
    assert list(ds.bad_items) == [bad] and "cannot read frame" in ds.bad_items[bad]
    assert ds.counters()["bad_at_load"] == 1 and ds.counters()["replaced_samples"] == 2
    assert caplog.text.count("skipping unreadable video") == 1  # logged once
    fresh = VideoTextDataset(root, frames=4, stride=2, size=16, seed=0)  # another process, same answer
    assert fresh[bad]["index"] == first["index"]
    # when every item breaks, the error says so instead of looping
    for name in ("x", "y"):
        for f in sorted((root / name).iterdir())[1:]:
            f.write_bytes(b"garbage")
    with pytest.raises(ShanshuiError, match="all 3 item"):
        VideoTextDataset(root, frames=4, stride=2, size=16)[0]


def test_overcounted_header_takes_the_last_real_clip(sidecar_dir):
    ds = VideoTextDataset(sidecar_dir, frames=8, stride=4, size=16, seed=0)
    i = [it.video.name for it in ds.items].index("a.mp4")
    ds.infos[i] = VideoInfo(90, 64, 48, 10.0)  # the container claims 90 frames, 40 exist
    epoch = next(e for e in range(100) if (ds.set_epoch(e) or True) and ds.clip_start(i) > 11)
    ds.set_epoch(epoch)
    s = ds[i]
    assert s["start"] == 11 and not s["replaced"]
    assert frame_numbers(s["pixel_values"]) == list(range(11, 40, 4))


def test_manifest_jsonl_and_csv(tmp_path):
    root = tmp_path / "m"
    write_frame_folder(root / "clips" / "000001", grey_frames(12, 20, 30))
    write_video(grey_frames(12, 20, 30), root / "clips" / "000002.gif", fps=10)
    lines = [
        {"video": "clips/000001/", "caption": "Ink mountains", "fps": 12, "seed": 4,
         "attributes": {"fog": 1}},
        {"video": "clips/000002.gif", "caption": "Red sun over the lake"},
        {"video": "clips/000003.mp4", "caption": "missing file"},
        {"video": "clips/000002.gif"},
        {"video": "clips/000002.txt", "caption": "wrong type"},
    ]
    rows = [json.dumps(x) for x in lines]
    text = "\n".join(rows[:2] + ["{not json"] + rows[2:])
    (root / "metadata.jsonl").write_text(text + "\n\n")
    (root / "clips" / "000002.txt").write_text("x")
    index = scan_dataset(root)
    assert index.source == "metadata.jsonl"
    assert [it.caption for it in index.items] == ["Ink mountains", "Red sun over the lake"]
    assert index.items[0].fps == 12.0 and index.items[0].meta == {"seed": 4, "attributes": {"fog": 1}}
    assert [r for _, r in index.skipped] == [
        "metadata.jsonl line 3: not valid JSON (Expecting property name enclosed in double quotes)",
        "metadata.jsonl line 4: file not found",
        "metadata.jsonl line 5: no caption",
        "metadata.jsonl line 6: unsupported type '.txt' (readable: .mp4, .webm, .mov, .mkv, .avi, .m4v, "
        ".gif, .webp or a folder of frames)",
    ]
    ds = VideoTextDataset(root, frames=3, stride=2, size=16, seed=0)
    assert len(ds) == 2 and ds.infos[0] == VideoInfo(12, 30, 20, 12.0)
    stats = dataset_stats(index, frames=3, stride=2, workers=1)
    assert stats["duration_s"] == pytest.approx({"min": 1.0, "median": 1.1, "max": 1.2, "total": 2.2})
    # the jsonl wins over a csv; without it the csv is read
    (root / "metadata.jsonl").unlink()
    (root / "metadata.csv").write_text('video,caption\nclips/000002.gif,"Sun, lake"\nclips/000001,\n')
    index = scan_dataset(root)
    assert index.source == "metadata.csv" and [it.caption for it in index.items] == ["Sun, lake"]
    assert [r for _, r in index.skipped] == ["metadata.csv row 3: no caption"]
    (root / "metadata.csv").write_text("path,text\nclips/000002.gif,x\n")
    with pytest.raises(ShanshuiError, match=r"columns \['path', 'text'\]; it needs 'video' and 'caption'"):
        scan_dataset(root)


def test_empty_and_missing_dataset_errors(tmp_path):
    with pytest.raises(ShanshuiError, match="holds no \\(video, caption\\) pairs"):
        VideoTextDataset(tmp_path)
    with pytest.raises(ShanshuiError, match=f"'{tmp_path / 'nope'}' does not exist"):
        VideoTextDataset(tmp_path / "nope")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "0001.png")
    with pytest.raises(ShanshuiError, match="1 loose image"):
        VideoTextDataset(tmp_path)
    write_video(grey_frames(5, 8, 8), tmp_path / "brief.gif", fps=10)
    (tmp_path / "brief.txt").write_text("five frames")
    with pytest.raises(ShanshuiError, match="5 frame.*needs 29; clips need fewer frames or a smaller stride"):
        VideoTextDataset(tmp_path)
    assert len(VideoTextDataset(tmp_path, frames=3, stride=2, size=8)) == 1
    (tmp_path / "brief.gif").unlink()
    (tmp_path / "only.mp4").write_bytes(b"\x00" * 100)
    (tmp_path / "only.txt").write_text("a caption")
    with pytest.raises(ShanshuiError, match=r"no usable \(video, caption\) pair: 1 entry\(ies\).*only.mp4"):
        VideoTextDataset(tmp_path)


# ---------------------------------------------------------------------------------------------------
# Statistics and the CLI


def test_dataset_stats_numbers(sidecar_dir):
    stats = dataset_stats(scan_dataset(sidecar_dir), workers=2)
    assert stats["entries"] == 6 and stats["count"] == 4
    assert stats["duration_s"] == {"min": 1.0, "median": 3.0, "max": 4.0, "total": 8.0}
    assert stats["duration_unknown"] == 1  # the frame folder has no fps
    assert stats["num_frames"] == {"min": 10.0, "median": 31.5, "max": 40.0}
    assert stats["resolutions"] == {"64x48": 2, "32x32": 1, "40x40": 1}
    assert stats["fps"] == {"10": 3, "unknown": 1}
    assert stats["caption_words"] == {"min": 4.0, "median": 4.5, "max": 10.0}
    assert stats["too_short"] == [["short.mp4", 10]]
    assert [p for p, _ in stats["unreadable"]] == ["corrupt.mp4"]
    assert stats["skipped"] == [["nocap.mp4", "no caption (expected 'nocap.txt')"]]


def test_data_check_cli(sidecar_dir, tmp_path, capsys):
    out_json = tmp_path / "stats.json"
    assert main(["data", "check", str(sidecar_dir), "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    for expected in ("readable pairs", "frames min/median/max (header)", "1.00 s / 3.00 s / 4.00 s",
                     "64x48 x2", "10 fps x3",
                     "4.0 / 4.5 / 10.0", "unreadable: corrupt.mp4", "too short: short.mp4 -- 10 frames < 29",
                     "skipped: nocap.mp4"):
        assert expected in out, expected
    saved = json.loads(out_json.read_text())
    assert saved["count"] == 4 and saved["resolutions"]["64x48"] == 2
    assert main(["data", "check", str(sidecar_dir), "--deep", "--json", str(out_json)]) == 0
    deep = json.loads(out_json.read_text())
    assert deep["frame_count_exact"] and deep["num_frames"] == saved["num_frames"]
    deep_out = capsys.readouterr().out
    assert "frames min/median/max" in deep_out and "(header)" not in deep_out  # counted, not from headers
    assert main(["data", "check", str(sidecar_dir), "--strict"]) == 2
    assert capsys.readouterr().err == f"error: '{sidecar_dir}': 3 unusable entries (listed above; --strict)\n"

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["data", "check", str(empty)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"error: dataset folder '{empty}' holds no (video, caption) pairs")
    assert main(["data", "check", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.strip() == f"error: dataset folder '{tmp_path / 'missing'}' does not exist"
    (empty / "bad.gif").write_bytes(b"GIF89a broken")
    (empty / "bad.txt").write_text("caption")
    assert main(["data", "check", str(empty)]) == 2
    captured = capsys.readouterr()
    assert "unreadable: bad.gif" in captured.out
    expected = f"error: no usable (video, caption) pair in '{empty}' (1 problem(s) listed above)\n"
    assert captured.err == expected
