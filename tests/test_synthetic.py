"""The built-in synthetic world: reproducibility, the data contract, and its mechanisms."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from ctl.data.dataset import HISTORY_FILE, META_FILE, ROWS_FILE, load_dataset
from ctl.data.synthetic import DomainSpec, SyntheticWorld
from ctl.data.synthetic.pools import CategoryPool, Urn
from ctl.data.synthetic.simulation import Simulation
from ctl.data.synthetic.streams import stable_hash, stream

CONF = Path(__file__).resolve().parents[1] / "src" / "ctl" / "conf" / "data"
PRESETS = ("synthetic_tiny", "synthetic", "synthetic_paper")


def tiny_world(**changes) -> SyntheticWorld:
    """The ``synthetic_tiny`` preset's generator, with knobs overridden (dotted keys)."""
    cfg = OmegaConf.load(CONF / "synthetic_tiny.yaml").generator
    for key, value in changes.items():
        OmegaConf.update(cfg, key, value)
    knobs = OmegaConf.to_container(cfg)
    assert knobs.pop("_target_") == "ctl.data.synthetic.SyntheticWorld"
    return SyntheticWorld(**knobs)


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory) -> Path:
    return tiny_world().generate(tmp_path_factory.mktemp("world") / "tiny", progress=False)


@pytest.fixture(scope="module")
def tiny_sample():
    return tiny_world().simulate(with_logits=True)


def _auc(score: np.ndarray, label: np.ndarray) -> float:
    """Rank-sum AUC with tied scores at their average rank."""
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]
    positive = label.astype(bool)
    n_pos, n_neg = positive.sum(), (~positive).sum()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


# --- configs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_has_the_data_keys_and_builds_a_world(preset):
    cfg = OmegaConf.load(CONF / f"{preset}.yaml")
    assert cfg.name == preset
    assert cfg.domain == "B" and cfg.batch_size == 512 and cfg.eval_batch_size == 4096
    world = instantiate(cfg.generator)
    assert isinstance(world, SyntheticWorld)
    schema = world.schema()
    assert schema.domains == ("A", "B", "C") and schema.source == "A"
    assert schema.feature("scene_id").domains == ("A",)
    # Every knob is spelled out in the YAML: nothing falls back to a constructor default.
    assert set(OmegaConf.to_container(cfg.generator)) - {"_target_"} == set(world.config())


def test_default_preset_matches_constructor_defaults():
    from_yaml = instantiate(OmegaConf.load(CONF / "synthetic.yaml").generator)
    assert from_yaml.config() == SyntheticWorld().config()


