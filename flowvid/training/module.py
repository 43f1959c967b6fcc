"""The LightningModule: sample the insertion path per clip, pack, forward, velocity + insertion loss.

Optimisation is manual so that a non-finite loss can be skipped on every rank at once (DDP
must not see one rank step while another skips) and so that each step reads like the method.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.strategies import FSDPStrategy, ParallelStrategy
from torch import Tensor
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
from torch.distributed.fsdp.wrap import ModuleWrapPolicy

from flowvid.config import Config, to_yaml
from flowvid.data.clips import PackedClips
from flowvid.devices import to_device
from flowvid.flow import InsertionPath, LossTerms, insertion_loss, velocity_loss
from flowvid.flow.losses import per_frame_velocity_error
from flowvid.flow.tasks import GivenFrames, draw_given, task_weights
from flowvid.models import SpatioTemporalDiT, forward_flops
from flowvid.models.dit import Block
from flowvid.training.optim import apply_settings, build_optimizer

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


@dataclass
class StepLog:
    """The training log's sums over the steps since its last written line. The device's share stays
    there until Lightning writes a line (every trainer.log_every_n_steps): one read per line, not
    one per step, each of which would make the host wait for the device."""

    steps: int = 0
    sums: Tensor | None = None  # (4 + 2 * bands,) loss, velocity, insertion, grad norm; per band of t: error, frames
    visible: int = 0
    frames: int = 0
    timed_s: float = 0.0  # steps whose duration is known (not the first, nor one right after a validation)
    timed_tokens: int = 0
    timed_clips: int = 0
    timed_flops: int = 0

    def add(self, stats: list[MicroBatchStats], grad_norm: Tensor) -> None:
        terms = [torch.stack([sum(getattr(s.terms, k) for s in stats) for k in ("total", "velocity", "insertion")])]
        t, flowing, err = (torch.cat([getattr(s, k) for s in stats]) for k in ("t", "flowing", "error"))
        band = torch.bucketize(t, band_edges(t.device))
        bands = len(TIME_BUCKETS) - 1
        # where, not a product: a context frame's error may be inf, and inf * 0 is NaN
        error = torch.zeros(bands, device=t.device).scatter_add_(0, band, torch.where(flowing, err.float(), 0.0))
        count = torch.zeros(bands, device=t.device).scatter_add_(0, band, flowing.float())
        step = torch.cat([*terms, grad_norm.float().reshape(1), error, count]).detach()
        self.sums = step if self.sums is None else self.sums + step
        self.steps += 1
        self.visible += sum(s.visible for s in stats)
        self.frames += sum(s.frames for s in stats)

    def means(self) -> dict[str, float]:
        """The logged values: losses and gradient norm per step, velocity error per band of t per
        frame, visible fraction, throughput. NaN where there is nothing to average (a band without
        flowing frames, no timed step, only skipped steps): Lightning would repeat a left-out
        key's previous value."""
        bands, nan = len(TIME_BUCKETS) - 1, float("nan")
        values = self.sums.tolist() if self.steps else [nan] * (4 + 2 * bands)  # the one read
        names = ("loss", "velocity", "insertion", "grad_norm")
        logs = {f"train/{k}": _ratio(v, self.steps) for k, v in zip(names, values)}
        error, count = values[4:4 + bands], values[4 + bands:]
        for (lo, hi), e, c in zip(zip(TIME_BUCKETS, TIME_BUCKETS[1:]), error, count):
            logs[f"train/velocity_t{lo:.1f}-{hi:.1f}"] = _ratio(e, c)
        logs["train/visible_fraction"] = _ratio(self.visible, self.frames)
        logs["train/tokens_per_s"] = _ratio(self.timed_tokens, self.timed_s)
        logs["train/clips_per_s"] = _ratio(self.timed_clips, self.timed_s)
        logs["train/tflops_per_s"] = _ratio(self.timed_flops / 1e12, self.timed_s)
        return logs


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


