"""What every flowvid network trains with, whichever it is (flow model or autoencoder): a manual
optimizer step that skips a non-finite loss on every rank at once, gradient clipping by the global
norm, EMA weights, micro-batch accumulation, a FLOP budget, a training log read once per line, and
the position in the epoch that an exact resume needs.

Optimisation is manual so that a non-finite loss can be skipped on every rank at once (DDP must not
see one rank step while another skips). A subclass builds its network and says what a step computes
(`accumulate`: forward and backward on each micro-batch) and what its log holds (`new_log`).
"""
from __future__ import annotations

import contextlib
import copy
import logging
import time
from dataclasses import dataclass, fields
from pathlib import Path

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.strategies import FSDPStrategy, ParallelStrategy
from torch import Tensor, nn
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
from torch.distributed.fsdp.wrap import ModuleWrapPolicy

from flowvid.config import Config, to_yaml
from flowvid.data.clips import PackedClips
from flowvid.devices import to_device
from flowvid.training.optim import apply_settings, build_optimizer

log = logging.getLogger(__name__)


@dataclass
class LossLog:
    """The training log's sums over the steps since its last written line. The device's share stays
    there until Lightning writes a line (every trainer.log_every_n_steps): one read per line, not
    one per step, each of which would make the host wait for the device.

    Each micro-batch's stats carry `terms` (a dataclass of detached scalar losses, `total` first),
    `visible` and `frames` (frames computed, and of the clips at full length) and `flops`."""

    steps: int = 0
    sums: Tensor | None = None  # (values..., grad norm)
    names: tuple[str, ...] = ()
    visible: int = 0
    frames: int = 0
    timed_s: float = 0.0  # steps whose duration is known (not the first, nor one right after a validation)
    timed_tokens: int = 0
    timed_clips: int = 0
    timed_flops: int = 0

    def add(self, stats: list, grad_norm: Tensor) -> None:
        step = torch.cat([self.values(stats), grad_norm.float().reshape(1)]).detach()
        self.sums = step if self.sums is None else self.sums + step
        self.names = self.names or tuple(f.name for f in fields(stats[0].terms))
        self.steps += 1
        self.visible += sum(s.visible for s in stats)
        self.frames += sum(s.frames for s in stats)

    def values(self, stats: list) -> Tensor:
        """(K,) what a step adds to the sums: its loss terms, summed over micro-batches."""
        return torch.stack([sum(getattr(s.terms, f.name) for s in stats) for f in fields(stats[0].terms)])

    def means(self) -> dict[str, float]:
        """The logged values: losses and gradient norm per step, visible fraction, throughput. NaN
        where there is nothing to average (no timed step, only skipped steps): Lightning would
        repeat a left-out key's previous value."""
        values = self.sums.tolist() if self.steps else None  # the one read
        logs = self.named(values)
        logs["train/visible_fraction"] = _ratio(self.visible, self.frames)
        logs["train/tokens_per_s"] = _ratio(self.timed_tokens, self.timed_s)
        logs["train/clips_per_s"] = _ratio(self.timed_clips, self.timed_s)
        logs["train/tflops_per_s"] = _ratio(self.timed_flops / 1e12, self.timed_s)
        return logs

    def named(self, values: list[float] | None) -> dict[str, float]:
        """The sums read back, by name: per-step means of the terms (`total` logged as `loss`) and the
        gradient norm."""
        names = [("loss" if n == "total" else n) for n in self.names] + ["grad_norm"]
        values = values or [float("nan")] * len(names)
        return {f"train/{k}": _ratio(v, self.steps) for k, v in zip(names, values)}


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


class TrainingStopped(Exception):
    """The run cannot go on (e.g. the loss stayed non-finite); a checkpoint was written first."""


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


