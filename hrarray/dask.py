"""Ragged arrays partitioned along top-level segments across a Dask cluster.

A :class:`RaggedDaskArray` is a Dask collection whose partitions are
:class:`hrarray.RaggedArray` objects (NumPy or CuPy), each holding a run of
consecutive top-level segments. Because a partition always holds whole
top-level segments, every segment of every level lies inside one partition,
so each reduction and transform runs on each partition on its own, with the
single-machine kernels, and gives the single-machine result:

- reductions with ``levels == depth`` (and ``attention_pool``) return a
  ``dask.array.Array`` with one block per partition along axis 0;
- reductions with ``levels < depth`` and the transforms return a
  :class:`RaggedDaskArray` with the same partitions.

``import hrarray`` never imports this module nor Dask; ``hr.sum(dx)``,
``hr.softmax(dx)``, ... find it in ``sys.modules`` when given a
:class:`RaggedDaskArray`. See ``docs/dask.md``.
"""

from __future__ import annotations

# builtins.sum/any/...: this module defines functions of those names (the ops)
import builtins
import contextlib
import itertools
import math
import re
import uuid
import weakref

import dask
import dask.array as da
import numpy as np
from dask.array.optimization import optimize as _array_optimize
from dask.base import DaskMethodsMixin
from dask.core import flatten
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph
from dask.task_spec import Alias, DataNode, Task, TaskRef
from dask.tokenize import normalize_token, tokenize

import hrarray as hr
from hrarray import _ops
from hrarray._backends import backend_of
from hrarray._kernels import _locks
from hrarray.ragged import RaggedArray, is_int
from hrarray.reduce import _check_levels
from hrarray.reducer import Reducer

__all__ = [
    "RaggedDaskArray",
    "attention_pool",
    "broadcast",
    "concatenate",
    "cumsum",
    "from_delayed",
    "from_ragged",
    "log_softmax",
    "reduce",
    "softmax",
    *_ops.OPS,
]


# ---------------------------------------------------------------- tasks
# Module-level functions: a worker process finds them by reference when it
# unpickles a task, so only their arguments travel.


def _checked_part(part, index, nsegments, sig):
    """A partition from ``from_delayed``, checked against the array's meta."""
    if not isinstance(part, RaggedArray):
        raise TypeError(
            f"from_delayed(): partition {index} is a {type(part).__name__}, not a "
            "hrarray.RaggedArray"
        )
    for attr, want in zip(("depth", "dtype", "inner_shape", "device"), sig, strict=True):
        got = getattr(part, attr)
        if got != want:
            raise ValueError(
                f"from_delayed(): partition {index} has {attr}={got!r} but the meta has "
                f"{attr}={want!r}"
            )
    if nsegments is not None and part.nsegments != nsegments:
        raise ValueError(
            f"from_delayed(): partition {index} has {part.nsegments} segments but "
            f"chunks[{index}]={nsegments}"
        )
    return part


def _call(fname, *args, _at=None, **kwargs):
    """``hr.<fname>(*args, **kwargs)`` on one partition (``_at``: see ``_located``)."""
    with _locating(_at, False):
        return getattr(hr, fname)(*args, **kwargs)


def _reduce_part(part, op, token, *, levels, _at=None, **kwargs):
    if token is not None:
        op = _canonical_reducer(token, op)
    with _locating(_at, int(levels) == part.depth):
        return hr.reduce(part, op, levels=int(levels), **kwargs)


@contextlib.contextmanager
def _locating(at, top: bool):
    """Errors of a partition's call re-raised with their position located
    (``_located``), from the original; others, and those naming no position, as
    they are."""
    try:
        yield
    except (TypeError, ValueError) as exc:
        located = _located(exc, at, top)
        if located is exc:
            raise
        raise located from exc


_SEGMENT = re.compile(r"\bsegment (\d+)")
#: what a message names a position with: a segment, an offsets position, an index
_POSITION = re.compile(r"\bsegment \d+|\bposition \d+|\[\d+\]")


def _located(exc: Exception, at, top: bool) -> Exception:
    """``exc`` raised on partition ``i`` (``at = (i, first)``, ``first`` the number
    of top-level segments before it, None where chunks are unknown), naming where
    in the whole array: a partition numbers its segments from 0, so a message's
    "segment N" of a dense result (``top``: rows are top-level segments) becomes
    ``first + N``, as the single-machine call says; other positions get the
    partition named beside them. A message naming no position is left as it is
    (``exc`` itself is returned)."""
    if at is None or type(exc) not in (TypeError, ValueError) or not _POSITION.search(str(exc)):
        return exc
    i, first = at
    msg = str(exc)
    m = _SEGMENT.search(msg)
    if m is not None and top and first is not None:
        n = int(m.group(1))
        msg = f"{msg[: m.start(1)]}{first + n}{msg[m.end(1):]}"
        note = f"partition {i}, its segment {n}"
    elif first is not None:
        note = f"positions within partition {i}, which starts at top-level segment {first}"
    else:
        note = f"positions within partition {i}"
    return type(exc)(f"{msg} ({note})")


def _concat_parts(parts):
    """``__dask_postcompute__``: the partitions joined into one RaggedArray."""
    return hr.concatenate(list(parts))


# ---------------------------------------------------------------- user reducers
# A worker process unpickles a fresh copy of a Reducer for every task. Kernels
# are cached on the Reducer's code and values, so equal copies share them, but
# a Reducer that reads an array is keyed on the object itself: without this
# map each partition would compile it again (seconds each). Every task names
# its Reducer by a token fixed on the client, and a worker keeps the first copy
# it sees per token, so it compiles once per process.

