"""A feature only the target domain has is absent for every model that reads target rows as the source model.

The source model only ever saw id 0 for such a feature (its rows never carry it): its embedding
row 0 is zeros and its BatchNorm statistics were gathered with it, while the other rows of the
table were never trained.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import random_columns
from ctl.data.batch import DomainView
from ctl.data.dataset import load_dataset, write_dataset
from ctl.data.schema import Feature, Schema
from ctl.models.base import BaseModel
from ctl.models.baselines import DualEmbedding
from ctl.models.ctnet import CTNet
from ctl.training.protocols.source import score_rows
from hand_made import make_schema, small_backbone
from test_models import make_batch, make_trained_looking

TARGET = "B"
TARGET_ONLY = "b_only"


def with_target_only(schema: Schema) -> Schema:
    """``schema`` plus a feature that only the target domain's rows carry."""
    feature = Feature(TARGET_ONLY, "categorical", 7, 4, (TARGET,))
    return dataclasses.replace(schema, features=(*schema.features, feature))


def target_batch(schema: Schema, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random rows, all of the target domain, every feature the target has set to a real id."""
    batch = make_batch(schema, batch_size=16, seed=seed)
    batch["domain"] = torch.full_like(batch["domain"], schema.domain_index(TARGET))
    generator = torch.Generator().manual_seed(seed + 100)
    for feature in schema.features:
        ids = torch.randint(1, feature.vocab, batch[feature.name].shape, generator=generator)
        batch[feature.name] = ids if TARGET in feature.domains else torch.zeros_like(ids)
    return batch


def other_target_only_ids(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same rows with a different real id of the target-only feature on every row."""
    changed = dict(batch)
    changed[TARGET_ONLY] = batch[TARGET_ONLY] % 6 + 1  # ids 1..6 -> 2..6, 1: never the same
    assert bool((changed[TARGET_ONLY] != batch[TARGET_ONLY]).all())
    return changed


def test_the_source_view_sets_target_only_features_to_the_absent_id() -> None:
    schema = with_target_only(make_schema())
    batch = target_batch(schema)
    original = {key: value.clone() for key, value in batch.items()}
    view = DomainView(schema, schema.source)(batch)

    assert DomainView(schema, schema.source).absent == (TARGET_ONLY,)
    assert torch.equal(view[TARGET_ONLY], torch.zeros(16, dtype=torch.int64))
    for key, value in original.items():
        assert torch.equal(batch[key], value), f"the view changed the batch's {key!r}"
        if key != TARGET_ONLY:
            assert view[key] is batch[key], key
    # the target reads its own rows as they are, except the source-only feature, already 0 there
    assert DomainView(schema, TARGET).absent == ("a_only",)


def test_a_domain_that_has_every_feature_reads_the_batch_itself() -> None:
    schema = make_schema()
    batch = make_batch(schema)
    assert DomainView(schema, schema.source)(batch) is batch
    with pytest.raises(ValueError, match="unknown domain 'D'"):
        DomainView(schema, "D")


@pytest.mark.parametrize("share_attention", [False, True])
def test_ctnet_source_tower_ignores_target_only_features_and_the_target_tower_reads_them(
    share_attention: bool,
) -> None:
    torch.manual_seed(0)
    schema = with_target_only(make_schema())
    source = make_trained_looking(BaseModel(schema, small_backbone()), seed=20)
    target = make_trained_looking(BaseModel(schema, small_backbone()), seed=21)
    net = CTNet(schema, small_backbone(), adapter_init_std=0.3, share_attention=share_attention)
    net.source.load_state_dict(source.state_dict())
    net.target.load_state_dict(target.state_dict())
    net.eval()
    batch = target_batch(schema)
    changed = other_target_only_ids(batch)

    hiddens, shared = net.source_states(batch)
    changed_hiddens, changed_shared = net.source_states(changed)
    for layer, (before, after) in enumerate(zip(hiddens, changed_hiddens, strict=True)):
        torch.testing.assert_close(after, before, rtol=0, atol=0, msg=f"z_s^{layer}")
    if share_attention:
        torch.testing.assert_close(changed_shared, shared, rtol=0, atol=0)
    # the source tower reads what the source model reads on its own: the feature absent
    expected, _ = net.source.head(net.source.features(DomainView(schema, schema.source)(batch)))
    source_alone = source.eval()
    torch.testing.assert_close(source_alone(DomainView(schema, schema.source)(batch)), expected)

    assert (net(changed) - net(batch)).abs().max() > 1e-3, "the target tower must read the target-only feature"


def test_dual_embedding_source_tables_ignore_an_id_feature_the_source_lacks() -> None:
    torch.manual_seed(0)
    base = make_schema()
    # a source domain without sellers: the seller id is a target-only feature
    features = tuple(
        dataclasses.replace(f, domains=("B", "C")) if f.name == "seller_id" else f for f in base.features
    )
    schema = dataclasses.replace(base, features=features)
    model = DualEmbedding(schema, small_backbone(), source="A", target=TARGET).train()
    batch = make_batch(schema, batch_size=16)
    batch["domain"] = torch.full_like(batch["domain"], schema.domain_index(TARGET))
    batch["seller_id"] = torch.randint(1, schema.feature("seller_id").vocab, (16,))
    F.binary_cross_entropy_with_logits(model(batch)["logits"], batch["label"]).backward()

    seller = model.source_tables["seller_id"].weight
    assert torch.equal(seller.grad, torch.zeros_like(seller))
    assert model.source_tables["user_id"].weight.grad.abs().sum() > 0
    assert model.backbone.embeddings.tables["seller_id"].weight.grad.abs().sum() > 0


def write_with_target_only(folder: Path, seed: int) -> Path:
    """The conftest random dataset plus a target-only feature drawn with ``seed`` (all else equal)."""
    schema, rows, history = random_columns(seed=0)
    schema = with_target_only(schema)
    rng = np.random.default_rng(seed)
    on_target = rows["domain"] == schema.domain_index(TARGET)
    rows[TARGET_ONLY] = np.where(on_target, rng.integers(1, 7, size=on_target.size), 0)
    return write_dataset(folder, schema, rows, history, {"generator": "tests.test_source_view", "seed": seed})


def test_the_source_method_scores_target_rows_without_target_only_features(tmp_path: Path) -> None:
    first = load_dataset(write_with_target_only(tmp_path / "first", seed=1))
    second = load_dataset(write_with_target_only(tmp_path / "second", seed=2))
    schema = first.schema
    rows = first.select([TARGET], None)
    assert not np.array_equal(first.rows[TARGET_ONLY][rows], second.rows[TARGET_ONLY][rows])
    torch.manual_seed(0)
    model = make_trained_looking(BaseModel(schema, small_backbone(embed_dim=8)), seed=22)

    view = DomainView(schema, schema.source)
    metrics, predictions = score_rows(model, first, rows, batch_size=64, view=view)
    same_metrics, same_predictions = score_rows(model, second, rows, batch_size=64, view=view)
    assert metrics == same_metrics
    np.testing.assert_array_equal(predictions["pred"], same_predictions["pred"])
    # read as the target would, the feature moves the scores: the view is what hides it
    _, target_read = score_rows(model, first, rows, batch_size=64, view=DomainView(schema, TARGET))
    _, other_target_read = score_rows(model, second, rows, batch_size=64, view=DomainView(schema, TARGET))
    assert np.abs(target_read["pred"] - other_target_read["pred"]).max() > 1e-4
