import torch

from flowvid.config import load_config
from flowvid.models import SpatioTemporalDiT


def tiny_cfg(*overrides):
    return load_config("configs/tiny.yaml", ["model.height=8", "model.width=8", "model.patch_size=4",
                                             "model.dim=32", "model.heads=2", *overrides]).model


def randomized(cfg, seed=0):
    """A model whose zero-initialised layers are given random weights, so outputs carry signal."""
    torch.manual_seed(seed)
    model = SpatioTemporalDiT(cfg)
    with torch.no_grad():
        for p in model.parameters():
            if p.abs().max() == 0:
                p.normal_(0, 0.05)
    return model.eval()


def packed_inputs(lengths, cfg, seed=0):
    g = torch.Generator().manual_seed(seed)
    m = sum(lengths)
    x = torch.randn(m, cfg.in_channels, cfg.height, cfg.width, generator=g)
    t = torch.rand(m, generator=g)
    position = torch.cat([torch.arange(n) for n in lengths])
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    return x, t, position, cu

