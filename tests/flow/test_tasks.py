"""Training tasks: which frames are given, drawn per clip by configured probabilities."""
from collections import Counter

import pytest
import torch

from flowvid.flow.path import InsertionPath, task_masks
from flowvid.flow.tasks import DEFAULT_TASKS, TASKS, draw_given, task_weights

MIX = DEFAULT_TASKS


def test_task_weights_normalise_and_keep_what_the_path_kind_can_train():
    w = task_weights({"generate": 2, "interpolate": 1, "extend": 1}, "insertion")
    assert w == {"generate": 0.5, "interpolate": 0.25, "extend": 0.25}
    ar = task_weights(MIX, "autoregressive")  # interpolate and complete need frames after a free one
    assert set(ar) == {"generate", "i2v", "extend"} and sum(ar.values()) == pytest.approx(1)
    assert ar["generate"] == pytest.approx(0.4 / 0.7)
    assert task_weights({}, "insertion") == pytest.approx(DEFAULT_TASKS)  # {} is the default mix
    with pytest.raises(ValueError, match="unknown task"):
        task_weights({"dance": 1}, "insertion")
    with pytest.raises(ValueError, match=">= 0"):
        task_weights({"generate": -1}, "insertion")
    with pytest.raises(ValueError, match="autoregressive model can train"):
        task_weights({"interpolate": 1}, "autoregressive")


def test_tasks_are_drawn_by_their_probabilities():
    g = torch.Generator().manual_seed(0)
    weights = task_weights(MIX, "insertion")
    n = 4000
    counts = Counter(draw_given(12, weights, [2, 3, 4], g).task for _ in range(n))
    for task, p in weights.items():
        assert counts[task] / n == pytest.approx(p, abs=4 * (p * (1 - p) / n) ** 0.5 + 1e-3), task


@pytest.mark.parametrize("num_frames", [2, 3, 5, 8, 16])
def test_every_drawn_task_is_valid_and_has_its_shape(num_frames):
    g = torch.Generator().manual_seed(num_frames)
    weights = {t: 1 / len(TASKS) for t in TASKS}
    seen = set()
    for _ in range(300):
        x = draw_given(num_frames, weights, [2, 3, 4], g)
        seen.add(x.task)
        ctx, pas = task_masks(num_frames, x.context, x.passive)  # the path's own rules hold
        assert not bool(ctx.all()), "a frame must be left to generate"
        if x.task == "generate":
            assert x.context == [] and x.passive == []
        elif x.task == "i2v":
            assert x.context == [0] and x.passive == []
        elif x.task == "interpolate":
            assert x.context[0] == 0
            if len(x.context) > 1:
                assert x.context[-1] == num_frames - 1 and x.passive == [num_frames - 1]
                gaps = {b - a for a, b in zip(x.context[:-2], x.context[1:-1])}
                assert len(gaps) <= 1 and gaps <= {2, 3, 4}  # one spacing, the last gap may be shorter
        elif x.task == "extend":
            p = len(x.context)
            assert x.context == list(range(p)) and x.passive == list(range(p - 1)) and 1 <= p < num_frames
        else:
            assert set(x.passive) <= set(x.context)
    assert seen == set(TASKS)


def test_a_one_frame_clip_is_always_generated():
    g = torch.Generator().manual_seed(0)
    assert {draw_given(1, {"interpolate": 1.0}, [2], g).task for _ in range(20)} == {"generate"}


def test_given_frames_on_the_path_are_clean_and_passive_ones_do_not_insert():
    path = InsertionPath(kappa="linear", n_start=2)
    g = torch.Generator().manual_seed(3)
    x1 = torch.randn(12, 3, 4, 4)
    x = draw_given(12, {"interpolate": 1.0}, [3], g)
    s = path.sample(x1, generator=g, context=x.context, passive=x.passive)
    given = torch.isin(s.index, torch.tensor(x.context))
    assert given.sum() == len(x.context)  # given frames are always visible
    assert torch.all(s.t[given] == 1) and not s.flowing[given].any()
    assert torch.equal(s.x_t[given], x1[s.index[given]])  # clean
    last = s.index == 11
    assert not s.active[last].any() and s.active[given & ~last].all()
