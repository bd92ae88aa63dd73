"""Bad and odd input data (issue 37, data): sequence files with a user on two lines, times in another unit,
users too short for the protocol, a directory where a file belongs, and the data-policy options through the real
config. Every refusal names the file, the line (and the column or key) and leaves no table in the cache."""
from __future__ import annotations

import logging
from pathlib import Path

import mlflow
import numpy as np
import pytest

from datasets.batching import eval_rows, train_rows
from datasets.load import load_dataset
from datasets.raw_errors import DataFormatError, DataPathError
from datasets.split import data_options, load_split
from tests.runners.conftest import compose

T0 = 1_400_000_000  # 2014-05-13, a plausible unix time in seconds
UNIT = {"s": 1, "ms": 1_000, "us": 1_000_000}


def load(tmp_path: Path, path: Path, kind: str = "interactions", **options):
    opts = {"path": str(path), **options} if kind == "interactions" else options
    return load_dataset("mine", kind, tmp_path, tmp_path / "cache", options=opts)


def cached(tmp_path: Path) -> list[Path]:
    """What the data stage left in the cache besides the build locks and the input files' checksum sidecars
    (datasets/table.py): tables, splits and their temporary files."""
    cache = tmp_path / "cache"
    return [p for p in cache.rglob("*") if p.is_file() and not p.name.endswith(".lock") and p.parent.name != "sha256"]


def refused(tmp_path: Path, error: type[Exception], *parts: str, path: Path | None = None, **options) -> str:
    """Load and expect `error` whose message holds every part; nothing may be left in the table cache."""
    with pytest.raises(error) as err:
        load(tmp_path, path if path is not None else tmp_path / "seq.txt", **options)
    text = str(err.value)
    for part in parts:
        assert part in text, (part, text)
    assert not cached(tmp_path), "a table was cached for input that failed"
    return text


def history(table, user: str) -> tuple[list[str], list[int]]:
    """A user's items (raw ids) and times in the table's order."""
    u = int(np.flatnonzero(table.user_keys == user)[0])
    lo, hi = table.indptr[u], table.indptr[u + 1]
    return table.item_keys[table.items[lo:hi]].tolist(), table.times[lo:hi].tolist()


# ---------------------------------------------------------------------------------------------------------------
# One line per user: every oddity.

REPEATED = "a x1 x2 x3\nb y1 y2 y3\na x4 x5\n"
REPEATED_TIMES = f"a {T0} {T0 + 10} {T0 + 20}\nb {T0} {T0 + 1} {T0 + 2}\na {T0 + 30} {T0 + 40}\n"


@pytest.mark.parametrize("times", [None, REPEATED_TIMES], ids=["no-times", "with-times-file"])
def test_a_user_on_two_lines_is_an_error_naming_both_lines(tmp_path, times):
    (tmp_path / "seq.txt").write_text(REPEATED)
    options = {}
    if times:
        (tmp_path / "t.txt").write_text(times)
        options["times_path"] = str(tmp_path / "t.txt")
    text = refused(tmp_path, DataFormatError, f"{tmp_path / 'seq.txt'}, lines 1 and 3", "user 'a'",
                   "repeated_users=concat", **options)
    assert text.startswith(str(tmp_path / "seq.txt"))


def test_concat_joins_a_users_lines_in_file_order_with_positions_continuing(tmp_path):
    (tmp_path / "seq.txt").write_text("a x1 x2 x3\n\nb y1 y2 y3\na x4 x5\n")  # a blank line is no user
    table = load(tmp_path, tmp_path / "seq.txt", repeated_users="concat")
    items, times = history(table, "a")
    assert items == ["x1", "x2", "x3", "x4", "x5"]  # never interleaved
    assert times == [86_400 * k for k in range(5)]  # never restarting at day 0
    assert table.n_users == 2 and table.n_interactions == 8


def test_concat_with_a_times_file_joins_the_times_too(tmp_path):
    (tmp_path / "seq.txt").write_text(REPEATED)
    (tmp_path / "t.txt").write_text(REPEATED_TIMES)
    table = load(tmp_path, tmp_path / "seq.txt", times_path=str(tmp_path / "t.txt"), repeated_users="concat")
    assert history(table, "a") == (["x1", "x2", "x3", "x4", "x5"], [T0, T0 + 10, T0 + 20, T0 + 30, T0 + 40])


