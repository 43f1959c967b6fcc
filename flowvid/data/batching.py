"""Batches of variable-length clips under a token budget, sharded across ranks.

Each epoch the sampler shuffles the items (seed + epoch), draws each clip's length, and packs
clips greedily in that order until the next one would exceed the token budget. Batches, not
items, are dealt to ranks round-robin, so every rank gets the same number of batches (DDP steps
in lockstep); the batch list is padded to a multiple of the world size by repeating its first
batches, the only items a rank may share with another.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch

from flowvid.data.clips import ClipRequest
from flowvid.errors import UsageError


@dataclass
class ClipLengths:
    """Clip length policy: uniform in [min_frames, max_frames], or uniform over `choices`."""

    min_frames: int
    max_frames: int
    choices: Sequence[int] = ()

    def draw(self, lo: int, hi: int, rng: np.random.Generator) -> int | None:
        """A length allowed by the policy and by the item's own range [lo, hi]; None if none is."""
        if self.choices:
            ok = [c for c in self.choices if lo <= c <= hi]
            return int(rng.choice(ok)) if ok else None
        a, b = max(lo, self.min_frames), min(hi, self.max_frames)
        return int(rng.integers(a, b + 1)) if a <= b else None


class TokenBudgetBatchSampler(torch.utils.data.Sampler):
    """Yields lists of ClipRequest whose total tokens never exceed `budget`."""

    def __init__(self, frame_ranges: Sequence[tuple[int, int]], lengths: ClipLengths, tokens_per_frame: int,
                 budget: int, max_clips: int = 0, shuffle: bool = True, seed: int = 0,
                 num_replicas: int = 1, rank: int = 0, accumulate: int = 1):
        longest = max(lengths.choices) if lengths.choices else lengths.max_frames
        if tokens_per_frame * longest > budget:
            raise UsageError(f"token budget {budget} is below one clip of {longest} frames "
                             f"({tokens_per_frame} tokens per frame); raise data.tokens_per_batch")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, {num_replicas}), got {rank}")
        self.ranges = list(frame_ranges)
        self.lengths, self.tpf, self.budget = lengths, tokens_per_frame, budget
        self.max_clips, self.shuffle, self.seed = max_clips, shuffle, seed
        self.num_replicas, self.rank, self.epoch = num_replicas, rank, 0
        self.accumulate = accumulate  # batches per optimizer step: > 1 yields them in groups (see __iter__)
        self.skipped = 0  # items whose frame range admits no allowed length, last epoch
        # Resume mid-epoch: (epoch, batches done over all ranks, steps (loader items) this rank's
        # trainer counted, clips done over all ranks)
        self.resume_at: tuple[int, int, int, int] | None = None
        # No `sampler` attribute, on purpose: Lightning would call its set_epoch with the count of
        # epochs it has processed, which after resuming from a checkpoint written at the end of a
        # one-step epoch lags the trainer's epoch by one (an epoch's batches came again). The data
        # module sets the trainer's epoch on each epoch's new loader instead.
        self._cache: tuple[int, list] | None = None
        self._packed: tuple[tuple[int, int], list] | None = None  # ((epoch, first clip), batches)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def requests(self) -> list[ClipRequest]:
        """This epoch's clips in order, each with its drawn length and seed (the same on every rank)."""
        if self._cache and self._cache[0] == self.epoch:
            return self._cache[1]
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.ranges)) if self.shuffle else np.arange(len(self.ranges))
        requests, self.skipped = [], 0
        for i in order:
            n = self.lengths.draw(*self.ranges[i], rng)
            if n is None:
                self.skipped += 1  # too short for the policy; datasets drop such items up front
                continue
            requests.append(ClipRequest(int(i), n, int(rng.integers(2**31))))
        self._cache = (self.epoch, requests)
        return requests

    def pack(self, requests: Sequence[ClipRequest]) -> list[list[ClipRequest]]:
        """Greedy packing in order: a batch closes when the next clip would exceed the budget."""
        batches, current, tokens = [], [], 0
        for r in requests:
            full = tokens + r.num_frames * self.tpf > self.budget or (self.max_clips and len(current) == self.max_clips)
            if full:
                batches.append(current)
                current, tokens = [], 0
            current.append(r)
            tokens += r.num_frames * self.tpf
        return batches + [current] if current else batches

    def all_batches(self) -> list[list[ClipRequest]]:
        """Every rank's batches for this epoch, before dealing (the same on every rank)."""
        return self._packed_from(0)

    def _packed_from(self, first: int) -> list[list[ClipRequest]]:
        """The epoch's clips from `first` on, packed; kept, since len() and iter() both ask."""
        key = (self.epoch, first)
        if self._packed is None or self._packed[0] != key:
            self._packed = (key, self.pack(self.requests()[first:]))
        return self._packed[1]

    def resume(self, epoch: int, global_done: int, local_done: int, clips_done: int | None = None) -> None:
        """Continue a checkpointed run: the rest of `epoch`, or the next epoch whole if the
        checkpoint was written on the epoch's last batch (the trainer then starts the next one).
        `clips_done`, the epoch's clips all ranks had taken, places the resume by clips: the rest
        is packed anew, so a run resumed with another token budget takes each clip once. Without
        it (older checkpoints), `global_done` batches of the packing as it is now are skipped."""
        self.set_epoch(epoch)
        if clips_done is None:
            clips_done = sum(len(b) for b in self.all_batches()[:global_done])
        if clips_done >= len(self.requests()):
            self.set_epoch(epoch + 1)
            self.resume_at = None
        else:
            self.resume_at = (epoch, global_done, local_done, clips_done)

    def _resuming(self) -> bool:
        return self.resume_at is not None and self.resume_at[0] == self.epoch

    def _remaining(self) -> list[list[ClipRequest]]:
        """The epoch's batches that are left to take: all, or those after a resume's clips."""
        return self._packed_from(self.resume_at[3] if self._resuming() else 0)

    def clips_done(self, global_done: int) -> int:
        """How many of the epoch's clips all ranks have taken after `global_done` of its batches
        (those before a resume included); what a checkpoint stores to resume by."""
        before, skip = (self.resume_at[3], self.resume_at[1]) if self._resuming() else (0, 0)
        return min(before + sum(len(b) for b in self._remaining()[:global_done - skip]), len(self.requests()))

    def _mine(self) -> list[list[ClipRequest]]:
        """This rank's batches: the epoch's batches (less those done before a resume), dealt in turn."""
        batches = self._remaining()  # done by all ranks together, whatever their number was
        if not batches:
            return []
        pad = -len(batches) % self.num_replicas
        batches = batches + [batches[i % len(batches)] for i in range(pad)]
        return batches[self.rank::self.num_replicas]

    def _steps(self) -> list:
        """What the loader reads at once: a batch, or with accumulate = N a list holding this rank's
        next N batches (fewer at the epoch's end), read together by flowvid.data.module.MicroBatches.
        Every rank has as many batches, so the ranks' last groups are equally short."""
        mine, n = self._mine(), self.accumulate
        return mine if n == 1 else [[mine[i:i + n]] for i in range(0, len(mine), n)]

    def __iter__(self) -> Iterator[list]:
        return iter(self._steps())

    def __len__(self) -> int:
        # A resumed trainer keeps counting from the steps it did: the epoch's length is those plus ours.
        return len(self._steps()) + (self.resume_at[2] if self._resuming() else 0)
