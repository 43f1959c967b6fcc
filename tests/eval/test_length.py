"""Length histograms and their total-variation distance: hand-computed cases, bad input, the PNG."""
import sys

import numpy as np
import pytest

from flowvid.errors import UsageError
from flowvid.eval.length import length_histogram, length_tv, write_length_histogram

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_histogram_by_hand():
    assert length_histogram([12, 8, 9, 8]) == {8: 0.5, 9: 0.25, 12: 0.25}
    assert list(length_histogram([12, 8, 9, 8])) == [8, 9, 12]  # ascending lengths
    assert length_histogram(np.array([5, 5, 5])) == {5: 1.0}  # numpy ints are ints


def test_tv_by_hand():
    # p = {8: 1/2, 9: 1/4, 12: 1/4}, q = {8: 1/4, 9: 3/4}: TV = (1/4 + 1/2 + 1/4) / 2 = 1/2
    assert length_tv([8, 8, 9, 12], [8, 9, 9, 9]) == pytest.approx(0.5)
    # p = {8: 1}, q = {8: 1/3, 16: 2/3}: TV = (2/3 + 2/3) / 2 = 2/3
    assert length_tv([8], [8, 16, 16]) == pytest.approx(2 / 3)


def test_tv_extremes_and_symmetry():
    assert length_tv([8, 9], [9, 8, 8, 9]) == 0.0  # same distribution, different counts and order
    assert length_tv([8, 8, 9], [10, 11]) == 1.0  # disjoint supports
    a, b = [8, 9, 9, 10, 16], [9, 10, 10, 12]
    assert length_tv(a, b) == pytest.approx(length_tv(b, a))


@pytest.mark.parametrize("bad", [[], [8, 0], [8, -3], [8.5], [True, 8], ["8"]])
def test_bad_lengths_are_refused(bad):
    with pytest.raises(ValueError, match="lengths"):
        length_tv(bad, [8])
    with pytest.raises(ValueError, match="lengths"):
        length_tv([8], bad)


def test_empty_message_says_what(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        length_histogram([])
    with pytest.raises(ValueError, match="generated_lengths"):
        write_length_histogram(tmp_path / "h.png", [], [8])


def test_histogram_png(tmp_path):
    pytest.importorskip("matplotlib")
    out = write_length_histogram(tmp_path / "sub" / "lengths.png", [8, 8, 9, 12, 16], [8, 9, 9, 10, 12, 16])
    assert out == tmp_path / "sub" / "lengths.png"
    assert out.read_bytes()[:8] == PNG_MAGIC
    assert [p.name for p in out.parent.iterdir()] == ["lengths.png"]  # the temporary name is gone


def test_histogram_write_is_atomic(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    out = tmp_path / "lengths.png"
    out.write_bytes(b"previous")

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", fail)
    with pytest.raises(OSError, match="disk full"):
        write_length_histogram(out, [8], [9])
    assert out.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["lengths.png"]


def test_missing_matplotlib_is_a_usage_error(tmp_path, monkeypatch):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)  # None in sys.modules: `import` raises ImportError
    with pytest.raises(UsageError, match=r"needs matplotlib: pip install 'flowvid\[eval\]'"):
        write_length_histogram(tmp_path / "h.png", [8], [8])
    assert not (tmp_path / "h.png").exists()
