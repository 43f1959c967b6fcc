"""The trainer draws each clip's task (train.tasks) and gives its frames to the path."""
import pytest
import torch

from flowvid.config import load_config
from flowvid.data.module import VideoDataModule
from flowvid.training.module import FlowceptionModule


def first_batch(cfg):
    dm = VideoDataModule(cfg)
    dm.setup()
    return next(iter(dm.train_dataloader()))


def test_generation_alone_samples_the_path_as_without_tasks():
    cfg = load_config("configs/tiny.yaml", ["train.tasks={generate: 1.0}"])
    module = FlowceptionModule(cfg)
    batch = first_batch(cfg)
    gens = module.generators(batch, step=3, salt=0)
    s = module.sample_path(batch, gens)
    ref = module.path.sample_batch(batch.clips(), generator=module.generators(batch, 3, 0)[0],
                                   noise_generator=module.generators(batch, 3, 0)[1])
    assert not s.context.any() and torch.equal(s.x_t, ref.x_t) and torch.equal(s.t, ref.t)


def test_interpolation_training_gives_clean_keyframes_with_no_velocity_loss():
    cfg = load_config("configs/tiny.yaml", ["train.tasks={interpolate: 1.0}", "train.interpolate_spacings=[3]"])
    module = FlowceptionModule(cfg)
    batch = first_batch(cfg)
    s = module.sample_path(batch, module.generators(batch, step=0, salt=0))
    assert s.context.any() and s.passive.any()
    assert torch.all(s.t[s.context] == 1) and not s.flowing[s.context].any()
    assert not s.active[s.passive].any()
    # the same clip seed and step draw the same task and frames again (resume, other ranks)
    again = module.sample_path(batch, module.generators(batch, step=0, salt=0))
    assert torch.equal(again.context, s.context) and torch.equal(again.x_t, s.x_t)


@pytest.mark.parametrize("task,extra", [("interpolate", 0), ("complete", 0), ("generate", 1), ("i2v", 1)])
def test_start_frames_match_what_each_tool_starts_from(task, extra):
    """At global time 0 a clip shows its given frames, frame 0 and the extra start frames: none for
    interpolation and completion (their tools start from the given frames alone), n_start - 1 else."""
    cfg = load_config("configs/tiny.yaml", [f"train.tasks={{{task}: 1.0}}"])
    module = FlowceptionModule(cfg)
    batch = first_batch(cfg)
    gens = module.generators(batch, step=0, salt=0)
    given = [module.given_frames(len(c), g) for c, g in zip(batch.clips(), gens[0])]
    seen = {}
    real = module.path.sample_batch

    def at_time_zero(clips, **kw):  # the trainer's own call, at global time 0
        seen.update(kw)
        return real(clips, **{**kw, "tau": [0.0] * len(clips), "fraction": None})

    module.path.sample_batch = at_time_zero
    s = module.sample_path(batch, gens)
    assert seen["n_start"] == [x.n_start for x in given]
    for i, x in enumerate(given):
        shown = int(s.cu_seqlens[i + 1] - s.cu_seqlens[i])
        assert shown == len(set(x.context) | {0}) + extra, (task, x)


def test_every_flag_embedding_learns_in_a_step_of_the_default_task_mix():
    # 16 clips: free, active and passive given frames all occur under the default mix
    cfg = load_config("configs/tiny.yaml", ["data.tokens_per_batch=4352"])
    assert cfg.train.tasks == {}
    module = FlowceptionModule(cfg)
    batch = first_batch(cfg)
    opt = torch.optim.Adam(module.model.parameters(), lr=1e-3)
    for step in range(3):  # past adaLN-Zero's start, where no conditioning reaches the output yet
        opt.zero_grad()
        sample, out = module.loss(module.model, batch, module.generators(batch, step=step, salt=0))
        module.global_terms(sample, out).total.backward()
        opt.step()
    flags = sample.context.long() + sample.passive.long()  # the flag embedding's row of each frame
    assert set(flags.tolist()) == {0, 1, 2}
    grad = module.model.flag_embed.weight.grad
    assert torch.all(grad.abs().sum(1) > 0), grad.abs().sum(1)


def test_the_trainer_weights_the_velocity_loss_as_configured():
    cfg = load_config("configs/tiny.yaml", ["train.tasks={interpolate: 1.0}", "loss.velocity_weighting=clean"])
    module = FlowceptionModule(cfg)
    batch = first_batch(cfg)
    sample, out = module.loss(module.model, batch, module.generators(batch, step=0, salt=0))
    err = (out.velocity - sample.v_target).pow(2).flatten(1).mean(1) * (1 - sample.t).pow(2)
    assert module.global_terms(sample, out).velocity.item() == pytest.approx(err[sample.flowing].mean().item(),
                                                                           rel=1e-5)


def test_frames_together_and_the_heads_own_blocks_in_a_training_step():
    """path.together=1: each clip's made frames share one time; model.rate_blocks: the step's trunk
    gradient is the velocity loss's alone, while the insertion loss trains the head's blocks."""
    cfg = load_config("configs/tiny.yaml", ["train.tasks={interpolate: 1.0}", "path.together=1.0",
                                            "model.rate_blocks=1"])
    module = FlowceptionModule(cfg)
    torch.manual_seed(0)
    with torch.no_grad():  # past the zero-initialised layers, through which no gradient passes yet
        for p in module.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    batch = first_batch(cfg)
    sample, out = module.loss(module.model, batch, module.generators(batch, step=0, salt=0))
    for a, b in zip(sample.cu_seqlens[:-1].tolist(), sample.cu_seqlens[1:].tolist()):
        made = ~sample.context[a:b]
        assert made.any() and len(set(sample.t[a:b][made].tolist())) == 1
    terms = module.global_terms(sample, out)
    assert terms.insertion.item() > 0
    trunk, head = module.model.blocks[0].qkv.weight, module.model.rate_blocks[0].qkv.weight
    total = torch.autograd.grad(terms.total, [trunk, head], retain_graph=True)
    velocity = torch.autograd.grad(terms.velocity, trunk, retain_graph=True)[0]
    assert velocity.abs().sum() > 0 and total[1].abs().sum() > 0
    torch.testing.assert_close(total[0], velocity)