_REDUCER_TOKENS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_REDUCERS: dict = {}
_REDUCERS_MAX = 256  # bounded: a long-lived worker must not keep every reducer ever sent
_REDUCERS_LOCK = _locks.Lock()


def _reducer_token(r: Reducer) -> str:
    with _REDUCERS_LOCK:
        tok = _REDUCER_TOKENS.get(r)
        if tok is None:
            tok = _REDUCER_TOKENS[r] = uuid.uuid4().hex
        return tok


def _canonical_reducer(token: str, r: Reducer) -> Reducer:
    with _REDUCERS_LOCK:
        got = _REDUCERS.get(token)
        if got is None:
            if len(_REDUCERS) >= _REDUCERS_MAX:
                del _REDUCERS[next(iter(_REDUCERS))]
            got = _REDUCERS[token] = r
        return got


# ---------------------------------------------------------------- tokens


@normalize_token.register(RaggedArray)
def _normalize_ragged(x):
    # Host data is hashed (deterministic names, as dask.array.from_array);
    # device data gets a random token rather than a copy to the host.
    if x.device != "cpu":
        return uuid.uuid4().hex
    return (
        "hrarray.RaggedArray",
        [normalize_token(lvl._offsets) for lvl in x._levels()],
        normalize_token(x.leaf_values),
    )


# ---------------------------------------------------------------- helpers


def _meta_of(x: RaggedArray) -> RaggedArray:
    """A 0-segment RaggedArray with ``x``'s depth, dtypes, inner shape and library.

    Its arrays are copies where the library allows, so the meta does not keep
    a partition's buffers alive.
    """
    levels = x[0:0]._compact()._levels()
    leaf = levels[-1]._values
    out = RaggedArray._trusted(_detach(leaf), _detach(levels[-1]._offsets))
    for lvl in reversed(levels[:-1]):
        out = RaggedArray._trusted(out, _detach(lvl._offsets))
    return out


def _detach(a):
    copy = getattr(a, "copy", None)  # NumPy, CuPy; numba device arrays have none
    return copy() if callable(copy) else a


def _check_chunks(chunks, nsegments, argname: str) -> tuple:
    """Per-partition segment counts as a tuple of ints (sum checked if ``nsegments``)."""
    if isinstance(chunks, np.ndarray):
        if chunks.ndim != 1:
            raise ValueError(f"{argname} must be 1-D, got ndim={chunks.ndim}")
        chunks = chunks.tolist()
    if not isinstance(chunks, (list, tuple)):
        raise TypeError(
            f"{argname} must be a sequence of segment counts, got {type(chunks).__name__}"
        )
    if len(chunks) == 0:
        raise ValueError(f"{argname} must hold at least one partition's segment count")
    for k, c in enumerate(chunks):
        if not is_int(c):
            raise TypeError(f"{argname}[{k}] must be an integer, got {type(c).__name__}")
        if c < 0:
            raise ValueError(f"{argname}[{k}]={c} is negative")
    out = tuple(int(c) for c in chunks)
    if nsegments is not None and builtins.sum(out) != nsegments:
        raise ValueError(f"{argname} sums to {builtins.sum(out)} but x has {nsegments} segments")
    return out


def _leaf_offsets(x: RaggedArray) -> np.ndarray:
    """Host copy of each top segment's start in the leaf values (and the end)."""
    return np.asarray(x._backend.to_host(x._composed_offsets()), dtype=np.int64)


def _balanced_bounds(lead: np.ndarray, npartitions: int) -> np.ndarray:
    """Partition bounds (top-segment indices) balancing leaf elements + segments.

    ``lead`` is :func:`_leaf_offsets`. The same measure of work the kernels
    balance by: a partition's cost is its leaf elements plus its top
    segments, so one long segment does not make a partition many times
    slower than the others.
    """
    n = lead.shape[0] - 1
    cost = (lead - lead[0]) + np.arange(n + 1, dtype=np.int64)
    total = int(cost[-1])
    targets = np.arange(1, npartitions, dtype=np.float64) * (total / npartitions)
    idx = np.searchsorted(cost, targets, side="left")
    # take the bound nearer to the target (the one before may be closer)
    prev = np.maximum(idx - 1, 0)
    nearer = (targets - cost[prev]) < (cost[np.minimum(idx, n)] - targets)
    idx = np.where(nearer & (idx > 0), prev, idx)
    bounds = np.concatenate(([0], np.clip(idx, 0, n), [n])).astype(np.int64)
    return np.maximum.accumulate(bounds)


def _partition(x: RaggedArray, a: int, b: int) -> RaggedArray:
    """Top segments ``a:b`` of ``x`` with offsets rebased to 0 at every level.

    Views only: the leaf is ``leaf[lo:hi]``, so pickling the partition ships
    its own values; the plain slice ``x[a:b]`` would ship all of ``x``'s
    values.
    """
    be = x._backend
    chain = []
    node, lo, hi = x, a, b
    while isinstance(node, RaggedArray):
        offs = node._offsets[lo : hi + 1]
        lo, hi = be.ends(offs)
        chain.append(be.shift(offs, lo) if lo else offs)
        node = node._values
    out = node[lo:hi]
    for offs in reversed(chain):
        out = RaggedArray._trusted(out, offs)
    return out


