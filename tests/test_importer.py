"""The importer: CSV / Parquet / event-line logs + a schema YAML -> a dataset that round-trips.

Every check compares against a naive reference computed here from the raw text (Python loops over
a few hundred records), never against the importer's own helpers.
"""

from __future__ import annotations

import bisect
import csv
import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from ctl.data.dataset import load_dataset
from ctl.data.import_run import run_import
from ctl.data.importer import ORIGIN_FILE, import_dataset, load_spec, parse_spec, read_id_map
from ctl.data.importer.encoders import hash_text, hashed_ids
from ctl.data.importer.errors import InputError, SpecError
from ctl.data.registry import ensure_dataset
from ctl.errors import CtlError

HEADER = ["user", "item", "cat", "shop", "domain", "label", "when", "price", "city", "brand"]
DOMAIN_NAMES = {"main": "S", "side-1": "T1", "side-2": "T2"}
CITIES = ["北京", "São Paulo", "New York, NY", "Zürich", ""]
PRICE_BOUNDARIES = [10.0, 50.0, 100.0]
START = dt.datetime(2024, 3, 2, tzinfo=dt.UTC)


def log_schema(**changes: object) -> dict:
    """An explicit-label schema with every feature kind: dense (auto and fixed), hashed, bucket,
    constant, an item attribute and a feature only some domains carry."""
    schema = {
        "name": "shop_log",
        "description": "generated test log",
        "domains": {"column": "domain", "values": {"main": "S", "side-1": "T1", "side-2": "T2"}, "source": "S"},
        "label": {"column": "label"},
        "time": {"column": "when", "format": "%Y-%m-%d %H:%M:%S", "period": "1d", "start": "2024-03-02",
                 "n_transfer": 1},
        "sequences": {"short_len": 3, "long_len": 5},
        "features": [
            {"name": "user_id", "column": "user", "dim": 8},
            {"name": "item_id", "column": "item", "dim": 8},
            {"name": "category_id", "column": "cat", "vocab": 20, "dim": 4},
            {"name": "seller_id", "constant": True, "dim": 4},
            {"name": "shop", "column": "shop", "of": "item", "dim": 4},
            {"name": "price", "column": "price", "kind": "bucket", "boundaries": PRICE_BOUNDARIES, "dim": 4},
            {"name": "city", "column": "city", "domains": ["S", "T1"], "dim": 4},
            {"name": "brand", "column": "brand", "hash_buckets": 16, "dim": 4},
        ],
    }
    schema.update(changes)
    return schema


