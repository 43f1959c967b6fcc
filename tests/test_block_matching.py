"""tools/block_matching.py: the classical interpolator the real-footage results are measured against."""
import importlib.util
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))  # as when run as a script: it imports interp_errors beside it
spec = importlib.util.spec_from_file_location("block_matching", REPO / "tools" / "block_matching.py")
block_matching = importlib.util.module_from_spec(spec)
spec.loader.exec_module(block_matching)


def test_a_translation_is_made_exactly_and_a_still_frame_stays_still():
    rng = np.random.default_rng(0)
    scene = rng.uniform(0, 255, (40, 40, 3))
    a, b, c = scene[4:36, 2:34], scene[4:36, 4:36], scene[4:36, 6:38]  # the view pans 2 pixels a frame
    made = block_matching.block_matching(a, c, block=8, search=3)
    inner = (slice(8, 24), slice(8, 24))  # blocks whose displaced pixels stay inside the frames
    assert np.array_equal(made[inner], b[inner])
    assert np.abs((a + c) / 2 - b)[inner].mean() > 10  # blending does not
    assert np.array_equal(block_matching.block_matching(a, a, block=8, search=3), a)
