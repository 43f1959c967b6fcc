import csv
import math
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from flowvid.cli import main
from flowvid.models import SpatioTemporalDiT
from flowvid.training.export import load_model
from flowvid.training.module import FlowceptionModule, TrainingStopped
from flowvid.training.optim import lr_factor
from flowvid.training.run import train

from train_helpers import FAST, assert_same_params, ckpt_params, tiny


def test_cli_trains_exports_and_loads(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "-c", "configs/tiny.yaml", "--run-dir", str(run), *FAST, "trainer.max_steps=12"]) == 0
    printed = capsys.readouterr()
    assert "12 steps (0 skipped)" in printed.out
    assert f"training 0.2M parameters (dim 64, depth 2, 4 heads, sdpa attention, 17 tokens a frame) on the insertion " \
           f"path, 1088 tokens a batch, 1 device(s), precision 32-true; logs: tensorboard --logdir {run / 'logs'}" \
           in printed.err, printed.err
    assert (run / "config.yaml").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "checkpoints" / "step00000010.ckpt").is_file()
    rows = list(csv.DictReader(open(run / "logs" / "metrics.csv")))
    cols = rows[0].keys()
    for name in ("train/loss", "train/velocity", "train/insertion", "train/visible_fraction", "train/tokens_per_s",
                 "train/tflops_per_s", "train/grad_norm", "val/loss", "val/velocity@0.5", "train/velocity_t0.0-0.2"):
        assert name in cols
    assert all(float(r["train/grad_norm"]) > 0 for r in rows if r["train/grad_norm"])
    assert any(r["val/loss"] for r in rows), "validation ran at step 10"
    assert list((run / "logs").glob("events.out.tfevents.*")), "TensorBoard events written"
    previews = sorted((run / "samples").glob("step00000010_*.gif"))
    assert len(previews) == 2, "the validation at step 10 sampled two preview clips"

    out = tmp_path / "export"
    assert main(["export", "--ckpt", str(run / "checkpoints" / "last.ckpt"), "-o", str(out)]) == 0
    weights = load_file(str(out / "model.safetensors"))
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    for k, v in weights.items():
        assert torch.equal(v, state["ema." + k]), "the export holds the EMA weights"
    model, cfg = load_model(out)
    assert isinstance(model, SpatioTemporalDiT) and not model.training and cfg.model.dim == 64
    from_ckpt, _ = load_model(run / "checkpoints" / "last.ckpt")
    for (k, a), (_, b) in zip(model.state_dict().items(), from_ckpt.state_dict().items()):
        assert torch.equal(a, b), k


def test_epochs_shorter_than_the_logging_interval_are_logged(tmp_path):
    """Lightning warns when an epoch has fewer batches than log_every_n_steps (flowvid.training.run
    silences it): logging counts steps across epochs, so small datasets are logged all the same."""
    run = tmp_path / "run"
    train(tiny("data.synthetic.num_clips=8", "data.synthetic.val_clips=0", "trainer.log_every_n_steps=3",
               "trainer.max_steps=6", "train.preview_clips=0"), run)  # 2 batches an epoch
    rows = [r for r in csv.DictReader(open(run / "logs" / "metrics.csv")) if r["train/loss"]]
    assert [int(r["step"]) for r in rows] == [2, 5]


def test_a_compute_budget_stops_the_run_once_spent_and_resumes_counting(tmp_path):
    """train.max_tflops: the run stops at the first step whose model FLOPs reach the budget, writes
    last.ckpt there, and a resumed run counts on from the checkpoint's total."""
    run = tmp_path / "run"
    base = ["trainer.max_steps=100", "trainer.limit_val_batches=0", "train.preview_clips=0"]
    first = train(tiny(*base, "trainer.max_steps=3"), tmp_path / "probe")
    per_step = torch.load(first.last_checkpoint, weights_only=False)["flowvid"]["flops"] / 3
    budget = 5.5 * per_step / 1e12
    r = train(tiny(*base, f"train.max_tflops={budget}"), run)
    spent = torch.load(r.last_checkpoint, weights_only=False)["flowvid"]["flops"]
    assert 4 <= r.steps <= 8 and spent >= budget * 1e12  # steps differ in visible frames, so in FLOPs
    # a budget just above what was spent: one more step, if the count went on from the checkpoint's
    r2 = train(tiny(*base, f"train.max_tflops={(spent + 1) / 1e12}"), run, resume="auto")
    assert r2.steps == r.steps + 1


