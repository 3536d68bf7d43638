"""How the benchmark calls hrarray (public API only)."""

from __future__ import annotations

# ops whose level-by-level composition equals ``levels=depth``
LEVEL_BY_LEVEL_OPS = ("sum", "max", "logsumexp")


def build(hr, values, levels):
    """A RaggedArray over ``values`` with ``levels`` offsets (innermost first)."""
    if len(levels) == 1:
        return hr.RaggedArray(values, levels[0])
    return hr.nest(values, *levels)


def with_scores(hr, x, scores, levels):
    """``scores`` with ``x``'s structure (``x.with_values``, else a new RaggedArray)."""
    if hasattr(x, "with_values"):
        return x.with_values(scores)
    return build(hr, scores, levels)


def op_callable(hr, op, x, depth, scores_x=None, by_level=False):
    """A zero-argument callable running ``op`` on ``x``: ``levels=depth`` in one call,
    or (``by_level``) ``depth`` chained one-level calls."""
    f = getattr(hr, op)
    if by_level:

        def run():
            y = x
            for _ in range(depth):
                y = f(y)
            return y

        return run
    kw = {"levels": depth} if depth > 1 else {}
    if op == "attention_pool":
        return lambda: f(x, scores_x, **kw)
    return lambda: f(x, **kw)


def result_array(res):
    """The dense result, or the leaf values of a RaggedArray result (softmax)."""
    return res.leaf_values if hasattr(res, "leaf_values") else res
