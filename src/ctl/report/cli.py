"""``ctl eval``: read run and sweep directories, print the paper's tables."""

from __future__ import annotations

from ctl.errors import CtlError


def eval_main(argv: list[str]) -> None:
    raise CtlError("ctl eval is not built yet; each run folder holds metrics.json and predictions.parquet")
