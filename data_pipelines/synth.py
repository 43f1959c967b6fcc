"""`flowvid data synth KIND -o DIR --num N`: a synthetic set as real mp4 files plus a manifest.

The clips come from the same generators the in-memory synthetic datasets use
(flowvid.data.synthetic), so a file-based run and an in-memory run see the same content.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from flowvid.data.manifest import ManifestEntry, write_jsonl
from flowvid.data.synthetic import make_synthetic
from flowvid.io import write_video


def write_synthetic_set(kind: str, out_dir: str | Path, num: int, size: int = 32, frames: tuple[int, int] = (8, 16),
                        fps: float = 8.0, seed: int = 0,
                        progress: Callable[[int, int], None] | None = None) -> Path:
    """Write `num` clips of family `kind` to out_dir/KIND_000000.mp4 ...; returns out_dir/manifest.jsonl."""
    family = make_synthetic(kind, num_clips=num, size=size, frames=tuple(frames), fps=fps, seed=seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for i in range(num):
        clip = family[i]
        path = write_video(out / f"{kind}_{i:06d}.mp4", clip.frames, fps)
        st = path.stat()
        n = clip.frames.shape[0]
        entries.append(ManifestEntry(path.name, n, fps, size, size, n / fps, "h264", st.st_size, st.st_mtime, clip.label))
        if progress:
            progress(i + 1, num)
    write_jsonl(out / "manifest.jsonl", entries)
    return out / "manifest.jsonl"
