"""Training tasks (METHOD.md, "Tasks"): which frames of a clip are given, and which of those are passive.

One checkpoint serves every tool when training draws, per clip, a task and its given frames:
- generate: nothing given;
- i2v: frame 0 given and active (the model continues it);
- interpolate: keyframes every s frames (s drawn from `spacings`) and the last frame, all active
  but the last, which is passive; the model learns how many frames each gap holds;
- extend: a prefix of p frames (p uniform in [1, F - 1]) given and passive, but its last, active;
- complete: each frame given with probability 1/2 (at least one left free); a given frame whose
  right neighbour is given too, or which ends the clip, is passive with probability 1/2.
The baselines take the tasks that make sense for them: the full-sequence flow all of them (given
frames clean, as conditioning); the autoregressive one those with a given prefix (generate, i2v,
extend), the others' probability going to these in proportion.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch

from flowvid.errors import UsageError

TASKS = ("generate", "i2v", "interpolate", "extend", "complete")
# what train.tasks = {} means: mostly generation, and every tool's condition often enough to learn it
DEFAULT_TASKS = {"generate": 0.4, "i2v": 0.15, "interpolate": 0.25, "extend": 0.15, "complete": 0.05}
PREFIX_TASKS = ("generate", "i2v", "extend")  # what an autoregressive model can be given
# Tasks whose tools start from the given frames alone (`flowvid interpolate`, `flowvid complete`
# place no noise frame at the start): trained so, with frame 0 the only start frame.
NO_EXTRA_START = ("interpolate", "complete")


@dataclass
class GivenFrames:
    """One clip's task: the indices of its given (context) frames and of the passive ones among them."""

    task: str
    context: list[int]
    passive: list[int]

    @property
    def n_start(self) -> int | None:
        """The clip's count of start frames: 1 (frame 0 only) where the tool starts from the given
        frames alone, else None (the path's path.n_start)."""
        return 1 if self.task in NO_EXTRA_START else None


def task_weights(weights: Mapping[str, float], kind: str) -> dict[str, float]:
    """The probabilities of the tasks the path kind can train, normalised to sum to 1 ({}: DEFAULT_TASKS)."""
    weights = weights or DEFAULT_TASKS
    unknown = sorted(set(weights) - set(TASKS))
    if unknown:
        raise UsageError(f"unknown task(s) {unknown}; expected some of {', '.join(TASKS)}")
    if any(w < 0 for w in weights.values()):
        raise UsageError(f"task probabilities must be >= 0, got {dict(weights)}")
    allowed = PREFIX_TASKS if kind == "autoregressive" else TASKS
    kept = {t: float(w) for t, w in weights.items() if t in allowed and w > 0}
    if not kept:
        raise UsageError(f"no task with a probability > 0 that a {kind} model can train (it trains "
                         f"{', '.join(allowed)}), got {dict(weights)}")
    total = sum(kept.values())
    return {t: w / total for t, w in kept.items()}


def draw_given(num_frames: int, weights: Mapping[str, float], spacings: Sequence[int],
               generator: torch.Generator) -> GivenFrames:
    """A task by its probability (weights from task_weights), then its given frames for a clip of num_frames.

    A clip of one frame can only be generated: every other task needs a frame left free."""
    names = list(weights)
    if num_frames < 2:
        return GivenFrames("generate", [], [])
    probs = torch.tensor([weights[n] for n in names], dtype=torch.float64)
    task = names[int(torch.multinomial(probs, 1, generator=generator))]
    return GivenFrames(task, *_GIVEN[task](num_frames, spacings, generator))


def _randint(lo: int, hi: int, generator: torch.Generator) -> int:
    """Uniform in [lo, hi]."""
    return int(torch.randint(lo, hi + 1, (), generator=generator))


def _generate(f: int, spacings: Sequence[int], g: torch.Generator) -> tuple[list[int], list[int]]:
    return [], []


def _i2v(f: int, spacings: Sequence[int], g: torch.Generator) -> tuple[list[int], list[int]]:
    return [0], []


def _interpolate(f: int, spacings: Sequence[int], g: torch.Generator) -> tuple[list[int], list[int]]:
    """Keyframes 0, s, 2s, ... and the last frame (so no free frame follows the passive one)."""
    s = int(spacings[_randint(0, len(spacings) - 1, g)])
    keys = sorted(set(range(0, f, s)) | {f - 1})
    if len(keys) == f:  # a spacing of 1 or a clip of 2 frames leaves nothing to insert: keep the ends
        keys = [0, f - 1] if f > 2 else [0]
    return keys, [f - 1] if keys[-1] == f - 1 and len(keys) > 1 else []


def _extend(f: int, spacings: Sequence[int], g: torch.Generator) -> tuple[list[int], list[int]]:
    p = _randint(1, f - 1, g)
    return list(range(p)), list(range(p - 1))


def _complete(f: int, spacings: Sequence[int], g: torch.Generator) -> tuple[list[int], list[int]]:
    given = torch.rand(f, generator=g) < 0.5
    if bool(given.all()):
        given[_randint(0, f - 1, g)] = False
    nxt = torch.cat([given[1:], torch.tensor([True])])  # the clip's end counts as given
    passive = given & nxt & (torch.rand(f, generator=g) < 0.5)
    return torch.nonzero(given).flatten().tolist(), torch.nonzero(passive).flatten().tolist()


_GIVEN = {"generate": _generate, "i2v": _i2v, "interpolate": _interpolate, "extend": _extend,
          "complete": _complete}
