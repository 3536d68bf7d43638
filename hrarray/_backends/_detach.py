"""One helper shared by the backends, importing nothing."""

from __future__ import annotations


def detach(obj):
    """``obj``, or ``obj.detach()`` for a PyTorch tensor that requires grad (a
    zero-copy view): PyTorch refuses such a tensor's ``__cuda_array_interface__``,
    ``__dlpack__`` and ``__array__`` with a RuntimeError, which ``hasattr`` does
    not catch. hrarray's results carry no gradient either way."""
    if getattr(obj, "requires_grad", False) is True and hasattr(obj, "detach"):
        return obj.detach()
    return obj
