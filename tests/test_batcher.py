"""RowBatcher and UserHistory against a naive per-row reference; ContinualDataModule under Lightning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from conftest import make_random_dataset, random_columns, scramble_global_generators
from ctl.data.batcher import RowBatcher
from ctl.data.datamodule import ContinualDataModule
from ctl.data.dataset import Dataset, load_dataset, write_dataset
from ctl.data.history import UserHistory


@pytest.fixture
def dataset(tmp_path: Path) -> Dataset:
    return load_dataset(make_random_dataset(tmp_path, short_len=4, long_len=9))


def _reference_sequence(
    ds: Dataset, row: int, length: int, domain: int | None, category: int | None = None
) -> dict[str, list[int]]:
    """The last ``length`` visible events of the row's user (of ``domain``, of ``category``), found by a loop."""
    hist = ds.history
    user = int(ds.rows["user_id"][row])
    start = int(hist.user_offsets[user])
    events = range(start, start + int(ds.rows["hist_end"][row]))
    kept = [e for e in events if (domain is None or int(hist.domain[e]) == domain)
            and (category is None or int(hist.category[e]) == category)][-length:]
    pad = length - len(kept)
    return {
        "item": [0] * pad + [int(hist.item[e]) for e in kept],
        "category": [0] * pad + [int(hist.category[e]) for e in kept],
        "domain": [0] * pad + [int(hist.domain[e]) for e in kept],
        "mask": [False] * pad + [True] * len(kept),
    }


def _check_batch_against_reference(
    ds: Dataset, batch: dict[str, torch.Tensor], sequence_domains: list[str]
) -> None:
    schema = ds.schema
    for i, row in enumerate(batch["row"].tolist()):
        for name in schema.feature_names:
            assert batch[name][i].item() == ds.rows[name][row], name
        assert batch["label"][i].item() == float(ds.rows["label"][row])
        assert batch["domain"][i].item() == ds.rows["domain"][row]
        assert batch["period"][i].item() == ds.rows["period"][row]
        expected = _reference_sequence(ds, row, schema.short_len, int(ds.rows["domain"][row]))
        for field in ("item", "category", "mask"):
            assert batch[f"short_{field}"][i].tolist() == expected[field], (row, field)
        expected = _reference_sequence(ds, row, schema.long_len, None)
        for field in ("item", "category", "mask"):
            assert batch[f"long_{field}"][i].tolist() == expected[field], (row, field)
        expected = _reference_sequence(ds, row, schema.sim_len, None, int(ds.rows["category_id"][row]))
        for field in ("item", "category", "mask"):
            assert batch[f"sim_{field}"][i].tolist() == expected[field], (row, field)
        for name in sequence_domains:
            expected = _reference_sequence(ds, row, schema.short_len, schema.domain_index(name))
            for field in ("item", "category", "mask"):
                assert batch[f"seq_{name}_{field}"][i].tolist() == expected[field], (row, name, field)


