"""`flowvid data encode --ae MODEL -o OUT`: a dataset's clips as normalised latents, in the shards
`data.source: latents` reads (flowvid.data.latents), one folder per split (OUT/train, OUT/val).

Which clips: the data section of a config (by default the autoencoder's own): a manifest's videos
(each shot, where the manifest lists shots; whole, whatever data.clip_mode says, since training
draws its windows from the latents) or a synthetic set. Latents are the posterior means, normalised
with the autoencoder's statistics; a video autoencoder with temporal factor T encodes the first
1 + T k frames of each clip (n frames make 1 + (n - 1) // T latent frames). A flow model trained on
them names the autoencoder in `model.autoencoder` so that the tools decode what it makes.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch

from flowvid.autoencoders.model import whole_group_frames
from flowvid.data.clips import Clip, ClipRequest
from flowvid.data.latents import write_latent_shards
from flowvid.data.module import build_dataset
from flowvid.errors import UsageError
from flowvid.io import check_writable, output_set

ENCODE_BATCH = 32  # frames through the encoder at once: memory stays bounded for long videos


@dataclass
class EncodeResult:
    out: Path
    clips: dict[str, int]  # per split
    frames: dict[str, int]
    latent_shape: tuple[int, int, int]
    temporal_factor: int  # frames a latent frame stands for


def encode_dataset(ae_path: str | Path, cfg, out: str | Path, device: str = "cpu",
                   progress: Callable[[int, int], None] | None = None) -> EncodeResult:
    """Encode the train and val splits cfg.data describes into out/train and out/val (as one set)."""
    from flowvid.training.export import load_autoencoder

    out = check_writable(out, "-o")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"-o {str(out)!r} exists and is not an empty folder; choose a new one")
    ae = load_autoencoder(ae_path, device)[0]
    f, t, d = ae.downsample, ae.temporal_factor, cfg.data
    if d.source.value == "latents":
        raise UsageError("data.source=latents: encoding needs frames (data.source synthetic or manifest)")
    if d.height % f or d.width % f:
        raise UsageError(f"data.height and data.width must be multiples of the autoencoder's downsampling {f}, "
                         f"got {d.height}x{d.width}")
    splits = {s: ds for s in ("train", "val") if (ds := build_dataset(cfg, s)) is not None}
    total = sum(len(ds) for ds in splits.values())
    clips, frames, done = {}, {}, [0]

    def latents(ds) -> Iterator[Clip]:
        for i in range(len(ds)):
            clip = ds[ClipRequest(index=i, num_frames=ds.frame_range(i)[1], seed=0)]
            done[0] += 1
            if progress:
                progress(done[0], total)
            if clip is not None:  # an unreadable file is counted by the dataset and left out
                n = whole_group_frames(clip.frames.shape[0], t)  # a video autoencoder takes 1 + T k frames
                yield Clip(frames=encode_frames(ae, clip.frames[:n], device), label=clip.label, fps=clip.fps,
                           source=clip.source)

    with output_set(out) as tmp:
        for split, ds in splits.items():
            index = write_latent_shards(latents(ds), tmp / split)
            rows = index.read_text().splitlines()
            clips[split], frames[split] = len(rows), sum(json.loads(r)["num_frames"] for r in rows)
        (tmp / "encoded.json").write_text(json.dumps({"autoencoder": str(Path(ae_path).resolve()), "clips": clips,
                                                      "frames": frames, "temporal_factor": t}, indent=1))
    shape = (ae.latent_channels, d.height // f, d.width // f)
    return EncodeResult(out, clips, frames, shape, t)


@torch.no_grad()
def encode_frames(ae, frames: torch.Tensor, device: str) -> torch.Tensor:
    """(F, 3, H, W) in [-1, 1] -> (F, c, H/f, W/f) normalised posterior means, ENCODE_BATCH frames at a time."""
    return ae.normalize(ae.encode_means(frames, ENCODE_BATCH).to(device)).cpu()
