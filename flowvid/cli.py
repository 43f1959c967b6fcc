"""The `flowvid` command. Thin: parse arguments, call a plain function, report.

torch and Lightning are imported inside the commands, so `flowvid --help` answers at once.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Callable, Sequence

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
        raise ValueError(f"--frames must be >= 1 and --draws >= 2, got {args.frames} and {args.draws}")
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
        raise ValueError(f"--frames must be >= 1, got {args.frames}")
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

    def __init__(self, desc: str):
        self.desc, self.bar = desc, None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=self.desc, unit="file", disable=total == 0)
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

    if args.num < 1:
        raise ValueError(f"--num must be >= 1, got {args.num}")
    bar = _Progress(f"writing {args.kind}")
    try:
        path = write_synthetic_set(args.kind, args.output, args.num, args.size, tuple(args.frames), args.fps,
                                   args.seed, progress=bar)
    finally:
        bar.close()
    print(f"{args.num} clips -> {path}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Train from config into a run folder."""
    from flowvid.config import load_config
    from flowvid.training.module import TrainingStopped
    from flowvid.training.run import train

    cfg = load_config(args.config, args.overrides)
    run_dir = args.run_dir or f"runs/{Path(args.config[-1]).stem}"
    try:
        r = train(cfg, run_dir, args.resume)
    except TrainingStopped as e:
        print(f"flowvid train: stopped: {e}", file=sys.stderr)
        return 1
    print(f"{r.steps} steps ({r.skipped_steps} skipped) -> {r.last_checkpoint}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """EMA weights as safetensors plus the config, for the sampling tools."""
    from flowvid.training.export import export_checkpoint

    print(f"exported -> {export_checkpoint(args.ckpt, args.output)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flowvid", description="Video synthesis with frame-insertion flows.")
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
                   help="auto: continue the run folder's last checkpoint if there is one; or a .ckpt path")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("export", help="write a checkpoint's EMA weights (safetensors) and config for sampling")
    p.add_argument("--ckpt", required=True, help="a .ckpt written by flowvid train")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.set_defaults(func=cmd_export)

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
    except (ValueError, FileNotFoundError, RuntimeError) as e:  # ConfigError is a ValueError
        print(f"flowvid {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
