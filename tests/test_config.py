import pytest

from flowvid.config import Config, ConfigError, KappaName, load_config, to_yaml


def test_load_with_overrides_is_typed():
    cfg = load_config(["configs/base.yaml", "configs/model/tiny.yaml"], overrides=["model.depth=4", "path.kappa=cubic"])
    assert isinstance(cfg, Config)
    assert cfg.model.depth == 4 and isinstance(cfg.model.depth, int)
    assert cfg.path.kappa is KappaName.cubic
    assert cfg.model.dim == 64  # from model/tiny.yaml


def test_defaults_compose_in_order(tmp_path):
    (tmp_path / "a.yaml").write_text("model:\n  depth: 3\n  dim: 96\n")
    (tmp_path / "b.yaml").write_text("defaults: [a.yaml]\nmodel:\n  depth: 5\n")
    cfg = load_config(tmp_path / "b.yaml")
    assert (cfg.model.depth, cfg.model.dim) == (5, 96)


def test_roundtrip_through_yaml(tmp_path):
    cfg = load_config("configs/tiny.yaml", ["path.time.insertion_phase_weight=0.5", "trainer.max_steps=7"])
    (tmp_path / "run.yaml").write_text(to_yaml(cfg))
    assert load_config(tmp_path / "run.yaml") == cfg


@pytest.mark.parametrize("override,match", [
    ("path.n_strat=2", r"unknown config key 'path.n_strat'; valid keys here: kind, kappa, n_start, order, together, time"),
    ("modle.depth=2", r"unknown config key 'modle'.*model"),
    ("path.kappa=quartic", r"'path.kappa'.*expected one of \[linear, cubic, cosine\]"),
    ("model.depth=deep", r"'model.depth'.*Integer"),
    ("path.n_start=0", r"'path.n_start' must be >= 1"),
    ("model.dim=100", r"'model.dim' must be divisible by heads=3"),
    ("path.time.insertion_phase_weight=2", r"'path.time.insertion_phase_weight' must be in \[0, 1\]"),
    ("path.together=1.5", r"'path.together' must be a probability in \[0, 1\], got 1.5"),
    ("path.together=0.5 path.order=hierarchical", r"'path.together' applies to .* random order only"),
    ("model.attention.backend=cuda", r"expected one of \[sdpa, xformers, flex, varlen, reference\]"),
    ("model.heads=32", r"'model.heads' leave a head dimension >= 8"),
    ("model.attention.backend=varlen", r"'model.attention.backend' varlen .* multiple of 8 .* dim 120 / 10 heads"),
])
def test_bad_values_fail_in_one_line(override, match):
    overrides = ["model.heads=3", override] if "divisible" in match else override.split()
    if "varlen" in match:
        overrides = ["model.dim=120", "model.heads=10", override]
    with pytest.raises(ConfigError, match=match) as err:
        load_config("configs/base.yaml", overrides)
    assert "\n" not in str(err.value)


def test_missing_and_cyclic_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "loop.yaml").write_text("defaults: [loop.yaml]\n")
    with pytest.raises(ConfigError, match="includes itself"):
        load_config(tmp_path / "loop.yaml")


@pytest.mark.parametrize("name", ["base", "tiny", "demo", "balls_interpolate", "path/full_sequence", "path/autoregressive", "model/tiny"])
def test_shipped_configs_load(name):
    load_config(f"configs/{name}.yaml")


def test_the_demo_configs_fit_together():
    """make demo trains configs/autoencoder/demo.yaml, encodes with it, and trains configs/demo.yaml on
    the latents: the flow model's input is the autoencoder's latent, at the paths the Makefile writes."""
    from pathlib import Path

    flow, ae = load_config("configs/demo.yaml"), load_config("configs/autoencoder/demo.yaml")
    a = ae.autoencoder
    assert (flow.model.in_channels, flow.model.height, flow.model.width) == \
        (a.latent_channels, ae.data.height // a.downsample, ae.data.width // a.downsample)
    make = Path("Makefile").read_text()
    assert f"-o {flow.model.autoencoder}\n" in make and f"-o {flow.data.latents}\n" in make
