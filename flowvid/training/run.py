"""`flowvid train`: a run folder, a Lightning Trainer from config, fit, a final checkpoint."""
from __future__ import annotations

import contextlib
import difflib
import fcntl
import inspect
import logging
import os
import re
import socket
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import lightning as L
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins.environments import SLURMEnvironment

from flowvid.config import Config, ConfigError, ModelKind, to_yaml
from flowvid.data.module import VideoDataModule, tokens_per_frame
from flowvid.errors import UsageError
from flowvid.io import check_writable, write_errors
from flowvid.models import count_parameters
from flowvid.models.attention import CUDA_ONLY
from flowvid.training.checkpoint import AtomicCheckpointIO, checkpoint_dir, newest_checkpoint, resolve_resume
from flowvid.training.export import check_network_fits, check_weights_fit, open_checkpoint, read_weights
from flowvid.training.module import FlowceptionModule, TrainingStopped
from flowvid.training.requeue import RunPaused, StopFlag, requeue_slurm_job

log = logging.getLogger(__name__)
RUN_LOCK = ".flowvid.lock"  # held (flock) by the run training in the folder
# Expected here, not problems: the EMA copy stays in eval mode; with manual optimisation a
# step's checkpoint holds the weights after that step, which is what resuming needs.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
warnings.filterwarnings("ignore", message=r"Using ModelCheckpoint with manual optimization")
# validation means are reduced over ranks by the module itself (FlowceptionModule.log_validation)
warnings.filterwarnings("ignore", message=r"It is recommended to use `self.log\(.val/")
# Lightning warns each epoch when it has fewer batches than trainer.log_every_n_steps, but logging
# counts optimizer steps across epochs: small datasets get their metrics.csv rows all the same.
warnings.filterwarnings("ignore", message=r"The number of training batches \(\d+\) is smaller than the logging")
# flowvid's batch sampler resumes inside an epoch by itself (VideoDataModule places it from the
# checkpoint's position), so Lightning's advice that the dataloader "is not resumable" does not apply
MID_EPOCH_RESUME_WARNING = "You're resuming from a checkpoint that ended before the epoch ended"
warnings.filterwarnings("ignore", message=re.escape(MID_EPOCH_RESUME_WARNING))
# raised from Lightning's own code under newer torch: nothing a user can act on
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


