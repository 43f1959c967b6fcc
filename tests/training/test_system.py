"""System tests through real processes: SIGKILL and resume; DDP across two 'nodes' on gloo."""
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from safetensors.torch import load_file

from flowvid.config import load_config
from flowvid.data.module import VideoDataModule
from flowvid.training.checkpoint import newest_checkpoint
from flowvid.training.module import FlowceptionModule

from train_helpers import FAST, assert_same_params, ckpt_params, tiny

pytestmark = pytest.mark.slow
TRAIN = [sys.executable, "-m", "flowvid.cli", "train", "-c", "configs/tiny.yaml", *FAST]
# 16 clips a batch: slow enough (about 0.1 s a step) to be killed in the middle of the run
RESUME_RUN = ["data.tokens_per_batch=4352", "trainer.max_steps=40", "trainer.val_check_interval=20"]


@pytest.fixture(scope="module")
def whole_run(tmp_path_factory):
    """The uninterrupted run the interrupted ones must match."""
    run = tmp_path_factory.mktemp("whole")
    whole = subprocess.run([*TRAIN, "--run-dir", str(run), *RESUME_RUN], capture_output=True, text=True)
    assert whole.returncode == 0, whole.stderr[-2000:]
    return ckpt_params(run / "checkpoints" / "last.ckpt")