def _check_dask(obj, argname: str, op: str) -> RaggedDaskArray:
    if not isinstance(obj, RaggedDaskArray):
        raise TypeError(
            f"{op}(): {argname} must be a hrarray.dask.RaggedDaskArray, got {type(obj).__name__}"
        )
    return obj


def _array_expr() -> bool:
    """Whether dask.array runs in query-planning (expression) mode."""
    enabled = getattr(da, "array_expr_enabled", None)
    return bool(enabled()) if enabled is not None else False


def _dense(layer: dict, name: str, deps: list, chunks0: tuple, meta):
    """A dask array from one task per partition, each giving ``(n_i, *inner)``.

    ``layer`` maps ``(name, i, 0, ..., 0)`` to partition ``i``'s task: one
    graph layer for all partitions, through ``dask.array.Array``. In Dask's
    array query-planning mode (``array.query-planning``, off by default),
    whose ``Array`` takes no graph, through its ``from_graph`` (the way that
    mode rebuilds persisted arrays; not a public function).
    """
    graph = HighLevelGraph.from_collections(name, layer, dependencies=deps)
    chunks = (tuple(chunks0), *((d,) for d in meta.shape[1:]))
    if not _array_expr():
        return da.Array(graph, name, chunks, meta=meta)
    from dask.array._array_expr._collection import from_graph

    return from_graph(dict(graph), meta, chunks, list(layer), name)


def _optimize(dsk, keys, **kwargs):
    """``__dask_optimize__``: keep only the tasks ``keys`` need."""
    keys = list(flatten(keys))
    if not isinstance(dsk, HighLevelGraph):
        dsk = HighLevelGraph.from_collections(str(id(dsk)), dsk, dependencies=())
    return dsk.cull(set(keys))


# ---------------------------------------------------------------- the collection


class RaggedDaskArray(DaskMethodsMixin):
    """A ragged array partitioned along top-level segments (a Dask collection).

    Partition ``i`` is a :class:`hrarray.RaggedArray` holding ``chunks[i]``
    consecutive top-level segments. Build one with :func:`from_ragged` or
    :func:`from_delayed`; the constructor is for code that builds graphs.

    Parameters
    ----------
    dask : HighLevelGraph or Mapping
        The graph; key ``(name, i)`` gives partition ``i``.
    name : str
        The graph layer (and key prefix) of the partitions.
    chunks : tuple of int or NaN
        Top-level segments per partition, NaN where unknown.
    meta : RaggedArray
        A 0-segment array with the partitions' depth, dtype, inner shape and
        array library (NumPy or CuPy).

    Notes
    -----
    Every operation of hrarray exists as a method, as a function of this
    module and through ``hr.OP(dx, ...)``. ``compute()`` returns one
    ``RaggedArray`` (the partitions concatenated); ``persist()`` returns a
    ``RaggedDaskArray`` backed by the computed partitions.
    """

    def __init__(self, dask, name: str, chunks, meta: RaggedArray):
        if not isinstance(meta, RaggedArray):
            raise TypeError(f"meta must be a hrarray.RaggedArray, got {type(meta).__name__}")
        if not isinstance(dask, HighLevelGraph):
            dask = HighLevelGraph.from_collections(name, dask, dependencies=())
        self.dask = dask
        self._name = str(name)
        self._chunks = tuple(
            math.nan if (isinstance(c, float) and math.isnan(c)) else int(c) for c in chunks
        )
        if not self._chunks:
            raise ValueError("a RaggedDaskArray needs at least one partition")
        self._meta = meta

    # ------------------------------------------------------------ dask protocol
    def __dask_graph__(self):
        return self.dask

    def __dask_keys__(self):
        return [(self._name, i) for i in range(len(self._chunks))]

    def __dask_layers__(self):
        return (self._name,)

    def __dask_tokenize__(self):
        return self._name

    # dask.array's own optimizer (cull, then linear fusion; its slice and
    # blockwise passes find none of hrarray's tasks), not a cull of our own:
    # dask 2026.8 groups the collections of one dask.compute/persist call by
    # optimizer and returns each group's results together, so a dense result
    # between two ragged ones, dask.compute(dx, dx.sum(), dx.softmax()), came
    # back in another order (and persist lost a dependency). One optimizer,
    # one group, the order kept. (The dense results' graphs hold these tasks
    # and were optimized by it already.)
    __dask_optimize__ = staticmethod(_array_optimize)
    __dask_scheduler__ = staticmethod(dask.threaded.get)

    def __dask_postcompute__(self):
        return _concat_parts, ()

    def __dask_postpersist__(self):
        return self._rebuild, ()

    def _rebuild(self, dsk, *, rename=None):
        name = rename.get(self._name, self._name) if rename else self._name
        return RaggedDaskArray(dsk, name, self._chunks, self._meta)

    # ------------------------------------------------------------ attributes
    @property
    def name(self) -> str:
        """The graph layer whose keys ``(name, i)`` are the partitions."""
        return self._name

    @property
    def npartitions(self) -> int:
        """Number of partitions."""
        return len(self._chunks)

    @property
    def chunks(self) -> tuple:
        """Top-level segments per partition (NaN where unknown)."""
        return self._chunks

    @property
    def nsegments(self) -> int | None:
        """Top-level segments in all partitions, or None if a count is unknown."""
        if builtins.any(isinstance(c, float) for c in self._chunks):
            return None
        return builtins.sum(self._chunks)

    def __len__(self) -> int:
        n = self.nsegments
        if n is None:
            raise TypeError(
                "len() of a RaggedDaskArray with unknown partition sizes "
                "(pass chunks= to hrarray.dask.from_delayed)"
            )
        return n

    @property
    def meta(self) -> RaggedArray:
        """A 0-segment RaggedArray like the partitions."""
        return self._meta

    @property
    def depth(self) -> int:
        """Number of ragged levels."""
        return self._meta.depth

    @property
    def dtype(self) -> np.dtype:
        """dtype of the leaf values."""
        return self._meta.dtype

    @property
    def inner_shape(self) -> tuple:
        """Shape of one leaf value."""
        return self._meta.inner_shape

    @property
    def device(self) -> str:
        """``"cpu"`` (NumPy partitions) or ``"cuda"`` (CuPy partitions)."""
        return self._meta.device

    @property
    def partitions(self) -> _Partitions:
        """``dx.partitions[i]`` (an int, slice or index list): those partitions
        as a RaggedDaskArray."""
        return _Partitions(self)

    def to_delayed(self, optimize_graph=True) -> list:
        """One ``dask.delayed`` object per partition, each giving a RaggedArray.

        Parameters
        ----------
        optimize_graph : bool, default True
            Cull the graph to the partitions first.

        Returns
        -------
        list of Delayed
        """
        keys = self.__dask_keys__()
        dsk = self.__dask_graph__()
        layer = self._name
        if optimize_graph:
            dsk = _optimize(dsk, keys)
            layer = f"delayed-{layer}"
            dsk = HighLevelGraph.from_collections(layer, dsk, dependencies=())
        return [Delayed(k, dsk, layer=layer) for k in keys]

    def __repr__(self) -> str:
        n = self.nsegments
        inner = f" inner_shape={self.inner_shape}" if self.inner_shape else ""
        return (
            f"<RaggedDaskArray npartitions={self.npartitions} "
            f"nsegments={'?' if n is None else n} depth={self.depth} dtype={self.dtype}"
            f"{inner} device={self.device}>"
        )

    def __array__(self, *args, **kwargs):
        raise TypeError(
            "a RaggedDaskArray has no dense NumPy form; use .compute() or a reduction"
        )

    # ------------------------------------------------------------ operations
    def reduce(self, op, **kwargs):
        """``dx.reduce(op, ...)`` is :func:`hrarray.dask.reduce` ``(dx, op, ...)``."""
        return reduce(self, op, **kwargs)

    def softmax(self, *, levels=1):
        """``dx.softmax(...)`` is :func:`hrarray.dask.softmax` ``(dx, ...)``."""
        return softmax(self, levels=levels)

    def log_softmax(self, *, levels=1):
        """``dx.log_softmax(...)`` is :func:`hrarray.dask.log_softmax` ``(dx, ...)``."""
        return log_softmax(self, levels=levels)

    def cumsum(self, exclusive=False, *, levels=1, dtype=None):
        """``dx.cumsum(...)`` is :func:`hrarray.dask.cumsum` ``(dx, ...)``."""
        return cumsum(self, exclusive=exclusive, levels=levels, dtype=dtype)

    def attention_pool(self, scores, *, levels=1, fill_value=None):
        """``dx.attention_pool(scores, ...)`` is :func:`hrarray.dask.attention_pool`."""
        return attention_pool(self, scores, levels=levels, fill_value=fill_value)


