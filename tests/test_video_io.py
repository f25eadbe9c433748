"""Video files: round trips per format, atomic writes, clear errors."""

import numpy as np
import pytest

from shanshui.errors import ShanshuiError
from shanshui.video_io import as_uint8_frames, contact_sheet, read_video, write_video


def moving_square(n=6, h=32, w=48):
    frames = np.full((n, h, w, 3), 230, np.uint8)
    for i in range(n):
        frames[i, 8:20, 4 + 5 * i : 16 + 5 * i] = (20, 30, 40)
    return frames


@pytest.mark.parametrize("suffix,tol", [(".gif", 12), (".webp", 20), (".mp4", 24)])
def test_round_trip(tmp_path, suffix, tol):
    frames = moving_square()
    path = write_video(frames, tmp_path / f"v{suffix}", fps=10)
    back, fps = read_video(path)
    assert back.shape == frames.shape
    assert fps == pytest.approx(10, rel=0.05)
    assert np.abs(back.astype(int) - frames.astype(int)).mean() < tol / 4
    assert not list(tmp_path.glob(".*part*"))  # no temporary file left behind


def test_odd_sizes_are_padded_for_h264(tmp_path):
    frames = moving_square(h=31, w=45)
    back, _ = read_video(write_video(frames, tmp_path / "odd.mp4"))
    assert back.shape == (6, 32, 46, 3)


def test_contact_sheet_layout():
    frames = moving_square(n=5, h=10, w=10)
    sheet = contact_sheet(frames, cols=3, pad=2)
    assert sheet.shape == (2 * 10 + 3 * 2, 3 * 10 + 4 * 2, 3)
    assert np.array_equal(sheet[2:12, 14:24], frames[1])


def test_png_output_is_a_contact_sheet(tmp_path):
    path = write_video(moving_square(n=4, h=10, w=10), tmp_path / "s.png")
    from PIL import Image

    assert Image.open(path).size == (2 * 10 + 3 * 2, 2 * 10 + 3 * 2)


def test_failed_write_keeps_previous_file(tmp_path, monkeypatch):
    path = write_video(moving_square(), tmp_path / "keep.gif")
    before = path.read_bytes()
    import PIL.Image

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(PIL.Image.Image, "save", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        write_video(moving_square(n=3), path)
    assert path.read_bytes() == before
    assert not list(tmp_path.glob(".*part*"))


def test_float_frames_are_converted():
    f = np.linspace(0, 1, 2 * 2 * 2 * 3).reshape(2, 2, 2, 3)
    u = as_uint8_frames(f)
    assert u.dtype == np.uint8 and u[0, 0, 0, 0] == 0 and u[-1, -1, -1, -1] == 255


def test_errors(tmp_path):
    with pytest.raises(ShanshuiError, match="must end in one of"):
        write_video(moving_square(), tmp_path / "v.avi")
    with pytest.raises(ShanshuiError, match="does not exist"):
        read_video(tmp_path / "missing.mp4")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x01garbage" * 100)
    with pytest.raises(ShanshuiError, match="cannot read video"):
        read_video(bad)
    with pytest.raises(ShanshuiError, match=r"shape \(F, H, W, 3\)"):
        write_video(np.zeros((4, 4, 3), np.uint8), tmp_path / "x.gif")


def test_frame_folder(tmp_path):
    from PIL import Image

    frames = moving_square(n=3)
    (tmp_path / "clip").mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(tmp_path / "clip" / f"{i:04d}.png")
    back, _ = read_video(tmp_path / "clip")
    assert np.array_equal(back, frames)
