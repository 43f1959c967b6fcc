import json

import pytest

from data_pipelines.index import index_videos, report_path
from flowvid.cli import main
from flowvid.data.manifest import BadFile, ManifestEntry, read_jsonl, read_manifest

from video_files import make_audio_only, make_empty, make_text_file, make_video, truncate


@pytest.fixture
def video_tree(tmp_path):
    root = tmp_path / "videos"
    (root / "cats").mkdir(parents=True)
    (root / "dogs" / "deep").mkdir(parents=True)
    make_video(root / "cats" / "a.mp4", num_frames=24)
    make_video(root / "cats" / "b.avi", num_frames=30, codec="mpeg4")
    make_video(root / "dogs" / "deep" / "c.mkv", num_frames=20, vfr=True)
    make_video(root / "dogs" / "short.mp4", num_frames=3)
    truncate(make_video(root / "dogs" / "cut.mp4", num_frames=48), 0.5)
    make_empty(root / "empty.mp4")
    make_text_file(root / "notes.mp4")
    make_audio_only(root / "sound.mkv")
    (root / "readme.txt").write_text("not a video extension: never probed")
    return root


def test_index_lists_good_files_and_reports_bad_ones(video_tree, tmp_path):
    out = tmp_path / "index" / "manifest.jsonl"
    r = index_videos(video_tree, out, workers=2, min_frames=5, labels="folder")
    good = {e.path: e for e in read_manifest(out)}
    bad = {b.path: b.reason for b in read_jsonl(report_path(out), BadFile)}
    rel = "../videos/"
    assert set(good) == {rel + "cats/a.mp4", rel + "cats/b.avi", rel + "dogs/deep/c.mkv"}
    assert good[rel + "cats/a.mp4"].num_frames == 24 and good[rel + "cats/b.avi"].num_frames == 30
    assert good[rel + "dogs/deep/c.mkv"].num_frames == 20
    assert [good[rel + p].label for p in ("cats/a.mp4", "dogs/deep/c.mkv")] == [0, 1]
    assert bad[rel + "empty.mp4"] == "zero bytes"
    assert bad[rel + "notes.mp4"] == "not a video"
    assert bad[rel + "sound.mkv"] == "no video stream"
    assert bad[rel + "dogs/cut.mp4"].startswith("truncated")
    assert bad[rel + "dogs/short.mp4"].startswith("too short")
    assert (r.good, r.bad, r.probed, r.reused) == (3, 5, 8, 0)


def test_rerun_probes_only_new_or_changed_files(video_tree, tmp_path):
    out = tmp_path / "manifest.jsonl"
    index_videos(video_tree, out, workers=1)
    again = index_videos(video_tree, out, workers=1)
    assert (again.probed, again.reused) == (0, 8)
    make_video(video_tree / "cats" / "new.mp4", num_frames=12)
    make_video(video_tree / "cats" / "a.mp4", num_frames=10, seed=3)  # changed in place
    grown = index_videos(video_tree, out, workers=1)
    assert (grown.probed, grown.reused, grown.good) == (2, 7, 5)
    assert {e.path.split("/")[-1]: e.num_frames for e in read_manifest(out)}["a.mp4"] == 10


def test_rerun_keeps_the_shots_written_into_the_manifest(video_tree, tmp_path):
    out = tmp_path / "manifest.jsonl"
    index_videos(video_tree, out, workers=1)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    for row in rows:
        row["shots"] = {"a.mp4": [0.25, 0.75], "b.avi": [0.5]}.get(row["path"].split("/")[-1], [])
    out.write_text("".join(json.dumps(row) + "\n" for row in rows))
    make_video(video_tree / "cats" / "a.mp4", num_frames=10, seed=3)  # changed: re-probed, 0.42 s long
    index_videos(video_tree, out, workers=1)
    shots = {e.path.split("/")[-1]: e.shots for e in read_manifest(out)}
    assert shots["a.mp4"] == [0.25] and shots["b.avi"] == [0.5]


def test_cli_index_and_synth(tmp_path, capsys):
    assert main(["data", "synth", "balls", "-o", str(tmp_path / "balls"), "--num", "5", "--size", "32",
                 "--frames", "6", "9"]) == 0
    written = read_manifest(tmp_path / "balls" / "manifest.jsonl")
    assert len(written) == 5 and all(6 <= e.num_frames <= 9 for e in written)
    assert main(["data", "index", str(tmp_path / "balls"), "-o", str(tmp_path / "m.jsonl"), "--workers", "2"]) == 0
    assert "5 good videos" in capsys.readouterr().out
    probed = {e.path.split("/")[-1]: e.num_frames for e in read_manifest(tmp_path / "m.jsonl")}
    assert probed == {e.path: e.num_frames for e in written}, "the files hold what the synth manifest says"


def test_cli_bad_root_exits_2_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "m.jsonl"
    assert main(["data", "index", str(tmp_path / "missing"), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not a folder" in err and not out.exists()
    assert main(["data", "synth", "squares", "-o", str(tmp_path / "s"), "--num", "2"]) == 2
    assert "balls" in capsys.readouterr().err and not (tmp_path / "s" / "manifest.jsonl").exists()


def test_a_still_image_named_like_a_video_is_reported_not_indexed(tmp_path):
    """A PNG renamed .mp4 decodes as one frame: it is no video (as is any one-frame file)."""
    import numpy as np

    from flowvid.io import write_png

    root = tmp_path / "videos"
    root.mkdir()
    make_video(root / "real.mp4", num_frames=8)
    write_png(tmp_path / "still.png", np.zeros((16, 16, 3), np.uint8))
    (root / "still.mp4").write_bytes((tmp_path / "still.png").read_bytes())
    out = tmp_path / "manifest.jsonl"
    index_videos(root, out)
    assert [e.path for e in read_manifest(out)] == ["videos/real.mp4"]
    bad = {b.path: b.reason for b in read_jsonl(report_path(out), BadFile)}
    assert bad == {"videos/still.mp4": "not a video"}