def start_then_signal(run, signum, extra=()) -> subprocess.Popen:
    """Start a run in its own process group and send signum to the whole group (as SLURM signals
    every process of a job step, data workers included) once its first step checkpoint exists."""
    proc = subprocess.Popen([*TRAIN, "--run-dir", str(run), *RESUME_RUN, *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    first = run / "checkpoints" / "step00000010.ckpt"
    deadline = time.time() + 120
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    os.killpg(proc.pid, signum)
    return proc


def test_killed_run_resumes_to_the_same_parameters(tmp_path, whole_run):
    run = tmp_path / "killed"
    proc = start_then_signal(run, signal.SIGKILL)
    proc.communicate()
    newest = newest_checkpoint(run)
    killed_at = torch.load(newest, map_location="cpu", weights_only=True)["global_step"]  # never half-written
    assert 10 <= killed_at < 40, f"the kill came at step {killed_at}"

    resumed = subprocess.run([*TRAIN, "--run-dir", str(run), "--resume", "auto", *RESUME_RUN],
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "40 steps" in resumed.stdout
    assert_same_params(ckpt_params(run / "checkpoints" / "last.ckpt"), whole_run, atol=1e-6)


@pytest.mark.parametrize("signum,cause,code", [(signal.SIGUSR1, "SIGUSR1", 75), (signal.SIGINT, "Ctrl-C", 130),
                                               (signal.SIGTERM, "SIGTERM", 143)])
def test_a_stop_signal_checkpoints_at_a_step_boundary_and_resumes_exactly(tmp_path, whole_run, signum, cause, code):
    """SLURM's warning before the time limit (SIGUSR1), Ctrl-C (SIGINT to the terminal's process
    group) or SIGTERM (scancel, docker stop): stop after the step, last.ckpt, exit 75, 130 or 143,
    resume. With two loader workers, which must survive the signal the group receives. The three
    signals share one stop path: the resume is checked once (SIGUSR1), to keep the suite short."""
    run = tmp_path / "signalled"
    proc = start_then_signal(run, signum, ["data.num_workers=2"])
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-2000:]
    stopped = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["global_step"]
    assert 10 <= stopped < 40 and f"stopped on {cause} at step {stopped}" in err
    if signum != signal.SIGUSR1:
        return
    resumed = subprocess.run([*TRAIN, "--run-dir", str(run), "--resume", "auto", *RESUME_RUN],
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same_params(ckpt_params(run / "checkpoints" / "last.ckpt"), whole_run, atol=1e-6)


def test_sigterm_during_set_up_exits_143_in_one_line(tmp_path):
    """SIGTERM before the first step (here: once the run folder is written, while Lightning sets up):
    exit 143 and one line; no checkpoint, or one at a step boundary if the first step won the race."""
    run = tmp_path / "term"
    proc = subprocess.Popen([*TRAIN, "--run-dir", str(run), *RESUME_RUN], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run / "config.yaml").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    assert "stopped on SIGTERM" in err and "Traceback" not in err, err[-2000:]
    newest = newest_checkpoint(run)
    assert newest is None or "stopped on SIGTERM at step" in err


def test_one_trainer_per_run_folder_and_a_killed_runs_lock_does_not_block_resume(tmp_path):
    run = tmp_path / "shared"
    first = subprocess.Popen([*TRAIN, "--run-dir", str(run), *RESUME_RUN, "trainer.max_steps=100000"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 120
    while newest_checkpoint(run) is None and first.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    second = subprocess.run([*TRAIN, "--run-dir", str(run), "--resume", "auto", *RESUME_RUN,
                             "trainer.max_steps=100000"], capture_output=True, text=True)
    os.killpg(first.pid, signal.SIGKILL)
    first.communicate()
    assert second.returncode == 2, second.stderr[-2000:]
    assert len(second.stderr.strip().splitlines()) == 1 and "in use by another training run" in second.stderr

    step = torch.load(newest_checkpoint(run), map_location="cpu", weights_only=True)["global_step"]
    resumed = subprocess.run([*TRAIN, "--run-dir", str(run), "--resume", "auto", *RESUME_RUN,
                              f"trainer.max_steps={step + 3}"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"{step + 3} steps" in resumed.stdout

    # nothing left to train: --resume auto says the run is complete; a named checkpoint is refused
    again = subprocess.run([*TRAIN, "--run-dir", str(run), "--resume", "auto", *RESUME_RUN,
                            f"trainer.max_steps={step + 3}"], capture_output=True, text=True)
    assert again.returncode == 0 and "the run is complete" in again.stdout, again.stderr[-2000:]
    last = run / "checkpoints" / "last.ckpt"
    named = subprocess.run([*TRAIN, "--run-dir", str(run), "--resume", str(last), *RESUME_RUN,
                            f"trainer.max_steps={step}"], capture_output=True, text=True)
    assert named.returncode == 2 and "nothing to train" in named.stderr, named.stderr[-2000:]


def launch_env() -> dict:
    """This environment without the variables of an enclosing launcher: torchrun's, and SLURM's
    (Lightning trusts SLURM's before torchrun's)."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_", "SLURM_"))}


def finish(procs, timeout: int = 300) -> list[tuple[str, str]]:
    """Each process's (stdout, stderr); all are killed if one hangs, so none outlives the test."""
    try:
        return [p.communicate(timeout=timeout) for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        raise


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MergedRanks(VideoDataModule):
    """One process that sees, at each step, the union of what two DDP ranks see at that step."""

    def batch_sampler(self, split):
        sampler = super().batch_sampler(split)
        outer = self

        class Merged(torch.utils.data.Sampler):
            def set_epoch(self, epoch):
                sampler.set_epoch(epoch)

            def _pairs(self):
                batches = sampler.all_batches()
                batches = batches + batches[: len(batches) % 2]  # padded as for two ranks
                return [batches[i] + batches[i + 1] for i in range(0, len(batches), 2)]

            def __iter__(self):
                return iter(self._pairs())

            def __len__(self):
                return len(self._pairs())

        return Merged() if split == "train" and outer else sampler


def two_nodes(run_dir, *args, script=("-m", "flowvid.cli"), strategy="ddp", env=None,
              config="configs/tiny.yaml") -> list[tuple[str, str]]:
    """`flowvid train -c CONFIG ARGS` as two gloo 'nodes' of one process each (torchrun)."""
    port, env = free_port(), {**launch_env(), **(env or {})}
    procs = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1", f"--node-rank={rank}",
         "--master-addr=127.0.0.1", f"--master-port={port}", *script, "train", "-c", config, *FAST,
         "--run-dir", str(run_dir), *args, "trainer.num_nodes=2", "trainer.devices=1", f"trainer.strategy={strategy}"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    outs = finish(procs)
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    return outs


def one_process_on_both_ranks_batches(tmp_path, steps, cfg=None, module_class=FlowceptionModule):
    """The module (default: the flow model of configs/tiny.yaml with `steps`) trained in one process on
    the union of the two ranks' batches."""
    cfg = cfg or tiny(*steps)
    L.seed_everything(cfg.seed, verbose=False)  # as flowvid train does before building the model
    module = module_class(cfg)
    trainer = L.Trainer(max_steps=cfg.trainer["max_steps"], accelerator="cpu", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, use_distributed_sampler=False, default_root_dir=tmp_path)
    trainer.fit(module, datamodule=MergedRanks(cfg))
    return module


def state(module, name: str) -> dict:
    return {f"{name}.{k}": v for k, v in getattr(module, name).state_dict().items()}


def test_two_gloo_processes_equal_one_process_on_the_same_global_batch(tmp_path):
    steps = ["trainer.max_steps=5", "trainer.limit_val_batches=0", "optim.warmup_steps=2"]
    two_nodes(tmp_path / "ddp", *steps)
    ddp = ckpt_params(tmp_path / "ddp" / "checkpoints" / "last.ckpt")
    assert_same_params(ddp, state(one_process_on_both_ranks_batches(tmp_path, steps), "model"), atol=1e-5)
    # and the DDP run really changed the weights
    cfg = tiny(*steps)
    L.seed_everything(cfg.seed, verbose=False)
    fresh = state(FlowceptionModule(cfg), "model")
    assert max((ddp[k] - fresh[k]).abs().max().item() for k in ddp) > 1e-3


def test_the_autoencoder_on_two_gloo_processes_equals_one_process_on_the_same_global_batch(tmp_path):
    """kind: autoencoder through the same DDP and FSDP machinery: each frame of both ranks counts the
    same. A plain bottleneck, so that no posterior draw depends on how the clips are split."""
    from flowvid.autoencoders.training import AutoencoderModule

    steps = ["trainer.max_steps=3", "trainer.limit_val_batches=0", "optim.warmup_steps=2",
             "autoencoder.bottleneck=plain", "data.synthetic.num_clips=16"]
    config = "configs/autoencoder/tiny.yaml"
    two_nodes(tmp_path / "ddp", *steps, config=config)
    two_nodes(tmp_path / "fsdp", *steps, config=config, strategy="fsdp", script=FSDP_CPU)
    ddp = {k: v for k, v in ckpt_params(tmp_path / "ddp" / "checkpoints" / "last.ckpt").items() if "latent_" not in k}
    fsdp = ckpt_params(tmp_path / "fsdp" / "checkpoints" / "last.ckpt")
    assert_same_params({k: fsdp[k] for k in ddp}, ddp, atol=1e-5)
    cfg = load_config(config, [*FAST, *steps])
    L.seed_everything(cfg.seed, verbose=False)
    before = {k: v for k, v in state(AutoencoderModule(cfg), "model").items() if k in ddp}
    single = one_process_on_both_ranks_batches(tmp_path, steps, cfg, AutoencoderModule)
    got = {k: v for k, v in state(single, "model").items() if k in ddp}
    # one process sums the gradients in another order, and Adam turns that float noise in a gradient
    # near zero into an update of up to lr: one weight of 9,000 differed by 3.5e-5, the next by 4e-6
    assert_same_params(ddp, got, atol=1e-4)
    assert max((ddp[k] - before[k]).abs().max().item() for k in ddp) > 1e-3  # it trained


def test_accumulated_batches_equal_one_step_on_all_of_them(tmp_path):
    """train.accumulate_grad_batches=2: each step's two batches, forward and backward one after the
    other, give the weights of one process stepping on both batches packed together (each frame
    counting the same); and two gloo ranks accumulating two batches each equal one process
    accumulating four (DDP averages the gradients once, after the last of them)."""
    from flowvid.training.run import train

    steps = ["trainer.max_steps=3", "trainer.limit_val_batches=0", "optim.warmup_steps=2"]
    acc = ckpt_params(train(tiny(*steps, "train.accumulate_grad_batches=2"), tmp_path / "acc").last_checkpoint)
    assert_same_params(acc, state(one_process_on_both_ranks_batches(tmp_path, steps), "model"), atol=1e-5)
    plain = ckpt_params(train(tiny(*steps), tmp_path / "plain").last_checkpoint)
    assert max((acc[k] - plain[k]).abs().max().item() for k in acc) > 1e-4, "accumulation changed nothing"

    two_nodes(tmp_path / "ddp", *steps, "train.accumulate_grad_batches=2")
    four = train(tiny(*steps, "train.accumulate_grad_batches=4"), tmp_path / "four").last_checkpoint
    assert_same_params(ckpt_params(tmp_path / "ddp" / "checkpoints" / "last.ckpt"), ckpt_params(four), atol=1e-5)


FSDP_CPU = (str(Path(__file__).with_name("fsdp_cpu.py")),)


def test_fsdp_on_two_gloo_processes_trains_and_resumes_as_one_process(tmp_path):
    """trainer.strategy=fsdp, sharded over two CPU processes, in a run resumed from DDP to FSDP and
    back (each resume carries the Adam moments over): weights and EMA match one process on the same
    global batches; validation and preview sampling run with the sharded EMA on both ranks; export
    writes the whole EMA."""
    # a small clipping norm clips every step: the global norm must combine the ranks' shards
    steps = ["optim.warmup_steps=2", "optim.weight_decay=0.1", "optim.grad_clip=0.05", "train.ema_decay=0.5"]
    run = tmp_path / "run"
    val = [*steps, "trainer.limit_val_batches=1", "trainer.val_check_interval=2", "train.preview_steps=4"]
    # resumed at step 3, when every weight has Adam moments (the zero-initialised gates open at step 1)
    two_nodes(run, *val, "trainer.max_steps=3")
    two_nodes(run, *val, "trainer.max_steps=5", "--resume", "auto", script=FSDP_CPU, strategy="fsdp")
    assert len(list((run / "samples").glob("step00000004_*.gif"))) == 2  # written under FSDP
    out = two_nodes(run, *val, "trainer.max_steps=6", "--resume", "auto")
    assert "6 steps (0 skipped)" in out[0][0]

    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    single = one_process_on_both_ranks_batches(tmp_path, [*steps, "trainer.max_steps=6"])
    for name in ("model", "ema"):
        got = {k: v for k, v in ckpt["state_dict"].items() if k.startswith(name + ".")}
        assert_same_params(got, state(single, name), atol=1e-5)
    subprocess.run([sys.executable, "-m", "flowvid.cli", "export", "--ckpt", str(run / "checkpoints" / "last.ckpt"),
                    "-o", str(tmp_path / "export")], check=True, capture_output=True)
    exported = {f"ema.{k}": v for k, v in load_file(tmp_path / "export" / "model.safetensors").items()}
    assert_same_params(exported, state(single, "ema"), atol=1e-5)


def test_an_empty_batch_on_one_rank_is_skipped_by_both(tmp_path):
    """Rank 1's first validation batch and second training batch have no clips: the ranks stay in
    step (under FSDP the empty rank still joins the validation forwards' gathers; the training step
    is skipped by both before any forward) and train on to the same weights: with two accumulated
    batches a step (the empty one is then step 2's second), DDP against FSDP and against FSDP with
    compiled blocks (whose accumulation takes another path)."""
    script = (str(Path(__file__).with_name("ddp_empty_batch.py")),)
    accumulate = ["train.accumulate_grad_batches=2"]
    weights = {}
    # emptied: the sanity-check validation batch, and step 2's (second) batch
    for name, strategy, extra, empty in (("ddp", "ddp", [], "1,3"), ("ddp_acc", "ddp", accumulate, "1,5"),
                                         ("fsdp_acc", "fsdp", accumulate, "1,5"),
                                         ("compiled_acc", "fsdp", ["train.compile=true", *accumulate], "1,5")):
        outs = two_nodes(tmp_path / name, "trainer.max_steps=4", "trainer.limit_val_batches=1",
                         "trainer.val_check_interval=2", "train.preview_steps=2", *extra, script=script,
                         strategy=strategy, env={"EMPTY_BATCHES": empty})
        assert "4 steps (1 skipped)" in outs[0][0]
        weights[name] = torch.load(tmp_path / name / "checkpoints" / "last.ckpt", map_location="cpu",
                                   weights_only=True)["state_dict"]
    assert all(torch.isfinite(v).all() for v in weights["ddp"].values())
    assert_same_params(weights["fsdp_acc"], weights["ddp_acc"], atol=1e-5)
    assert_same_params(weights["compiled_acc"], weights["ddp_acc"], atol=1e-4)


def test_fsdp_on_one_process_equals_a_plain_run(tmp_path):
    """One process: FSDP shards nothing; it trains, validates and writes previews as without it."""
    steps = ["trainer.max_steps=3", "optim.warmup_steps=2", "trainer.limit_val_batches=1",
             "trainer.val_check_interval=2", "train.preview_steps=2"]
    for name, strategy in (("plain", "auto"), ("fsdp1", "fsdp")):
        run = subprocess.run([sys.executable, *FSDP_CPU, "train", "-c", "configs/tiny.yaml", *FAST, "--run-dir",
                              str(tmp_path / name), *steps, f"trainer.strategy={strategy}"],
                             capture_output=True, text=True, env=launch_env())
        assert run.returncode == 0, run.stderr[-3000:]
    assert_same_params(ckpt_params(tmp_path / "fsdp1" / "checkpoints" / "last.ckpt"),
                       ckpt_params(tmp_path / "plain" / "checkpoints" / "last.ckpt"), atol=1e-6)


SHORT_CLIPS = ("data.min_frames=4",)  # clips of 4-16 frames: epochs of different batch counts


@pytest.mark.parametrize("stops,every,extra", [
    ((6,), 2, ()), ((8,), 2, ()),          # 4 batches an epoch: mid-epoch, and on an epoch's last batch
    ((5, 7), 100, ()),                     # last.ckpt at steps no checkpoint interval divides; resumed twice
    ((9, 13), 3, SHORT_CLIPS),
    ((4, 7), 2, (*SHORT_CLIPS, "data.synthetic.num_clips=12")),  # one-step epochs, each ending on a checkpoint
    # 3 batches a step, fewer where epochs end
    ((4, 7), 2, (*SHORT_CLIPS, "train.accumulate_grad_batches=3", "data.synthetic.num_clips=100")),
])
def test_resume_at_and_inside_epoch_boundaries_sees_the_same_batches(tmp_path, monkeypatch, stops, every, extra):
    from flowvid.training import module as training_module
    from flowvid.training.run import train

    seen = []
    original = training_module.FlowceptionModule.training_step

    def recording(self, batch, idx):
        micro = batch if isinstance(batch, list) else [batch]
        seen.append((self.global_step, tuple(tuple(b.sources) for b in micro)))
        return original(self, batch, idx)

    monkeypatch.setattr(training_module.FlowceptionModule, "training_step", recording)
    over = ["data.tokens_per_batch=4352", "trainer.limit_val_batches=0", f"train.checkpoint_every={every}", *extra]
    total = 16
    train(tiny(*over, f"trainer.max_steps={total}"), tmp_path / "whole")
    whole = list(seen)
    seen.clear()
    train(tiny(*over, f"trainer.max_steps={stops[0]}"), tmp_path / "part")
    for stop in (*stops[1:], total):
        train(tiny(*over, f"trainer.max_steps={stop}"), tmp_path / "part", resume="auto")
    assert seen == whole
    if "train.accumulate_grad_batches=3" in extra:  # the case is what it claims: steps of 3 batches and shorter ones
        assert max(len(step) for _, step in whole) == 3 and min(len(step) for _, step in whole) < 3
    assert_same_params(ckpt_params(tmp_path / "part" / "checkpoints" / "last.ckpt"),
                       ckpt_params(tmp_path / "whole" / "checkpoints" / "last.ckpt"), atol=1e-6)