def test_concat_refuses_a_later_line_that_goes_back_in_time(tmp_path):
    (tmp_path / "seq.txt").write_text(REPEATED)
    (tmp_path / "t.txt").write_text(REPEATED_TIMES.replace(f"a {T0 + 30}", f"a {T0 + 5}"))
    refused(tmp_path, DataFormatError, f"{tmp_path / 't.txt'}, lines 1 and 3", "user 'a'", "back in time",
            times_path=str(tmp_path / "t.txt"), repeated_users="concat")


@pytest.mark.parametrize("seq, times, parts", [
    # the times file repeats a user the sequence file has once: named, with the line it is already on
    ("a x1 x2\nb y1 y2\n", f"a {T0} {T0}\na {T0} {T0}\n", ["t.txt, line 2", "user 'b'", "already on line 1"]),
    # a times line with another count of times than its sequence line
    ("a x1 x2\nb y1 y2\n", f"a {T0} {T0}\nb {T0}\n", ["t.txt, line 2", "with 2 times (line 2 of"]),
    # a time that is not a number, and one that is NaN
    ("a x1 x2\n", f"a {T0} soon\n", ["t.txt, line 1", "a time is not a number"]),
    ("a x1 x2\n", f"a {T0} nan\n", ["t.txt, line 1", "a time is not a number"]),
    # a line with only a user; the blank line before it still counts in the line numbers
    ("a x1 x2\n\nb\n", None, ["seq.txt, line 3", "expected 'user item1 item2 ...'", "got 'b'"]),
    # only blank lines
    ("\n\n", None, ["seq.txt, line 1", "the file is empty"]),
], ids=["times-repeat", "times-count", "times-word", "times-nan", "only-a-user", "empty"])
def test_sequence_file_oddities_name_file_and_line(tmp_path, seq, times, parts):
    (tmp_path / "seq.txt").write_text(seq)
    options = {}
    if times is not None:
        (tmp_path / "t.txt").write_text(times)
        options["times_path"] = str(tmp_path / "t.txt")
    refused(tmp_path, DataFormatError, *parts, **options)


def test_item_tokens_need_not_be_integers(tmp_path):
    (tmp_path / "seq.txt").write_text("u1 B00X 12 item-3\nu2 12 B00X zz\n")  # asins, numbers, anything
    assert load(tmp_path, tmp_path / "seq.txt").n_items == 4


def test_repeated_users_is_refused_for_files_with_one_row_per_interaction(tmp_path):
    (tmp_path / "t.csv").write_text("user,item,time\nu,i,1\n")
    refused(tmp_path, ValueError, "repeated_users='concat'", "sequence files", path=tmp_path / "t.csv",
            repeated_users="concat")


# ---------------------------------------------------------------------------------------------------------------
# time_unit: s, ms, us for every format with times.

USERS = {"u1": [0, 86_400, 90_000], "u2": [5, 3_600, 7_200, 100_000], "u3": [10, 20, 30]}


def write_times(tmp_path: Path, fmt: str, scale: int, bad: int | None = None) -> tuple[Path, str, dict]:
    """A small file of USERS' times (T0 + offset, times `scale`) in format `fmt`; `bad` replaces the 5th time.
    Returns the file holding the times, the loader kind and the options (without time_unit)."""
    times = [(u, f"i{k}", (T0 + t) * scale) for u, ts in USERS.items() for k, t in enumerate(ts)]
    if bad is not None:
        times[4] = (times[4][0], times[4][1], bad)
    if fmt == "csv":  # line 1 is the header: the 5th time is on line 6
        path = tmp_path / "t.csv"
        path.write_text("user,item,time\n" + "".join(f"{u},{i},{t}\n" for u, i, t in times))
        return path, "interactions", {"path": str(path)}
    if fmt == "sequence":  # u2's 2nd time is the 5th: line 2, column 3
        path, tpath = tmp_path / "seq.txt", tmp_path / "t.txt"
        path.write_text("".join(f"{u} " + " ".join(f"i{k}" for k in range(len(ts))) + "\n" for u, ts in USERS.items()))
        tpath.write_text("".join(f"{u} " + " ".join(str(t) for v, _, t in times if v == u) + "\n" for u in USERS))
        return tpath, "interactions", {"path": str(path), "times_path": str(tpath)}
    d = tmp_path / "amazon_hin"  # the 5th time: line 5, column 4
    d.mkdir(exist_ok=True)
    (d / "user_item.dat").write_text("".join(f"{u[1:]}\t{i[1:]}\t5\t{t}\n" for u, i, t in times))
    (d / "item_category.dat").write_text("".join(f"{k},1\n" for k in range(4)))
    return d / "user_item.dat", "amazon_hin", {}