def write_schema(path: Path, schema: dict) -> Path:
    path.write_text(yaml.safe_dump(schema, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def make_log(n: int = 400, seed: int = 0) -> list[dict[str, str]]:
    """Records over 2024-03-01 .. 03-06 (day 1 precedes the schema's start), 30 users, 3 domains."""
    rng = np.random.default_rng(seed)
    records = []
    for _ in range(n):
        item = int(rng.integers(0, 50))
        when = dt.datetime(2024, 3, 1) + dt.timedelta(seconds=int(rng.integers(0, 6 * 86_400)))
        price = "" if rng.random() < 0.1 else f"{rng.uniform(0, 150):.2f}"
        records.append({
            "user": f"u{int(rng.integers(0, 30)):02d}",
            "item": f"i{item}",
            "cat": f"c{item % 7}",
            "shop": f"s{item % 5}",
            "domain": str(rng.choice(["main", "main", "side-1", "side-2"])),
            "label": str(int(rng.random() < 0.4)),
            "when": when.strftime("%Y-%m-%d %H:%M:%S"),
            "price": price,
            "city": CITIES[int(rng.integers(0, len(CITIES)))],
            "brand": f"b{int(rng.integers(0, 40))}",
        })
    return records


def write_csv(path: Path, records: list[dict[str, str]], delimiter: str = ",") -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=HEADER, delimiter=delimiter, lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
    return path


def seconds(text: str) -> int:
    return int(dt.datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=dt.UTC).timestamp())


def read_origin(path: Path) -> dict[str, np.ndarray]:
    table = pq.read_table(path / ORIGIN_FILE)
    return {name: table.column(name).to_numpy() for name in table.column_names}


@pytest.fixture(scope="module")
def shop_log(tmp_path_factory) -> tuple[list[dict[str, str]], Path, Path]:
    folder = tmp_path_factory.mktemp("shop_log")
    records = make_log()
    source = write_csv(folder / "log.csv", records)
    out = import_dataset(parse_spec(log_schema(), "test schema"), [source], folder / "dataset").path
    return records, source, out


def test_imported_rows_map_back_to_the_source_records(shop_log) -> None:
    records, _, out = shop_log
    ds = load_dataset(out)
    origin = read_origin(out)
    maps = {name: read_id_map(out, name) for name in ("user_id", "item_id", "category_id", "shop", "city")}
    rows = ds.rows
    shown = [i for i, r in enumerate(records) if seconds(r["when"]) >= START.timestamp()]
    assert sorted(origin["line"].tolist()) == [i + 2 for i in shown]  # each record once; header is line 1
    assert not origin["sampled"].any() and (origin["input"] == 0).all()
    brand_ids: dict[str, int] = {}
    for r in range(ds.n_rows):
        raw = records[int(origin["line"][r]) - 2]
        domain = ds.schema.domains[rows["domain"][r]]
        assert domain == DOMAIN_NAMES[raw["domain"]]
        for feature, column in (("user_id", "user"), ("item_id", "item"), ("category_id", "cat"), ("shop", "shop")):
            assert maps[feature][rows[feature][r]] == raw[column]
        assert rows["label"][r] == int(raw["label"])
        assert rows["ts"][r] == seconds(raw["when"])
        assert rows["period"][r] == (seconds(raw["when"]) - START.timestamp()) // 86_400
        price = 0 if raw["price"] == "" else bisect.bisect_right(PRICE_BOUNDARIES, float(raw["price"])) + 1
        assert rows["price"][r] == price
        if domain == "T2" or raw["city"] == "":
            assert rows["city"][r] == 0
        else:
            assert maps["city"][rows["city"][r]] == raw["city"]
        assert rows["seller_id"][r] == 1
        assert brand_ids.setdefault(raw["brand"], int(rows["brand"][r])) == rows["brand"][r]
        assert 1 <= rows["brand"][r] < 16
    assert len(brand_ids) > 30  # 40 brands in 16 buckets: still one id per brand as text


def test_history_holds_every_click_and_rows_see_only_earlier_ones(shop_log) -> None:
    records, _, out = shop_log
    ds = load_dataset(out)
    origin = read_origin(out)
    clicks = [(r["user"], seconds(r["when"])) for r in records if r["label"] == "1"]
    assert ds.history.n_events == len(clicks)  # records before time.start included
    users = read_id_map(out, "user_id")
    for r in range(ds.n_rows):
        raw = records[int(origin["line"][r]) - 2]
        expected = sum(1 for user, ts in clicks if user == raw["user"] and ts < seconds(raw["when"]))
        assert ds.rows["hist_end"][r] == expected, f"row {r} of user {users[ds.rows['user_id'][r]]}"


def test_layout_vocabularies_and_provenance(shop_log) -> None:
    records, _, out = shop_log
    ds = load_dataset(out)
    schema = ds.schema
    assert (schema.n_history, schema.n_transfer, schema.test_period) == (3, 1, 4)  # days 2..6
    assert schema.domains == ("S", "T1", "T2") and schema.source == "S"
    vocab = {f.name: f.vocab for f in schema.features}
    assert vocab["user_id"] == len({r["user"] for r in records}) + 1
    assert vocab["category_id"] == 20 and vocab["brand"] == 16 and vocab["price"] == 5 and vocab["seller_id"] == 2
    assert schema.feature("city").domains == ("S", "T1")
    counts = ds.meta["provenance"]["counts"]
    early = sum(1 for r in records if seconds(r["when"]) < START.timestamp())
    assert counts == {"records": len(records), "history_only": early}
    assert ds.meta["provenance"]["periods"][0] == "2024-03-02 00:00:00 .. 2024-03-03 00:00:00"


def test_parquet_input_and_small_blocks_give_the_same_dataset(shop_log, tmp_path) -> None:
    records, source, out = shop_log
    columns = {name: [r[name] for r in records] for name in HEADER}
    table = pa.table({
        **{name: pa.array(values, pa.string()) for name, values in columns.items()},
        "label": pa.array([int(v) for v in columns["label"]], pa.int8()),
        "when": pa.array([dt.datetime.strptime(v, "%Y-%m-%d %H:%M:%S") for v in columns["when"]], pa.timestamp("s")),
        "price": pa.array([float(v) if v else None for v in columns["price"]], pa.float64()),
    })
    pq.write_table(table, tmp_path / "log.parquet", row_group_size=64)
    spec = parse_spec(log_schema(), "test schema")
    from_parquet = load_dataset(import_dataset(spec, [tmp_path / "log.parquet"], tmp_path / "pq").path)
    in_blocks = load_dataset(import_dataset(spec, [source], tmp_path / "blocks", block_bytes=1024).path)
    whole = load_dataset(out)
    for other in (from_parquet, in_blocks):
        assert other.schema == whole.schema
        for name, values in whole.rows.items():
            np.testing.assert_array_equal(other.rows[name], values, err_msg=name)


def test_max_rows_reads_a_prefix_across_inputs(shop_log, tmp_path) -> None:
    records, source, _ = shop_log
    second = write_csv(tmp_path / "more.csv", make_log(50, seed=1))
    spec = parse_spec(log_schema(), "test schema")
    out = import_dataset(spec, [source, second], tmp_path / "prefix", max_rows=len(records) + 20).path
    inputs = load_dataset(out).meta["provenance"]["inputs"]
    assert [i["records"] for i in inputs] == [len(records), 20]
    assert set(read_origin(out)["input"].tolist()) == {0, 1}


# --- explicit sequences and implicit feedback ------------------------------------------------------


def test_explicit_sequence_column_becomes_the_tail_of_each_rows_long_sequence(tmp_path) -> None:
    lines = ["uid,ad,slot,clk,t,seq",
             "u1,a1,x,0,100,a7^a8^a9",
             "u1,a2,x,1,100,a5",          # same user and time, another list
             "u1,a3,y,0,100,a7^a8^a9",    # the same list again: stored once
             "u1,a4,y,0,200,a1^a2^a3^a4^a5^a6^a7",
             "u2,a1,x,0,150,",
             "u2,a2,y,1,250,a9",
             "u2,a3,x,0,300,",
             "u3,a5,y,1,400,^a2^^a3^"]
    source = tmp_path / "ads.csv"
    source.write_text("\n".join(lines) + "\n")
    schema = {
        "domains": {"column": "slot", "values": ["x", "y"], "source": "x"},
        "label": {"column": "clk"},
        "time": {"column": "t", "format": "unix", "period": "100s", "n_transfer": 1},
        "sequences": {"column": "seq", "separator": "^", "short_len": 2, "long_len": 4},
        "features": [{"name": "user_id", "column": "uid", "dim": 4}, {"name": "item_id", "column": "ad", "dim": 4},
                     {"name": "category_id", "constant": True, "dim": 4},
                     {"name": "seller_id", "constant": True, "dim": 4}],
    }
    out = import_dataset(parse_spec(schema, "seq schema"), [source], tmp_path / "seq").path
    ds = load_dataset(out)
    items = read_id_map(out, "item_id")
    origin = read_origin(out)
    long_item, _, _, mask = ds.history.gather_last(ds.rows["user_id"], ds.rows["hist_end"], 4, None)
    assert ds.history.n_events == 3 + 1 + 7 + 1 + 2
    for r in range(ds.n_rows):
        raw_list = [x for x in lines[int(origin["line"][r]) - 1].split(",")[5].split("^") if x]
        seen = [items[i] for i, m in zip(long_item[r].tolist(), mask[r].tolist()) if m]
        if raw_list:
            assert seen[-len(raw_list):] == raw_list[-4:]
        else:  # u2 without a list sees its earlier lists only
            earlier = {150: [], 300: ["a9"]}[int(ds.rows["ts"][r])]
            assert seen == earlier


def write_event_lines(path: Path, users: int, seed: int) -> list[list[tuple[int, int]]]:
    """C2DSR-style lines: ``user <TAB> seq <TAB> item|ts|date[|] ...``, events out of time order."""
    rng = np.random.default_rng(seed)
    histories, lines = [], []
    for user in range(users):
        events = [(int(rng.integers(0, 40)), int(1_700_000_000 + rng.integers(0, 40) * 86_400))
                  for _ in range(int(rng.integers(2, 8)))]
        text = [f"{item}|{ts}|{dt.datetime.fromtimestamp(ts, dt.UTC):%Y-%m-%d %H:%M:%S}" + "|" * (item % 2)
                for item, ts in events]
        lines.append("\t".join([str(user), str(1000 + user), *text]))
        histories.append(events)
    path.write_text("\n".join(lines) + "\n")
    return histories


IMPLICIT_SCHEMA = {
    "format": "event_lines",
    "event_lines": {"separator": "\t", "key_fields": ["user", "seq_id"], "event_separator": "|",
                    "event_fields": ["item", "ts", "date"]},
    "domains": {"column": "item", "boundaries": [20], "names": ["F", "K"], "source": "K"},
    "label": {"negatives": 3, "seed": 7},
    "time": {"column": "ts", "format": "unix", "period": "10d", "n_transfer": 1},
    "features": [{"name": "user_id", "column": "user", "dim": 4}, {"name": "item_id", "column": "item", "dim": 4},
                 {"name": "category_id", "column": "item", "kind": "bucket", "boundaries": [10, 20, 30], "dim": 4},
                 {"name": "seller_id", "constant": True, "dim": 4}],
}


@pytest.mark.parametrize("exclude", ["past", "all"])
def test_implicit_feedback_samples_unseen_items_of_the_same_domain_and_period(tmp_path, exclude) -> None:
    histories = write_event_lines(tmp_path / "lines.txt", users=60, seed=3)
    spec = parse_spec({**IMPLICIT_SCHEMA, "label": {**IMPLICIT_SCHEMA["label"], "exclude": exclude}}, "implicit schema")
    out = import_dataset(spec, [tmp_path / "lines.txt"], tmp_path / "implicit").path
    ds = load_dataset(out)
    rows, origin = ds.rows, read_origin(out)
    users, items = read_id_map(out, "user_id"), read_id_map(out, "item_id")
    raw_item = np.array([int(items[i]) for i in rows["item_id"]])
    raw_user = np.array([int(users[u]) for u in rows["user_id"]])
    positive = rows["label"] == 1
    assert positive.sum() == sum(len(h) for h in histories) == ds.history.n_events
    for r in np.flatnonzero(positive):  # a positive is exactly its source event
        assert (raw_item[r], rows["ts"][r]) == histories[raw_user[r]][int(origin["event"][r]) - 1]
    unavailable = ds.meta["provenance"]["counts"]["negatives_unavailable"]
    assert (~positive).sum() == 3 * positive.sum() - unavailable
    assert origin["sampled"].tolist() == (~positive).tolist()
    pools = {}
    for r in np.flatnonzero(positive):
        pools.setdefault((rows["domain"][r], rows["period"][r]), set()).add(raw_item[r])
    for r in np.flatnonzero(~positive):
        assert raw_item[r] in pools[(rows["domain"][r], rows["period"][r])]
        # past: never an item the user touched at or before the row's time; all: at any time
        touched = {item for item, ts in histories[raw_user[r]] if exclude == "all" or ts <= rows["ts"][r]}
        assert raw_item[r] not in touched
        assert rows["category_id"][r] == bisect.bisect_right([10, 20, 30], raw_item[r]) + 1  # the item's own
        assert rows["domain"][r] == (raw_item[r] >= 20)
    again = load_dataset(import_dataset(spec, [tmp_path / "lines.txt"], tmp_path / "again").path)
    for name, values in rows.items():
        np.testing.assert_array_equal(again.rows[name], values, err_msg=name)


def reference_text_hash(text: str) -> int:
    """hash_text's definition, byte by byte: sum of (byte + 1) * M^(n-1-i) mod 2**64, xor the byte
    length, then the splitmix64 finaliser."""
    mask, data = 2**64 - 1, text.encode()
    h = sum((byte + 1) * pow(0x100000001B3, len(data) - 1 - i, 2**64) for i, byte in enumerate(data)) & mask
    h ^= len(data)
    h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & mask
    h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & mask
    return h ^ (h >> 31)


def test_hashed_ids_are_a_known_function_of_the_text_alone() -> None:
    # known values: the same in every process and on every machine (a hashed dataset can be re-imported)
    assert hash_text(pa.array(["a", "brand-7", "é", None, ""])).tolist() == [
        8777055843625058441, 13860490006883069226, 7782741728558196905, 0, 0]
    # a slice of a longer array (its offsets do not start at 0) hashes the same texts the same
    assert hash_text(pa.array(["x", "brand-7", "a"]).slice(1)).tolist() == [13860490006883069226, 8777055843625058441]
    rng = np.random.default_rng(0)
    texts = ["".join(rng.choice(list("ab7-é中 "), size=n)) for n in rng.integers(0, 40, size=200)]
    assert hash_text(pa.array(texts)).tolist() == [reference_text_hash(t) for t in texts]
    assert len({reference_text_hash(t) for t in set(texts)}) == len(set(texts))
    assert hashed_ids(pa.array(["brand-7", "a"]), 16).tolist() == [13860490006883069226 % 15 + 1, 8777055843625058441 % 15 + 1]


# --- refusals -------------------------------------------------------------------------------------


def refusal(tmp_path: Path, text: str | bytes, schema: dict | None = None) -> str:
    source = tmp_path / "bad.csv"
    source.write_bytes(text.encode() if isinstance(text, str) else text)
    with pytest.raises(InputError) as caught:
        import_dataset(parse_spec(schema or log_schema(), "test schema"), [source], tmp_path / "never")
    assert not (tmp_path / "never").exists()
    return str(caught.value)


def csv_lines(records: list[dict[str, str]]) -> list[str]:
    return [",".join(HEADER)] + [",".join(f'"{v}"' if "," in v else v for v in r.values()) for r in records]


def good_lines(n: int = 6) -> list[str]:
    return csv_lines(make_log(n, seed=5))


def test_wrong_delimiter_is_named(tmp_path) -> None:
    source = write_csv(tmp_path / "semi.csv", make_log(5), delimiter=";")
    with pytest.raises(InputError) as caught:
        import_dataset(parse_spec(log_schema(), "s"), [source], tmp_path / "out")
    message = str(caught.value)
    assert f"{source}: header, column 'domain': is missing" in message and "is the delimiter ';'" in message


def test_missing_column_is_named(tmp_path) -> None:
    lines = good_lines()
    message = refusal(tmp_path, "\n".join([lines[0].replace(",label", "")] + lines[1:]) + "\n")
    assert "header, column 'label': is missing (the file has columns ['user', 'item'" in message


def test_bad_timestamp_names_line_and_column(tmp_path) -> None:
    lines = good_lines()
    lines[3] = lines[3].replace(lines[3].split(",")[6], "2024-13-45 00:00:00")
    message = refusal(tmp_path, "\n".join(lines) + "\n")
    assert message.endswith("line 4, column 'when': value '2024-13-45 00:00:00' does not match the time format "
                            "'%Y-%m-%d %H:%M:%S'")


def test_label_2_names_line_and_column(tmp_path) -> None:
    lines = good_lines()
    fields = lines[4].split(",")
    fields[5] = "2"
    lines[4] = ",".join(fields)
    assert refusal(tmp_path, "\n".join(lines) + "\n").endswith("line 5, column 'label': value '2' is not a 0/1 label")


def test_empty_and_header_only_files(tmp_path) -> None:
    assert refusal(tmp_path, "").endswith("bad.csv: the file is empty")
    assert refusal(tmp_path, ",".join(HEADER) + "\n").endswith("bad.csv: has a header but no data rows")


def test_non_utf8_text_names_line_and_column(tmp_path) -> None:
    records = make_log(6, seed=5)
    records[1]["city"] = "São Paulo"
    lines = csv_lines(records)
    data = [line.encode("latin-1" if i == 2 else "utf-8") for i, line in enumerate(lines)]  # line 3 in latin-1
    message = refusal(tmp_path, b"\n".join(data) + b"\n")
    assert "bad.csv: line 3, column 'city': is not valid utf-8 text" in message
    assert "set the encoding in the schema (e.g. latin-1 or gb18030)" in message


def test_ragged_row_and_unknown_domain(tmp_path) -> None:
    lines = good_lines()
    lines[5] += ",extra"
    assert "line 6: has 11 fields where the header has 10" in refusal(tmp_path, "\n".join(lines) + "\n")
    lines = good_lines()
    lines[2] = lines[2].replace(",main,", ",mian,").replace(",side-1,", ",mian,").replace(",side-2,", ",mian,")
    message = refusal(tmp_path, "\n".join(lines) + "\n")
    assert "line 3, column 'domain': value 'mian' is not one of the domain values ['main', 'side-1', 'side-2']" in message


def test_lines_that_are_not_one_record_are_refused(tmp_path) -> None:
    # a record's line is its place in the file: an empty line or a quoted value spanning lines would shift it
    lines = good_lines()
    message = refusal(tmp_path, "\n".join(lines[:4] + [""] + lines[4:]) + "\n")
    assert message.endswith("bad.csv: line 5: is empty; every line of the file must hold one record")
    lines = good_lines()
    lines[3] = lines[3].replace(lines[3].split(",")[3], '"s\n1"', 1)
    message = refusal(tmp_path, "\n".join(lines) + "\n")
    assert "bad.csv: line 4: has an unclosed quote: a quoted value may not span lines (one record per line)" in message


def test_text_in_another_encoding_and_a_parquet_row_are_located(tmp_path) -> None:
    records = make_log(30, seed=5)
    for record in records:
        record["city"] = "São Paulo"
    source = tmp_path / "latin.csv"
    source.write_bytes(("\n".join(csv_lines(records)) + "\n").encode("latin-1"))
    out = import_dataset(parse_spec(log_schema(csv={"encoding": "latin-1"}), "s"), [source], tmp_path / "latin").path
    assert set(read_id_map(out, "city")[1:]) == {"São Paulo"}
    lines = [line.encode("gb18030") for line in csv_lines(records)]
    lines[4] = lines[4].replace("São".encode("gb18030"), b"S\x81\x20o")  # not a gb18030 character
    (tmp_path / "gb.csv").write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(InputError) as caught:
        import_dataset(parse_spec(log_schema(csv={"encoding": "gb18030"}), "s"), [tmp_path / "gb.csv"], tmp_path / "no")
    assert str(caught.value).startswith(f"{tmp_path / 'gb.csv'}: line 5, column 'city': is not valid gb18030 text")
    table = pa.table({name: [r[name] for r in records] for name in HEADER})
    table = table.set_column(HEADER.index("label"), "label", pa.array([int(r["label"]) for r in records[:2]] + [2]
                                                                      + [0] * (len(records) - 3), pa.int8()))
    pq.write_table(table, tmp_path / "bad.parquet")
    with pytest.raises(InputError) as caught:
        import_dataset(parse_spec(log_schema(), "s"), [tmp_path / "bad.parquet"], tmp_path / "never")
    assert str(caught.value) == f"{tmp_path / 'bad.parquet'}: row 3, column 'label': value '2' is not a 0/1 label"


def test_fixed_vocabulary_overflow_is_refused(tmp_path) -> None:
    schema = log_schema()
    schema["features"][2] = {"name": "category_id", "column": "cat", "vocab": 4, "dim": 4}
    message = refusal(tmp_path, "\n".join(good_lines(40)) + "\n", schema)
    lines, seen = good_lines(40), []
    for number, line in enumerate(lines[1:], start=2):  # the 4th distinct category overflows ids 1..3
        if line.split(",")[2] not in seen:
            seen.append(line.split(",")[2])
        if len(seen) == 4:
            break
    assert message.endswith(f"line {number}, column 'cat': value '{seen[-1]}' is distinct value 4 of feature "
                            "'category_id', beyond its vocab 4 (ids 1..3); raise vocab, "
                            "set vocab: auto or use hash_buckets")


def test_skip_mode_drops_and_counts_bad_records(tmp_path) -> None:
    records = make_log(200, seed=2)
    records[10]["label"] = "2"
    records[20]["when"] = "yesterday"
    records[30]["user"] = ""
    source = write_csv(tmp_path / "log.csv", records)
    spec = parse_spec(log_schema(on_bad_rows="skip"), "s")
    out = import_dataset(spec, [source], tmp_path / "skipped").path
    counts = load_dataset(out).meta["provenance"]["counts"]
    assert counts["records"] == 200
    assert counts["skipped label: not 0/1"] == 1 and counts["skipped when: bad time"] == 1
    assert counts["skipped user: empty"] == 1
    assert not {12, 22, 32} & set(read_origin(out)["line"].tolist())


def test_schema_typos_and_missing_id_features_are_refused(tmp_path) -> None:
    with pytest.raises(SpecError, match=r"s\.yaml: time\.perod: is not a known key here"):
        schema = log_schema()
        schema["time"] = {**schema["time"], "perod": "1d"}
        load_spec(write_schema(tmp_path / "s.yaml", schema))
    schema = log_schema()
    schema["features"] = [f for f in schema["features"] if f["name"] != "seller_id"]
    with pytest.raises(SpecError, match=r"features: the id features \['seller_id'\] are missing"):
        parse_spec(schema, "s")
    with pytest.raises(SpecError, match=r"features\[0\]\.missing: must be error for user_id"):
        schema = log_schema()
        schema["features"][0] = {**schema["features"][0], "missing": "absent"}
        parse_spec(schema, "s")


def test_too_few_periods_is_explained(tmp_path) -> None:
    source = write_csv(tmp_path / "log.csv", make_log(100))
    schema = log_schema()
    schema["time"] = {**schema["time"], "period": "3d", "start": None}
    with pytest.raises(CtlError, match=r"span 2 period\(s\) .*time\.n_transfer=1 needs at least 3"):
        import_dataset(parse_spec(schema, "s"), [source], tmp_path / "out")


def test_ctl_data_import_command_writes_the_dataset(tmp_path) -> None:
    source = write_csv(tmp_path / "log.csv", make_log(120))
    schema = write_schema(tmp_path / "schema.yaml", log_schema())
    env = {k: v for k, v in os.environ.items() if k != "CTL_COMMAND"}
    ctl = str(Path(sys.executable).with_name("ctl"))
    done = subprocess.run([ctl, "data", "import", f"schema={schema}", "inputs=[log.csv]", f"root={tmp_path}",
                           f"out={tmp_path / 'ds'}", "progress=false"], check=False, capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"dataset: {tmp_path / 'ds'}" in done.stdout and "history_only" in done.stdout
    assert load_dataset(tmp_path / "ds").meta["provenance"]["inputs"][0]["path"] == str(source)


def test_import_config_refuses_missing_inputs_and_missing_out(tmp_path) -> None:
    schema = write_schema(tmp_path / "schema.yaml", log_schema())
    with initialize_config_module(config_module="ctl.conf", version_base="1.3"):
        missing = compose("import", overrides=[f"schema={schema}", "inputs=[nope.csv]", f"root={tmp_path}",
                                               f"out={tmp_path / 'x'}", "progress=false"])
        no_out = compose("import", overrides=[f"schema={schema}", "inputs=[nope.csv]", "progress=false"])
        nothing = compose("import", overrides=["progress=false"])
    with pytest.raises(CtlError, match=r"import: input file .*nope\.csv does not exist; point import\.root"):
        run_import(missing)
    with pytest.raises(CtlError, match=r"out=DIR is required with schema="):
        run_import(no_out)
    with pytest.raises(CtlError, match=r"say what to import: schema=FILE inputs=\[a\.csv,\.\.\.\] out=DIR, or data="):
        run_import(nothing)


def test_registry_imports_a_preset_once_and_again_when_an_input_changes(tmp_path) -> None:
    source = write_csv(tmp_path / "log.csv", make_log(120))
    schema = write_schema(tmp_path / "schema.yaml", log_schema())
    data_cfg = OmegaConf.create({"name": "mylog", "importer": {"schema": str(schema), "inputs": ["log.csv"],
                                                               "root": str(tmp_path), "max_rows": None}})
    first = ensure_dataset(data_cfg, tmp_path / "home", progress=False)
    assert first.parent == tmp_path / "home" / "datasets" and first.name.startswith("mylog-")
    written = (first / "meta.yaml").stat().st_mtime_ns
    assert ensure_dataset(data_cfg, tmp_path / "home", progress=False) == first
    assert (first / "meta.yaml").stat().st_mtime_ns == written  # reused, not imported again
    write_csv(source, make_log(130))
    second = ensure_dataset(data_cfg, tmp_path / "home", progress=False)
    assert second != first and load_dataset(second).meta["provenance"]["counts"]["records"] == 130


def test_period_column_month_periods_and_end(tmp_path) -> None:
    lines = ["u,i,d,y,t,week"]
    days = ["2024-01-05", "2024-01-20", "2024-02-03", "2024-03-09", "2024-03-30", "2024-04-02"]
    for n, day in enumerate(days):
        lines += [f"u{n % 2},i{n},a,{n % 2},{day} 10:00:00,{7 + n // 2}", f"u{n % 2},i{n},b,1,{day} 11:00:00,{7 + n // 2}"]
    source = tmp_path / "p.csv"
    source.write_text("\n".join(lines) + "\n")
    base = {
        "domains": {"column": "d", "values": ["a", "b"], "source": "a"},
        "label": {"column": "y"},
        "features": [{"name": "user_id", "column": "u", "dim": 4}, {"name": "item_id", "column": "i", "dim": 4},
                     {"name": "category_id", "constant": True, "dim": 4}, {"name": "seller_id", "constant": True, "dim": 4}],
    }
    by_column = {**base, "time": {"column": "t", "format": "%Y-%m-%d %H:%M:%S", "period_column": "week", "n_transfer": 1}}
    ds = load_dataset(import_dataset(parse_spec(by_column, "s"), [source], tmp_path / "weeks").path)
    line = read_origin(ds.path)["line"]
    np.testing.assert_array_equal(ds.rows["period"], (line - 2) // 4)  # week 7 + n // 2 -> period n // 2
    by_month = {**base, "time": {"column": "t", "format": "%Y-%m-%d %H:%M:%S", "period": "month", "end": "2024-04-01",
                                 "n_transfer": 1}}
    ds = load_dataset(import_dataset(parse_spec(by_month, "s"), [source], tmp_path / "months").path)
    assert ds.meta["provenance"]["counts"]["after_end"] == 2
    assert ds.meta["provenance"]["periods"] == ["2024-01-01 .. 2024-02-01", "2024-02-01 .. 2024-03-01",
                                                "2024-03-01 .. 2024-04-01"]
    assert np.bincount(ds.rows["period"]).tolist() == [4, 2, 4]


def test_schema_types_and_choices_are_checked_with_the_key_path() -> None:
    cases = {
        "on_bad_rows: Invalid value 'skp', expected one of [error, skip]": {"on_bad_rows": "skp"},
        "sequences.short_len: Value 'x' of type 'str' could not be converted to Integer":
            {"sequences": {"short_len": "x"}},
        "features[0].kind: Invalid value 'bucketz', expected one of [categorical, bucket]":
            {"features": [{"name": "user_id", "column": "u", "dim": 4, "kind": "bucketz"}]},
        "features[0].dim: is required": {"features": [{"name": "user_id", "column": "u"}]},
        "csv.delimiter: must be one character, got ';;'": {"csv": {"delimiter": ";;"}},
        "time.n_transfer: is required": {"time": {"column": "when", "period": "1d"}},
    }
    for message, change in cases.items():
        with pytest.raises(SpecError) as caught:
            parse_spec(log_schema(**change), "s.yaml")
        assert str(caught.value) == f"s.yaml: {message}"


def test_the_same_inputs_give_the_same_bytes_whatever_the_threads(tmp_path) -> None:
    write_event_lines(tmp_path / "lines.txt", users=40, seed=11)
    spec = parse_spec(IMPLICIT_SCHEMA, "implicit schema")
    digests = []
    for threads, memory in ((1, "2GB"), (2, "64MB")):
        out = import_dataset(spec, [tmp_path / "lines.txt"], tmp_path / f"t{threads}", threads=threads,
                             memory_limit=memory).path
        files = sorted(p for p in out.rglob("*") if p.is_file())
        digests.append({p.relative_to(out): p.read_bytes() for p in files})
    assert sorted(digests[0]) == sorted(digests[1]) and len(digests[0]) == 6  # meta, rows, history, origin, 2 maps
    for name, data in digests[0].items():
        assert digests[1][name] == data, name
    assert not list(tmp_path.glob(".t*"))  # the staging folders (database, spill, parts) are gone


def test_importing_into_an_existing_folder_is_refused_naming_it(shop_log, tmp_path) -> None:
    _, source, _ = shop_log
    taken = tmp_path / "taken"
    taken.mkdir()
    with pytest.raises(CtlError, match=rf"^{taken}: a dataset \(or file\) already exists there; choose a new folder$"):
        import_dataset(parse_spec(log_schema(), "test schema"), [source], taken)
