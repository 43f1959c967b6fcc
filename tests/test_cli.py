import subprocess
import sys

import pytest

from flowvid.cli import main
from flowvid.errors import UsageError


def test_cli_imports_no_torch():
    code = "import sys, flowvid.cli; flowvid.cli.build_parser(); assert 'torch' not in sys.modules; assert 'lightning' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_help_answers():
    out = subprocess.run([sys.executable, "-m", "flowvid.cli", "--help"], capture_output=True, text=True, check=True)
    assert "path-stats" in out.stdout


def test_config_prints_resolved(capsys):
    assert main(["config", "-c", "configs/tiny.yaml", "model.depth=3"]) == 0
    assert "depth: 3" in capsys.readouterr().out


def test_bad_override_exits_2_with_one_line(capsys):
    assert main(["config", "-c", "configs/tiny.yaml", "path.n_start=0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "path.n_start" in err


def test_path_stats_reports_measured_and_closed_form(capsys):
    assert main(["path-stats", "-c", "configs/balls.yaml", "--frames", "8", "--draws", "200"]) == 0
    out = capsys.readouterr().out
    assert "measured" in out and "closed form" in out and "F -> inf" in out


def test_model_info_counts_parameters_and_flops(capsys):
    from flowvid.config import load_config
    from flowvid.models import count_parameters, forward_flops

    assert main(["model-info", "-c", "configs/tiny.yaml", "--frames", "2", "8"]) == 0
    out = capsys.readouterr().out
    cfg = load_config("configs/tiny.yaml").model
    assert f"parameters: {count_parameters(cfg):,}" in out
    assert "tokens per frame: 17" in out
    assert f"{forward_flops(cfg, 8) / 1e9:15.2f}" in out


def test_model_info_rejects_a_bad_model(capsys):
    assert main(["model-info", "-c", "configs/tiny.yaml", "model.heads=5"]) == 2
    assert "model.dim" in capsys.readouterr().err


def test_unavailable_backend_is_a_one_line_error(capsys):
    import importlib.util

    if importlib.util.find_spec("xformers") is not None:
        return  # installed here: nothing to refuse
    assert main(["model-info", "-c", "configs/tiny.yaml", "model.attention.backend=xformers"]) == 0  # counting needs no kernel
    from flowvid.config import load_config
    from flowvid.models import SpatioTemporalDiT

    with pytest.raises(UsageError, match="flowvid\\[xformers\\]"):
        SpatioTemporalDiT(load_config("configs/tiny.yaml", ["model.attention.backend=xformers"]).model)


def test_usage_errors_are_one_line_and_other_errors_keep_their_traceback(monkeypatch, capsys):
    import flowvid.cli as cli

    def raising(error):
        def cmd(args):
            raise error
        return cmd

    monkeypatch.setattr(cli, "cmd_config", raising(UsageError("bad data\nCaught in a worker:\ntrace")))
    assert main(["config", "-c", "configs/tiny.yaml"]) == 2
    assert capsys.readouterr().err.strip() == "flowvid config: error: bad data (flowvid -v config ... shows more)"
    monkeypatch.setattr(cli, "cmd_config", raising(RuntimeError("an internal failure")))
    with pytest.raises(RuntimeError, match="an internal failure"):
        main(["config", "-c", "configs/tiny.yaml"])


class _FailingReads:
    """A dataset whose reads fail as a DataLoader worker reports it (a module-level class: picklable)."""

    def __len__(self):
        return 4

    def __getitem__(self, i):
        from flowvid.errors import UsageError

        raise UsageError("3 of 4 video reads failed; check the files")


def test_an_error_raised_in_a_loader_worker_is_reported_by_its_own_message(monkeypatch, capsys):
    import torch

    import flowvid.cli as cli

    def cmd(args):
        next(iter(torch.utils.data.DataLoader(_FailingReads(), num_workers=1)))

    monkeypatch.setattr(cli, "cmd_config", cmd)
    assert main(["config", "-c", "configs/tiny.yaml"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("flowvid config: error: 3 of 4 video reads failed; check the files"), err


def test_troubleshooting_page_lists_every_message():
    """docs/troubleshooting.md holds every one-line error the source raises (tools/error_messages.py)."""
    done = subprocess.run([sys.executable, "tools/error_messages.py", "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