class NoLightningTips(logging.Filter):
    """Lightning's advertisement for its cloud logger, printed at the start of every run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("\N{ELECTRIC LIGHT BULB} Tip")


for _name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
    logging.getLogger(_name).addFilter(NoLightningTips())


@dataclass
class TrainResult:
    run_dir: Path
    last_checkpoint: Path
    steps: int
    skipped_steps: int
    stopped_by: str | None = None  # "SIGUSR1", "SIGTERM" or "Ctrl-C": last.ckpt holds this step; run again to continue
    seconds: float = 0.0  # wall time of trainer.fit (validation and checkpoints included)
    global_zero: bool = True  # this process is rank 0 (the one that reports)
    complete: bool = False  # --resume auto found the run at trainer.max_steps already: nothing trained


def strategy(cfg: Config):
    """Lightning's strategy by name; under `fsdp` the module shards its networks itself
    (FlowceptionModule.shard_networks)."""
    name = cfg.trainer.get("strategy", "auto")
    if isinstance(name, str) and name.startswith("fsdp") and name != "fsdp":
        raise ConfigError(f"trainer.strategy={name} is not supported; use trainer.strategy=fsdp (flowvid shards "
                          "its networks itself, without CPU offload)")
    if name == "fsdp":
        from lightning.pytorch.strategies import FSDPStrategy

        return FSDPStrategy(sharding_strategy="FULL_SHARD")
    return name


# Trainer options that the training step, which runs its own backward and optimizer step, does itself
DONE_BY_FLOWVID = {"accumulate_grad_batches": "train.accumulate_grad_batches", "gradient_clip_val": "optim.grad_clip",
                   "gradient_clip_algorithm": "optim.grad_clip (always by the global norm)"}


def check_trainer_keys(options: dict) -> None:
    """trainer.* must be Trainer arguments; an unknown one fails in one line with the closest names."""
    valid = set(inspect.signature(L.Trainer.__init__).parameters) - {"self", "logger", "callbacks", "plugins",
                                                                     "default_root_dir", "use_distributed_sampler"}
    for key in options:
        if key in DONE_BY_FLOWVID:
            raise ConfigError(f"trainer.{key} is not used: flowvid's training step does this itself; set "
                              f"{DONE_BY_FLOWVID[key]} instead")
        if key not in valid:
            close = difflib.get_close_matches(key, sorted(valid), n=3) or sorted(valid)[:8]
            raise ConfigError(f"unknown config key 'trainer.{key}'; Lightning Trainer options near it: {', '.join(close)}")


class ProgressBar(TQDMProgressBar):
    """Lightning's bar, showing the losses the module last logged, kept as numbers on the host
    (FlowceptionModule.bar_values). Lightning's own shows what is logged with prog_bar=True, read
    from the logged tensors at every refresh: on a GPU a wait for the device at every step."""

    def get_metrics(self, trainer, pl_module) -> dict:
        values = getattr(pl_module, "bar_values", {})
        return {k: values[k] for k in ("loss", "val_loss") if k in values}


class LastCheckpoint(L.Callback):
    """last.ckpt every `every` steps and at the run's last step, always written inside the loop:
    a save after fit() returns (as ModelCheckpoint's save_last does at train end) records the
    epoch as finished, and a resume from it would skip the rest of that epoch.

    It also acts on SIGUSR1, SIGTERM and Ctrl-C (flowvid.training.requeue): last.ckpt at the step boundary,
    a SLURM requeue (SIGUSR1 only), and RunPaused, unless the run ends at this step anyway."""

    def __init__(self, path: Path, every: int):
        self.path, self.every, self.stop = path, every, StopFlag()

    def on_fit_start(self, trainer, module) -> None:
        self.stop.install()

    def on_train_start(self, trainer, module) -> None:
        self.stop.take_sigterm_back()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        # the step budget, or a stop asked for in the step (train.max_tflops)
        last_step = 0 < trainer.max_steps <= trainer.global_step or trainer.should_stop
        last_epoch = trainer.max_epochs not in (None, -1) and trainer.is_last_batch and \
            trainer.current_epoch + 1 >= trainer.max_epochs
        cause = self.stop.any_rank(module.device)
        pause = cause is not None and not (last_step or last_epoch)
        if last_step or last_epoch or pause or trainer.global_step % self.every == 0:
            trainer.save_checkpoint(self.path, weights_only=False)
        if pause:
            log.warning("%s: checkpoint at step %d (%s), stopping", cause, trainer.global_step, self.path)
            if trainer.is_global_zero and cause == "SIGUSR1":
                requeue_slurm_job()
            raise RunPaused(f"stopped on {cause} at step {trainer.global_step}", cause)


def trains_on_gpu(cfg: Config) -> bool:
    return torch.cuda.is_available() and cfg.trainer.get("accelerator", "auto") in ("auto", "gpu", "cuda")


def build_trainer(cfg: Config, run_dir: Path, has_val: bool) -> L.Trainer:
    check_trainer_keys(cfg.trainer)
    opts = dict(cfg.trainer)
    opts["strategy"] = strategy(cfg)
    on_gpu = trains_on_gpu(cfg)
    backend = cfg.model.attention.backend.value if cfg.kind == ModelKind.flow else "sdpa"  # convolutions only
    if backend == "flex" and not on_gpu:
        raise UsageError("attention backend 'flex' has no backward pass on CPU in torch; train on CPU with "
                         "model.attention.backend=sdpa (flex serves GPU training and CPU sampling)")
    if backend in CUDA_ONLY and not on_gpu:
        raise UsageError(f"attention backend '{backend}' runs on CUDA only; train on CPU with "
                         "model.attention.backend=sdpa")
    precision = str(opts.setdefault("precision", "bf16-mixed" if on_gpu else "32-true"))
    if precision in ("16-mixed", "16"):  # the manual step clips before any unscaling
        raise ConfigError("trainer.precision=16-mixed (float16 with a loss scaler) is not supported; use "
                          "bf16-mixed (GPUs since A100), 16-true or 32-true")
    if cfg.trainer.get("strategy") == "fsdp" and precision not in ("bf16-mixed", "bf16", "32-true", "32"):
        raise ConfigError(f"trainer.precision={precision} is not supported with trainer.strategy=fsdp; use "
                          "bf16-mixed (or 32-true)")
    if not has_val:
        opts["limit_val_batches"] = 0
    ckpt = ModelCheckpoint(dirpath=checkpoint_dir(run_dir), filename="step{step:08d}", auto_insert_metric_name=False,
                           every_n_train_steps=cfg.train.checkpoint_every, save_last=False,
                           save_top_k=cfg.train.keep_checkpoints or -1,
                           monitor="step", mode="max")
    loggers = [CSVLogger(run_dir, name="logs", version=""), TensorBoardLogger(run_dir, name="logs", version="")]
    last = LastCheckpoint(checkpoint_dir(run_dir) / "last.ckpt", cfg.train.checkpoint_every)
    opts.setdefault("enable_model_summary", False)  # its table counts no FLOPs; run_summary says what trains
    # The packed batch count differs from epoch to epoch, and Lightning reads a loader's length when
    # it makes it: a new loader (and length) each epoch keeps every epoch whole.
    opts.setdefault("reload_dataloaders_every_n_epochs", 1)
    plugins = [AtomicCheckpointIO()]
    if SLURMEnvironment.detect():  # LastCheckpoint requeues at a step boundary, not Lightning's handler mid-step
        plugins.append(SLURMEnvironment(auto_requeue=False))
    bar = opts.get("enable_progress_bar")
    callbacks = [ckpt, last] + ([ProgressBar()] if bar is None or bool(bar) else [])
    try:
        return L.Trainer(default_root_dir=run_dir, logger=loggers, callbacks=callbacks, plugins=plugins,
                         use_distributed_sampler=False, **opts)
    except (MisconfigurationException, TypeError) as e:  # e.g. accelerator=gpu without one, devices=0
        raise ConfigError(f"trainer options: {str(e).strip().splitlines()[0]}") from None


OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)  # the former from torch 2.5


def out_of_memory(cfg: Config, step: int, run_dir: Path) -> str:
    """What to do when a step ran out of device memory, in one line."""
    then = "continue with --resume auto" if newest_checkpoint(run_dir) else "start again"
    return (f"out of device memory at step {step} with data.tokens_per_batch={cfg.data.tokens_per_batch}: lower it "
            "and raise train.accumulate_grad_batches by the same factor (the same steps in less memory), or set "
            f"model.grad_checkpointing=true; then {then}")


def initial_weights(cfg: Config) -> dict[str, torch.Tensor] | None:
    """The weights train.init_from names (an export's or a checkpoint's EMA), checked against the
    configured network; None without it. Both the trained network and its EMA start from them."""
    if not cfg.train.init_from:
        return None
    _, weights = read_weights(cfg.train.init_from)
    check_weights_fit(cfg.train.init_from, weights, cfg,
                      "fine-tune with the model settings it was trained with (model.dim, depth, heads, ...)")
    return weights


def training_module(cfg: Config) -> L.LightningModule:
    """The LightningModule of the network the config names (cfg.kind)."""
    if cfg.kind == ModelKind.autoencoder:
        from flowvid.autoencoders.training import AutoencoderModule

        return AutoencoderModule(cfg)
    return FlowceptionModule(cfg)


def run_summary(cfg: Config, run_dir: Path, trainer: L.Trainer, module: L.LightningModule) -> str:
    """One line on what trains where (Lightning's own table shows no FLOPs and is off by default)."""
    accumulate = cfg.train.accumulate_grad_batches
    if cfg.kind == ModelKind.autoencoder:
        a = cfg.autoencoder
        what = (f"an autoencoder of {sum(p.numel() for p in module.model.parameters()) / 1e6:.1f}M parameters "
                f"({a.downsample}x downsampling"
                f"{f', {a.temporal_factor} frames a latent frame' if a.temporal_factor > 1 else ''}"
                f", {a.latent_channels} latent channels, {a.bottleneck.value} bottleneck), "
                f"{cfg.data.tokens_per_batch} latent positions a batch")
    else:
        m = cfg.model
        what = (f"{count_parameters(m) / 1e6:.1f}M parameters (dim {m.dim}, depth {m.depth}, {m.heads} heads, "
                f"{m.attention.backend.value} attention, {tokens_per_frame(cfg)} tokens a frame) on the "
                f"{cfg.path.kind.value} path, {cfg.data.tokens_per_batch} tokens a batch")
    return (f"training {what}{f' x {accumulate} a step' if accumulate > 1 else ''}, "
            f"{trainer.world_size} device(s), precision {trainer.precision}; "
            f"logs: tensorboard --logdir {run_dir / 'logs'}")


def write_config(run_dir: Path, cfg: Config) -> None:
    """The resolved config in the run folder, atomically; a resumed run with other settings is noted."""
    path = run_dir / "config.yaml"
    text = to_yaml(cfg)
    if path.is_file() and path.read_text() != text:
        log.warning("%s differs from this run's config; the previous one is kept as config.prev.yaml", path)
        os.replace(path, run_dir / "config.prev.yaml")
    tmp = path.with_name(f".config.yaml.tmp-{os.getpid()}")
    with write_errors(path):
        tmp.write_text(text)
        os.replace(tmp, path)


@contextlib.contextmanager
def own_run_folder(run_dir: Path, rank_zero: bool) -> Iterator[None]:
    """Hold run_dir for this run: a second trainer started there refuses in one line. An flock,
    which the kernel releases when the process ends however it ends: a killed run leaves no lock."""
    if not rank_zero:  # the run's other ranks share the folder rank 0 holds
        yield
        return
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / RUN_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise UsageError(f"{run_dir} is in use by another training run ({holder}); wait for it to end, "
                             "or give another --run-dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        yield
    finally:
        os.close(fd)
        if created and [p.name for p in run_dir.iterdir()] == [RUN_LOCK]:  # refused before writing: leave nothing
            (run_dir / RUN_LOCK).unlink()
            run_dir.rmdir()


def completed_step(cfg: Config, ckpt_path: Path | None, resume: str | None) -> int | None:
    """The step of a resumed run that has no step left to take (trainer.max_steps reached), else None.
    With --resume auto that is a finished run, reported as such; a checkpoint named past the budget
    is refused, as training from it would write nothing."""
    max_steps = cfg.trainer.get("max_steps", -1)
    if ckpt_path is None or max_steps is None or max_steps < 0 or Path(ckpt_path).is_dir():  # a sharded checkpoint
        return None
    step = int(open_checkpoint(ckpt_path).get("global_step", 0))
    if step < max_steps:
        return None
    if resume != "auto":
        raise UsageError(f"{ckpt_path} is at step {step} and trainer.max_steps={max_steps}: nothing to train; "
                         f"raise trainer.max_steps to continue the run")
    return step


def train(cfg: Config, run_dir: str | Path, resume: str | None = None) -> TrainResult:
    """Train from config into run_dir; resume: None, 'auto' or a checkpoint path."""
    run_dir = Path(run_dir)
    # every check that can fail runs before anything is written
    check_writable(run_dir, "run folder")
    check_network_fits(cfg, "cuda" if trains_on_gpu(cfg) else "cpu", training=True)
    ckpt_path = resolve_resume(run_dir, resume, cfg, sharded=cfg.trainer.get("strategy") == "fsdp")
    done = completed_step(cfg, ckpt_path, resume)
    if done is not None:
        return TrainResult(run_dir, ckpt_path, done, 0, None, 0.0, rank_zero_only.rank == 0, complete=True)
    start = initial_weights(cfg) if ckpt_path is None else None  # a resumed run has its own weights
    datamodule = VideoDataModule(cfg)
    datamodule.setup()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    module = training_module(cfg)
    if start is not None:
        module.model.load_state_dict(start)
        module.ema.load_state_dict(start)
        log.info("starting from the EMA weights of %s", cfg.train.init_from)
    # before Lightning prints its first lines; global rank 0 from the launcher's variables (RANK, LOCAL_RANK,
    # SLURM_PROCID; NODE_RANK where Lightning launches the nodes itself)
    first = rank_zero_only.rank == 0 and int(os.environ.get("NODE_RANK", 0)) == 0
    with own_run_folder(run_dir, first):
        trainer = build_trainer(cfg, run_dir, has_val=datamodule.datasets["val"] is not None)
        if trainer.is_global_zero:
            write_config(run_dir, cfg)
            log.info(run_summary(cfg, run_dir, trainer, module))
        if ckpt_path:
            log.info("resuming from %s", ckpt_path)
        last = next(c for c in trainer.callbacks if isinstance(c, LastCheckpoint))
        stopped_by, started = None, time.perf_counter()
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        except RunPaused as e:
            stopped_by = e.cause
        except OUT_OF_MEMORY as e:
            raise TrainingStopped(out_of_memory(cfg, trainer.global_step, run_dir)) from e
        finally:
            last.stop.restore()  # after Lightning's teardown, which puts back the handlers it found at start
        return TrainResult(run_dir, checkpoint_dir(run_dir) / "last.ckpt", trainer.global_step, module.skipped_steps,
                           stopped_by, time.perf_counter() - started, trainer.is_global_zero)
