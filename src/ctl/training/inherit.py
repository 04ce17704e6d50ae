"""A transfer model's starting weights, assembled from the production models' state dicts.

Every tensor of the new model's ``state_dict`` comes from one *origin*: the source production
model's state, the target production model's state, or ``fresh`` (the new model's own seeded
init). The assembly copies in place and returns an :class:`Inheritance` listing which tensors came
from where; runs write it into ``metrics.json`` under ``inherited``.

Fine-tuning variants (paper 4.2, MODELS.md) choose origins by feature:

* ``id_embeddings``: the four id tables from the source, everything else from the target;
* ``shared_embeddings``: the table of every feature both domains' rows carry from the source;
* ``all``: everything from the source, except the tables of features only the target has, which
  start fresh (the source never trained them).

Without a target state (fine-tuning over the whole target history starts before any target
model exists) what would come from the target starts fresh instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import torch

from ctl.data.schema import ID_FEATURES, Schema
from ctl.errors import CtlError

Origin = Literal["source", "target", "fresh"]
ORIGINS: tuple[str, ...] = ("source", "target", "fresh")

#: where a ``BaseModel`` keeps its embedding tables
BASE_EMBEDDING_PREFIX = "backbone.embeddings.tables."

FINETUNE_COPIES: tuple[str, ...] = ("id_embeddings", "shared_embeddings", "all")


@dataclass
class Inheritance:
    """Which state tensors (by name in the new model) came from which origin."""

    copied_from_source: list[str] = field(default_factory=list)
    copied_from_target: list[str] = field(default_factory=list)
    fresh: list[str] = field(default_factory=list)

    @classmethod
    def from_report(cls, report: Mapping[str, Iterable[str]]) -> Inheritance:
        """Read a model's own ``init_from`` report (same three keys)."""
        unknown = set(report) - {"copied_from_source", "copied_from_target", "fresh"}
        if unknown:
            raise ValueError(f"Inheritance: unknown report keys {sorted(unknown)}")
        return cls(*(sorted(report.get(key, ())) for key in ("copied_from_source", "copied_from_target", "fresh")))

    def as_dict(self) -> dict[str, list[str]]:
        return {"copied_from_source": list(self.copied_from_source),
                "copied_from_target": list(self.copied_from_target),
                "fresh": list(self.fresh)}


def embedding_key(feature: str, prefix: str = BASE_EMBEDDING_PREFIX) -> str:
    """State key of ``feature``'s embedding table."""
    return f"{prefix}{feature}.weight"


def shared_features(schema: Schema, source: str, target: str) -> tuple[str, ...]:
    """Features that the rows of both domains carry."""
    return tuple(f.name for f in schema.features if source in f.domains and target in f.domains)


def features_only_in(schema: Schema, domain: str, other: str) -> tuple[str, ...]:
    """Features that ``domain``'s rows carry and ``other``'s do not."""
    return tuple(f.name for f in schema.features if domain in f.domains and other not in f.domains)


def finetune_origins(keys: Iterable[str], schema: Schema, source: str, target: str, copy: str,
                     has_target: bool, prefix: str = BASE_EMBEDDING_PREFIX) -> dict[str, Origin]:
    """Origin of every state key of a fine-tuned base model (see the module docstring)."""
    if copy not in FINETUNE_COPIES:
        raise ValueError(f"finetune_origins: copy must be one of {FINETUNE_COPIES}, got {copy!r}")
    schema.domain_index(source)
    schema.domain_index(target)
    keys = list(keys)
    rest: Origin = "target" if has_target else "fresh"
    if copy == "all":
        fresh = {embedding_key(name, prefix) for name in features_only_in(schema, target, source)}
        return {key: ("fresh" if key in fresh else "source") for key in keys}
    features = ID_FEATURES if copy == "id_embeddings" else shared_features(schema, source, target)
    from_source = {embedding_key(name, prefix) for name in features}
    missing = sorted(from_source - set(keys))
    if missing:
        raise ValueError(f"finetune_origins: the model has no embedding table {missing[0]!r}")
    return {key: ("source" if key in from_source else rest) for key in keys}


def assemble_state(module: torch.nn.Module, origins: Mapping[str, str],
                   states: Mapping[str, Mapping[str, torch.Tensor]], names: Mapping[str, str]) -> Inheritance:
    """Copy into ``module`` (in place) each state tensor from the state its origin names.

    Args:
        module: the new model, freshly initialised; ``fresh`` tensors keep that init.
        origins: state key -> ``source`` | ``target`` | ``fresh``, for every key of the module's state.
        states: origin -> that production model's state dict (only the origins used are needed).
        names: origin -> a description of that state for messages (e.g. its checkpoint path).

    Raises:
        CtlError: a key without an origin, an origin without a state, a tensor the state lacks, or
            a shape mismatch, each naming the parameter.
    """
    own = module.state_dict()
    unplanned = [key for key in own if key not in origins]
    unknown = [key for key in origins if key not in own]
    if unplanned or unknown:
        detail = f"{unplanned[0]!r} has no origin" if unplanned else f"{unknown[0]!r} is not in the model"
        raise CtlError(f"assemble_state: {detail}")
    inheritance = Inheritance()
    lists = {"source": inheritance.copied_from_source, "target": inheritance.copied_from_target,
             "fresh": inheritance.fresh}
    copied: dict[str, torch.Tensor] = {}
    for key, origin in origins.items():
        if origin not in ORIGINS:
            raise CtlError(f"assemble_state: origin {origin!r} of {key!r} is not one of {ORIGINS}")
        lists[origin].append(key)
        if origin == "fresh":
            continue
        if origin not in states:
            raise CtlError(f"assemble_state: {key!r} comes from the {origin} model, but no {origin} state was given")
        state, name = states[origin], names.get(origin, origin)
        if key not in state:
            raise CtlError(f"the {origin} model ({name}) has no tensor {key!r}; "
                           "was it trained with another model size or dataset schema?")
        if tuple(state[key].shape) != tuple(own[key].shape):
            raise CtlError(f"the {origin} model ({name}) does not fit: {key!r} has shape {tuple(state[key].shape)} "
                           f"there but {tuple(own[key].shape)} in the new model")
        copied[key] = state[key]
    with torch.no_grad():
        module.load_state_dict(copied, strict=False)
    return inheritance

