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
            raise ValueError(f"token budget {budget} is below one clip of {longest} frames "
                             f"({tokens_per_frame} tokens per frame); raise data.tokens_per_batch")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, {num_replicas}), got {rank}")
        self.ranges = list(frame_ranges)
        self.lengths, self.tpf, self.budget = lengths, tokens_per_frame, budget
        self.max_clips, self.shuffle, self.seed = max_clips, shuffle, seed
        self.num_replicas, self.rank, self.epoch = num_replicas, rank, 0
        self.accumulate = accumulate  # batches per optimizer step: > 1 yields them in groups (see __iter__)
        self.skipped = 0  # items whose frame range admits no allowed length, last epoch
        # Resume mid-epoch: (epoch, batches done over all ranks, steps (loader items) this rank's trainer counted)
        self.resume_at: tuple[int, int, int] | None = None
        # No `sampler` attribute, on purpose: Lightning would call its set_epoch with the count of
        # epochs it has processed, which after resuming from a checkpoint written at the end of a
        # one-step epoch lags the trainer's epoch by one (an epoch's batches came again). The data
        # module sets the trainer's epoch on each epoch's new loader instead.
        self._cache: tuple[int, list] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def all_batches(self) -> list[list[ClipRequest]]:
        """Every rank's batches for this epoch, before dealing (the same on every rank)."""
        if self._cache and self._cache[0] == self.epoch:
            return self._cache[1]
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.ranges)) if self.shuffle else np.arange(len(self.ranges))
        batches, current, tokens, self.skipped = [], [], 0, 0
        for i in order:
            n = self.lengths.draw(*self.ranges[i], rng)
            if n is None:
                self.skipped += 1  # too short for the policy; datasets drop such items up front
                continue
            full = tokens + n * self.tpf > self.budget or (self.max_clips and len(current) == self.max_clips)
            if full:
                batches.append(current)
                current, tokens = [], 0
            current.append(ClipRequest(int(i), n, int(rng.integers(2**31))))
            tokens += n * self.tpf
        if current:
            batches.append(current)
        self._cache = (self.epoch, batches)
        return batches

    def resume(self, epoch: int, global_done: int, local_done: int) -> None:
        """Continue a checkpointed run: the rest of `epoch`, or the next epoch whole if the
        checkpoint was written on the epoch's last batch (the trainer then starts the next one)."""
        self.set_epoch(epoch)
        if global_done >= len(self.all_batches()):
            self.set_epoch(epoch + 1)
            self.resume_at = None
        else:
            self.resume_at = (epoch, global_done, local_done)

    def _resuming(self) -> bool:
        return self.resume_at is not None and self.resume_at[0] == self.epoch

    def _mine(self) -> list[list[ClipRequest]]:
        """This rank's batches: the epoch's batches (less those done before a resume), dealt in turn."""
        batches = self.all_batches()
        if self._resuming():
            batches = batches[self.resume_at[1]:]  # done by all ranks together, whatever their number was
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