def test_batches_match_a_per_row_reference(dataset: Dataset) -> None:
    rows = dataset.select(["A", "C"], None)
    batcher = RowBatcher(dataset, rows, batch_size=64, shuffle=True, seed=5, domain_sequences=["A", "B"])
    batches = list(batcher)
    assert len(batches) == len(batcher) == -(-rows.size // 64)
    served = torch.cat([b["row"] for b in batches]).numpy()
    np.testing.assert_array_equal(np.sort(served), rows)
    assert not np.array_equal(served, rows), "shuffle=True served the rows in their stored order"
    for batch in batches:
        _check_batch_against_reference(dataset, batch, ["A", "B"])
    # The reference must exercise truncation, padding and empty sequences.
    masks = torch.cat([b["long_mask"] for b in batches])
    assert (
        masks.all(dim=1).any() and (~masks).all(dim=1).any() and (masks.any(dim=1) & ~masks.all(dim=1)).any()
    )


def test_batch_keys_dtypes_and_shapes(dataset: Dataset) -> None:
    batch = next(
        iter(RowBatcher(dataset, np.arange(10), batch_size=8, shuffle=False, seed=0, domain_sequences=["B"]))
    )
    features = set(dataset.schema.feature_names)
    sequences = {f"{p}_{f}" for p in ("short", "seq_B", "sim") for f in ("item", "category", "mask")}
    sequences |= {f"long_{f}" for f in ("item", "category", "mask")}
    assert set(batch) == features | sequences | {"label", "domain", "period", "row"}
    assert batch["label"].dtype == torch.float32
    for key in features | {"domain", "period", "row"}:
        assert batch[key].dtype == torch.int64 and batch[key].shape == (8,), key
    assert batch["short_item"].shape == (8, 4) and batch["short_mask"].dtype == torch.bool
    assert batch["long_item"].shape == (8, 9) and batch["long_mask"].dtype == torch.bool
    assert batch["sim_item"].shape == (8, dataset.schema.sim_len) and batch["sim_mask"].dtype == torch.bool
    # SIM's search keeps events of the candidate's category only
    assert bool(((batch["sim_category"] == batch["category_id"][:, None]) | ~batch["sim_mask"]).all())
    assert batch["row"].tolist() == list(range(8))


def test_order_is_deterministic_per_seed_and_epoch(dataset: Dataset) -> None:
    rows = dataset.select(None, None)

    def order(seed: int, epoch: int) -> list[int]:
        scramble_global_generators()
        batcher = RowBatcher(dataset, rows, batch_size=100, shuffle=True, seed=seed)
        batcher.set_epoch(epoch)
        return torch.cat([b["row"] for b in batcher]).tolist()

    assert order(0, 0) == order(0, 0)
    assert order(0, 1) == order(0, 1)
    assert order(0, 0) != order(0, 1)
    assert order(0, 0) != order(1, 0)
    assert sorted(order(0, 1)) == rows.tolist()
    unshuffled = RowBatcher(dataset, rows[::-1].copy(), batch_size=100, shuffle=False, seed=0)
    assert torch.cat([b["row"] for b in unshuffled]).tolist() == rows[::-1].tolist()


@pytest.mark.parametrize("world_size", [1, 3, 4])
def test_sharding_covers_every_row_with_equal_batch_counts(dataset: Dataset, world_size: int) -> None:
    rows = dataset.select(["B"], None)
    shards = []
    for rank in range(world_size):
        batcher = RowBatcher(dataset, rows, 16, shuffle=True, seed=2, rank=rank, world_size=world_size)
        batcher.set_epoch(3)
        batches = list(batcher)
        assert (
            len(batches) == len(batcher) == len(RowBatcher(dataset, rows, 16, True, 2, world_size=world_size))
        )
        shards.append(torch.cat([b["row"] for b in batches]).numpy())
    assert len({s.size for s in shards}) == 1
    served = np.concatenate(shards)
    assert np.array_equal(np.unique(served), rows)
    assert served.size - rows.size == (-rows.size) % world_size  # only the padding repeats


def test_drop_last_drops_each_ranks_incomplete_batch(dataset: Dataset) -> None:
    rows = np.arange(100)
    batcher = RowBatcher(dataset, rows, 30, shuffle=False, seed=0, drop_last=True)
    assert [b["row"].shape[0] for b in batcher] == [30, 30, 30]
    assert [b["row"].shape[0] for b in RowBatcher(dataset, rows, 30, False, 0)] == [30, 30, 30, 10]


def test_refuses_bad_arguments(dataset: Dataset) -> None:
    with pytest.raises(ValueError, match="non-empty 1-d"):
        RowBatcher(dataset, np.array([], dtype=np.int64), 8, False, 0)
    with pytest.raises(ValueError, match=r"row indices must lie in \[0, 600\), got 0 .. 600"):
        RowBatcher(dataset, np.array([0, 600]), 8, False, 0)
    with pytest.raises(ValueError, match="unknown domain 'Q'"):
        RowBatcher(dataset, np.arange(4), 8, False, 0, domain_sequences=["Q"])
    with pytest.raises(ValueError, match="rank=2, world_size=2"):
        RowBatcher(dataset, np.arange(4), 8, False, 0, rank=2, world_size=2)


def test_gather_last_on_a_hand_made_history() -> None:
    # user 1: events (item, domain) = (10,0) (11,1) (12,0) (13,0); user 2: (20,1); users 0, 3: none.
    hist = UserHistory.from_columns(
        {
            "user_id": np.array([1, 1, 1, 1, 2]),
            "item_id": np.array([10, 11, 12, 13, 20]),
            "category_id": np.array([1, 2, 1, 3, 4]),
            "domain": np.array([0, 1, 0, 0, 1]),
            "ts": np.array([1, 2, 3, 4, 1]),
        },
        n_users=4,
        n_domains=2,
    )
    users, visible = np.array([1, 1, 2, 3]), np.array([3, 4, 1, 0])
    item, category, domain, mask = hist.gather_last(users, visible, length=2, domain=None)
    assert item.tolist() == [[11, 12], [12, 13], [0, 20], [0, 0]]
    assert domain.tolist() == [[1, 0], [0, 0], [0, 1], [0, 0]]
    assert mask.tolist() == [[True, True], [True, True], [False, True], [False, False]]
    item, category, _, mask = hist.gather_last(users, visible, length=3, domain=0)
    assert item.tolist() == [[0, 10, 12], [10, 12, 13], [0, 0, 0], [0, 0, 0]]
    assert category.tolist() == [[0, 1, 1], [1, 1, 3], [0, 0, 0], [0, 0, 0]]
    item, _, _, mask = hist.gather_last(users, visible, length=2, domain=torch.tensor([1, 0, 1, 0]))
    assert item.tolist() == [[0, 11], [12, 13], [0, 20], [0, 0]]
    with pytest.raises(ValueError, match=r"users and visible must both be \[B\]"):
        hist.gather_last(users, visible[:2], length=2, domain=None)


def test_category_search_on_a_hand_made_history() -> None:
    # user 1: (item, category) = (10,1) (11,2) (12,1) (13,3) (14,1); user 2: (20,1); user 0: none
    hist = UserHistory.from_columns(
        {
            "user_id": np.array([1, 1, 1, 1, 1, 2]),
            "item_id": np.array([10, 11, 12, 13, 14, 20]),
            "category_id": np.array([1, 2, 1, 3, 1, 1]),
            "domain": np.array([0, 1, 0, 0, 1, 1]),
            "ts": np.array([1, 2, 3, 4, 5, 1]),
        },
        n_users=3,
        n_domains=2,
    )
    users, visible = np.array([1, 1, 1, 2, 0, 1]), np.array([5, 4, 5, 1, 0, 0])
    category = np.array([1, 1, 2, 1, 1, 1])
    item, cat, domain, mask = hist.gather_category_last(users, visible, category, length=2)
    # the 5th event (14) is not visible to row 1; user 2's category-1 event is not user 1's
    assert item.tolist() == [[12, 14], [10, 12], [0, 11], [0, 20], [0, 0], [0, 0]]
    assert cat.tolist() == [[1, 1], [1, 1], [0, 2], [0, 1], [0, 0], [0, 0]]
    assert domain.tolist() == [[0, 1], [0, 0], [0, 1], [0, 1], [0, 0], [0, 0]]
    assert mask.tolist() == [[True, True], [True, True], [False, True], [False, True], [False, False],
                             [False, False]]
    with pytest.raises(ValueError, match=r"must all be \[B\]"):
        hist.gather_category_last(users, visible, category[:2], length=2)


@pytest.mark.parametrize("seed", [0, 1])
def test_category_search_equals_the_brute_force_scan_of_the_whole_history(seed: int) -> None:
    """SIM (hard) by definition: among the visible events, those of the candidate's category, the k most recent."""
    from ctl.models.blocks import SimHardRetrieval

    rng = np.random.default_rng(seed)
    n_users, n_events = 7, 600
    user = np.sort(rng.integers(0, n_users - 1, n_events))  # the last user has no events
    hist = UserHistory.from_columns(
        {"user_id": user, "item_id": rng.integers(1, 50, n_events), "category_id": rng.integers(0, 4, n_events),
         "domain": rng.integers(0, 3, n_events), "ts": np.arange(n_events)},
        n_users=n_users, n_domains=3,
    )
    rows = 200
    users = rng.integers(0, n_users, rows)
    visible = np.array([rng.integers(0, int(hist.counts()[u]) + 1) for u in users])
    candidate = rng.integers(0, 4, rows)
    k = 5
    item, category, _, mask = hist.gather_category_last(users, visible, candidate, length=k)
    # the brute force: the whole visible history as one long sequence, scanned
    whole_item, whole_category, _, whole_mask = hist.gather_last(users, visible, length=n_events, domain=None)
    index, picked = SimHardRetrieval(k)(torch.from_numpy(candidate), whole_category, whole_mask)
    for row in range(rows):
        expected = whole_item[row, index[row][picked[row]]].tolist()[::-1]  # the scan orders most recent first
        assert item[row][mask[row]].tolist() == expected
        assert mask[row].sum() == picked[row].sum()
    assert bool(((category == torch.from_numpy(candidate)[:, None]) | ~mask).all())


# --- ContinualDataModule -----------------------------------------------------------------------


class _RecordingModule(pl.LightningModule):
    """Trains one weight on the labels; records the (epoch, periods, domains) of every batch it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: dict[str, list[tuple[int, set[int], set[int]]]] = {"train": [], "val": []}

    def _record(self, stage: str, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        self.seen[stage].append(
            (self.current_epoch, set(batch["period"].tolist()), set(batch["domain"].tolist()))
        )
        return torch.nn.functional.binary_cross_entropy_with_logits(
            self.weight.expand_as(batch["label"]), batch["label"]
        )

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._record("train", batch)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._record("val", batch)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_trains_one_period_per_epoch_and_validates_the_next(dataset: Dataset) -> None:
    dm = ContinualDataModule(
        dataset, ["A", "B"], periods=[3, 4], eval_domain="B", batch_size=32, eval_batch_size=16
    )
    module = _RecordingModule()
    trainer = pl.Trainer(
        max_epochs=2,
        reload_dataloaders_every_n_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule=dm)
    for epoch, period in enumerate([3, 4]):
        train = [(periods, domains) for e, periods, domains in module.seen["train"] if e == epoch]
        n_rows = dataset.select(["A", "B"], [period]).size
        assert len(train) == -(-n_rows // 32)
        assert set().union(*(p for p, _ in train)) == {period}
        assert set().union(*(d for _, d in train)) == {0, 1}
        val = [(periods, domains) for e, periods, domains in module.seen["val"] if e == epoch]
        assert len(val) == -(-dataset.select(["B"], [period + 1]).size // 16)
        assert set().union(*(p for p, _ in val)) == {period + 1}
        assert set().union(*(d for _, d in val)) == {1}


def test_datamodule_standalone_serves_epoch_zero_and_the_test_slice(dataset: Dataset) -> None:
    dm = ContinualDataModule(dataset, ["C"], periods=[2, 3, 4], eval_domain="C", batch_size=8, seed=1)
    assert [dm.period_of_epoch(e) for e in range(3)] == [2, 3, 4]
    served = torch.cat([b["row"] for b in dm.train_dataloader()]).numpy()
    np.testing.assert_array_equal(np.sort(served), dataset.select(["C"], [2]))
    val_rows = torch.cat([b["row"] for b in dm.val_dataloader()]).numpy()
    np.testing.assert_array_equal(val_rows, dataset.select(["C"], [3]))
    test_rows = torch.cat([b["row"] for b in dm.test_dataloader()]).numpy()
    np.testing.assert_array_equal(test_rows, dataset.select(["C"], [5]))
    predict_rows = torch.cat([b["row"] for b in dm.predict_dataloader()]).numpy()
    np.testing.assert_array_equal(predict_rows, test_rows)
    with pytest.raises(ValueError, match=r"epoch 3 has no period; periods \[2, 3, 4\] cover epochs 0..2"):
        dm.period_of_epoch(3)


def test_datamodule_refuses_unknown_domains_periods_and_empty_slices(
    dataset: Dataset, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="unknown domain 'D'"):
        ContinualDataModule(dataset, ["D"], periods=[3], eval_domain="B")
    with pytest.raises(ValueError, match="unknown domain 'X'"):
        ContinualDataModule(dataset, ["B"], periods=[3], eval_domain="X")
    with pytest.raises(ValueError, match=r"periods \[5, -1\] are outside the trainable layout \[0, 4\]"):
        ContinualDataModule(dataset, ["B"], periods=[3, 5, -1], eval_domain="B")
    with pytest.raises(ValueError, match="periods is empty"):
        ContinualDataModule(dataset, ["B"], periods=[], eval_domain="B")
    schema, rows, history = random_columns()
    keep = ~((rows["domain"] == 2) & (rows["period"] == 4))
    gap = load_dataset(
        write_dataset(tmp_path / "gap", schema, {k: v[keep] for k, v in rows.items()}, history, {})
    )
    with pytest.raises(
        ValueError, match=r"the train slice \(domains \['C'\], period 4\) of .*gap has no rows"
    ):
        ContinualDataModule(gap, ["C"], periods=[3, 4], eval_domain="B")
    with pytest.raises(ValueError, match=r"the validation slice \(domains \['C'\], period 4\)"):
        ContinualDataModule(gap, ["B"], periods=[3], eval_domain="C")
