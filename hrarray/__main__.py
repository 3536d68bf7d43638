"""Command line: ``python -m hrarray demo`` and ``python -m hrarray bench``."""

from __future__ import annotations

import sys
from pathlib import Path

_USAGE = """usage: python -m hrarray {demo,bench} [options]
       python -m hrarray --version

commands:
  demo   encode a text corpus level by level with hrarray's reductions
         (characters -> words -> sentences -> paragraphs -> one vector per
         document)
  bench  the benchmark of WORKLOADS.md: hrarray, the anchors and the
         roofline in one run (Markdown table, JSON, PNG); needs a source
         checkout (bench/run.py); --quick for a smoke run

`python -m hrarray COMMAND --help` lists a command's options."""


def _usage(ok: bool) -> int:
    print(_USAGE, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 2


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in {"-h", "--help"}:
        return _usage(True)
    if argv and argv[0] == "--version":
        from hrarray import __version__

        print(f"hrarray {__version__}")
        return 0
    if not argv:
        return _usage(False)
    cmd, rest = argv[0], argv[1:]
    if cmd == "demo":
        from hrarray.demo import main as demo_main

        return demo_main(rest)
    if cmd == "bench":
        # bench/ is a plain script folder beside the package (a source checkout).
        bench_dir = Path(__file__).resolve().parent.parent / "bench"
        if not (bench_dir / "run.py").exists():
            print("python -m hrarray bench needs a source checkout (bench/run.py not found)")
            return 2
        sys.path.insert(0, str(bench_dir))
        import run as bench_run  # type: ignore[import-not-found]

        return bench_run.main(rest)
    print(f"python -m hrarray: unknown command {cmd!r} (choose demo or bench)\n", file=sys.stderr)
    return _usage(False)


if __name__ == "__main__":
    sys.exit(main())