WHERE = {"csv": "line 6, column 'time'", "sequence": "line 2, column 3", "hin": "line 5, column 4 (unixtime)"}


@pytest.mark.parametrize("unit", ["s", "ms", "us"])
@pytest.mark.parametrize("fmt", ["csv", "sequence", "hin"])
def test_each_time_unit_reads_back_the_same_seconds(tmp_path, fmt, unit):
    path, kind, options = write_times(tmp_path, fmt, UNIT[unit])
    table = load_dataset("mine", kind, tmp_path, tmp_path / "cache", options={**options, "time_unit": unit})
    assert sorted(table.times.tolist()) == sorted(T0 + t for ts in USERS.values() for t in ts)


@pytest.mark.parametrize("fmt", ["csv", "sequence", "hin"])
@pytest.mark.parametrize("written, read_as, hint", [("ms", "s", "time_unit=ms"), ("us", "s", "time_unit=us"),
                                                    ("us", "ms", "time_unit=us")])
def test_times_in_a_finer_unit_are_refused_with_the_unit_that_fits(tmp_path, fmt, written, read_as, hint):
    path, kind, options = write_times(tmp_path, fmt, UNIT[written])
    with pytest.raises(DataFormatError) as err:
        load_dataset("mine", kind, tmp_path, tmp_path / "cache", options={**options, "time_unit": read_as})
    text = str(err.value)
    first = (T0 + USERS["u1"][0]) * UNIT[written]  # the first time is already out of range
    line = {"csv": "line 2, column 'time'", "sequence": "line 1, column 2", "hin": "line 1, column 4 (unixtime)"}[fmt]
    for part in (f"{path}, {line}: time {first}", "after the year 2100", hint):
        assert part in text, (part, text)
    assert not cached(tmp_path)


@pytest.mark.parametrize("fmt", ["csv", "sequence", "hin"])
@pytest.mark.parametrize("bad, why", [(T0 * 1000, "after the year 2100"), (-86_400, "negative")])
def test_one_bad_time_is_named_by_line_and_column(tmp_path, fmt, bad, why):
    path, kind, options = write_times(tmp_path, fmt, 1, bad=bad)
    with pytest.raises(DataFormatError) as err:
        load_dataset("mine", kind, tmp_path, tmp_path / "cache", options=options)
    if fmt == "hin" and bad < 0:  # its integer fields are refused as negative before any time check
        expected = f"{path}, line 5: unixtime '{bad}' is not a non-negative integer"
    else:
        expected = f"{path}, {WHERE[fmt]}: time {bad} is {why}"
    assert expected in str(err.value), str(err.value)
    assert not cached(tmp_path)


@pytest.mark.parametrize("case, options, error, parts", [
    ("dates", {"time_unit": "ms"}, DataFormatError, ["line 2, column 'time'", "holds dates", "time_unit=s"]),
    ("unknown", {"time_unit": "ns"}, ValueError, ["time_unit='ns'", "s, ms, us"]),
    ("no-times-file", {"time_unit": "ms"}, ValueError, ["time_unit='ms' needs a times file", "positions in days"]),
])
def test_time_unit_settings_that_cannot_apply_are_refused(tmp_path, case, options, error, parts):
    if case == "no-times-file":
        path = tmp_path / "seq.txt"
        path.write_text("a x1 x2 x3\n")
    else:
        path = tmp_path / "t.csv"
        path.write_text("user,item,time\nu,i,2014-05-13\nu,j,2014-05-14\n")
    refused(tmp_path, error, *parts, path=path, **options)


# ---------------------------------------------------------------------------------------------------------------
# Users too short for the protocol: training data only, or dropped; counted either way, never a crash.

