"""``ctl data validate PATH`` and ``ctl data describe PATH``."""

from __future__ import annotations

import argparse

from rich.console import Console

from ctl.data.dataset import load_dataset


def _path_arg(prog: str, description: str, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("path", help="a dataset folder (meta.yaml + rows.parquet + history.parquet)")
    return parser.parse_args(argv)


def validate_main(argv: list[str]) -> None:
    args = _path_arg("ctl data validate", "Check every column of a dataset; report the first problem.", argv)
    ds = load_dataset(args.path, validate=True)
    Console().print(f"[green]ok[/green]: {args.path}: {ds.n_rows:,} rows, "
                    f"{len(ds.history.item):,} history events, domains {list(ds.schema.domains)} "
                    f"(source {ds.schema.source}), {ds.schema.n_periods} periods")


def describe_main(argv: list[str]) -> None:
    from ctl.data.describe import print_description

    args = _path_arg("ctl data describe",
                     "Per-domain and per-period counts, CTR, users, items, new items; history lengths.", argv)
    print_description(load_dataset(args.path, validate=True), Console())