class _Partitions:
    """``dx.partitions``: select partitions by int, slice or index list."""

    def __init__(self, arr: RaggedDaskArray):
        self._arr = arr

    def __len__(self) -> int:
        return self._arr.npartitions

    def __getitem__(self, key) -> RaggedDaskArray:
        arr = self._arr
        if is_int(key):
            n = arr.npartitions
            if not -n <= int(key) < n:
                raise IndexError(f"partition {int(key)} is out of range for {n} partitions")
            idx = [int(key) % n]
        else:
            msg = (f"partitions[{key!r}]: a partition index must be an int, a slice, a 1-D "
                   "int array or a bool mask")
            try:
                idx = np.arange(arr.npartitions)[key]
            except (IndexError, TypeError, ValueError) as exc:
                # NumPy's message names no argument
                raise type(exc)(f"{msg} ({exc})") from None
            if np.ndim(idx) > 1:  # None or a 2-D index array
                raise IndexError(msg)
            idx = [int(i) for i in np.atleast_1d(idx)]
        if not idx:
            raise ValueError("partitions[...] selected no partition")
        name = f"partitions-{tokenize(arr.name, idx)}"
        layer = {(name, j): Alias((name, j), (arr.name, i)) for j, i in enumerate(idx)}
        graph = HighLevelGraph.from_collections(name, layer, dependencies=[arr])
        return RaggedDaskArray(graph, name, tuple(arr.chunks[i] for i in idx), arr.meta)


# ---------------------------------------------------------------- constructors


