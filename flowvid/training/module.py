"""The flow model's LightningModule: sample the insertion path per clip, pack, forward, velocity +
insertion loss. The step machinery (manual optimizer step, EMA, non-finite skips, resume position)
is flowvid.training.base's, shared with the autoencoder's module.
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

from flowvid.config import Config
from flowvid.data.clips import PackedClips
from flowvid.data.module import tokens_per_frame
from flowvid.devices import to_device
from flowvid.flow import InsertionPath, LossTerms, insertion_loss, velocity_loss
from flowvid.flow.losses import per_frame_velocity_error
from flowvid.flow.tasks import GivenFrames, draw_given, task_weights
from flowvid.models import SpatioTemporalDiT, forward_flops
from flowvid.models.dit import Block
from flowvid.training.base import LossLog, StepModule, TrainingStopped, _ratio, release_gathered

__all__ = ["FlowceptionModule", "MicroBatchStats", "StepLog", "TrainingStopped"]
log = logging.getLogger(__name__)
TIME_BUCKETS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)  # velocity loss is also logged per bucket of t


@dataclass
class MicroBatchStats:
    """What the training log reports of one micro-batch, without keeping its outputs."""

    terms: LossTerms  # its share of the step's losses, detached
    visible: int  # visible frames
    frames: int  # frames of its clips at full length
    t: Tensor  # (M,) per-frame time
    flowing: Tensor  # (M,) bool
    error: Tensor  # (M,) per-frame velocity error
    flops: int = 0  # model FLOPs of its forward and backward (3 x the forward's matmuls)

    @classmethod
    def of(cls, terms: LossTerms, sample, out, flops: int = 0) -> "MicroBatchStats":
        return cls(LossTerms(*(x.detach() for x in (terms.total, terms.velocity, terms.insertion))),
                   int(sample.cu_seqlens[-1]), int(sample.num_frames.sum()), sample.t, sample.flowing,
                   per_frame_velocity_error(out.velocity.detach(), sample.v_target), flops)


class StepLog(LossLog):
    """The flow model's log: its loss terms and gradient norm (LossLog), plus the velocity error
    per band of t per flowing frame."""

    def values(self, stats: list[MicroBatchStats]) -> Tensor:
        t, flowing, err = (torch.cat([getattr(s, k) for s in stats]) for k in ("t", "flowing", "error"))
        band = torch.bucketize(t, band_edges(t.device))
        bands = len(TIME_BUCKETS) - 1
        # where, not a product: a context frame's error may be inf, and inf * 0 is NaN
        error = torch.zeros(bands, device=t.device).scatter_add_(0, band, torch.where(flowing, err.float(), 0.0))
        count = torch.zeros(bands, device=t.device).scatter_add_(0, band, flowing.float())
        return torch.cat([super().values(stats), error, count])

    def named(self, values: list[float] | None) -> dict[str, float]:
        bands = len(TIME_BUCKETS) - 1
        values = values or [float("nan")] * (4 + 2 * bands)
        terms, error, count = values[:3], values[3:3 + bands], values[3 + bands:3 + 2 * bands]
        self.names = self.names or ("total", "velocity", "insertion")
        logs = super().named(terms + values[-1:])
        for (lo, hi), e, c in zip(zip(TIME_BUCKETS, TIME_BUCKETS[1:]), error, count):
            logs[f"train/velocity_t{lo:.1f}-{hi:.1f}"] = _ratio(e, c)
        return logs


@functools.lru_cache
def band_edges(device: torch.device) -> Tensor:
    """The inner edges of the time bands on `device`, copied there once."""
    return to_device(torch.tensor(TIME_BUCKETS[1:-1]), device)


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from several integers (numpy's SeedSequence hashing)."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFFFFFFFFFF for p in parts]).generate_state(1, np.uint64)[0] >> 1)


class FlowceptionModule(StepModule):
    fsdp_units = (Block,)

    def __init__(self, cfg: Config):
        super().__init__(cfg, SpatioTemporalDiT(cfg.model), tokens_per_frame(cfg))
        self.path = InsertionPath.from_config(cfg.path)
        self.task_weights = task_weights(cfg.train.tasks, cfg.path.kind.value)
        self._forward_flops: dict[int, int] = {}  # clip length -> forward FLOPs

    def new_log(self) -> StepLog:
        return StepLog()

    def configure_model(self) -> None:
        if self.cfg.train.compile:
            for blk in [*self.model.blocks, *self.model.rate_blocks]:
                blk.compile_around_attention()
            self.compiled = True
        super().configure_model()

    # -- the method ------------------------------------------------------------------------

    def generators(self, batch: PackedClips, step: int,
                   salt: int) -> tuple[list[torch.Generator], list[torch.Generator]]:
        """Two generators per clip from (seed, the clip's request seed, step, salt), so that a clip's
        draws do not depend on which rank or batch it is in: one on the CPU for the draws that
        decide shapes (delays, global time, label dropout: on a GPU each would wait for the device),
        one on the training device for the noise."""
        draws, noise = [], []
        for clip_seed in batch.seeds.tolist():
            seed = mix_seed(self.cfg.seed, clip_seed, step, salt)
            draws.append(torch.Generator().manual_seed(seed))
            noise.append(torch.Generator(device=self.device).manual_seed(mix_seed(seed, 1)))
        return draws, noise

    def labels(self, batch: PackedClips, draws: list[torch.Generator], drop: float) -> Tensor | None:
        """Class labels, each replaced by the null label (-1) with probability `drop`; on the host,
        as the batch's labels are (VideoDataModule.transfer_batch_to_device)."""
        if self.cfg.model.num_classes == 0:
            return None
        keep = torch.stack([torch.rand((), generator=g) >= drop for g in draws])
        return torch.where(keep, batch.labels, -1)

    def loss(self, model, batch: PackedClips, gens: tuple[list[torch.Generator], list[torch.Generator]],
             fraction: float | None = None, drop: float = 0.0):
        """Sample the path for every clip, pack, forward (the losses: global_terms).
        gens: the clips' generators for draws and for noise (see generators)."""
        sample = self.sample_path(batch, gens, fraction)
        return sample, self.forward_path(model, batch, sample, gens[0], drop)

    def sample_path(self, batch: PackedClips, gens: tuple[list[torch.Generator], list[torch.Generator]],
                    fraction: float | None = None):
        """Each clip's task and given frames, then the path on all clips, packed."""
        draws, noise = gens
        clips = batch.clips()
        given = [self.given_frames(len(c), g) for c, g in zip(clips, draws)]
        return self.path.sample_batch(clips, generator=draws, noise_generator=noise, fraction=fraction,
                                      context=[x.context for x in given], passive=[x.passive for x in given],
                                      n_start=[x.n_start for x in given])

    def given_frames(self, num_frames: int, draws: torch.Generator) -> GivenFrames:
        """The clip's task (train.tasks), drawn from a generator of its own seeded from the clip's draws,
        so that the path's draws are the same whichever tasks are configured."""
        if set(self.task_weights) == {"generate"}:
            return GivenFrames("generate", [], [])
        g = torch.Generator().manual_seed(mix_seed(draws.initial_seed(), 2))
        return draw_given(num_frames, self.task_weights, self.cfg.train.interpolate_spacings, g)

    def forward_path(self, model, batch: PackedClips, sample, draws: list[torch.Generator], drop: float):
        # model(...), not model.forward_sample: under FSDP only the wrapper's own forward gathers the weights.
        # The layout and labels as lists: DDP and FSDP would move tensors to the device, where the
        # model's checks would wait for it.
        labels = self.labels(batch, draws, drop)
        return model(sample.x_t, sample.t, sample.position.tolist(), sample.cu_seqlens.tolist(), sample.context,
                     sample.passive, None if labels is None else labels.tolist())

    def frame_weights(self, samples: list) -> list[tuple[Tensor, Tensor]]:
        """Per sample, the weights of its mean velocity and insertion losses such that each frame of
        all samples of all ranks counts the same: its share of the global frame count (times the
        world size, as DDP averages gradients). A step of the ranks' micro-batches then equals one
        step of one process on all of them at once. One all-reduce; no host sync."""
        counts = [torch.stack([s.flowing.sum(), s.active.sum()]).float() for s in samples]
        total, world = self.reduce_counts(torch.stack(counts).sum(0))
        return [(c[0] * world / total[0].clamp_min(1), c[1] * world / total[1].clamp_min(1)) for c in counts]

    def global_terms(self, sample, out, weights: tuple[Tensor, Tensor] | None = None) -> LossTerms:
        """L = L_velocity + w_ins * L_insertion, each mean weighted as frame_weights says (by
        default for this sample alone, as one step's only micro-batch)."""
        w_flow, w_active = self.frame_weights([sample])[0] if weights is None else weights
        lv, li = self.mean_losses(sample, out)
        lv, li = lv * w_flow, li * w_active
        return LossTerms(total=lv + self.cfg.loss.insertion_weight * li, velocity=lv, insertion=li)

    def mean_losses(self, sample, out) -> tuple[Tensor, Tensor]:
        """The velocity loss (weighted by time as loss.velocity_weighting says) and the insertion
        loss, each a mean over this sample's frames."""
        lv = velocity_loss(out.velocity, sample.v_target, sample.flowing, sample.t, self.cfg.loss.velocity_weighting)
        return lv, insertion_loss(out.rate_head, sample.k, sample.active, self.cfg.model.rate_link)

    def accumulate(self, micro: list[PackedClips]) -> list[MicroBatchStats]:
        """Forward and backward on each micro-batch, the gradients adding up; what the log needs of
        each. A non-finite loss goes through backward too (its gradients are dropped with the step):
        deciding before would make the host wait for each loss."""
        gens = [self.generators(b, self.global_step, salt=0) for b in micro]  # draws whatever micro-batch a clip is in
        samples = [self.sample_path(b, g) for b, g in zip(micro, gens)]
        stats = []
        for j, (b, g, sample, w) in enumerate(zip(micro, gens, samples, self.frame_weights(samples))):
            with self.grad_sync(last=j == len(micro) - 1):
                out = self.forward_path(self.model, b, sample, g[0], self.cfg.train.label_dropout)
                terms = self.global_terms(sample, out, w)
                self.manual_backward(terms.total)
            stats.append(MicroBatchStats.of(terms, sample, out, self.step_flops(sample)))
        self.spend(sum(s.flops for s in stats))
        return stats

    def step_flops(self, sample) -> int:
        """Model FLOPs of a forward and backward on the sample's visible frames: 3 x the forward's
        matrix products (flowvid.models.flops, the convention of MFU figures), from host lengths."""
        lengths = sample.cu_seqlens.diff().tolist()
        for m in set(lengths) - self._forward_flops.keys():
            self._forward_flops[m] = forward_flops(self.cfg.model, m)
        return 3 * sum(self._forward_flops[m] for m in lengths)

    @torch.no_grad()
    def idle_forward(self, network) -> None:
        """A forward on one blank frame, for a rank without clips: under FSDP the forward gathers the
        sharded weights, a collective every rank must join; DDP needs nothing from it. Whether FSDP
        gathers the root unit again depends on release_gathered, so every rank releases at the same
        points (the callers)."""
        m = self.cfg.model
        x = torch.zeros(1, m.in_channels, m.height, m.width, device=self.device)
        zero, flag = torch.zeros(1, device=self.device), torch.zeros(1, dtype=torch.bool, device=self.device)
        label = torch.full((1,), -1, device=self.device) if m.num_classes else None
        network(x, zero, zero.long(), torch.tensor([0, 1], dtype=torch.int32, device=self.device), flag, flag, label)

    # -- validation ---------------------------------------------------------------------------

    def on_validation_epoch_start(self) -> None:
        # per val time: clip-weighted sums of the velocity and insertion losses; and the clip count
        self.val_sums = torch.zeros(len(self.cfg.train.val_times), 2, device=self.device, dtype=torch.float64)
        self.val_clips = torch.zeros((), device=self.device, dtype=torch.float64)

    def validation_step(self, batch: PackedClips, batch_idx: int) -> None:
        """EMA losses at fixed fractions of each clip's time range; the draws are the same every time."""
        if batch.num_clips == 0:  # every read failed: under FSDP, join the other ranks' EMA forwards
            if isinstance(self.ema, FSDP):
                for _ in self.cfg.train.val_times:
                    self.idle_forward(self.ema)
            return
        for i, q in enumerate(self.cfg.train.val_times):
            gens = self.generators(batch, step=0, salt=1000 + i)
            sample, out = self.loss(self.ema, batch, gens, fraction=q)
            lv, li = self.mean_losses(sample, out)
            self.val_sums[i] += torch.stack([lv, li]).double() * batch.num_clips
        self.val_clips += batch.num_clips

    def on_validation_epoch_end(self) -> None:
        try:
            self.log_validation()
            self.write_previews()
        finally:
            release_gathered(self.ema)
            self._last_step_end = None  # the next step's throughput must not count this validation

    def log_validation(self) -> None:
        """Means over every validation clip of all ranks, each clip counting the same (a rank whose
        batches all failed adds nothing and still takes part)."""
        totals, _ = self.reduce_counts(torch.cat([self.val_sums.flatten(), self.val_clips[None]]))
        sums, clips = totals[:-1].view_as(self.val_sums), totals[-1]
        if clips == 0:
            return
        means = (sums / clips).float()
        w = self.cfg.loss.insertion_weight
        for q, (lv, li) in zip(self.cfg.train.val_times, means):
            self.log_dict({f"val/velocity@{q:g}": lv, f"val/insertion@{q:g}": li})
        val_loss = (means[:, 0] + w * means[:, 1]).mean()
        self.log("val/loss", val_loss)
        if not self.trainer.sanity_checking:  # Lightning drops the sanity check's logs too
            self.bar_values["val_loss"] = float(val_loss)

    def write_previews(self) -> None:
        """A few clips sampled with the EMA weights, as GIFs in the run folder (rank 0 only)."""
        cfg = self.cfg
        if self.trainer.sanity_checking or cfg.train.preview_clips == 0 or cfg.model.in_channels != 3:
            return
        from flowvid.pipelines.outputs import write_gif
        from flowvid.pipelines.tasks import generate

        # Every rank samples the same clips (same seeds): a sharded (FSDP) EMA needs all of them. The
        # sampler's choices follow the network's outputs, the same on every rank (same gathered
        # weights, inputs and kernels); ranks whose choices differed would wait on each other.
        samples = generate(self.ema, cfg, num=cfg.train.preview_clips, steps=cfg.train.preview_steps,
                           seed=cfg.seed, max_frames=2 * cfg.data.max_frames)
        if not self.trainer.is_global_zero:
            return
        folder = Path(self.trainer.default_root_dir) / "samples"
        fps = cfg.data.fps or 8.0
        for i, clip in enumerate(samples.clips):
            write_gif(folder / f"step{self.global_step:08d}_{i}.gif", clip, fps)

    # -- checkpoints --------------------------------------------------------------------------