@functools.lru_cache
def band_edges(device: torch.device) -> Tensor:
    """The inner edges of the time bands on `device`, copied there once."""
    return to_device(torch.tensor(TIME_BUCKETS[1:-1]), device)


class TrainingStopped(Exception):
    """The run cannot go on (e.g. the loss stayed non-finite); a checkpoint was written first."""


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from several integers (numpy's SeedSequence hashing)."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFFFFFFFFFF for p in parts]).generate_state(1, np.uint64)[0] >> 1)


def release_gathered(unit) -> None:
    """Free the whole weights an FSDP root unit gathered for a forward that had no backward.

    FSDP keeps a root unit's gathered weights after its forward, for the backward to use and free.
    After a forward without one (EMA validation and previews, the skipped step of a rank without
    clips, a non-finite loss) they stay, and FSDP reuses them as they are for the next forward and
    for checkpoints: stale once the shards have changed. FSDP has no public call for this.
    Whether the next forward gathers the root unit again depends on this, so every rank must
    release at the same points."""
    handle = getattr(unit, "_handle", None) if isinstance(unit, FSDP) else None
    # one rank: FSDP shards nothing (NO_SHARD) and the weights are the parameters themselves
    if handle is None or not handle.uses_sharded_strategy or handle.needs_unshard():
        return
    from torch.distributed.fsdp._runtime_utils import _reshard

    _reshard(unit, handle, free_unsharded_flat_param=True)


class FlowceptionModule(L.LightningModule):
    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.automatic_optimization = False
        self.model = SpatioTemporalDiT(cfg.model)
        self.ema = copy.deepcopy(self.model).requires_grad_(False).eval()
        self.path = InsertionPath.from_config(cfg.path)
        self.task_weights = task_weights(cfg.train.tasks, cfg.path.kind.value)
        self.nonfinite_in_a_row = 0
        self.skipped_steps = 0
        # Position in the epoch, for resuming at the same batch: this rank's count (what Lightning
        # counts) and the count over all ranks (what lets a run resume on another world size).
        self.batches_in_epoch = 0
        self.global_batches_in_epoch = 0
        # (epoch, batches done over all ranks, steps done here, clips done over all ranks or None)
        self.resume_position: tuple[int, int, int, int | None] | None = None
        self._last_step_end: float | None = None
        self.step_log = StepLog()
        self.bar_values: dict[str, float] = {}  # what the progress bar shows: numbers on the host
        self._forward_flops: dict[int, int] = {}  # clip length -> forward FLOPs
        self.total_flops = 0  # model FLOPs this rank has trained (skipped steps included)

    # -- setup ---------------------------------------------------------------------------

    def configure_optimizers(self):
        total = int(self.trainer.estimated_stepping_batches) if self.trainer else 0
        opt, sched = build_optimizer(self.model, self.cfg.optim, total)
        return [opt], [{"scheduler": sched, "interval": "step"}]

    def on_train_start(self) -> None:
        """After a resume restored the optimizer: the config's optimizer settings, not the checkpoint's."""
        changed = apply_settings(self.optimizers(use_pl_optimizer=False), self.lr_schedulers(), self.cfg.optim)
        if changed:
            log.info("resumed with other optimizer settings: %s", "; ".join(changed))

    def configure_model(self) -> None:
        if self.cfg.train.compile:
            for blk in self.model.blocks:
                blk.compile_around_attention()
        if isinstance(self.trainer.strategy, FSDPStrategy) and not isinstance(self.model, FSDP):
            self.shard_networks(self.trainer.strategy)

    def shard_networks(self, strategy: FSDPStrategy) -> None:
        """Each network (the trained one and its EMA copy) becomes a root FSDP unit, each of its
        blocks a unit inside it. Lightning would otherwise wrap this whole module, whose training
        step (backward and optimizer step included) then runs inside the root unit's forward: FSDP
        never finishes that backward (Lightning issue 19685). Both networks are sharded alike, so a
        rank holds the same slice of each weight in both and the EMA update pairs them shard by shard.

        No FSDP mixed precision: bf16-mixed runs under Lightning's autocast, as with DDP. FSDP's own
        (Lightning's bf16 config) would cast the networks' inputs, the time t among them, and their
        buffers (the rotary frequencies) to bf16, training another function than the one sampled."""
        opts = dict(auto_wrap_policy=ModuleWrapPolicy({Block}), sharding_strategy=strategy.sharding_strategy,
                    device_id=strategy.root_device, use_orig_params=True)
        self.model = FSDP(self.model, **opts)
        self.ema = FSDP(self.ema, **opts)

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
        lv = velocity_loss(out.velocity, sample.v_target, sample.flowing) * w_flow
        li = insertion_loss(out.rate_head, sample.k, sample.active, self.cfg.model.rate_link) * w_active
        return LossTerms(total=lv + self.cfg.loss.insertion_weight * li, velocity=lv, insertion=li)

    @staticmethod
    def reduce_counts(counts: Tensor) -> tuple[Tensor, int]:
        """Sum counts over ranks; returns them and the world size."""
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(counts)
            return counts, dist.get_world_size()
        return counts, 1

    def training_step(self, batch: PackedClips | list[PackedClips], batch_idx: int) -> None:
        """One optimizer step on a batch, or on train.accumulate_grad_batches micro-batches (a list)."""
        micro = batch if isinstance(batch, list) else [batch]
        self.batches_in_epoch += 1
        self.global_batches_in_epoch += self.trainer.world_size * len(micro)
        opt, sched = self.optimizers(), self.lr_schedulers()
        # before any forward: a compiled block under FSDP fails on the last step's sharded gradient
        opt.zero_grad(set_to_none=True)
        if self.empty_anywhere(micro):  # before any forward, so that no rank waits in a collective
            return self.skip(opt, "batch (every read in it failed)")
        stats = self.accumulate(micro)
        # the step's one read of the device: were the losses and gradients finite on every rank
        # (a finite loss can still overflow in backward)
        loss_ok, grad_ok = self.finite_everywhere(
            torch.stack([torch.isfinite(torch.stack([s.terms.total for s in stats])).all(),
                         torch.isfinite(self.grad_max())]))
        if not (loss_ok and grad_ok):
            return self.skip(opt, "loss" if not loss_ok else "gradient")
        self.nonfinite_in_a_row = 0
        grad_norm = self.clip_grad_norm(self.cfg.optim.grad_clip or float("inf"))  # inf: measured, not clipped
        opt.step()
        sched.step()
        self.update_ema()
        self.log_step(stats, sum(b.num_clips for b in micro), grad_norm)

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

    def spend(self, flops: int) -> None:
        """Counts a step's FLOPs; asks the trainer to stop once train.max_tflops are spent."""
        self.total_flops += flops
        budget = self.cfg.train.max_tflops
        if budget:  # every rank stops at the same step: the first one to reach the budget decides
            spent = self.total_flops >= budget * 1e12
            if self.trainer.strategy.reduce_boolean_decision(spent, all=False):
                self.trainer.should_stop = True

    def step_flops(self, sample) -> int:
        """Model FLOPs of a forward and backward on the sample's visible frames: 3 x the forward's
        matrix products (flowvid.models.flops, the convention of MFU figures), from host lengths."""
        lengths = sample.cu_seqlens.diff().tolist()
        for m in set(lengths) - self._forward_flops.keys():
            self._forward_flops[m] = forward_flops(self.cfg.model, m)
        return 3 * sum(self._forward_flops[m] for m in lengths)

    def empty_anywhere(self, micro: list[PackedClips]) -> bool:
        """Whether a batch of this step, on this rank or another, has no clips (every read in it
        failed): every rank then skips the step. Known on the host; ranks compare in one collective."""
        empty = any(b.num_clips == 0 for b in micro)
        if not (dist.is_available() and dist.is_initialized()):
            return empty
        flag = to_device(torch.tensor([float(empty)]), self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def grad_sync(self, last: bool):
        """DDP averages the gradients over ranks in a step's last backward only; FSDP reduces each
        backward's gradients to the shards, where they add up."""
        strategy = self.trainer.strategy
        if last or not isinstance(strategy, ParallelStrategy):
            return contextlib.nullcontext()
        return strategy.block_backward_sync()

    def skip(self, opt, what: str) -> None:
        """Drop this step's gradients (those of earlier micro-batches too) and count a skipped step."""
        opt.zero_grad(set_to_none=True)
        self._last_step_end = None  # throughput counts the steps taken, over their own time
        self.write_log()
        self.on_nonfinite(what)

    # -- EMA ----------------------------------------------------------------------------------

    @torch.no_grad()
    def update_ema(self) -> None:
        """ema <- decay * ema + (1 - decay) * weights; a plain copy before train.ema_start."""
        decay = self.cfg.train.ema_decay if self.global_step >= self.cfg.train.ema_start else 0.0
        ema, live = list(self.ema.parameters()), list(self.model.parameters())
        torch._foreach_lerp_(ema, live, 1.0 - decay)

    # -- non-finite losses --------------------------------------------------------------------

    def finite_everywhere(self, finite: Tensor) -> list[bool]:
        """Each flag of `finite` (bool), true on every rank; one read of the device."""
        flags = finite.float().reshape(-1)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(flags, op=dist.ReduceOp.MIN)
        return [bool(f) for f in flags.tolist()]

    def grad_max(self) -> Tensor:
        """Largest |gradient| of this rank (its shard under FSDP): finite exactly when every gradient is
        (a max, unlike a norm, cannot overflow in half precision). finite_everywhere combines the ranks.
        (16-mixed, whose loss scaler would own overflows, is refused by flowvid.training.run.)"""
        grads = [p.grad for p in self.model.parameters() if p.grad is not None and p.grad.numel()]
        if not grads:
            return torch.zeros((), device=self.device)
        return torch.stack(torch._foreach_norm(grads, float("inf"))).float().max()

    def clip_grad_norm(self, max_norm: float) -> Tensor:
        """Clip by the global gradient norm and return it (before clipping); under FSDP the root unit
        combines the ranks' shards. (Lightning's clip_gradients refuses FSDP, and fused AdamW under
        bf16-mixed, though bf16 has no loss scaler to unscale first; 16-mixed is refused in
        flowvid.training.run.)"""
        if isinstance(self.model, FSDP):
            return self.model.clip_grad_norm_(max_norm)
        return torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)

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

    def on_nonfinite(self, what: str) -> None:
        self.nonfinite_in_a_row += 1
        self.skipped_steps += 1
        log.warning("non-finite %s at step %d: step skipped (%d in a row, %d in all)",
                    what, self.global_step, self.nonfinite_in_a_row, self.skipped_steps)
        self.log("train/skipped_steps", torch.tensor(float(self.skipped_steps)), rank_zero_only=True)
        if self.nonfinite_in_a_row >= self.cfg.train.max_nonfinite_steps:
            path = Path(self.trainer.default_root_dir) / "checkpoints" / "nonfinite.ckpt"
            self.trainer.save_checkpoint(path, weights_only=False)
            raise TrainingStopped(f"loss or gradients were not finite for {self.nonfinite_in_a_row} steps in a row "
                                  f"at step {self.global_step}; stopped (checkpoint: {path}). Lower optim.lr or check "
                                  "the data")

    # -- logging ------------------------------------------------------------------------------

    def log_step(self, stats: list[MicroBatchStats], num_clips: int, grad_norm: Tensor) -> None:
        """Adds the step to the log's sums; when Lightning writes a line, logs their means since the
        last line (StepLog.means) and the learning rate."""
        now, acc = time.perf_counter(), self.step_log
        acc.add(stats, grad_norm)
        if self._last_step_end is not None:  # host time: the step's read of the device waited for its end
            acc.timed_s += now - self._last_step_end
            acc.timed_tokens += sum(s.visible for s in stats) * self.model.tokens_per_frame
            acc.timed_clips += num_clips
            acc.timed_flops += sum(s.flops for s in stats)
        self._last_step_end = now
        self.write_log()

    def write_log(self) -> None:
        """The means since the last line, when Lightning writes one at this step (a skipped step
        included: Lightning would write the last line's values again), as host tensors: logged
        numbers would become device tensors, each copy and read making the host wait."""
        if not getattr(self.trainer._logger_connector, "should_update_logs", True):
            return
        logs = self.step_log.means()
        logs["train/lr"] = self.lr_schedulers().get_last_lr()[0]
        self.log_dict({k: torch.tensor(float(v)) for k, v in logs.items()}, batch_size=1)
        self.bar_values["loss"] = logs["train/loss"]
        self.step_log = StepLog()

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
            lv = velocity_loss(out.velocity, sample.v_target, sample.flowing)
            li = insertion_loss(out.rate_head, sample.k, sample.active, self.cfg.model.rate_link)
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

    def on_train_epoch_start(self) -> None:
        if self.resume_position is None or self.resume_position[0] != self.current_epoch:
            self.global_batches_in_epoch, self.batches_in_epoch = 0, 0
        else:
            _, self.global_batches_in_epoch, self.batches_in_epoch, _ = self.resume_position

    def clips_in_epoch(self) -> int | None:
        """The epoch's clips all ranks have taken, from the training loader's batch sampler (None
        when the loader has another sampler): resuming by clips survives a changed token budget."""
        loader = self.trainer.train_dataloader if self.trainer.training else None
        clips_done = getattr(getattr(loader, "batch_sampler", None), "clips_done", None)
        return clips_done(self.global_batches_in_epoch) if clips_done else None

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # the config travels as YAML text: loading a checkpoint never needs to unpickle our classes
        checkpoint["flowvid"] = {"config": to_yaml(self.cfg), "epoch": self.current_epoch,
                                 "batches_in_epoch": self.batches_in_epoch,
                                 "global_batches_in_epoch": self.global_batches_in_epoch,
                                 "clips_in_epoch": self.clips_in_epoch(), "skipped_steps": self.skipped_steps,
                                 "flops": self.total_flops}
        if not isinstance(self.model, FSDP) and checkpoint.get("optimizer_states"):
            checkpoint["optimizer_states"] = [self.numbered_by_module(s) for s in checkpoint["optimizer_states"]]

    def numbered_by_module(self, state: dict) -> dict:
        """An optimizer state with its parameters numbered by position in self.parameters().

        optimizer.state_dict() numbers them in optimizer order (the weight-decay group first);
        Lightning's FSDP checkpoints number them by module position, and its FSDP loader reads every
        checkpoint that way. Written so, a checkpoint from a run without FSDP resumes under FSDP too;
        torch's load_state_dict pairs parameters through param_groups, so it loads either way."""
        position = {id(p): i for i, p in enumerate(self.parameters())}
        optimizer = self.optimizers(use_pl_optimizer=False)
        renumber = {}
        for saved, group in zip(state["param_groups"], optimizer.param_groups):
            renumber.update({old: position[id(p)] for old, p in zip(saved["params"], group["params"])})
        return {**state, "state": {renumber[k]: v for k, v in state["state"].items()},
                "param_groups": [{**g, "params": [renumber[i] for i in g["params"]]} for g in state["param_groups"]]}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("flowvid", {})
        local = state.get("batches_in_epoch", 0)
        self.resume_position = (state.get("epoch", 0), state.get("global_batches_in_epoch", local), local,
                                state.get("clips_in_epoch"))
        # a run restarted mid-epoch gets no on_train_epoch_start: the counters continue from here
        _, self.global_batches_in_epoch, self.batches_in_epoch, _ = self.resume_position
        self.skipped_steps = state.get("skipped_steps", 0)
        self.total_flops = state.get("flops", 0)
