"""Every one-line error message flowvid can give a user, read from the source, for docs/troubleshooting.md.

A message is what a `raise UsageError(...)` (or one of its subclasses: ConfigError, VideoReadError)
says, and each problem a config section yields (`config key 'SECTION.KEY' ...`). Values filled in
at run time are shown as {...}. The page holds the list between markers; `--check` exits 1 when
the page is out of date (a test runs it), `--write` rewrites the list.

    python tools/error_messages.py --write | --check
"""
from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "troubleshooting.md"
BEGIN, END = "<!-- messages:begin -->", "<!-- messages:end -->"
ERRORS = {"UsageError", "ConfigError", "VideoReadError"}


def template(node: ast.expr) -> str:
    """The message with its run-time parts as {...}."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "{...}" for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return template(node.left) + template(node.right)
    return "{...}"


def messages(path: Path) -> list[str]:
    """The user errors raised and config problems yielded in one file, in source order."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            name = getattr(node.exc.func, "id", getattr(node.exc.func, "attr", ""))
            if name in ERRORS and node.exc.args:
                args = node.exc.args
                # VideoReadError(path, reason, detail) reads "PATH: REASON (DETAIL)"
                text = template(args[0]) if name != "VideoReadError" else "{file}: " + ": ".join(
                    template(a) for a in args[1:])
                found.append((node.lineno, text))
        elif isinstance(node, ast.FunctionDef) and node.name == "problems":
            for y in ast.walk(node):
                if isinstance(y, ast.Yield) and isinstance(y.value, ast.Tuple) and len(y.value.elts) == 2:
                    key, why = (template(e) for e in y.value.elts)
                    found.append((y.lineno, f"config key '{{section}}.{key}' {why}"))
    return [" ".join(text.split()) for _, text in sorted(found)]


def listing() -> str:
    lines = []
    for path in sorted([*(ROOT / "flowvid").rglob("*.py"), *(ROOT / "data_pipelines").rglob("*.py")]):
        found = messages(path)
        if found:
            lines += ["", f"### `{path.relative_to(ROOT)}`", ""] + [f"- `{m}`" for m in found]
    return "\n".join(lines[1:]) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true")
    mode.add_argument("--check", action="store_true")
    args = p.parse_args()
    page = PAGE.read_text()
    head, rest = page.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{BEGIN}\n{listing()}{END}{tail}"
    if args.check:
        if new != page:
            print(f"{PAGE} lists other messages than the source raises: run python tools/error_messages.py --write",
                  file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
