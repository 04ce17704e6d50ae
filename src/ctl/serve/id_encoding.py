"""Raw ids of requests -> the model's ids, through the artifact's id maps or as integer ids."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ctl.errors import CtlError
from ctl.serve.artifact import Artifact
from ctl.serve.request_columns import Where, flat_values, parse_integers, refuse_nulls


class IdEncoder:
    """Maps raw values of the schema's features to the model's ids (0 = absent/unknown).

    A feature with an id map looks values up in it by their text; any other takes integer ids,
    and an id outside ``[0, vocab)`` is unknown.
    """

    def __init__(self, artifact: Artifact) -> None:
        self.vocab = {f.name: f.vocab for f in artifact.schema.features}
        self.maps = {name: artifact.id_map(name) for name in self.vocab}

    def text_features(self) -> tuple[str, ...]:
        return tuple(name for name, mapping in self.maps.items() if mapping is not None)

    def encode(self, values: pa.Array, feature: str, file: Where, column: str) -> tuple[np.ndarray, int]:
        """int64 ids ``[n]`` of raw ``values`` of ``feature``, and how many were unknown."""
        values = flat_values(values)
        refuse_nulls(file, column, values)
        kind = values.type
        mapping = self.maps[feature]
        if mapping is not None:
            if not (pa.types.is_integer(kind) or pa.types.is_string(kind) or pa.types.is_large_string(kind)):
                raise CtlError(f"{file}: column {column!r} has type {kind}; raw ids of {feature!r} are text or "
                               "integers (its id map holds the importer's raw values)")
            found = pc.index_in(values.cast(pa.string()), value_set=mapping)
            ids = pc.fill_null(pc.add(found, 1), 0).to_numpy(zero_copy_only=False).astype(np.int64)
            return ids, int(found.null_count)
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            values = parse_integers(values, file, column, feature)
        elif not pa.types.is_integer(kind):
            raise CtlError(f"{file}: column {column!r} has type {kind}; feature {feature!r} has no id map, so "
                           "its values are ids: integers")
        ids = values.to_numpy(zero_copy_only=False).astype(np.int64)
        unknown = (ids < 0) | (ids >= self.vocab[feature])
        return np.where(unknown, 0, ids), int(unknown.sum())
