"""tools/interp_errors.py: the pixel sets it splits an interpolation's error into, and a run on a tiny model."""
import importlib.util
from pathlib import Path

import numpy as np
import torch

from flowvid.config import load_config
from flowvid.models import SpatioTemporalDiT
from flowvid.training.export import write_export

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("interp_errors", REPO / "tools" / "interp_errors.py")
interp_errors = importlib.util.module_from_spec(spec)
spec.loader.exec_module(interp_errors)


def test_regions_split_moving_pixels_their_tokens_and_the_rest():
    truth = np.zeros((1, 8, 8, 3), np.uint8)
    blend = truth.copy()
    truth[0, 1, 6, 0] = 200  # one pixel moved, in the token of rows 0-3, columns 4-7
    blend[0, 5, 1, 2] = 5  # a difference under the threshold is not motion
    masks = interp_errors.regions(truth, blend, patch=4)
    moving, near, far = (masks[k][..., 0] for k in ("moving", "near", "far"))
    assert moving.sum() == 1 and moving[0, 1, 6]
    assert near.sum() == 15 and near[0, :4, 4:].sum() == 15
    assert far.sum() == 48 and not far[0, :4, 4:].any()
    assert all(m.shape == truth.shape for m in masks.values())


def test_pooled_psnr_is_over_the_masked_values_only():
    ref = np.zeros((1, 2, 2, 3), np.uint8)
    pred = ref.copy()
    pred[0, 0, 0] = 255
    mask = np.zeros_like(ref, dtype=bool)
    mask[0, 0, 0] = True
    assert interp_errors.pooled_psnr(pred, ref, mask) == 0.0  # MSE 255^2 on the masked pixel
    assert np.isinf(interp_errors.pooled_psnr(pred, ref, ~mask))


def test_runs_on_a_tiny_model(tmp_path, capsys):
    cfg = load_config(str(REPO / "configs" / "tiny.yaml"))
    torch.manual_seed(0)
    model = write_export(SpatioTemporalDiT(cfg.model).state_dict(), cfg, tmp_path / "model")
    assert interp_errors.main(["--ckpt", str(model), "--num", "2", "--seeds", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "made frames from 2 clips" in out[0]
    assert [line.split(" | ")[0] for line in out[2:]] == ["model", "mean of 2 samples", "linear blending"]
    assert all(len(line.split(" | ")) == 5 for line in out[1:])
    assert interp_errors.main(["--ckpt", str(model), "--num", "2", "--average", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "average 2" in out[0] and [line.split(" | ")[0] for line in out[2:]] == ["model", "linear blending"]
