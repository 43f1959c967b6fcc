"""The LightningDataModule: datasets, token-budget batches and workers, from one Config."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import lightning as L
import torch

from flowvid.config import Config, ModelKind, check_data_fits_model
from flowvid.data.batching import ClipLengths, TokenBudgetBatchSampler
from flowvid.data.clips import PackedClips, collate_clips
from flowvid.data.datasets import VAL_SEED_OFFSET, ManifestDataset, SyntheticDataset
from flowvid.data.manifest import read_manifest
from flowvid.data.workers import ignore_stop_signal, worker_context
from flowvid.devices import to_device
from flowvid.errors import UsageError


def tokens_per_frame(cfg: Config) -> int:
    """Tokens the model spends on one frame: patches plus the frame token (an autoencoder: its
    latent positions, (H / downsample) x (W / downsample))."""
    if cfg.kind == ModelKind.autoencoder:
        f = cfg.autoencoder.downsample
        return (cfg.data.height // f) * (cfg.data.width // f)
    m = cfg.model
    return (m.height // m.patch_size) * (m.width // m.patch_size) + 1


def build_dataset(cfg: Config, split: str):
    """The train or val dataset the config describes; None when the split has no data."""
    d = cfg.data
    source = d.source.value
    if source == "synthetic":
        n = d.synthetic.num_clips if split == "train" else d.synthetic.val_clips
        seed = cfg.seed if split == "train" else cfg.seed + VAL_SEED_OFFSET
        return SyntheticDataset(d.synthetic.kind, n, d, seed) if n else None
    if source == "manifest":
        path = d.manifest if split == "train" else d.val_manifest
        return ManifestDataset(read_manifest(path), path, d, augment=split == "train") if path else None
    from flowvid.data.latents import LatentDataset

    root = Path(d.latents) / split
    if split != "train" and not root.is_dir():
        return None
    ds = LatentDataset(root, d)
    m = cfg.model
    if ds.frame_shape != (m.in_channels, m.height, m.width):
        raise UsageError(f"latents in {root} are {ds.frame_shape} per frame, the model takes "
                         f"{(m.in_channels, m.height, m.width)} (model.in_channels, model.height, model.width)")
    return ds


class MicroBatches(torch.utils.data.Dataset):
    """A dataset read a step at a time: indexed by the list of batches (lists of ClipRequest) that
    TokenBudgetBatchSampler yields with accumulate > 1, read by one worker together."""

    def __init__(self, dataset: torch.utils.data.Dataset):
        self.dataset = dataset

    def __getitem__(self, batches: list[list]) -> list[list]:
        return [[self.dataset[request] for request in batch] for batch in batches]

    def __len__(self) -> int:
        return len(self.dataset)


def collate_micro_batches(items: list[list[list]]) -> list[PackedClips]:
    """One step's micro-batches, each packed (an empty PackedClips where all of its reads failed)."""
    (batches,) = items  # the sampler yields one group at a time
    return [collate_clips(batch) for batch in batches]


class VideoDataModule(L.LightningDataModule):
    """Packed batches of clips under a token budget; each rank reads its own batches.

    The batch sampler shards across ranks itself, so the Trainer must not replace it:
    use Trainer(use_distributed_sampler=False).
    """

    def __init__(self, cfg: Config):
        super().__init__()
        check_data_fits_model(cfg)
        self.cfg = cfg
        self.datasets: dict[str, torch.utils.data.Dataset | None] = {}

    def setup(self, stage: str | None = None) -> None:
        for split in ("train", "val"):
            if split not in self.datasets:
                self.datasets[split] = build_dataset(self.cfg, split)

    def _to_cuda(self) -> bool:
        """Batches go to a CUDA device: pin them (in the loader's pinning thread), so that the copy
        is faster and does not block the host."""
        return self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"

    def _world(self) -> tuple[int, int]:
        return (self.trainer.world_size, self.trainer.global_rank) if self.trainer is not None else (1, 0)

    def batch_sampler(self, split: str) -> TokenBudgetBatchSampler:
        d = self.cfg.data
        ds = self.datasets[split]
        world, rank = self._world()
        return TokenBudgetBatchSampler(
            [ds.frame_range(i) for i in range(len(ds))], ClipLengths(d.min_frames, d.max_frames, d.frame_choices),
            tokens_per_frame(self.cfg), d.tokens_per_batch, d.max_clips_per_batch,
            shuffle=split == "train", seed=self.cfg.seed, num_replicas=world, rank=rank,
            accumulate=self.cfg.train.accumulate_grad_batches if split == "train" else 1)

    def _loader(self, split: str) -> torch.utils.data.DataLoader:
        self.setup()
        if self.datasets[split] is None:
            raise UsageError(f"no {split} data configured (see data.synthetic.val_clips / data.val_manifest)")
        workers = self.cfg.data.num_workers
        sampler = self.batch_sampler(split)
        module = self.trainer.lightning_module if self.trainer is not None else None
        if split == "train" and self.trainer is not None:
            # loaders are made anew each epoch, before Lightning sets the epoch: set it here, and
            # in the epoch a checkpoint was written in, continue after the batches it had done
            sampler.set_epoch(self.trainer.current_epoch)
            position = getattr(module, "resume_position", None)
            if position is not None and position[0] == self.trainer.current_epoch:
                sampler.resume(*position)
        grouped = split == "train" and self.cfg.train.accumulate_grad_batches > 1
        return torch.utils.data.DataLoader(
            MicroBatches(self.datasets[split]) if grouped else self.datasets[split], batch_sampler=sampler,
            collate_fn=collate_micro_batches if grouped else collate_clips,
            num_workers=workers, persistent_workers=workers > 0 and self.cfg.data.persistent_workers,
            pin_memory=self._to_cuda(),
            multiprocessing_context=worker_context() if workers > 0 else None,
            worker_init_fn=ignore_stop_signal if workers > 0 else None)

    def transfer_batch_to_device(self, batch, device: torch.device, dataloader_idx: int):
        """Only the frames go to the device. The clips' lengths, seeds and labels stay on the host,
        where the trainer reads them (to split the frames, to seed the path's draws, to drop labels
        and check them): read back from a GPU, each would wait for the device."""
        if isinstance(batch, list) and all(isinstance(b, PackedClips) for b in batch):  # a step's micro-batches
            return [self.transfer_batch_to_device(b, device, dataloader_idx) for b in batch]
        if not isinstance(batch, PackedClips):
            return super().transfer_batch_to_device(batch, device, dataloader_idx)
        return replace(batch, frames=to_device(batch.frames, device))

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> torch.utils.data.DataLoader:
        return self._loader("val")