def write_short_users(tmp_path: Path) -> Path:
    """40 users with 4-7 items and 10 with 3 (too short for loo_val: >= 4), over 30 items."""
    rng = np.random.default_rng(0)
    lines = [f"s{u:02d} " + " ".join(f"i{k}" for k in rng.choice(30, 3, replace=False)) for u in range(10)]
    lines += [f"u{u:02d} " + " ".join(f"i{k}" for k in rng.choice(30, rng.integers(4, 8), replace=False))
              for u in range(40)]
    path = tmp_path / "seq.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_short_users_under_loo_val_are_training_data_only(tmp_path, caplog):
    path = write_short_users(tmp_path)
    options = data_options({"path": str(path)}, "loo_val", "train")
    table = load_dataset("mine", "interactions", tmp_path, tmp_path / "cache", options=options)
    with caplog.at_level(logging.WARNING):
        split = load_split(table, tmp_path / "cache", "loo_val", 1234, short_users="train")
    short = table.lengths < 4
    assert short.sum() == 10 and table.n_users == 50
    assert split.short_user_counts(table) == {"short_users_train_only": 10, "short_user_rows_train_only": 30}
    assert "10 user(s) with fewer than 4 interactions (30 rows) are training data only" in caplog.text
    for which in ("valid", "test"):  # held-out rows: only the users long enough
        assert eval_rows(table, split, which).user.tolist() == np.flatnonzero(~short).tolist()
    rows = train_rows(table, split, "pairwise")  # every position of a short user is a training target
    assert np.bincount(rows.user, minlength=table.n_users)[short].tolist() == [3] * 10
    again = load_split(table, tmp_path / "cache", "loo_val", 1234, short_users="train")  # from the cache
    assert np.array_equal(again.test_pos, split.test_pos) and np.array_equal(again.train_end, split.train_end)


def test_short_users_under_loo_val_can_be_dropped_and_counted(tmp_path):
    path = write_short_users(tmp_path)
    options = data_options({"path": str(path)}, "loo_val", "drop")
    assert options["min_user_interactions"] == 4
    table = load_dataset("mine", "interactions", tmp_path, tmp_path / "cache", options=options)
    split = load_split(table, tmp_path / "cache", "loo_val", 1234, short_users="drop")
    assert table.n_users == 40 and not any(k.startswith("s") for k in table.user_keys)
    assert table.cleaning["short_users_dropped"] == 10 and table.cleaning["short_user_rows_dropped"] == 30
    assert split.short_user_counts(table)["short_users_train_only"] == 0
    assert len(eval_rows(table, split, "test")) == 40


@pytest.mark.parametrize("case, protocol, short_users, parts", [
    ("all-short", "loo_val", "train", ["needs >= 4 interactions", "no user", "would be evaluated"]),
    ("unknown", "loo_val", "keep", ["protocol.short_users='keep'", "train", "drop"]),
])
def test_split_settings_that_cannot_work_are_refused(tmp_path, case, protocol, short_users, parts):
    (tmp_path / "seq.txt").write_text("a x1 x2 x3\nb x2 x3 x4\n")
    table = load(tmp_path, tmp_path / "seq.txt")
    with pytest.raises(ValueError) as err:
        load_split(table, tmp_path / "cache", protocol, 1234, short_users=short_users)
    for part in parts:
        assert part in str(err.value), (part, str(err.value))
    assert not list((tmp_path / "cache").glob("split_*"))  # the table of this good file is cached, no split


def test_a_loo_val_run_counts_its_short_users_in_mlflow(tmp_path):
    """The default (short_users=train) end to end: the run finishes and logs the count beside the data policy's
    (drop's count is the data policy's own data_short_users_dropped, checked above at the table)."""
    from runners.run import run

    path = write_short_users(tmp_path)
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    out = run(compose(["model=bpr", "protocol=loo_val", "protocol.eval_negatives=5", "protocol.full_ranking_users=0",
                       "dataset=interactions", f"dataset.options.path={path}", "dataset.name=short",
                       "trainer.max_steps=10", "trainer.eval_every=5", "trainer.num_threads=1",
                       f"paths.cache_dir={tmp_path / 'cache'}", f"mlflow.tracking_uri={uri}"]))
    metrics = mlflow.MlflowClient(uri).get_run(out["run_id"]).data.metrics
    assert out["status"] == "FINISHED"
    assert metrics["data_short_users_train_only"] == 10 and metrics["data_short_user_rows_train_only"] == 30
    assert metrics["n_users"] == 50 and metrics["n_test_users"] == 40