@pytest.mark.parametrize("keep,kept", [(0, [2, 4, 6, 8]), (1, [8]), (3, [4, 6, 8])])
def test_step_checkpoints_kept(tmp_path, keep, kept):
    r = train(tiny("trainer.max_steps=8", "train.checkpoint_every=2", f"train.keep_checkpoints={keep}",
                   "trainer.limit_val_batches=0", "data.synthetic.num_clips=16"), tmp_path / "run")
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("step*.ckpt"))
    assert names == [f"step{s:08d}.ckpt" for s in kept] and r.last_checkpoint.is_file()


def test_bad_config_or_missing_data_exit_2_and_create_nothing(tmp_path, capsys):
    run = tmp_path / "run"
    for args in (["data.source=manifest", f"data.manifest={tmp_path / 'missing.jsonl'}"],
                 ["optim.lr=-1"], ["trainer.max_stepz=3"], ["data.height=32"],
                 ["model.attention.backend=flex", "trainer.accelerator=cpu"],
                 ["model.attention.backend=varlen", "trainer.accelerator=cpu"], ["trainer.devices=0"],
                 ["trainer.precision=16-mixed"], ["trainer.strategy=fsdp_cpu_offload"],
                 ["trainer.strategy=fsdp", "trainer.precision=bf16-true"], ["train.accumulate_grad_batches=0"],
                 ["trainer.accumulate_grad_batches=2"], ["trainer.gradient_clip_val=1.0"]):
        assert main(["train", "-c", "configs/tiny.yaml", "--run-dir", str(run), *args]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and err.startswith("flowvid train: error:"), err
        assert not run.exists()
    assert main(["train", "-c", "configs/tiny.yaml", "--run-dir", str(run), "--resume", str(tmp_path / "x.ckpt")]) == 2
    assert not run.exists()
    assert main(["export", "--ckpt", str(tmp_path / "x.ckpt"), "-o", str(tmp_path / "e")]) == 2
    (tmp_path / "junk.ckpt").write_text("not a checkpoint")
    assert main(["export", "--ckpt", str(tmp_path / "junk.ckpt"), "-o", str(tmp_path / "e")]) == 2
    assert "not a readable checkpoint" in capsys.readouterr().err and not (tmp_path / "e").exists()


def test_overfits_a_handful_of_clips(tmp_path):
    # 4 fixed clips, one batch; width 128 keeps the model under 1M parameters (measured: 7.4x, 2.5x)
    cfg = tiny("data.synthetic.num_clips=4", "data.synthetic.val_clips=0", "data.tokens_per_batch=1088",
               "model.dim=128", "optim.lr=3e-3", "optim.warmup_steps=20", "optim.schedule=cosine",
               "optim.min_lr_ratio=0.05", "trainer.max_steps=600", "train.checkpoint_every=1000",
               "trainer.limit_val_batches=0")
    from flowvid.data.module import VideoDataModule

    dm = VideoDataModule(cfg)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    module = FlowceptionModule(cfg)

    def losses():
        terms = []
        with torch.no_grad():
            for i, q in enumerate((0.1, 0.3, 0.5, 0.7, 0.9)):
                sample, out = module.loss(module.model, batch, module.generators(batch, 0, 500 + i), fraction=q)
                terms.append(module.global_terms(sample, out))
        return sum(t.velocity for t in terms).item(), sum(t.insertion for t in terms).item()

    v0, i0 = losses()
    import lightning as L
    trainer = L.Trainer(max_steps=600, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        use_distributed_sampler=False, default_root_dir=tmp_path)
    trainer.fit(module, datamodule=dm)
    v1, i1 = losses()
    assert v0 / v1 >= 5, f"velocity loss {v0:.3f} -> {v1:.3f}"
    assert i0 / i1 >= 2, f"insertion loss {i0:.3f} -> {i1:.3f}"


class NanGradient(torch.autograd.Function):
    """Identity forward; a NaN gradient backward (a finite loss whose backward overflows)."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


@pytest.mark.parametrize("bad_steps,stops,where", [({2, 3}, False, "loss"), ({2, 3}, False, "gradient"),
                                                   (set(range(100)), True, "loss")])
def test_nonfinite_losses_are_skipped_then_stop_the_run(tmp_path, monkeypatch, bad_steps, stops, where):
    original = SpatioTemporalDiT.forward
    calls = {"n": 0}

    def poisoned(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        if self.training:
            calls["n"] += 1
            if calls["n"] - 1 in bad_steps:
                out.velocity = out.velocity * float("nan") if where == "loss" else NanGradient.apply(out.velocity)
        return out

    monkeypatch.setattr(SpatioTemporalDiT, "forward", poisoned)
    cfg = tiny("trainer.max_steps=8", "train.max_nonfinite_steps=3", "trainer.limit_val_batches=0")
    if stops:
        with pytest.raises(TrainingStopped, match="not finite for 3 steps in a row"):
            train(cfg, tmp_path / "run")
        assert (tmp_path / "run" / "checkpoints" / "nonfinite.ckpt").is_file()
        return
    r = train(cfg, tmp_path / "run")
    assert r.skipped_steps == 2 and r.steps == 8
    params = ckpt_params(r.last_checkpoint)
    assert all(torch.isfinite(v).all() for v in params.values())


def test_out_of_memory_stops_with_what_to_change(tmp_path, monkeypatch, capsys):
    """A step that runs out of device memory (simulated: no GPU here) ends the run in one line
    naming the budget to lower, accumulation and gradient checkpointing, and how to continue."""
    original, calls = SpatioTemporalDiT.forward, {"n": 0}

    def running_out(self, *args, **kwargs):
        calls["n"] += self.training
        if calls["n"] == 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SpatioTemporalDiT, "forward", running_out)
    assert main(["train", "-c", "configs/tiny.yaml", "--run-dir", str(tmp_path / "run"), *FAST,
                 "trainer.limit_val_batches=0", "train.checkpoint_every=1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the run's opening line
    assert "out of device memory at step 2 with data.tokens_per_batch=1088" in err, err
    assert "train.accumulate_grad_batches" in err and "--resume auto" in err


def test_learning_rate_schedule():
    assert lr_factor(0, 10, 100, "constant", 0.0) == pytest.approx(0.1)
    assert lr_factor(9, 10, 100, "cosine", 0.0) == pytest.approx(1.0)
    assert lr_factor(55, 10, 100, "cosine", 0.0) == pytest.approx(0.5)
    assert lr_factor(100, 10, 100, "cosine", 0.1) == pytest.approx(0.1)
    assert lr_factor(55, 10, 100, "linear", 0.0) == pytest.approx(0.5)
    assert lr_factor(500, 10, 100, "constant", 0.0) == 1.0


def test_a_batch_whose_reads_all_failed_is_skipped(tmp_path, monkeypatch):
    from flowvid.data import clips as clips_module
    from flowvid.data import module as data_module

    original = clips_module.collate_clips
    calls = {"n": 0}

    def failing(items):
        calls["n"] += 1
        return original([None] * len(items) if calls["n"] == 2 else items)

    monkeypatch.setattr(data_module, "collate_clips", failing)
    r = train(tiny("trainer.max_steps=5", "trainer.limit_val_batches=0"), tmp_path / "run")
    # six batches, one of them empty: five optimizer steps
    assert calls["n"] == 6 and r.skipped_steps == 1 and r.steps == 5


def test_resume_from_a_file_that_is_not_a_checkpoint(tmp_path, capsys):
    bad = tmp_path / "junk.ckpt"
    bad.write_bytes(b"\x00" * 64)
    run = tmp_path / "run"
    assert main(["train", "-c", "configs/tiny.yaml", "--run-dir", str(run), "--resume", str(bad)]) == 2
    assert "not a readable checkpoint" in capsys.readouterr().err and not run.exists()


def test_resume_with_another_network_is_refused_before_anything_is_written(tmp_path, capsys):
    run = tmp_path / "run"
    base = ["train", "-c", "configs/tiny.yaml", "--run-dir", str(run), *FAST, "trainer.max_steps=2",
            "trainer.limit_val_batches=0"]
    assert main(base) == 0
    config = (run / "config.yaml").read_text()
    capsys.readouterr()
    assert main([*base, "--resume", "auto", "model.depth=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "holds another network" in err, err
    assert (run / "config.yaml").read_text() == config and not (run / "config.prev.yaml").exists()
    assert main([*base, "--resume", "auto", "trainer.max_steps=3", "model.grad_checkpointing=true"]) == 0


def test_a_fresh_start_in_a_folder_with_checkpoints_is_refused(tmp_path, capsys):
    """Forgetting --resume must not overwrite a run's last.ckpt and logs."""
    run = tmp_path / "run"
    base = ["train", "-c", "configs/tiny.yaml", "--run-dir", str(run), *FAST, "trainer.max_steps=2",
            "trainer.limit_val_batches=0"]
    assert main(base) == 0
    before = {p.name: p.read_bytes() for p in (run / "checkpoints").iterdir()}
    capsys.readouterr()
    assert main([*base, "trainer.max_steps=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "holds a run already" in err and "--resume auto" in err, err
    assert {p.name: p.read_bytes() for p in (run / "checkpoints").iterdir()} == before


def test_init_from_an_export_fine_tunes_from_its_weights(tmp_path, capsys):
    """train.init_from: a new run (other data, other learning rate) starts from an export's EMA
    weights, in the trained network and its EMA; a resumed run keeps its own. Another network's
    weights, or no model at the path, are refused in one line before anything is written."""
    from flowvid.training.export import export_checkpoint

    src = train(tiny("trainer.max_steps=3", "trainer.limit_val_batches=0"), tmp_path / "src")
    exported = load_file(str(export_checkpoint(src.last_checkpoint, tmp_path / "export") / "model.safetensors"))
    # a learning rate so small that the weights stay where they started, within float error
    tune = ["trainer.max_steps=2", "trainer.limit_val_batches=0", "optim.lr=1e-12", "data.synthetic.kind=textures",
            "seed=1"]  # another seed: a fresh start would begin elsewhere
    r = train(tiny(*tune, f"train.init_from={tmp_path / 'export'}"), tmp_path / "tuned")
    state = torch.load(r.last_checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    for name in ("model", "ema"):
        assert_same_params({k: state[f"{name}.{k}"] for k in exported}, exported, atol=1e-6)
    fresh = ckpt_params(train(tiny(*tune), tmp_path / "fresh").last_checkpoint)
    assert max((fresh["model." + k] - v).abs().max().item() for k, v in exported.items()) > 1e-3

    # resumed with the same settings: the run's checkpoint, not the export, is where it continues from
    assert train(tiny(*tune, "trainer.max_steps=4", f"train.init_from={tmp_path / 'export'}"), tmp_path / "tuned",
                 resume="auto").steps == 4

    base = ["train", "-c", "configs/tiny.yaml", *FAST, "trainer.max_steps=2"]
    for bad, says in ((f"train.init_from={tmp_path / 'missing'}", "no model at"),
                      (f"train.init_from={tmp_path / 'export'}", "holds another network")):
        capsys.readouterr()
        assert main([*base, "--run-dir", str(tmp_path / "bad"), bad, "model.depth=3"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and says in err, err
        assert not (tmp_path / "bad").exists()


def test_a_resumed_run_takes_the_optimizer_settings_of_its_config(tmp_path):
    """The checkpoint's optimizer state holds the learning rate, betas and weight decay it was
    saved with; a run resumed with others (a lower learning rate, say) trains with the new ones."""
    run, base = tmp_path / "run", ["trainer.limit_val_batches=0", "optim.warmup_steps=1", "trainer.log_every_n_steps=1"]
    train(tiny(*base, "trainer.max_steps=3"), run)
    new = ["optim.lr=5e-5", "optim.betas=[0.8,0.95]", "optim.weight_decay=0.05"]
    r = train(tiny(*base, *new, "trainer.max_steps=5"), run, resume="auto")
    logged = {int(row["step"]): float(row["train/lr"]) for row in csv.DictReader(open(run / "logs" / "metrics.csv"))
              if row["train/lr"]}
    assert logged[3] == logged[4] == pytest.approx(5e-5)
    groups = torch.load(r.last_checkpoint, map_location="cpu", weights_only=True)["optimizer_states"][0]["param_groups"]
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0] and all(tuple(g["betas"]) == (0.8, 0.95) for g in groups)


def test_resume_with_another_token_budget_takes_each_clip_of_the_epoch_once(tmp_path, monkeypatch):
    """Resumed mid-epoch with half the token budget (as after running out of memory), the run
    packs the epoch's remaining clips anew: every clip of the epoch once, none twice."""
    from flowvid.training import module as training_module

    seen, original = [], training_module.FlowceptionModule.training_step

    def recording(self, batch, idx):
        seen.append((self.current_epoch, list(batch.sources)))
        return original(self, batch, idx)

    monkeypatch.setattr(training_module.FlowceptionModule, "training_step", recording)
    over = ["trainer.limit_val_batches=0", "train.checkpoint_every=2", "data.synthetic.num_clips=40"]
    train(tiny(*over, "trainer.max_steps=4"), tmp_path / "run")
    train(tiny(*over, "data.tokens_per_batch=544", "trainer.max_steps=-1", "trainer.max_epochs=1"), tmp_path / "run",
          resume="auto")
    epoch = [source for e, sources in seen if e == 0 for source in sources]
    assert len(epoch) == len(set(epoch)) == 40 and len(seen) > 4


def test_fsdp_refuses_optimizer_states_its_loader_would_misread(tmp_path):
    """Lightning's FSDP loader numbers parameters by module position; older flowvid checkpoints
    numbered them in optimizer order (groups counting 0, 1, 2, ...), and one saved before any step
    has no state. Both resume without FSDP only."""
    from flowvid.config import ConfigError
    from flowvid.training.checkpoint import check_fsdp_can_resume

    moments = {"exp_avg": torch.zeros(1)}
    new = {"state": {0: moments, 2: moments}, "param_groups": [{"params": [0, 3]}, {"params": [1, 2]}]}
    old = {"state": {0: moments, 2: moments}, "param_groups": [{"params": [0, 1]}, {"params": [2, 3]}]}
    check_fsdp_can_resume(tmp_path / "new.ckpt", {"optimizer_states": [new]})
    with pytest.raises(ConfigError, match="old order"):
        check_fsdp_can_resume(tmp_path / "old.ckpt", {"optimizer_states": [old]})
    with pytest.raises(ConfigError, match="no optimizer state yet"):
        check_fsdp_can_resume(tmp_path / "fresh.ckpt", {"optimizer_states": [{**new, "state": {}}]})


def test_compiled_blocks_train_like_eager_without_recompiling_per_batch(tmp_path):
    """train.compile=true through the trainer: insertion batches change shape every step; the
    blocks must not recompile for each (the limit is lowered and made an error) and must train
    to the eager run's weights."""
    import torch._dynamo

    from train_helpers import assert_same_params

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    runs = {}
    for compiled in (False, True):
        cfg = tiny(f"train.compile={str(compiled).lower()}", "trainer.max_steps=10", "trainer.limit_val_batches=0")
        with torch._dynamo.config.patch(recompile_limit=4, fail_on_recompile_limit_hit=True):
            r = train(cfg, tmp_path / str(compiled))
        assert r.steps == 10 and r.skipped_steps == 0
        runs[compiled] = ckpt_params(r.last_checkpoint)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0, "the compiled run compiled"
    assert_same_params(runs[True], runs[False], atol=1e-4)


def test_the_progress_bar_shows_the_logged_loss(tmp_path, capsys):
    """The bar shows the numbers the module last logged (it does not read logged tensors, which on a
    GPU would wait for the device at every refresh)."""
    run = tmp_path / "run"
    train(tiny("trainer.enable_progress_bar=true", "trainer.max_steps=6", "trainer.log_every_n_steps=3",
               "trainer.limit_val_batches=0"), run)
    bar = capsys.readouterr().out  # Lightning draws its bar on stdout
    last = [r for r in csv.DictReader(open(run / "logs" / "metrics.csv")) if r["train/loss"]][-1]
    assert f"loss={float(last['train/loss']):.3g}" in bar, bar[-500:]


def test_logged_model_flops_match_the_logged_throughput(tmp_path):
    """train/tflops_per_s counts 3 x the forward FLOPs of the visible frames (flowvid.models.flops):
    per visible frame, between those of the shortest and of the longest clip."""
    from flowvid.models import forward_flops

    cfg = tiny("trainer.max_steps=8", "trainer.log_every_n_steps=2", "trainer.limit_val_batches=0")
    train(cfg, tmp_path / "run")
    rows = [r for r in csv.DictReader(open(tmp_path / "run" / "logs" / "metrics.csv"))
            if r["train/tflops_per_s"] not in ("", "nan")]
    assert len(rows) >= 3
    tokens_per_frame = (cfg.model.height // cfg.model.patch_size) * (cfg.model.width // cfg.model.patch_size) + 1
    longest = cfg.data.max_frames
    for r in rows:
        frames_per_s = float(r["train/tokens_per_s"]) / tokens_per_frame
        per_frame = float(r["train/tflops_per_s"]) * 1e12 / frames_per_s
        shortest, longest_per_frame = 3 * forward_flops(cfg.model, 1), 3 * forward_flops(cfg.model, longest) / longest
        assert shortest * 0.999 <= per_frame <= longest_per_frame * 1.001


def test_a_full_disk_while_checkpointing_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    import errno

    from flowvid.errors import UsageError
    from flowvid.training import checkpoint
    from flowvid.training.checkpoint import AtomicCheckpointIO

    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1}, tmp_path / "last.ckpt")

    def full(obj, fh):
        fh.write(b"half of a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", full)
    with pytest.raises(UsageError, match="No space left on device; the previous checkpoint is intact"):
        io.save_checkpoint({"step": 2}, tmp_path / "last.ckpt")
    monkeypatch.undo()
    assert torch.load(tmp_path / "last.ckpt", weights_only=True) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_lightnings_not_resumable_warning_is_silenced_since_flowvid_resumes_inside_epochs():
    """The batch sampler restores its place in the epoch from the checkpoint (tests/training/
    test_system.py), so Lightning's mid-epoch "dataloader is not resumable" warning is filtered. In a
    fresh interpreter, as the CLI runs: pytest resets the filters that modules install at import."""
    check = """
import inspect, re, warnings
from lightning.pytorch.loops import training_epoch_loop
from flowvid.training import run
said = re.search(r'"(You\\'re resuming[^"]*)"', inspect.getsource(training_epoch_loop)).group(1)
assert said.startswith(run.MID_EPOCH_RESUME_WARNING), said
ignored = [msg for action, msg, *_ in warnings.filters if action == "ignore" and msg is not None]
assert any(m.match(said) for m in ignored), said
assert not any(m.match("You're resuming from a checkpoint saved at the end of an epoch") for m in ignored)
"""
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
