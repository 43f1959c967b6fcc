"""The autoencoder's LightningModule: encode, sample the bottleneck, decode at every scale, reconstruction
loss. The step machinery (manual step, EMA, non-finite skips, accumulation, resume position) is
flowvid.training.base's, the same as the flow model's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import Tensor
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
from torch.utils.flop_counter import FlopCounterMode

from flowvid.autoencoders.losses import ReconstructionTerms, reconstruction_loss
from flowvid.autoencoders.model import ResBlock, VideoAutoencoder, clip_positions, whole_group_frames
from flowvid.config import Config
from flowvid.data.clips import PackedClips
from flowvid.data.module import tokens_per_frame
from flowvid.devices import to_device
from flowvid.training.base import StepModule, release_gathered
from flowvid.training.module import mix_seed

LATENT_MOMENTUM = 0.01  # running latent statistics: each step's batch moves them by this share


@dataclass
class ReconstructionStats:
    """What the training log keeps of one micro-batch (see flowvid.training.base.LossLog)."""

    terms: ReconstructionTerms  # detached, weighted by the micro-batch's share of the step's frames
    visible: int
    frames: int
    flops: int


def whole_groups(batch: PackedClips, factor: int) -> PackedClips:
    """Each clip cut to its first 1 + T k frames: what an autoencoder with temporal factor T encodes."""
    lengths = whole_group_frames(batch.lengths, factor)  # (B,), on the host as cu_seqlens is
    if torch.equal(lengths, batch.lengths):
        return batch
    keep = (clip_positions(batch.cu_seqlens.tolist()) < lengths.repeat_interleave(batch.lengths)).nonzero()  # (m, 1)
    cu = torch.cat([batch.cu_seqlens[:1], lengths.cumsum(0).to(batch.cu_seqlens.dtype)])
    return replace(batch, frames=batch.frames.index_select(0, to_device(keep.flatten(), batch.frames.device)),
                   cu_seqlens=cu)


class AutoencoderModule(StepModule):
    fsdp_units = (ResBlock,)

    def __init__(self, cfg: Config):
        super().__init__(cfg, VideoAutoencoder(cfg.autoencoder), tokens_per_frame(cfg))
        self._frame_flops: dict[tuple[int, int], int] = {}  # frame size -> forward FLOPs of one frame

    def accumulate(self, micro: list[PackedClips]) -> list[ReconstructionStats]:
        """Each frame of all micro-batches of all ranks counts the same in the step's loss."""
        micro = [whole_groups(b, self.cfg.autoencoder.temporal_factor) for b in micro]
        counts = [float(b.frames.shape[0]) for b in micro]  # this rank's; the sum over ranks is the total
        total, world = self.reduce_counts(to_device(torch.tensor([sum(counts)]), self.device))
        total = total[0].clamp_min(1)
        stats = []
        for j, b in enumerate(micro):
            weight = counts[j] * world / total
            noise = torch.Generator(device=self.device).manual_seed(
                mix_seed(self.cfg.seed, int(b.seeds[0]), self.global_step, j))
            with self.grad_sync(last=j == len(micro) - 1):
                enc, outs = self.model(b.frames, b.cu_seqlens.tolist(), noise)
                terms = reconstruction_loss(b.frames, outs, enc, self.cfg.autoencoder)
                self.manual_backward(terms.total * weight)
            self.track_latents(enc.mean.detach())
            m = b.frames.shape[0]
            detached = ReconstructionTerms(*(getattr(terms, k).detach() * weight for k in ("total", "l1", "ssim", "kl")))
            stats.append(ReconstructionStats(detached, m, m, 3 * m * self.frame_flops(b.frames)))
        self.spend(sum(s.flops for s in stats))
        return stats

    @torch.no_grad()
    def track_latents(self, mean: Tensor) -> None:
        """Running per-channel mean and std of the encoder's latents (averaged over ranks), kept in
        both networks' buffers: what normalises the latents the flow model trains on."""
        z = mean.float().transpose(0, 1).flatten(1)  # (c, M*h*w)
        moments, world = self.reduce_counts(torch.stack([z.mean(1), z.pow(2).mean(1)]))
        moments = moments / world
        for net in (self.model, self.ema):
            net = net.module if isinstance(net, FSDP) else net
            mu = net.latent_mean.lerp(moments[0], LATENT_MOMENTUM)
            second = (net.latent_std.pow(2) + net.latent_mean.pow(2)).lerp(moments[1], LATENT_MOMENTUM)
            net.latent_mean.copy_(mu)
            net.latent_std.copy_((second - mu.pow(2)).clamp_min(1e-8).sqrt())

    def frame_flops(self, frames: Tensor) -> int:
        """Forward FLOPs of one frame of this size: torch's counter on a copy of the network on the
        meta device (shapes only; the trained one may be sharded), once per size, from a clip of
        1 + T frames."""
        size = tuple(frames.shape[-2:])
        if size not in self._frame_flops:
            n = 1 + self.cfg.autoencoder.temporal_factor
            with torch.device("meta"):
                net = VideoAutoencoder(self.cfg.autoencoder)
                x = torch.zeros(n, *frames.shape[1:])
            with torch.no_grad(), FlopCounterMode(display=False) as counter:
                net(x, [0, n])
            self._frame_flops[size] = counter.get_total_flops() // n
        return self._frame_flops[size]

    # -- validation ---------------------------------------------------------------------------

    def on_validation_epoch_start(self) -> None:
        self.val_sums = torch.zeros(3, device=self.device, dtype=torch.float64)  # loss, squared error, frames

    def validation_step(self, batch: PackedClips, batch_idx: int) -> None:
        """EMA reconstructions from the posterior mean: the loss and the PSNR over all frames."""
        batch = whole_groups(batch, self.cfg.autoencoder.temporal_factor)
        if batch.num_clips == 0:  # every read failed: under FSDP, join the other ranks' gathers
            if isinstance(self.ema, FSDP):
                blank = torch.zeros(1, 3, self.cfg.data.height, self.cfg.data.width, device=self.device)
                self.ema(blank, [0, 1], sample=False)
            return
        enc, outs = self.ema(batch.frames, batch.cu_seqlens.tolist(), sample=False)
        terms = reconstruction_loss(batch.frames, outs, enc, self.cfg.autoencoder)
        m = float(batch.frames.shape[0])
        se = ((outs[-1].clamp(-1, 1) - batch.frames) / 2).pow(2).flatten(1).mean(1).sum()  # per-frame MSE in [0, 1]
        self.val_sums += torch.stack([terms.total * m, se, se.new_tensor(m)]).double()

    def on_validation_epoch_end(self) -> None:
        try:
            sums, _ = self.reduce_counts(self.val_sums)
            loss, se, frames = sums.tolist()
            if frames == 0:
                return
            psnr = 10 * math.log10(frames / se) if se > 0 else float("inf")
            self.log_dict({"val/loss": loss / frames, "val/psnr": psnr}, batch_size=1)
            if not self.trainer.sanity_checking:
                self.bar_values["val_loss"] = loss / frames
        finally:
            release_gathered(self.ema)
            self._last_step_end = None