def from_ragged(x, npartitions=None, *, chunks=None) -> RaggedDaskArray:
    """Split a RaggedArray along its top-level segments into Dask partitions.

    Parameters
    ----------
    x : RaggedArray
        NumPy or CuPy; any depth and inner shape.
    npartitions : int, optional
        Number of partitions, balanced by work (leaf elements plus top
        segments): bounds are placed at the top segments nearest to equal
        shares, so a partition may be empty when single segments outweigh a
        share.
    chunks : sequence of int, optional
        Top-level segments per partition instead (zeros allowed); must sum to
        ``len(x)``. Give exactly one of ``npartitions`` and ``chunks``.

    Returns
    -------
    RaggedDaskArray
        With known ``chunks``. Partition ``i`` holds top segments ``a:b`` of
        ``x`` as views with offsets rebased to 0: its leaf view covers the
        values of its segments only (a segment's CPU result does not depend
        on the rows after it, so results equal ``x``'s bit for bit), and
        pickling it to a worker process sends just those rows (the plain
        slice ``x[a:b]`` would send all of ``x``'s values).

    Raises
    ------
    TypeError
        ``x`` is not a RaggedArray, ``npartitions`` / ``chunks`` are not
        integers, or neither or both are given.
    ValueError
        ``npartitions < 1``, or ``chunks`` has a negative entry or does not
        sum to ``len(x)``.

    Notes
    -----
    The partitions are embedded in the task graph (as ``dask.array.from_array``
    does), which the distributed scheduler ships with the graph. For data
    larger than some megabytes, build the partitions on the workers
    (:func:`from_delayed`) or scatter them first.
    """
    if not isinstance(x, RaggedArray):
        raise TypeError(f"from_ragged(): x must be a hrarray.RaggedArray, got {type(x).__name__}")
    if (npartitions is None) == (chunks is None):
        raise TypeError("from_ragged(): give exactly one of npartitions= and chunks=")
    n = x.nsegments
    lead = _leaf_offsets(x)
    if chunks is not None:
        counts = _check_chunks(chunks, n, "chunks")
        bounds = np.concatenate(([0], np.cumsum(counts, dtype=np.int64)))
    else:
        if not is_int(npartitions):
            raise TypeError(
                f"from_ragged(): npartitions must be an integer, got {type(npartitions).__name__}"
            )
        if npartitions < 1:
            raise ValueError(f"from_ragged(): npartitions={npartitions} must be >= 1")
        bounds = _balanced_bounds(lead, int(npartitions))
        counts = tuple(int(c) for c in np.diff(bounds))
    name = f"from-ragged-{tokenize(x, counts)}"
    layer = {}
    for i in range(len(counts)):
        part = _partition(x, int(bounds[i]), int(bounds[i + 1]))
        layer[(name, i)] = DataNode((name, i), part)
    return RaggedDaskArray(layer, name, counts, _meta_of(x))


def concatenate(arrays) -> RaggedDaskArray:
    """Join partitioned ragged arrays end to end, as :func:`hrarray.concatenate`.

    The result's partitions are those of ``arrays[0]``, then those of
    ``arrays[1]``, ... (graph aliases: no data moves and nothing is
    computed). A :class:`hrarray.RaggedArray` among them becomes one
    partition (:func:`from_ragged`).

    Parameters
    ----------
    arrays : sequence of RaggedDaskArray or RaggedArray
        Same depth, dtype, inner shape and device, as for
        :func:`hrarray.concatenate`.

    Returns
    -------
    RaggedDaskArray
        ``npartitions`` the sum of theirs; ``chunks`` theirs, in order.
    """
    arrays = list(arrays)
    if not arrays:
        raise ValueError("concatenate(): needs at least one array")
    parts = []
    for k, a in enumerate(arrays):
        if isinstance(a, RaggedArray):
            a = from_ragged(a, npartitions=1)
        elif not isinstance(a, RaggedDaskArray):
            raise TypeError(
                f"concatenate(): arrays[{k}] is a {type(a).__name__}, not a "
                "hrarray.dask.RaggedDaskArray or hrarray.RaggedArray"
            )
        parts.append(a)
    a0 = parts[0]
    for k, a in enumerate(parts[1:], start=1):
        if a.device != a0.device:
            raise TypeError(
                f"concatenate(): arrays[{k}] is on {a.device} but arrays[0] is on "
                f"{a0.device}; move them explicitly"
            )
        for attr in ("depth", "dtype", "inner_shape"):
            if getattr(a, attr) != getattr(a0, attr):
                raise ValueError(
                    f"concatenate(): arrays[{k}].{attr}={getattr(a, attr)!r} differs from "
                    f"arrays[0].{attr}={getattr(a0, attr)!r}"
                )
    name = f"concatenate-{tokenize([a.name for a in parts])}"
    layer = {}
    for a in parts:
        for i in range(a.npartitions):
            j = len(layer)
            layer[(name, j)] = Alias((name, j), (a.name, i))
    graph = HighLevelGraph.from_collections(name, layer, dependencies=parts)
    chunks = tuple(c for a in parts for c in a.chunks)
    return RaggedDaskArray(graph, name, chunks, a0.meta)


