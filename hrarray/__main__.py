"""Command line: ``python -m hrarray demo`` and ``python -m hrarray bench``."""

from __future__ import annotations

import sys
from pathlib import Path


def _usage() -> int:
    print("usage: python -m hrarray {demo,bench} [options]  (--help after a command lists them)")
    return 2


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        return _usage()
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
    return _usage()


if __name__ == "__main__":
    sys.exit(main())
