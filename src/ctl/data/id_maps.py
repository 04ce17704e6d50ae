"""Id maps: the raw text of every id of a dense feature, ``id_maps/<feature>.parquet``.

The importer writes one per dense feature of an imported dataset (``id`` int64 running 1..n in order
of first appearance, ``raw`` the text it came from); an artifact carries a copy, so raw ids of
requests map to the ids the model was trained on. A synthetic world has none: its ids are its raw ids.
Every reader goes through this module, so the layout and its checks live in one place.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ctl.errors import CtlError, cut
from ctl.io import inside

ID_MAPS_DIR = "id_maps"


def id_map_file(folder: Path | str, feature: str) -> Path:
    """``folder/id_maps/<feature>.parquet``; ``feature`` may come from a file, so it may not leave the folder."""
    return inside(Path(folder) / ID_MAPS_DIR, f"{feature}.parquet", f"the id map of feature {feature!r}")


def raw_values(folder: Path | str, feature: str) -> pa.StringArray | None:
    """Raw text of the ids 1..n of ``feature`` (``raw[id - 1]``), or None if the feature has no id map.

    Refuses a file that is not an id map, or whose ids do not run 1..n without gaps.
    """
    file = id_map_file(folder, feature)
    if not file.is_file():
        return None
    try:
        table = pq.read_table(file).sort_by("id")
        ids = table.column("id").to_numpy()
        raw = table.column("raw").combine_chunks().cast(pa.string())
    except (pa.ArrowException, KeyError, ValueError) as exc:
        raise CtlError(f"{file} is not an id map (columns id, raw): {cut(str(exc))}") from None
    if not np.array_equal(ids, np.arange(1, len(ids) + 1)):
        raise CtlError(f"{file}: ids must run 1..{len(ids)} without gaps, as the importer writes them")
    return raw


def read_id_map(dataset: Path | str, feature: str) -> np.ndarray:
    """Raw text of every id of a dense feature: ``raw[id]`` (object ``[vocab_used + 1]``; ``raw[0]`` is None)."""
    raw = raw_values(dataset, feature)
    if raw is None:
        raise CtlError(f"{id_map_file(dataset, feature)} does not exist: feature {feature!r} has no id map (hashed, "
                       "bucket and constant features have none; or this dataset was not imported)")
    return np.concatenate([np.array([None], dtype=object), raw.to_numpy(zero_copy_only=False).astype(object)])