def from_delayed(parts, *, meta=None, chunks=None) -> RaggedDaskArray:
    """A RaggedDaskArray from Dask objects that each give one partition.

    Parameters
    ----------
    parts : sequence of Delayed or distributed.Future
        Each computes to a :class:`hrarray.RaggedArray` holding the next run
        of top-level segments; all with the same depth, dtype, inner shape
        and device (checked when each partition is computed).
    meta : RaggedArray, optional
        An array like the partitions (its segments are not used). Without it
        ``parts[0]`` is computed now to find these properties.
    chunks : sequence of int, optional
        Top-level segments of each partition, if known (checked when each
        partition is computed). Unknown counts are NaN: ``nsegments`` is then
        None and dense results have unknown chunk sizes along axis 0.

    Returns
    -------
    RaggedDaskArray

    Raises
    ------
    TypeError
        An entry of ``parts`` is not a Delayed or Future, ``meta`` (or what
        ``parts[0]`` computes to) is not a RaggedArray, or ``chunks`` entries
        are not integers.
    ValueError
        ``parts`` is empty, or ``chunks`` has another length or a negative
        entry.
    """
    if isinstance(parts, (Delayed, TaskRef)):
        parts = [parts]
    if not isinstance(parts, (list, tuple)):
        raise TypeError(
            f"from_delayed(): parts must be a list of Delayed objects, got {type(parts).__name__}"
        )
    parts = list(parts)
    if not parts:
        raise ValueError("from_delayed(): parts must hold at least one partition")
    for k, p in enumerate(parts):
        if not isinstance(p, (Delayed, TaskRef)):
            raise TypeError(
                f"from_delayed(): parts[{k}] must be a dask Delayed or a distributed Future, "
                f"got {type(p).__name__}"
            )
    if chunks is None:
        counts = (math.nan,) * len(parts)
    else:
        counts = _check_chunks(chunks, None, "chunks")
        if len(counts) != len(parts):
            raise ValueError(
                f"from_delayed(): chunks has {len(counts)} entries but parts has {len(parts)}"
            )
    if meta is None:
        p0 = parts[0]
        first = p0.result() if isinstance(p0, TaskRef) else dask.compute(p0)[0]
        if not isinstance(first, RaggedArray):
            raise TypeError(
                f"from_delayed(): parts[0] computes to a {type(first).__name__}, not a "
                "hrarray.RaggedArray"
            )
        meta = first
    elif not isinstance(meta, RaggedArray):
        raise TypeError(
            f"from_delayed(): meta must be a hrarray.RaggedArray, got {type(meta).__name__}"
        )
    meta = _meta_of(meta)
    sig = (meta.depth, meta.dtype, meta.inner_shape, meta.device)
    name = f"from-delayed-{tokenize([p.key for p in parts], counts, sig)}"
    layer = {}
    deps = []
    for i, p in enumerate(parts):
        if isinstance(p, Delayed):
            deps.append(p)
        else:
            layer[p.key] = p  # a Future stands for itself (as in dask.array.from_delayed)
        nseg = None if isinstance(counts[i], float) else counts[i]
        layer[(name, i)] = Task((name, i), _checked_part, TaskRef(p.key), i, nseg, sig)
    graph = HighLevelGraph.from_collections(name, layer, dependencies=deps)
    return RaggedDaskArray(graph, name, counts, meta)


# ---------------------------------------------------------------- reductions


def _map_parts(name: str, x: RaggedDaskArray, func, args, kwargs, meta_out, others=()):
    """One task per partition ``i``: ``func(*args, **kwargs)``, each ``_Part`` of
    ``args`` replaced by partition (block) ``i`` of its collection.

    ``others`` are the further collections (partitioned like ``x``) that
    ``args`` names. Returns a dask array for a dense
    ``meta_out``, else a RaggedDaskArray with ``x``'s partitions.
    """
    dense = not isinstance(meta_out, RaggedArray)
    zeros = (0,) * (meta_out.ndim - 1) if dense else ()
    layer = {}
    chunks = x.chunks
    known = builtins.all(not math.isnan(c) for c in chunks)  # (all: the reduction)
    # where each partition starts, for the positions its errors name
    starts = [0, *itertools.accumulate(int(c) for c in chunks)] if known else None
    for i in range(x.npartitions):
        key = (name, i, *zeros)
        at = (i, starts[i] if known else None)
        layer[key] = Task(key, func, *(_ref(v, i) for v in args), _at=at, **kwargs)
    deps = [x, *others]
    if dense:
        return _dense(layer, name, deps, x.chunks, meta_out)
    graph = HighLevelGraph.from_collections(name, layer, dependencies=deps)
    return RaggedDaskArray(graph, name, x.chunks, _meta_of(meta_out))


