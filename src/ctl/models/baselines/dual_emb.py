"""``dual_emb``: Dual Embedding, the target model plus the latest source model's id embeddings (paper 4.4)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

import torch
from torch import nn

from ctl.data.batch import Batch, DomainView
from ctl.data.schema import ID_FEATURES, Schema
from ctl.models.backbone import Backbone, BackboneConfig, require_batch_keys
from ctl.models.baselines.joint import DomainPair
from ctl.models.baselines.reuse import Reuse, head_layers, reuse_parameters, same_names
from ctl.models.blocks import MlpHead
from ctl.models.blocks.embeddings import GrowingEmbedding

#: where a BaseModel state keeps its embedding tables
BASE_TABLES = "backbone.embeddings.tables"


class DualEmbedding(nn.Module):
    """The target base model with copies of the source model's four id tables as *extra* embeddings.

    ``E' = concat(E, s_user, s_item, s_category, s_seller)``: E is the target backbone's output and
    ``s_*`` are lookups in the extra tables, so the model holds two user ids, two item ids, ...;
    the MLP's first layer is wider by the extra tables' dims. Every parameter trains (on target rows
    only). The extra tables are the source model's, so they read the row's source view
    (``DomainView``): an id feature the source domain lacks is absent for them.
    ``load_source_embeddings`` re-copies the extra tables from a source model, which the protocol
    does at every period start with the latest ``h_s^t``.

    ``init_from`` starts the model as the target model exactly: the backbone and head come from the
    target model, the head's weights for the extra inputs start at zero (see
    ``ctl.models.baselines.reuse``), the extra tables come from the source model.

    Args:
        schema: the dataset's features.
        backbone: the sizes.
        source: the source domain (checked against the schema; the model reads no source rows).
        target: the target domain whose rows it trains and scores.

    Example::

        model = DualEmbedding(schema, backbone, source="A", target="B")
        model.init_from(source_model.state_dict(), target_model.state_dict())
        logits = model(batch)["logits"]  # [B]
    """

    def __init__(self, schema: Schema, backbone: BackboneConfig, source: str, target: str) -> None:
        super().__init__()
        self.pair = DomainPair(schema, source, target)
        self.source_view = DomainView(schema, source)
        self.config = backbone
        self.backbone = Backbone(schema, backbone)
        self.source_tables = nn.ModuleDict()
        for name in ID_FEATURES:
            self.source_tables[name] = GrowingEmbedding(schema.feature(name).vocab, self.backbone.embeddings.dim(name))
        extra_dim = sum(self.source_table(name).embedding_dim for name in self.source_tables)
        self.tower = MlpHead(self.backbone.out_dim + extra_dim, backbone.mlp_dims)

    def source_table(self, name: str) -> GrowingEmbedding:
        """The extra table of the id feature ``name``."""
        # nn.ModuleDict is typed as holding any module; this one holds GrowingEmbeddings only.
        return cast(GrowingEmbedding, self.source_tables[name])

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        """``{"logits": [B]}``."""
        require_batch_keys(batch, ID_FEATURES, "DualEmbedding")
        source_batch = self.source_view(batch)
        extras = [self.source_tables[name](source_batch[name]) for name in ID_FEATURES]
        logits, _ = self.tower(torch.cat([self.backbone(batch), *extras], dim=-1))
        return {"logits": logits}

    def load_source_embeddings(self, source_state: Mapping[str, torch.Tensor]) -> None:
        """Copy the four id tables of a source ``BaseModel`` state into the extra tables, in place."""
        for name in ID_FEATURES:
            key = f"{BASE_TABLES}.{name}.weight"
            if key not in source_state:
                raise ValueError(f"DualEmbedding: the source state has no {key!r}")
            table = self.source_table(name).weight
            if tuple(source_state[key].shape) != tuple(table.shape):
                raise ValueError(
                    f"DualEmbedding: the source state's {key!r} is {tuple(source_state[key].shape)}, "
                    f"the extra table is {tuple(table.shape)}"
                )
        with torch.no_grad():
            for name in ID_FEATURES:
                self.source_table(name).weight.copy_(source_state[f"{BASE_TABLES}.{name}.weight"])
                self.source_table(name).init_seed.copy_(source_state[f"{BASE_TABLES}.{name}.init_seed"])

    def init_from(
        self, source_state: Mapping[str, torch.Tensor], target_state: Mapping[str, torch.Tensor]
    ) -> dict[str, list[str]]:
        """Backbone and head <- the target model (head widened); extra tables <- the source's id tables."""
        plan = same_names("backbone.", self.backbone, "target", state_prefix="backbone.")
        plan.update(head_layers("tower.", self.tower, "target", widen_input=True))
        for name in ID_FEATURES:
            plan[f"source_tables.{name}.weight"] = Reuse("source", f"{BASE_TABLES}.{name}.weight")
            # the seed of the rows the copied table grows by: the source table's
            plan[f"source_tables.{name}.init_seed"] = Reuse("source", f"{BASE_TABLES}.{name}.init_seed")
        return reuse_parameters(self, plan, source_state, target_state)
