"""``import hrarray`` is light: no PyTorch, no CuPy, nothing compiled (API.md section 4).

Run in a fresh interpreter. Fake ``torch`` and ``cupy`` packages first on the
path record any import attempt (even one inside ``try/except ImportError``)
and then fail like a missing package.
"""

import os
import subprocess
import sys
import textwrap

FAKE = textwrap.dedent(
    """
    import builtins
    builtins._hrarray_forbidden = [*getattr(builtins, "_hrarray_forbidden", []), __name__]
    raise ImportError(f"test: hrarray must not import {__name__}")
    """
)

SCRIPT = textwrap.dedent(
    """
    import builtins
    import sys

    import hrarray
    import hrarray._kernels

    def forbidden():
        tried = getattr(builtins, "_hrarray_forbidden", [])
        loaded = [m for m in ("torch", "cupy") if m in sys.modules]
        return tried + loaded

    assert not forbidden(), f"import hrarray imported {forbidden()}"
    n0 = hrarray._kernels.compiled_count()
    assert n0 == 0, f"{n0} kernels compiled at import"

    import numpy as np

    x = hrarray.from_lengths(np.arange(5.0), [2, 0, 3])
    assert hrarray.sum(x).tolist() == [1.0, 0.0, 9.0]
    n1 = hrarray._kernels.compiled_count()
    assert n1 > 0, "hr.sum compiled nothing"
    assert not forbidden(), f"hr.sum on NumPy input imported {forbidden()}"
    print("OK", n0, n1)
    """
)


def run_fresh(tmp_path, script):
    for name in ("torch", "cupy"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(FAKE)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    env["NUMBA_CACHE_DIR"] = str(tmp_path / "numba_cache")
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_import_is_light(tmp_path):
    proc = run_fresh(tmp_path, SCRIPT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("OK 0 ")


def test_fake_modules_detect_an_import(tmp_path):
    """The detector itself works: importing the fake torch is seen."""
    probe = "import hrarray._kernels\ntry:\n    import torch\nexcept ImportError:\n    pass\n"
    script = SCRIPT.replace("import hrarray._kernels\n", probe)
    proc = run_fresh(tmp_path, script)
    assert proc.returncode != 0
    assert "imported ['torch']" in proc.stderr
