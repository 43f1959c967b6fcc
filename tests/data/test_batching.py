import collections

import pytest
import torch

from flowvid.data.batching import ClipLengths, TokenBudgetBatchSampler
from flowvid.data.clips import Clip, collate_clips

RANGES = [(1, 4 + (i * 7) % 30) for i in range(200)]  # items of 4..33 frames available


def sampler(**kw):
    args = dict(frame_ranges=RANGES, lengths=ClipLengths(4, 16), tokens_per_frame=17, budget=17 * 40, seed=3)
    args.update(kw)
    return TokenBudgetBatchSampler(**args)


def test_budget_is_never_exceeded_and_no_clip_is_lost():
    s = sampler()
    for epoch in range(3):
        s.set_epoch(epoch)
        batches = list(s)
        assert all(sum(r.num_frames for r in b) * 17 <= 17 * 40 for b in batches)
        seen = collections.Counter(r.index for b in batches for r in b)
        assert set(seen) == set(range(len(RANGES))) and max(seen.values()) == 1
        for b in batches:
            for r in b:
                lo, hi = RANGES[r.index]
                assert 4 <= r.num_frames <= min(16, hi)
        # greedy packing: a batch closes only when the next clip would not fit
        for b, nxt in zip(batches, batches[1:]):
            assert (sum(r.num_frames for r in b) + nxt[0].num_frames) * 17 > 17 * 40


def test_deterministic_per_epoch_and_seed():
    a, b = sampler(), sampler()
    a.set_epoch(5)
    b.set_epoch(5)
    assert list(a) == list(b)
    b.set_epoch(6)
    assert list(a) != list(b)
    assert list(sampler(seed=4)) != list(sampler())


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_get_equal_disjoint_shards(world):
    shards = [list(sampler(num_replicas=world, rank=r)) for r in range(world)]
    assert len({len(s) for s in shards}) == 1, "every rank steps the same number of times"
    everything = sampler().all_batches()
    pad = -len(everything) % world
    got = collections.Counter(r.index for s in shards for b in s for r in b)
    assert set(got) == set(range(len(RANGES)))
    duplicated = {i for i, c in got.items() if c > 1}
    padded = {r.index for b in everything[:pad] for r in b}
    assert duplicated <= padded, "only the padding batches repeat"


def test_max_clips_and_choices():
    for b in sampler(max_clips=2):
        assert len(b) <= 2
    s = sampler(lengths=ClipLengths(1, 64, choices=[6, 10]))
    assert {r.num_frames for b in s for r in b} == {6, 10}


def test_items_too_short_for_the_policy_are_counted_not_packed():
    s = sampler(frame_ranges=[(1, 3), (1, 20), (5, 5)], lengths=ClipLengths(4, 16))
    got = [r.index for b in s for r in b]
    assert sorted(got) == [1, 2] and s.skipped == 1


def test_budget_below_one_clip_is_an_error():
    with pytest.raises(ValueError, match="tokens_per_batch"):
        sampler(budget=17 * 10)
    with pytest.raises(ValueError, match="rank"):
        sampler(num_replicas=2, rank=2)


def test_collate_packs_and_drops_failed_reads():
    clips = [Clip(torch.randn(n, 3, 4, 4), label=n, fps=8.0, source=str(n)) for n in (3, 5, 2)]
    batch = collate_clips([clips[0], None, clips[1], clips[2]])
    assert batch.cu_seqlens.tolist() == [0, 3, 8, 10] and batch.labels.tolist() == [3, 5, 2]
    for got, clip in zip(batch.clips(), clips):
        assert torch.equal(got, clip.frames)
    empty = collate_clips([None, None])
    assert empty.num_clips == 0 and empty.cu_seqlens.tolist() == [0], "never None: every rank must step"
    with pytest.raises(ValueError, match="share"):
        collate_clips([clips[0], Clip(torch.zeros(2, 3, 8, 8))])


@pytest.mark.parametrize("old_world,new_world", [(1, 1), (2, 2), (2, 3), (4, 1), (1, 2)])
def test_resume_on_another_world_size_covers_the_rest_of_the_epoch(old_world, new_world):
    full = sampler().all_batches()
    done_per_rank = 3
    done = done_per_rank * old_world  # ranks step in lockstep
    shards = []
    for rank in range(new_world):
        s = sampler(num_replicas=new_world, rank=rank)
        s.resume(0, done, done_per_rank)
        shards.append(list(s))
        assert len(s) == done_per_rank + len(shards[-1])
    assert len({len(x) for x in shards}) == 1
    rest = collections.Counter(r.index for x in shards for b in x for r in b)
    expected = {r.index for b in full[done:] for r in b}
    assert set(rest) == expected, "nothing of the epoch's remainder is lost, nothing done is repeated"
    s = sampler()
    s.resume(0, done, done_per_rank)
    s.set_epoch(1)  # the next epoch is whole again
    assert len(s) == len(list(s)) and {r.index for b in s for r in b} == set(range(len(RANGES)))


@pytest.mark.parametrize("world,accumulate", [(1, 3), (2, 2), (3, 4)])
def test_accumulation_yields_each_ranks_batches_in_steps(world, accumulate):
    """With accumulate = N each rank reads its own batches N at a time (fewer in the epoch's last
    step, as short on every rank), in the order it would step through them one by one."""
    for rank in range(world):
        one, grouped = sampler(num_replicas=world, rank=rank), sampler(num_replicas=world, rank=rank,
                                                                       accumulate=accumulate)
        steps = [group for (group,) in grouped]  # the loader hands each item, a list of batches, to MicroBatches
        assert [b for group in steps for b in group] == list(one)
        assert all(len(g) == accumulate for g in steps[:-1]) and 1 <= len(steps[-1]) <= accumulate
        assert len(grouped) == len(steps) == -(-len(one) // accumulate)
    # resumed after 2 steps of every rank: the rest of the epoch, in steps again
    done = 2 * accumulate * world
    s = sampler(num_replicas=world, accumulate=accumulate)
    s.resume(0, done, 2)
    rest = [b for (group,) in s for b in group]
    assert rest == s.all_batches()[done:][::world][:len(rest)] and len(s) == 2 + len(list(s))


@pytest.mark.parametrize("world", [1, 3])
def test_resume_by_clips_with_another_budget_takes_each_clip_once(world):
    """A checkpoint stores the clips taken; a run resumed with half the token budget packs the
    rest anew: nothing repeated, nothing skipped. Batch counts alone would place it wrongly."""
    old = sampler()
    done_batches = 4 * world
    clips = old.clips_done(done_batches)
    taken = [r.index for b in old.all_batches()[:done_batches] for r in b]
    assert clips == len(taken)
    shards = []
    for rank in range(world):
        s = sampler(budget=17 * 20, num_replicas=world, rank=rank)
        s.resume(0, done_batches, 4, clips)
        shards.append(list(s))
    rest = [r.index for x in shards for b in x for r in b]  # padding may repeat some of these, never taken ones
    assert set(taken).isdisjoint(rest) and set(taken) | set(rest) == {r.index for r in old.requests()}
    assert all(sum(r.num_frames for r in b) * 17 <= 17 * 20 for x in shards for b in x)
    # where a checkpoint holds no clip count (written before it did), batches of the new packing are skipped
    s = sampler(budget=17 * 20)
    s.resume(0, done_batches, 4)
    assert [b for b in s] == s.all_batches()[done_batches:]
