"""Runs `flowvid` commands in one process under an address-space limit, for tests/test_hostile.py.

    python tests/hostile_runner.py CASES.json RESULTS.json LIMIT_BYTES

CASES.json: [{"name", "argv", "cwd", "watch"}]. Each case runs through flowvid.cli.main with its
stderr captured; RESULTS.json gets its exit code, stderr, and whether the watched folder changed.
An exception that escapes main (a traceback: a bug, or memory past the limit) is recorded as such.
"""
import contextlib
import io
import json
import os
import resource
import sys
import traceback
from pathlib import Path


def snapshot(folder: str) -> dict:
    """Every path under folder with its size and mtime."""
    root = Path(folder)
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else None
            for p in sorted(root.rglob("*"))}


def run(case: dict) -> dict:
    from flowvid.cli import main

    os.chdir(case["cwd"])
    before = snapshot(case["watch"])
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(case["argv"])
        except SystemExit as e:  # argparse
            code = e.code
        except BaseException:  # noqa: BLE001 - what the test must see: a traceback
            code, err = "traceback", io.StringIO(traceback.format_exc())
    return {"name": case["name"], "code": code, "stderr": err.getvalue(),
            "changed": sorted(set(snapshot(case["watch"]).items()) ^ set(before.items()))}


def main() -> None:
    cases, out, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    results = [run(c) for c in json.loads(Path(cases).read_text())]
    Path(out).write_text(json.dumps(results, default=str))


if __name__ == "__main__":
    main()
