"""tools/study.py: how it cuts the real footage into shots."""
import importlib.util
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("study", REPO / "tools" / "study.py")
study = importlib.util.module_from_spec(spec)
sys.modules["study"] = study  # its dataclasses look their module up there
spec.loader.exec_module(study)


def test_shots_end_at_cuts_and_not_at_motion():
    rng = np.random.default_rng(0)
    frames = np.repeat(rng.integers(0, 256, (1, 8, 8, 3)), 12, axis=0).astype(np.uint8)  # (12, 8, 8, 3)
    frames[5:] = 255 - frames[5:]  # a cut: every pixel changes, by 128 levels on average
    frames[9:, :2] = frames[9:, :2] // 2  # motion: a quarter of the frame changes
    assert study.shot_ranges(frames) == [(0, 5), (5, 12)]
    assert study.shot_ranges(frames[:5]) == [(0, 5)]
