"""hrarray: ragged, hierarchical arrays with segmented reductions.

A :class:`RaggedArray` is one flat ``values`` array plus CSR ``offsets``
(nested level by level); reductions and segment-wise transforms run as
Numba kernels on the CPU and numba-cuda kernels on NVIDIA GPUs, with the same
semantics on both. See ``docs/api.md`` for the contract.
"""

from hrarray.construct import (
    concatenate,
    from_lengths,
    from_list,
    from_padded,
    from_segment_ids,
    nest,
)
from hrarray.interop import from_arrow, from_awkward, to_arrow, to_awkward
from hrarray.ragged import RaggedArray
from hrarray.reduce import (
    all,
    any,
    argmax,
    argmin,
    count,
    count_nonzero,
    first,
    last,
    logsumexp,
    max,
    mean,
    min,
    nanargmax,
    nanargmin,
    nanmax,
    nanmean,
    nanmin,
    nanstd,
    nansum,
    nanvar,
    prod,
    reduce,
    std,
    sum,
    var,
)
from hrarray.reducer import Reducer
from hrarray.transforms import attention_pool, broadcast, cumsum, log_softmax, softmax

__version__ = "0.1.0"

__all__ = [
    "RaggedArray",
    "Reducer",
    "all",
    "any",
    "argmax",
    "argmin",
    "attention_pool",
    "broadcast",
    "concatenate",
    "count",
    "count_nonzero",
    "cumsum",
    "first",
    "from_arrow",
    "from_awkward",
    "from_lengths",
    "from_list",
    "from_padded",
    "from_segment_ids",
    "last",
    "log_softmax",
    "logsumexp",
    "max",
    "mean",
    "min",
    "nanargmax",
    "nanargmin",
    "nanmax",
    "nanmean",
    "nanmin",
    "nanstd",
    "nansum",
    "nanvar",
    "nest",
    "prod",
    "reduce",
    "softmax",
    "std",
    "sum",
    "to_arrow",
    "to_awkward",
    "var",
]
