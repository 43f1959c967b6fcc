"""Clip-length distributions: the empirical histogram, the total-variation distance, a bar chart."""
from __future__ import annotations

import logging
import numbers
import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from flowvid.errors import UsageError

log = logging.getLogger(__name__)


def _check_lengths(name: str, lengths: Iterable) -> list[int]:
    """The lengths as a list of ints >= 1, else a ValueError saying what was given."""
    values = list(lengths)
    if not values:
        raise ValueError(f"{name} is empty; expected at least one clip length (a positive int)")
    bad = [v for v in values if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < 1]
    if bad:
        raise ValueError(f"{name} must hold positive ints (frames per clip), got {bad[:5]!r}"
                         f"{' ...' if len(bad) > 5 else ''}")
    return [int(v) for v in values]


def length_histogram(lengths: Iterable[int]) -> dict[int, float]:
    """Empirical length distribution, ascending lengths: p(L) = #{i : len_i = L} / N."""
    values = _check_lengths("lengths", lengths)
    counts = Counter(values)
    return {length: counts[length] / len(values) for length in sorted(counts)}


def length_tv(generated_lengths: Iterable[int], data_lengths: Iterable[int]) -> float:
    """Total variation between the two length distributions: TV = 1/2 sum_L |p(L) - q(L)|, in [0, 1].

    L runs over the union of the lengths seen; 0 for identical distributions, 1 for disjoint supports.
    """
    p = length_histogram(_check_lengths("generated_lengths", generated_lengths))
    q = length_histogram(_check_lengths("data_lengths", data_lengths))
    return 0.5 * sum(abs(p.get(n, 0.0) - q.get(n, 0.0)) for n in set(p) | set(q))


def write_length_histogram(path: str | os.PathLike, generated_lengths: Iterable[int], data_lengths: Iterable[int],
                           title: str = "Clip lengths") -> Path:
    """A PNG bar chart of both length histograms side by side, TV in the title; atomic."""
    gen = _check_lengths("generated_lengths", generated_lengths)
    data = _check_lengths("data_lengths", data_lengths)
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise UsageError("the length histogram needs matplotlib: pip install 'flowvid[eval]'") from None
    from flowvid.pipelines.outputs import atomic_output

    p, q = length_histogram(gen), length_histogram(data)
    support = sorted(set(p) | set(q))
    # A Figure with its own Agg canvas, not pyplot: no global backend switch, no figure registry.
    fig = Figure(figsize=(max(5.0, 0.35 * len(support) + 2.0), 3.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.bar([n - 0.2 for n in support], [p.get(n, 0.0) for n in support], width=0.4, label=f"generated (N={len(gen)})")
    ax.bar([n + 0.2 for n in support], [q.get(n, 0.0) for n in support], width=0.4, label=f"data (N={len(data)})")
    ax.set_xticks(support if len(support) <= 40 else support[:: -(-len(support) // 40)])
    ax.set_xlabel("frames")
    ax.set_ylabel("fraction of clips")
    ax.set_title(f"{title}: TV = {length_tv(gen, data):.3f}")
    ax.legend()
    path = Path(path)
    with atomic_output(path, ".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    log.debug("wrote %s: %d generated and %d data lengths", path, len(gen), len(data))
    return path