class StepModule(L.LightningModule):
    """A network, its EMA copy and the step machinery; subclasses say what a step computes."""

    # the network's layer classes that become FSDP units inside it (trainer.strategy=fsdp)
    fsdp_units: tuple[type[nn.Module], ...] = ()
    compiled = False  # whether configure_model compiled parts of the network (train.compile)

    def __init__(self, cfg: Config, model: nn.Module, tokens_per_frame: int):
        super().__init__()
        self.cfg = cfg
        self.automatic_optimization = False
        self.model = model
        self.ema = copy.deepcopy(self.model).requires_grad_(False).eval()
        self.tokens_per_frame = tokens_per_frame  # for the logged throughput
        self.nonfinite_in_a_row = 0
        self.skipped_steps = 0
        # Position in the epoch, for resuming at the same batch: this rank's count (what Lightning
        # counts) and the count over all ranks (what lets a run resume on another world size).
        self.batches_in_epoch = 0
        self.global_batches_in_epoch = 0
        # (epoch, batches done over all ranks, steps done here, clips done over all ranks or None)
        self.resume_position: tuple[int, int, int, int | None] | None = None
        self._last_step_end: float | None = None
        self.step_log = self.new_log()
        self.bar_values: dict[str, float] = {}  # what the progress bar shows: numbers on the host
        self.total_flops = 0  # model FLOPs this rank has trained (skipped steps included)

    def new_log(self) -> LossLog:
        return LossLog()

    def accumulate(self, micro: list[PackedClips]) -> list:
        """Forward and backward on each micro-batch (gradients adding up, synchronised in the last
        one: grad_sync); each one's stats (see LossLog). Calls spend with the step's FLOPs."""
        raise NotImplementedError

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
        if isinstance(self.trainer.strategy, FSDPStrategy) and not isinstance(self.model, FSDP):
            self.shard_networks(self.trainer.strategy)

    def shard_networks(self, strategy: FSDPStrategy) -> None:
        """Each network (the trained one and its EMA copy) becomes a root FSDP unit, each of its
        fsdp_units a unit inside it. Lightning would otherwise wrap this whole module, whose training
        step (backward and optimizer step included) then runs inside the root unit's forward: FSDP
        never finishes that backward (Lightning issue 19685). Both networks are sharded alike, so a
        rank holds the same slice of each weight in both and the EMA update pairs them shard by shard.

        No FSDP mixed precision: bf16-mixed runs under Lightning's autocast, as with DDP. FSDP's own
        (Lightning's bf16 config) would cast the networks' inputs, the time t among them, and their
        buffers (the rotary frequencies) to bf16, training another function than the one sampled."""
        opts = dict(auto_wrap_policy=ModuleWrapPolicy(set(self.fsdp_units)), sharding_strategy=strategy.sharding_strategy,
                    device_id=strategy.root_device, use_orig_params=True)
        self.model = FSDP(self.model, **opts)
        self.ema = FSDP(self.ema, **opts)

    # -- the step --------------------------------------------------------------------------

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

    def spend(self, flops: int) -> None:
        """Counts a step's FLOPs; asks the trainer to stop once train.max_tflops are spent."""
        self.total_flops += flops
        budget = self.cfg.train.max_tflops
        if budget:  # every rank stops at the same step: the first one to reach the budget decides
            spent = self.total_flops >= budget * 1e12
            if self.trainer.strategy.reduce_boolean_decision(spent, all=False):
                self.trainer.should_stop = True

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
        backward's gradients to the shards, where they add up, except with compiled blocks: there it
        too keeps unsharded gradients until the last backward (FSDP.no_sync, more memory), because
        dynamo cannot trace a parameter gathered whole whose gradient is still a shard."""
        strategy = self.trainer.strategy
        if last or not isinstance(strategy, ParallelStrategy):
            return contextlib.nullcontext()
        if isinstance(self.model, FSDP) and self.compiled:
            return self.model.no_sync()
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

    def log_step(self, stats: list, num_clips: int, grad_norm: Tensor) -> None:
        """Adds the step to the log's sums; when Lightning writes a line, logs their means since the
        last line (LossLog.means) and the learning rate."""
        now, acc = time.perf_counter(), self.step_log
        acc.add(stats, grad_norm)
        if self._last_step_end is not None:  # host time: the step's read of the device waited for its end
            acc.timed_s += now - self._last_step_end
            acc.timed_tokens += sum(s.visible for s in stats) * self.tokens_per_frame
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
        self.step_log = self.new_log()

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