def test_default_preset_gives_the_target_models_enough_steps_and_the_test_slice_enough_rows():
    cfg = OmegaConf.load(CONF / "synthetic.yaml")
    world = SyntheticWorld()
    batch = int(cfg.batch_size)
    steps = {name: -(-spec.rows_per_period // batch) for name, spec in world.domains.items()}
    # a well-trained production model: >= 10 optimiser steps a period on B, >= 3 on C
    assert steps["B"] >= 10 and steps["C"] >= 3
    assert world.n_history >= 24
    # C is the newer, sparser domain: fewer rows per visiting user, more recently launched items
    b, c = world.domains["B"], world.domains["C"]
    assert c.rows_per_period / c.user_share < 0.5 * b.rows_per_period / b.user_share
    assert c.recent_item_share >= 10 * b.recent_item_share
    # the source domain is the big one; its whole history stays within a demo's budget
    a_training_rows = world.domains["A"].rows_per_period * (world.n_history + world.n_transfer)
    assert world.domains["A"].rows_per_period >= 9 * b.rows_per_period
    assert 1_000_000 <= a_training_rows <= 2_000_000
    assert b.test_rows >= 40_000 and c.test_rows >= 20_000


def test_sparse_preset_keeps_the_first_default_world():
    sparse = instantiate(OmegaConf.load(CONF / "synthetic_sparse.yaml").generator)
    rows = {name: spec.rows_per_period for name, spec in sparse.domains.items()}
    assert rows == {"A": 72_000, "B": 1_200, "C": 360}
    assert rows["A"] / rows["B"] == 60 and rows["A"] / rows["C"] == 200
    assert (sparse.domains["B"].test_rows, sparse.domains["C"].test_rows) == (6_000, 3_000)
    assert {spec.offset_persistence for spec in sparse.domains.values()} == {1.0}


def test_refuses_rows_that_do_not_fill_whole_requests():
    with pytest.raises(
        ValueError, match=r"domains\.B\.rows_per_period=61 is not a multiple of items_per_request=6"
    ):
        tiny_world(**{"domains.B.rows_per_period": 61})


def test_refuses_unknown_and_missing_domain_keys():
    with pytest.raises(
        ValueError, match=r"domains\.C has unknown keys \['qualty_weight'\] and lacks keys \[\]"
    ):
        tiny_world(**{"domains.C.qualty_weight": 0.1})
    spec = SyntheticWorld().domains["B"]
    with pytest.raises(ValueError, match=r"source 'X' is not one of the domains \['A', 'B'\]"):
        SyntheticWorld(domains={"A": spec, "B": spec}, source="X")
    with pytest.raises(ValueError, match=r"DomainSpec.recent_item_share must lie in \[0, 1\], got 1.5"):
        replace(spec, recent_item_share=1.5)


# --- reproducibility ---------------------------------------------------------------------------


def test_same_config_gives_identical_files(tiny_path, tmp_path):
    again = tiny_world().generate(tmp_path / "again", progress=False)
    for name in (ROWS_FILE, HISTORY_FILE, META_FILE):
        assert (again / name).read_bytes() == (tiny_path / name).read_bytes(), name


def test_another_seed_gives_another_world(tiny_path, tmp_path):
    other = tiny_world(seed=1).generate(tmp_path / "other", progress=False)
    assert (other / ROWS_FILE).read_bytes() != (tiny_path / ROWS_FILE).read_bytes()
    assert (other / HISTORY_FILE).read_bytes() != (tiny_path / HISTORY_FILE).read_bytes()


def test_more_transfer_periods_leave_period_zero_unchanged(tiny_sample):
    longer = tiny_world(n_transfer=3).simulate()
    short_rows, long_rows = tiny_sample.rows, longer.rows
    short_first, long_first = short_rows["period"] == 0, long_rows["period"] == 0
    for column in short_rows:
        np.testing.assert_array_equal(
            short_rows[column][short_first], long_rows[column][long_first], err_msg=column
        )


def test_a_target_domain_size_does_not_move_the_source_impressions(tiny_sample):
    bigger_c = tiny_world(**{"domains.C.rows_per_period": 60}).simulate()
    source = tiny_sample.rows["domain"] == 0
    source_bigger = bigger_c.rows["domain"] == 0
    for column in ("user_id", "item_id", "ts", "scene_id"):
        np.testing.assert_array_equal(tiny_sample.rows[column][source], bigger_c.rows[column][source_bigger])
    # The click labels of A still react to C's clicks (shared recent behaviour), but stay close.
    changed = np.mean(tiny_sample.rows["label"][source] != bigger_c.rows["label"][source_bigger])
    assert changed < 0.05


def test_streams_are_stable_and_independent():
    # known values: the same in every process and on every machine, unlike hash() of a str
    assert stable_hash("impressions/A") == 16377376725854704701
    assert stable_hash("impressions/B") == 1348494373560243248
    assert stable_hash("") == 13020603013274838756
    first = stream(7, "clicks/B", 3).random(4)
    np.testing.assert_array_equal(first, [0.5484293764303023, 0.14644191669647466, 0.6541760703353847,
                                          0.1341712809554244])
    assert not np.allclose(first, stream(7, "clicks/B", 4).random(4))
    assert not np.allclose(first, stream(7, "clicks/C", 3).random(4))
    with pytest.raises(ValueError, match="seed and index must be >= 0"):
        stream(-1, "x", 0)


# --- the data contract -------------------------------------------------------------------------


def test_dataset_loads_validated_with_the_worlds_schema(tiny_path):
    world = tiny_world()
    ds = load_dataset(tiny_path)
    assert ds.schema == world.schema()
    assert ds.meta["provenance"]["config"] == world.config()
    expected = sum(
        spec.rows_per_period * world.n_history + spec.rows_per_period * world.n_transfer + spec.test_rows
        for spec in world.domains.values()
    )
    assert ds.n_rows == expected


def test_rows_per_domain_and_period_follow_the_config(tiny_sample):
    world = tiny_world()
    rows = tiny_sample.rows
    for d, spec in enumerate(world.domains.values()):
        counts = np.bincount(rows["period"][rows["domain"] == d], minlength=world.n_periods)
        expected = [spec.rows_per_period] * (world.n_periods - 1) + [spec.test_rows]
        assert counts.tolist() == expected


def test_source_only_feature_is_present_on_source_rows_only(tiny_sample):
    rows = tiny_sample.rows
    on_source = rows["domain"] == 0
    assert (rows["scene_id"][on_source] >= 1).all()
    assert (rows["scene_id"][~on_source] == 0).all()


def test_ids_are_real_and_within_the_vocabulary(tiny_sample):
    schema = tiny_world().schema()
    for feature in schema.features:
        values = tiny_sample.rows[feature.name][
            np.isin(tiny_sample.rows["domain"], [schema.domain_index(d) for d in feature.domains])
        ]
        assert values.min() >= 1 and values.max() < feature.vocab, feature.name


def test_history_is_the_lifelong_log_with_every_click_in_user_time_order(tiny_sample):
    rows, history = tiny_sample.rows, tiny_sample.history
    clicked = rows["label"] == 1
    as_events = np.stack([rows[c][clicked] for c in ("user_id", "item_id", "domain", "ts")], axis=1)
    in_history = np.stack([history[c] for c in ("user_id", "item_id", "domain", "ts")], axis=1)
    # Every click is an event (as often as it was clicked), among far more behaviour events.
    events, counts = np.unique(in_history, axis=0, return_counts=True)
    logged = dict(zip(map(tuple, events), counts, strict=True))
    clicks, click_counts = np.unique(as_events, axis=0, return_counts=True)
    assert all(logged.get(tuple(c), 0) >= n for c, n in zip(clicks, click_counts, strict=True))
    assert in_history.shape[0] > 50 * as_events.shape[0]
    key = history["user_id"] * 10**12 + history["ts"]
    assert (np.diff(key) >= 0).all()
    # The pre-history lies before period 0; the events are in the domains their users visit.
    world, sim = tiny_world(), Simulation(tiny_world())
    first = -world.prehistory_periods * world.period_seconds
    assert history["ts"].min() >= first and (history["ts"] < 0).mean() > 0.3
    assert sim.users.in_domain[history["domain"], history["user_id"]].all()
    np.testing.assert_array_equal(history["category_id"], sim.items.category[history["item_id"]])


def test_hist_end_counts_exactly_the_events_before_the_impression(tiny_sample):
    rows, history = tiny_sample.rows, tiny_sample.history
    # Reference: per row, its user's events with an earlier ts, counted by a search of (user, ts) keys.
    key = history["user_id"] * 10**12 + history["ts"]
    assert (np.diff(key) >= 0).all()
    user = rows["user_id"]
    reference = np.searchsorted(key, user * 10**12 + rows["ts"], side="left") - np.searchsorted(
        key, user * 10**12 - 10**11, side="left"
    )
    np.testing.assert_array_equal(rows["hist_end"], reference)
    # spot checks by brute force
    for r in np.random.default_rng(0).choice(user.size, 50, replace=False):
        assert rows["hist_end"][r] == np.sum((history["user_id"] == user[r]) & (history["ts"] < rows["ts"][r]))
    assert rows["hist_end"].max() > 0
    # The boundary: the last visible event is earlier, the next one (of the same user) is not.
    start = np.searchsorted(history["user_id"], rows["user_id"], side="left")
    stop = np.searchsorted(history["user_id"], rows["user_id"], side="right")
    last = start + rows["hist_end"] - 1
    has_last = rows["hist_end"] > 0
    assert (history["ts"][last[has_last]] < rows["ts"][has_last]).all()
    has_next = start + rows["hist_end"] < stop
    assert (history["ts"][(start + rows["hist_end"])[has_next]] >= rows["ts"][has_next]).all()


# --- mechanisms --------------------------------------------------------------------------------


def test_new_items_and_users_appear_in_every_period(tiny_sample):
    rows, launch, arrival = tiny_sample.rows, tiny_sample.item_launch, tiny_sample.user_arrival
    n_periods = tiny_world().n_periods
    for period in range(n_periods):
        in_period = rows["period"] == period
        assert (launch[rows["item_id"][in_period]] == period).any(), period
        assert rows["item_id"][in_period].max() > rows["item_id"][rows["period"] < period].max(initial=0)
    late = arrival[rows["user_id"]] >= 0
    assert np.unique(rows["period"][late]).size == n_periods


@pytest.mark.parametrize("share", [0.0, 1.0])
def test_recent_item_share_sets_the_share_of_recently_launched_items(share):
    sample = tiny_world(**{"domains.C.recent_item_share": share}).simulate()
    rows = sample.rows
    on_c = rows["domain"] == 2
    age = rows["period"][on_c] - sample.item_launch[rows["item_id"][on_c]]
    assert np.mean(age < 2) == share


def test_clicks_follow_the_true_logits(tiny_sample):
    rows = tiny_sample.rows
    on_source = rows["domain"] == 0
    auc = _auc(tiny_sample.oracle_logit[on_source], rows["label"][on_source])
    assert 0.65 < auc < 0.95
    ctr = rows["label"][on_source].mean()
    predicted = np.mean(1.0 / (1.0 + np.exp(-tiny_sample.oracle_logit[on_source])))
    assert ctr == pytest.approx(predicted, abs=0.03)


def test_source_logits_on_source_rows_are_the_oracle_without_the_scene(tiny_sample):
    rows = tiny_sample.rows
    on_source = rows["domain"] == 0
    difference = tiny_sample.oracle_logit[on_source] - tiny_sample.source_view_logit[on_source]
    # The only term the source view leaves out is the scene effect, one value per scene.
    scenes = rows["scene_id"][on_source]
    for scene in np.unique(scenes):
        assert np.ptp(difference[scenes == scene]) < 1e-9
    assert np.unique(np.round(difference, 9)).size > 1


# --- samplers ----------------------------------------------------------------------------------


def test_urn_draws_in_proportion_to_integer_weights():
    urn = Urn(np.array([3, 5, 9]), np.array([1, 2, 7]))
    draws = urn.sample(np.random.default_rng(0).random(100_000))
    share = np.array([(draws == i).mean() for i in (3, 5, 9)])
    np.testing.assert_allclose(share, [0.1, 0.2, 0.7], atol=0.01)
    assert urn.sample(np.array([0.0, np.nextafter(1.0, 0.0)])).tolist() == [3, 9]


def test_category_pool_stays_in_the_category_and_falls_back_when_empty():
    items = np.array([10, 11, 12, 13])
    pool = CategoryPool(
        items, categories=np.array([1, 1, 2, 2]), popularity=np.array([1, 3, 1, 1]), n_categories=3
    )
    uniforms = np.random.default_rng(0).random(40_000)
    from_one = pool.sample(np.full(uniforms.size, 1), uniforms)
    assert set(from_one.tolist()) == {10, 11}
    assert (from_one == 11).mean() == pytest.approx(0.75, abs=0.01)
    from_empty = pool.sample(np.full(uniforms.size, 3), uniforms)
    assert set(from_empty.tolist()) == {10, 11, 12, 13}
    with pytest.raises(ValueError, match="weights must be integers >= 1"):
        CategoryPool(items, np.array([1, 1, 2, 2]), np.array([1, 0, 1, 1]), n_categories=3)


def test_domain_spec_round_trips_through_a_mapping():
    spec = SyntheticWorld().domains["C"]
    world = SyntheticWorld(domains={"A": SyntheticWorld().domains["A"], "C": spec.to_dict()})
    assert world.domains["C"] == spec
    assert isinstance(world.domains["C"], DomainSpec)


def test_offset_persistence_ages_offsets_and_biases_of_its_domain_only_and_keeps_their_spread():
    rho, scale, bias_scale = 0.8, 1.0, 0.5
    world = tiny_world(
        n_users=20000,
        n_items=20000,
        **{
            "domains.B.offset_persistence": rho,
            "domains.B.user_offset_scale": scale,
            "domains.B.item_bias_scale": bias_scale,
        },
    )
    sim = Simulation(world)
    b, c = sim.names.index("B"), sim.names.index("C")
    offset0, bias0 = sim.users.offset[b].copy(), sim.items.domain_bias[b].copy()
    untouched = sim.users.offset[c].copy(), sim.items.domain_bias[c].copy()
    for period in range(world.n_periods):
        sim._advance(period)
    steps = world.n_periods - 1  # period 0 starts the world, every later one ages it once
    first_users, first_items = slice(1, world.n_users + 1), slice(1, world.n_items + 1)
    offset, bias = sim.users.offset[b][first_users], sim.items.domain_bias[b][first_items]
    d = world.latent_dim
    assert offset.std() == pytest.approx(scale / np.sqrt(d), rel=0.03)
    assert bias.std() == pytest.approx(bias_scale, rel=0.03)
    corr = np.corrcoef(offset.ravel(), offset0[first_users].ravel())[0, 1]
    assert corr == pytest.approx(rho**steps, abs=0.02)
    assert np.corrcoef(bias, bias0[first_items])[0, 1] == pytest.approx(rho**steps, abs=0.02)
    # the users arriving in the last period have not been aged yet
    last = slice(world.total_users - world.new_users_per_period + 1, world.total_users + 1)
    np.testing.assert_array_equal(sim.users.offset[b][last], offset0[last])
    np.testing.assert_array_equal(sim.users.offset[c], untouched[0])
    np.testing.assert_array_equal(sim.items.domain_bias[c], untouched[1])
    np.testing.assert_array_equal(sim.domain_interest[b], sim.users.offset[b] + sim.interest)


def test_full_offset_persistence_is_the_world_without_the_knob(tiny_path, tmp_path):
    world = tiny_world(**{"domains.B.offset_persistence": 1.0, "domains.C.offset_persistence": 1.0})
    assert world.config() == tiny_world().config()
    again = world.generate(tmp_path / "explicit", progress=False)
    for name in (ROWS_FILE, HISTORY_FILE, META_FILE):
        assert (again / name).read_bytes() == (tiny_path / name).read_bytes()
    aged = tiny_world(**{"domains.B.offset_persistence": 0.5}).simulate()
    assert not np.array_equal(aged.rows["label"], tiny_world().simulate().rows["label"])


def test_refuses_an_offset_persistence_outside_zero_one():
    with pytest.raises(ValueError, match=r"offset_persistence must lie in \[0, 1\], got 1.5"):
        tiny_world(**{"domains.C.offset_persistence": 1.5})


# --- lifelong behaviour logs -------------------------------------------------------------------


def test_presets_set_the_long_window_and_nothing_caps_it():
    long_len = {"synthetic_tiny": 64, "synthetic_sparse": 256, "synthetic": 256, "synthetic_paper": 16384}
    for preset, expected in long_len.items():
        world = instantiate(OmegaConf.load(CONF / f"{preset}.yaml").generator)
        assert world.schema().long_len == expected, preset
    assert tiny_world(long_len=1_000_000).schema().long_len == 1_000_000


def test_tiny_world_rows_see_hundreds_of_events_heavy_tailed_in_activity(tiny_sample):
    rows, history = tiny_sample.rows, tiny_sample.history
    test = rows["period"] == tiny_world().n_periods - 1
    # most test rows see more events than the long window (64): retrieval picks k of more than k
    assert rows["hist_end"][test].mean() >= 200
    assert np.mean(rows["hist_end"][test] > 64) > 0.6
    per_user = np.bincount(history["user_id"])[1:]
    per_user = per_user[per_user > 0]
    assert np.percentile(per_user, 99) >= 10 * np.median(per_user)
    assert per_user.max() >= 2_000
    # the count follows activity ** exponent: log-counts rise with log-activity at about that slope
    sim = Simulation(tiny_world())
    users = np.flatnonzero(sim.users.arrival < 0)[1:]
    slope = np.polyfit(np.log(sim.users.activity[users]), np.log1p(np.bincount(history["user_id"],
                       minlength=users.max() + 1)[users]), 1)[0]
    assert slope == pytest.approx(tiny_world().event_activity_exponent, abs=0.25)


def test_events_grow_with_events_per_period_and_the_prehistory():
    base = tiny_world().simulate().history["user_id"].size
    assert tiny_world(events_per_period=10.0).simulate().history["user_id"].size > 1.8 * base
    no_past = tiny_world(prehistory_periods=0).simulate().history
    assert no_past["ts"].min() >= 0
    assert no_past["user_id"].size < 0.7 * base


def _category_seen(rows: dict, history: dict, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row: its candidate's category is among the last ``window`` visible events / among the
    older visible events (a search of (user, category, position) keys)."""
    user = history["user_id"]
    counts = np.bincount(user, minlength=int(rows["user_id"].max()) + 1)
    position = np.arange(user.size) - np.concatenate([[0], np.cumsum(counts)])[user]
    n_categories, width = int(history["category_id"].max()) + 1, int(counts.max()) + 1
    keys = np.sort((user * n_categories + history["category_id"]) * width + position)
    base = (rows["user_id"] * n_categories + rows["category_id"]) * width
    end = rows["hist_end"].astype(np.int64)
    cut = np.maximum(end - window, 0)

    def between(lo, hi):
        return np.searchsorted(keys, base + hi) - np.searchsorted(keys, base + lo) > 0

    return between(cut, end), between(np.zeros_like(end), cut)


def _old_interest_click_gap(sample) -> float:
    """CTR of rows whose candidate category is only among the user's visible events older than the
    last 64, minus that of rows whose category is in neither, within strata of (domain, log2 of
    the visible events): matched on how much history the user has."""
    rows = sample.rows
    recent, older = _category_seen(rows, sample.history, window=64)
    old_only, never = older & ~recent, ~older & ~recent
    stratum = rows["domain"].astype(np.int64) * 64 + np.log2(rows["hist_end"] + 1).astype(np.int64)
    gaps, weights = [], []
    for s in np.unique(stratum):
        a, b = old_only & (stratum == s), never & (stratum == s)
        if min(a.sum(), b.sum()) >= 5:
            gaps.append(rows["label"][a].mean() - rows["label"][b].mean())
            weights.append(min(a.sum(), b.sum()))
    return float(np.average(gaps, weights=weights))


def test_old_interests_beyond_the_last_64_events_raise_clicks_through_the_dormant_term():
    medium = {"n_users": 3000, "n_items": 3000, "n_categories": 100, "domains.A.rows_per_period": 30000,
              "domains.A.test_rows": 30000}
    with_signal = tiny_world(**medium).simulate()
    without = tiny_world(**medium, dormant_weight=0.0).simulate()
    # same impressions, only the dormant term differs
    np.testing.assert_array_equal(with_signal.rows["item_id"], without.rows["item_id"])
    gap, placebo = _old_interest_click_gap(with_signal), _old_interest_click_gap(without)
    # about 1.5 CTR points (the CTR is about 6%), 0 without the term; the standard error is about 0.2
    assert gap > 0.008
    assert abs(placebo) < 0.006
    assert gap - placebo > 0.008


def test_dormant_interests_sit_in_the_old_history_and_seldom_in_the_last_64_events(tiny_sample):
    rows = tiny_sample.rows
    sim = Simulation(tiny_world())
    dormant = (sim.users.dormant[rows["user_id"]] == rows["category_id"][:, None]).any(axis=1)
    assert 0.05 < dormant.mean() < 0.25  # impressions retrieved from them, and chance
    assert not (sim.users.dormant[:, :, None] == sim.users.interest[:, None, :]).any(axis=(1, 2))[1:].any()
    recent, older = _category_seen(rows, tiny_sample.history, window=64)
    deep = rows["hist_end"] >= 512
    # of heavy users' dormant rows, most have the category in the older events, many only there
    assert older[dormant & deep].mean() > 0.9
    assert (older & ~recent)[dormant & deep].mean() > 0.3
    assert (older & ~recent)[dormant & deep].mean() > 2 * (older & ~recent)[~dormant & deep].mean()


def test_no_dormant_interests_turns_the_signal_off():
    world = tiny_world(dormant_interests_per_user=0)
    sample = world.simulate(with_logits=True)
    assert Simulation(world).users.dormant.shape[1] == 0
    assert sample.history["user_id"].size > 0
