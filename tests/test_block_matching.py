"""tools/block_matching.py: the classical interpolator the real-footage results are measured against."""
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from data_pipelines.index import index_videos
from flowvid.io import write_video

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))  # as when run as a script: it imports interp_errors beside it
spec = importlib.util.spec_from_file_location("block_matching", REPO / "tools" / "block_matching.py")
block_matching = importlib.util.module_from_spec(spec)
spec.loader.exec_module(block_matching)


def panning(n=5, step=2, size=32, seed=0):
    """n uint8 frames (n, size, size, 3) of a textured scene the view pans across, `step` pixels a frame."""
    rng = np.random.default_rng(seed)
    scene = np.kron(rng.uniform(0, 255, (size // 4 + n * step, size // 4 + n * step, 3)), np.ones((4, 4, 1)))
    return np.stack([scene[8:8 + size, i * step:i * step + size] for i in range(n)]).round().astype(np.uint8)


def test_a_translation_is_made_exactly_and_a_still_frame_stays_still():
    v = panning()
    made = block_matching.block_matching(v[[0]], v[[2]], search=4, window=7)
    inner = (slice(None), slice(8, 24), slice(8, 24))  # pixels whose displaced neighbours stay inside
    assert np.array_equal(made[inner], v[[1]][inner])
    assert np.abs((v[0].astype(float) + v[2]) / 2 - v[1])[inner[1:]].mean() > 10  # blending does not
    assert np.array_equal(block_matching.block_matching(v[[0]], v[[0]], search=4, window=7), v[[0]])


def test_the_script_scores_block_matching_above_blending_on_a_pan(tmp_path, capsys):
    for i in range(2):
        write_video(tmp_path / f"pan{i}.mkv", panning(seed=i), fps=25, codec="ffv1")
    manifest = tmp_path / "m.jsonl"
    index_videos(tmp_path, manifest)
    assert block_matching.main([str(manifest), "--search", "4", "--window", "7", "--every", "1"]) == 0
    lines = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines())
    psnr = {k: float(v.split()[2]) for k, v in lines.items()}
    assert psnr["block matching"] > psnr["blending"] + 5
    with pytest.raises(SystemExit, match="--window odd"):
        block_matching.main([str(manifest), "--window", "4"])