class _Part:
    """Placeholder in ``_map_parts`` args: partition ``i`` of collection ``name``."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name


class _PerPart:
    """Placeholder in ``_map_parts`` args: ``values[i]`` for partition ``i``."""

    __slots__ = ("values",)

    def __init__(self, values):
        self.values = values


def _ref(v, i):
    if isinstance(v, _Part):
        return TaskRef((v.name, i))
    if isinstance(v, _PerPart):
        return v.values[i]
    return v


def reduce(x, op, *, levels=1, fill_value=None, dtype=None, ddof=None):
    """Reduce each partition with :func:`hrarray.reduce` (a built-in op or a Reducer).

    Parameters
    ----------
    x : RaggedDaskArray
    op : str or hrarray.Reducer
    levels, fill_value, dtype, ddof
        As :func:`hrarray.reduce`; checked now, on ``x.meta``.

    Returns
    -------
    dask.array.Array or RaggedDaskArray
        ``levels == x.depth``: a dask array of shape ``(nsegments, *inner)``
        with one block per partition along axis 0 (chunks ``x.chunks``).
        Else a RaggedDaskArray of depth ``x.depth - levels`` with ``x``'s
        partitions. Each segment is reduced inside one partition, so values
        equal the single-machine result (bit for bit on the CPU for arrays
        from :func:`from_ragged`; see ``docs/dask.md``), and ``argmax``
        indices stay local to the segment.
    """
    x = _check_dask(x, "x", "reduce")
    kw = {"levels": levels, "fill_value": fill_value, "dtype": dtype, "ddof": ddof}
    # the single-machine function checks every argument on the 0-segment meta
    # (no kernel runs for 0 segments) and gives the result's dtype and shape
    meta_out = hr.reduce(x.meta, op, **kw)
    if isinstance(op, Reducer):
        token = _reducer_token(op)
        label = "reduce"
    else:
        token, label = None, op
    name = f"{label}-{tokenize(x.name, op if token is None else token, kw)}"
    return _map_parts(name, x, _reduce_part, (_Part(x.name), op, token), kw, meta_out)


def _make(opname: str):
    takes = (
        ({"dtype"} if opname in _ops._TAKES_DTYPE else set())
        | ({"ddof"} if opname.removeprefix("nan") in {"var", "std"} else set())
    )

    def op(x, *, levels=1, fill_value=None, **kwargs):
        bad = set(kwargs) - takes
        if bad:
            raise TypeError(f"{opname}() got an unexpected keyword argument {sorted(bad)[0]!r}")
        _check_dask(x, "x", opname)
        return reduce(x, opname, levels=levels, fill_value=fill_value, **kwargs)

    extra = "".join(f", {k}=None" if k == "dtype" else f", {k}=0" for k in sorted(takes))
    op.__name__ = op.__qualname__ = opname
    op.__doc__ = f"""Distributed :func:`hrarray.{opname}`, partition by partition.

    ``{opname}(x, *, levels=1, fill_value=None{extra})``.

    Parameters
    ----------
    x : RaggedDaskArray
    levels, fill_value{", " if takes else ""}{", ".join(sorted(takes))}
        As :func:`hrarray.{opname}`.

    Returns
    -------
    dask.array.Array or RaggedDaskArray
        Dense (one block per partition) when ``levels == x.depth``, else
        partitioned like ``x``; see :func:`hrarray.dask.reduce`.
    """

    def method(self, *, levels=1, fill_value=None, **kwargs):
        return op(self, levels=levels, fill_value=fill_value, **kwargs)

    method.__name__ = method.__qualname__ = opname
    method.__doc__ = f"``dx.{opname}(...)`` is :func:`hrarray.dask.{opname}` ``(dx, ...)``."
    return op, method


for _name in _ops.OPS:
    globals()[_name], _method = _make(_name)
    setattr(RaggedDaskArray, _name, _method)
del _name, _method


# ---------------------------------------------------------------- transforms


def _transform(fname: str, x, kwargs):
    x = _check_dask(x, "x", fname)
    meta_out = getattr(hr, fname)(x.meta, **kwargs)
    name = f"{fname}-{tokenize(x.name, kwargs)}"
    return _map_parts(name, x, _call, (fname, _Part(x.name)), kwargs, meta_out)


def softmax(x, *, levels=1):
    """Distributed :func:`hrarray.softmax`, partition by partition.

    Parameters
    ----------
    x : RaggedDaskArray
    levels : int, default 1

    Returns
    -------
    RaggedDaskArray
        ``x``'s partitions and structure; values as :func:`hrarray.softmax`.
    """
    return _transform("softmax", x, {"levels": levels})


def log_softmax(x, *, levels=1):
    """Distributed :func:`hrarray.log_softmax`, partition by partition.

    Parameters
    ----------
    x : RaggedDaskArray
    levels : int, default 1

    Returns
    -------
    RaggedDaskArray
        ``x``'s partitions and structure; values as :func:`hrarray.log_softmax`.
    """
    return _transform("log_softmax", x, {"levels": levels})


def cumsum(x, exclusive=False, *, levels=1, dtype=None):
    """Distributed :func:`hrarray.cumsum` (restarting at each segment).

    Parameters
    ----------
    x : RaggedDaskArray
    exclusive : bool, default False
    levels : int, default 1
    dtype : dtype, optional

    Returns
    -------
    RaggedDaskArray
        ``x``'s partitions and structure; values as :func:`hrarray.cumsum`.
    """
    return _transform("cumsum", x, {"exclusive": exclusive, "levels": levels, "dtype": dtype})


def _align_ragged(x: RaggedDaskArray, other, argname: str, op: str) -> RaggedDaskArray:
    """``other`` (RaggedDaskArray or RaggedArray) partitioned like ``x``."""
    if isinstance(other, RaggedArray):
        if x.nsegments is None:
            raise ValueError(
                f"{op}(): {argname} is a local RaggedArray but x has unknown partition "
                "sizes; partition it like x (hrarray.dask.from_ragged(..., chunks=...))"
            )
        if other.nsegments != x.nsegments:
            raise ValueError(
                f"{op}(): {argname} has {other.nsegments} top-level segments but x has "
                f"{x.nsegments}"
            )
        return from_ragged(other, chunks=x.chunks)
    if not isinstance(other, RaggedDaskArray):
        raise TypeError(
            f"{op}(): {argname} must be a RaggedDaskArray partitioned like x (or a "
            f"RaggedArray), got {type(other).__name__}"
        )
    if other.npartitions != x.npartitions:
        raise ValueError(
            f"{op}(): {argname} has {other.npartitions} partitions but x has {x.npartitions}"
        )
    for i, (a, b) in enumerate(zip(x.chunks, other.chunks, strict=True)):
        if a == a and b == b and a != b:  # NaN (unknown) matches anything
            raise ValueError(
                f"{op}(): {argname}'s partition {i} has {b} segments but x's has {a}"
            )
    return other


def attention_pool(x, scores, *, levels=1, fill_value=None):
    """Distributed :func:`hrarray.attention_pool`, partition by partition.

    Parameters
    ----------
    x : RaggedDaskArray
    scores : RaggedDaskArray or RaggedArray
        ``x``'s structure. A RaggedDaskArray must have ``x``'s partitions (the
        same count, and equal segment counts where both are known; the
        structure inside each partition is checked when it is computed). A
        local RaggedArray is split like ``x`` (needs known chunks).
    levels : int, default 1
    fill_value : scalar, optional

    Returns
    -------
    dask.array.Array or RaggedDaskArray
        ``(nsegments, [heads,] *inner)`` with one block per partition when
        ``levels == x.depth``, else partitioned like ``x``.
    """
    if isinstance(x, RaggedArray) and isinstance(scores, RaggedDaskArray):
        x = _align_ragged(scores, x, "x", "attention_pool")
    x = _check_dask(x, "x", "attention_pool")
    scores = _align_ragged(x, scores, "scores", "attention_pool")
    kw = {"levels": levels, "fill_value": fill_value}
    meta_out = hr.attention_pool(x.meta, scores.meta, **kw)
    name = f"attention_pool-{tokenize(x.name, scores.name, kw)}"
    args = ("attention_pool", _Part(x.name), _Part(scores.name))
    return _map_parts(name, x, _call, args, kw, meta_out, others=(scores,))


def broadcast(per_segment, x, *, levels=1):
    """Distributed :func:`hrarray.broadcast`: repeat row ``i`` over segment ``i``.

    Parameters
    ----------
    per_segment : dask array, NumPy/CuPy array, list, RaggedDaskArray or RaggedArray
        One row per level-``levels`` segment of ``x``. A dask array with one
        block per partition of ``x`` (such as ``dx.max()``) is used block by
        block; one with known chunks is rechunked to ``x.chunks``
        (``levels == x.depth`` only). A NumPy/CuPy array (or a list) is split by
        ``x.chunks`` (``levels == x.depth``, known chunks). For ``levels <
        x.depth`` pass a ragged ``per_segment`` (such as ``dx.max()`` of a
        deeper ``dx``): a RaggedDaskArray partitioned like ``x``, or a
        RaggedArray (split like ``x``).
    x : RaggedDaskArray
    levels : int, default 1

    Returns
    -------
    RaggedDaskArray
        ``x``'s partitions and structure, ``per_segment``'s dtype and row
        shape.
    """
    x = _check_dask(x, "x", "broadcast")
    levels = _check_levels(x.meta, levels)
    kw = {"levels": levels}
    if isinstance(per_segment, (RaggedArray, RaggedDaskArray)):
        per = _align_ragged(x, per_segment, "per_segment", "broadcast")
        meta_out = hr.broadcast(per.meta, x.meta, **kw)
        part = _Part(per.name)
    else:
        per = _align_dense(x, per_segment, levels)
        per_meta = per._meta.reshape((0, *per.shape[1:]))
        meta_out = hr.broadcast(per_meta, x.meta, **kw)
        # its own block keys (in query-planning mode they are not (per.name, i, 0...))
        part = _PerPart([TaskRef(k) for k in flatten(per.__dask_keys__())])
    name = f"broadcast-{tokenize(x.name, per.name, kw)}"
    args = ("broadcast", part, _Part(x.name))
    return _map_parts(name, x, _call, args, kw, meta_out, others=(per,))


def _align_dense(x: RaggedDaskArray, per, levels: int):
    """``per`` as a dask array with one block per partition of ``x`` along axis 0
    and a single block along every other axis."""
    top = levels == x.depth
    if isinstance(per, (list, tuple)):
        # read as hr.broadcast reads one (host data: a TypeError for CUDA partitions)
        be = backend_of(("x", x.meta.leaf_values), ("per_segment", per))
        per = be.asarray(per, "per_segment")
    if not isinstance(per, da.Array):
        if not hasattr(per, "shape") or not hasattr(per, "dtype"):
            raise TypeError(
                f"broadcast(): per_segment must be an array, got {type(per).__name__}"
            )
        if not top:
            raise ValueError(
                f"broadcast(): with levels={levels} < x.depth={x.depth}, a dense per_segment "
                "cannot be split by partition; pass a RaggedDaskArray or RaggedArray (such as "
                "a reduction of x with levels < depth)"
            )
        if len(per.shape) == 0:
            raise ValueError("broadcast(): per_segment must have one row per segment, got a scalar")
        if x.nsegments is None:
            raise ValueError(
                "broadcast(): x has unknown partition sizes, so a local per_segment cannot "
                "be split; pass a dask array with one block per partition"
            )
        if per.shape[0] != x.nsegments:
            raise ValueError(
                f"broadcast(): per_segment has {per.shape[0]} rows but x has "
                f"{x.nsegments} segments"
            )
        per = da.from_array(per, chunks=(x.chunks, *per.shape[1:]))
    if per.ndim == 0:
        raise ValueError("broadcast(): per_segment must have one row per segment, got a scalar")
    rows = per.chunks[0]
    known = x.nsegments is not None and not builtins.any(math.isnan(c) for c in rows)
    if known and tuple(rows) != x.chunks:
        if not top:
            raise ValueError(
                f"broadcast(): with levels={levels} < x.depth={x.depth}, per_segment's blocks "
                "must be x's partitions"
            )
        if builtins.sum(rows) != x.nsegments:
            raise ValueError(
                f"broadcast(): per_segment has {builtins.sum(rows)} rows but x has "
                f"{x.nsegments} segments"
            )
        per = per.rechunk({0: x.chunks})
    elif len(rows) != x.npartitions:
        raise ValueError(
            f"broadcast(): per_segment has {len(rows)} blocks along axis 0 but x has "
            f"{x.npartitions} partitions (and unknown sizes, so it cannot be rechunked)"
        )
    if builtins.any(n > 1 for n in per.numblocks[1:]):
        per = per.rechunk(dict.fromkeys(range(1, per.ndim), -1))
    return per