# ---------------------------------------------------------------------------------------------------------------
# A directory where a file belongs.

@pytest.mark.parametrize("which", ["path", "times_path", "amazon_hin"])
def test_a_directory_in_place_of_a_file_is_said_so(tmp_path, which):
    (tmp_path / "seq.txt").write_text("a x1 x2 x3\n")
    options: dict = {}
    if which == "path":
        target = tmp_path / "data.csv"
        target.mkdir()
        path = target
    elif which == "times_path":
        target = tmp_path / "times.txt"
        target.mkdir()
        path, options = tmp_path / "seq.txt", {"times_path": str(target)}
    else:
        target = tmp_path / "amazon_hin" / "user_item.dat"
        target.mkdir(parents=True)
        (tmp_path / "amazon_hin" / "item_category.dat").write_text("1,1\n")
        with pytest.raises(DataPathError) as err:
            load_dataset("mine", "amazon_hin", tmp_path, tmp_path / "cache")
        assert f"{target} is a directory, expected a file" in str(err.value) and "missing" not in str(err.value)
        assert not cached(tmp_path)
        return
    text = refused(tmp_path, DataPathError, f"{target} is a directory, expected a file", path=path, **options)
    assert "missing" not in text


# ---------------------------------------------------------------------------------------------------------------
# The data-policy options the README names, through the real config (no "+", no "not in struct").

DATASETS = ["sample", "hetero_sample", "clothing_seq", "amazon_hin", "grocery", "electro", "clothing", "interactions"]


@pytest.mark.parametrize("dataset", DATASETS)
def test_readme_data_options_compose_for_every_dataset(dataset):
    cfg = compose([f"dataset={dataset}", "dataset.options.duplicates=keep", "dataset.options.min_user_interactions=4",
                   "dataset.options.k_core=5", "protocol=loo_val", "protocol.short_users=drop"])
    assert (cfg.dataset.options.duplicates, cfg.dataset.options.min_user_interactions) == ("keep", 4)
    assert cfg.dataset.options.k_core == 5 and cfg.protocol.short_users == "drop"


def test_duplicates_keep_through_compose_keeps_the_rows(tmp_path):
    from runners.config import data_settings

    path = tmp_path / "t.csv"
    path.write_text("user,item,time\n" + "".join(f"u{u},i{k},{T0 + k}\n" for u in range(3) for k in range(4))
                    + f"u0,i1,{T0 + 1}\n")  # an exact duplicate row
    counts = {}
    for policy in ("drop", "keep"):
        d = data_settings(compose(["dataset=interactions", f"dataset.options.path={path}",
                                   f"dataset.options.duplicates={policy}", f"paths.cache_dir={tmp_path / 'cache'}"]))
        table = load_dataset(d.dataset, d.kind, d.data_root, d.cache_dir, data_options(d.options, d.split,
                                                                                         d.short_users))
        counts[policy] = (table.n_interactions, table.cleaning.get("duplicate_rows_dropped"))
    assert counts == {"drop": (12, 1), "keep": (13, None)}


@pytest.mark.parametrize("overrides", [
    ["dataset=amazon_hin", "dataset.options.behaviours=[brand,category]", "dataset.options.time_unit=ms"],
    ["dataset=interactions", "dataset.options.path=x.txt", "dataset.options.format=sequence",
     "dataset.options.times_path=t.txt", "dataset.options.repeated_users=concat", "dataset.options.time_unit=us"],
    ["dataset=interactions", "dataset.options.path=x.inter", "dataset.options.user_col=user_id",
     "dataset.options.item_col=item_id", "dataset.options.time_col=timestamp", "dataset.options.item_path=x.item",
     "dataset.options.category_col=categories", "dataset.options.rating_col=rating"],
    ["dataset=clothing_seq", "dataset.options.repeated_users=concat"],
    ["dataset=grocery", "dataset.options.time_unit=ms"],
], ids=["hin", "sequence", "recbole", "clothing_seq", "grocery"])
def test_the_other_readme_options_compose_without_a_plus(overrides):
    cfg = compose(overrides)
    for o in overrides[1:]:
        key, value = o.split("=", 1)
        assert str(cfg.dataset.options[key.split(".")[-1]]).replace("'", "").replace(" ", "") == value, o
