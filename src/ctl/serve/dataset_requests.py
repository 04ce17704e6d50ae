"""Dataset rows written back as raw-id requests: for tests, examples and the serving benchmark."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from ctl.data.dataset import load_dataset
from ctl.data.id_maps import id_map_file, read_id_map


def requests_from_dataset(dataset_path: Path | str, rows: np.ndarray, with_history: bool) -> pa.Table:
    """Dataset rows written back as raw-id requests (the features through the id maps, if any).

    With ``with_history`` each request carries its row's visible history (``history_*`` columns),
    else ``hist_end`` for a lookup. ``row`` (the dataset row) is kept, so scores can be joined to a
    run's ``predictions.parquet``. For tests, examples and the serving benchmark.
    """
    dataset = load_dataset(dataset_path, validate=False)
    schema = dataset.schema
    rows = np.asarray(rows, dtype=np.int64)

    def raw(feature: str, ids: np.ndarray) -> pa.Array:
        if not id_map_file(dataset.path, feature).is_file():
            return pa.array(ids, pa.int64())
        return pa.array(read_id_map(dataset.path, feature)[ids], pa.string())

    columns = {"row": pa.array(rows)}
    domain = dataset.rows["domain"][rows]
    for feature in schema.features:
        columns[feature.name] = raw(feature.name, dataset.rows[feature.name][rows].astype(np.int64))
    columns["domain"] = pa.array([schema.domains[d] for d in domain], pa.string())
    hist_end = dataset.rows["hist_end"][rows].astype(np.int64)
    if not with_history:
        columns["hist_end"] = pa.array(hist_end)
        return pa.table(columns)
    history = dataset.history
    start = history.user_offsets.numpy()[dataset.rows["user_id"][rows]]
    lengths = hist_end
    offsets = np.zeros(rows.size + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    positions = np.concatenate([np.arange(s, s + n, dtype=np.int64) for s, n in zip(start, lengths, strict=True)]
                               or [np.empty(0, np.int64)])
    events = {"history_item_id": raw("item_id", history.item.numpy()[positions]),
              "history_category_id": raw("category_id", history.category.numpy()[positions]),
              "history_domain": pa.array([schema.domains[d] for d in history.domain.numpy()[positions]], pa.string())}
    for name, values in events.items():
        columns[name] = pa.ListArray.from_arrays(pa.array(offsets), values)
    return pa.table(columns)
