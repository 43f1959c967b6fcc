"""Hostile inputs through the real CLI: each is refused with exit 2 and exactly one line on stderr,
no traceback, and the folder it was given left as it was. All cases run in one process under an
address-space limit (tests/hostile_runner.py), so a command that starts unbounded work fails the
test instead of taking the machine."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from flowvid.config import load_config
from flowvid.data.manifest import ManifestEntry, write_jsonl
from flowvid.io import write_png, write_video
from flowvid.models import SpatioTemporalDiT
from flowvid.training.export import write_export

REPO = Path(__file__).resolve().parents[1]
LIMIT = 4 * 2**30  # address space of the runner: torch and a tiny model need under 1.5 GiB
TINY = str(REPO / "configs" / "tiny.yaml")


def export_tiny(folder: Path, overrides=()) -> Path:
    cfg = load_config(TINY, list(overrides))
    torch.manual_seed(0)
    return write_export(SpatioTemporalDiT(cfg.model).state_dict(), cfg, folder)


def workspace(w: Path) -> None:
    """What the cases point at: a model, a video, an image, damaged files."""
    model = export_tiny(w / "model")
    frames = np.random.default_rng(0).integers(0, 255, (8, 16, 16, 3), dtype=np.uint8)
    write_video(w / "in.mp4", frames, 8.0)
    write_png(w / "a.png", frames[0])
    tampered = export_tiny(w / "tampered")
    (tampered / "config.yaml").write_text((model / "config.yaml").read_text().replace("dim: 64", "dim: 32"))
    broken = export_tiny(w / "broken_yaml")
    (broken / "config.yaml").write_text("model: [dim\n")
    (w / "bad.yaml").write_text("optim: {lr: 1e-3\n")
    (w / "afile").write_text("a file, not a folder\n")
    (w / "dir.mp4").mkdir()
    (w / "not_a_video.mp4").write_bytes((w / "a.png").read_bytes())
    gone = ManifestEntry(path="deleted.mp4", num_frames=16, fps=8.0, width=16, height=16, duration=2.0, codec="h264")
    write_jsonl(w / "gone.jsonl", [gone] * 4)


TRAIN = ["train", "-c", TINY, "--run-dir", "run"]
SAMPLE = ["sample", "--ckpt", "model", "--out", "samples", "--steps", "2"]
INTERP = ["interpolate", "--ckpt", "model", "in.mp4", "--steps", "2"]
CASES = [  # name, argv (run in the workspace), what the one line must say
    # 1. unbounded work from one flag
    ("factor 1e9", [*INTERP, "--factor", "1e9", "-o", "out.mp4"], "above the length cap"),
    ("model.dim 1e6", [*TRAIN, "model.dim=1000000"], "GiB to train"),
    ("model.depth 1e5", [*TRAIN, "model.depth=100000"], "GiB to train"),
    ("num_clips 1e12", [*TRAIN, "data.synthetic.num_clips=1000000000000"], "must be at most 1,000,000"),
    ("sample num 1e9", [*SAMPLE, "--num", "1000000000"], "more than half"),
    ("synth num 1e12", ["data", "synth", "balls", "--num", "1000000000000", "-o", "synth"], "--num must be in"),
    ("extend frames 1e8", ["extend", "--ckpt", "model", "in.mp4", "--frames", "100000000", "-o", "out.mp4"],
     "length cap"),
    # 4. missing data
    ("manifest files deleted", [*TRAIN, "data.source=manifest", "data.manifest=gone.jsonl"], "are missing"),
    # 5. file-system errors
    ("run folder under a file", ["train", "-c", TINY, "--run-dir", "afile/run"], "is a file, not a folder"),
    ("sample out under a file", ["sample", "--ckpt", "model", "--out", "afile/x"], "is a file, not a folder"),
    ("sample out is a file", ["sample", "--ckpt", "model", "--out", "afile"], "expected a folder"),
    ("interpolate output is a folder", [*INTERP, "--factor", "2", "-o", "dir.mp4"], "is a folder"),
    ("eval output under a file", ["eval", "--ckpt", "model", "-o", "afile/r.json"], "is a file, not a folder"),
    ("export into /proc", ["export", "--ckpt", "model", "-o", "/proc/flowvid_export"], "cannot write"),
    ("export of a non-checkpoint", ["export", "--ckpt", "afile", "-o", "exported"], "not a readable checkpoint"),
    # 6. tampered or mismatched files
    ("export config disagrees", [*SAMPLE, "--ckpt", "tampered"], "holds another network"),
    ("export config not YAML", [*SAMPLE, "--ckpt", "broken_yaml"], "not valid YAML"),
    ("config file not YAML", ["train", "-c", "bad.yaml"], "not valid YAML"),
    ("a PNG named .mp4", [*INTERP[:3], "not_a_video.mp4", "--factor", "2", "-o", "out.mp4"], "at least 2 frames"),
    # 7. validation gaps
    ("lr nan", [*TRAIN, "optim.lr=nan"], "must be a finite number"),
    ("mlp_ratio 0", [*TRAIN, "model.mlp_ratio=0"], "mlp_ratio"),
    ("device gpu", [*SAMPLE, "--device", "gpu"], "expected cpu, cuda or cuda:N"),
    ("device cuda:7", [*SAMPLE, "--device", "cuda:7"], "CUDA device"),
    ("unknown option", [*SAMPLE, "--bogus"], "unrecognized arguments"),
    ("steps 0", [*SAMPLE, "--steps", "0"], "steps must be >= 1"),
    ("max-frames -1", [*SAMPLE, "--max-frames", "-1"], "max_frames must be >= 0"),
    ("window 1", [*INTERP, "--factor", "2", "--window", "1", "-o", "out.mp4"], "window must hold"),
    # 8. silent damage
    ("output is the input", [*INTERP, "--factor", "2", "-o", "in.mp4"], "one of the inputs"),
]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    w = tmp_path_factory.mktemp("hostile")
    workspace(w)
    cases = [{"name": n, "argv": argv, "cwd": str(w), "watch": str(w)} for n, argv, _ in CASES]
    spec, out = w.parent / "cases.json", w.parent / "results.json"
    spec.write_text(json.dumps(cases))
    done = subprocess.run([sys.executable, str(REPO / "tests" / "hostile_runner.py"), str(spec), str(out),
                           str(LIMIT)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return {r["name"]: r for r in json.loads(out.read_text())}


@pytest.mark.parametrize("name,argv,says", CASES, ids=[c[0] for c in CASES])
def test_hostile_input_is_one_line_exit_2_and_changes_nothing(results, name, argv, says):
    r = results[name]
    lines = r["stderr"].strip().splitlines()
    assert r["code"] == 2 and len(lines) == 1, f"exit {r['code']}:\n{r['stderr'][-3000:]}"
    assert lines[0].startswith("flowvid") and says in lines[0], lines[0]
    assert r["changed"] == [], f"the command changed its folder: {r['changed']}"
