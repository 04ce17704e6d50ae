"""``ctl data import``: an import schema and its inputs into a new folder, or a preset into the
dataset cache (:func:`ctl.data.registry.ensure_dataset`); then a summary of what was imported.

It sits above both the importer and the registry, which imports presets through the importer.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from ctl.data.importer.config import behaviour_inputs, import_preset, resolve_inputs, schema_from
from ctl.data.importer.convert import import_dataset
from ctl.data.registry import ensure_dataset
from ctl.errors import CtlError


def print_import(path: Path, console: Console) -> None:
    """A summary of an imported dataset from its ``meta.yaml``: layout, periods, rows, what was left out."""
    meta = yaml.safe_load((Path(path) / "meta.yaml").read_text())
    schema, provenance = meta["schema"], meta["provenance"]
    n_history, n_transfer = schema["n_history"], schema["n_transfer"]
    table = Table(title=f"{path}: {meta['n_rows']:,} rows, {meta['n_events']:,} history events")
    table.add_column("period", justify="right")
    table.add_column("split")
    table.add_column("span")
    for p, span in enumerate(provenance.get("periods", [])):
        split = "history" if p < n_history else "transfer" if p < n_history + n_transfer else "test"
        table.add_row(str(p), split, span)
    console.print(table)
    console.print(f"domains {schema['domains']} (source {schema['source']}); "
                  f"features {[f['name'] for f in schema['features']]}")
    console.print("counts: " + ", ".join(f"{k} {v:,}" for k, v in provenance.get("counts", {}).items()))


def run_import(cfg: DictConfig) -> Path:
    """``ctl data import``: ``schema=FILE inputs=[...] out=DIR``, or ``data=<preset>`` (cache or ``out``)."""
    console = Console()
    log = Console(stderr=True).print if cfg.progress else None
    out = Path(str(cfg.out)).expanduser() if cfg.out else None
    if cfg.schema:
        if out is None:
            raise CtlError("out=DIR is required with schema=...: the new dataset folder")
        spec = schema_from(cfg.schema, "schema")
        if not cfg.inputs:
            raise CtlError("inputs=[a.csv,b.parquet] is required with schema=...")
        root = Path(str(cfg.root)).expanduser() if cfg.root else Path.cwd()
        inputs = resolve_inputs(list(cfg.inputs), root, "import")
        import_dataset(spec, inputs, out, max_rows=cfg.max_rows, block_bytes=cfg.block_bytes, log=log,
                       memory_limit=str(cfg.memory_limit), threads=cfg.threads, behaviour=behaviour_inputs(spec, root))
        path = out
    elif cfg.get("data") is not None and cfg.data.get("importer") is not None:
        if out is not None:
            if out.exists():
                raise CtlError(f"out={out} already exists; choose a new folder")
            path = import_preset(cfg.data, out, progress=bool(cfg.progress), memory_limit=str(cfg.memory_limit),
                                 threads=cfg.threads)
        else:
            path = ensure_dataset(cfg.data, cfg.home, progress=bool(cfg.progress))
    else:
        raise CtlError("say what to import: schema=FILE inputs=[a.csv,...] out=DIR, or data=<preset> "
                       "(amazon_food_kitchen, douban, taobao_tiny)")
    print_import(path, console)
    console.print(f"dataset: {path}")
    return path
