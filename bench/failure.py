"""What a benchmark row that failed records, so that the run goes on: one failure (an out-of-memory batch, a refused
capture) costs its row, not the rows after it, which a lent GPU's short call has no time to run again."""
from __future__ import annotations

import torch


def failure(exc: BaseException) -> str:
    """The row's "error": the exception's type and message, cut at 300 characters. The CUDA cache is emptied first:
    what the failed work held (an out-of-memory row's partial allocations) must not starve the next row."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return f"{type(exc).__name__}: {str(exc)[:300]}"
