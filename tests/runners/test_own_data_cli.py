"""Users' own data through the main command, as the README's "Your own data" lines run it: each of the four
formats trains and logs a FINISHED run with its dataset input; bad files exit non-zero with the file, the line and
what was expected, and leave no run and no table behind; duplicate rows are dropped and counted in MLflow."""
from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
import pytest

from tests.runners.conftest import run_cli

QUICK = ["trainer.max_steps=40", "trainer.eval_every=20", "trainer.num_threads=1"]
CSV = "electronics_sample_csv/amazon_electronics_sample.csv"


def own_files(shared_data: Path, tmp: Path) -> dict[str, list[str]]:
    """dataset.options of each format, on files made here from the shared data (a few hundred users each)."""
    df = pd.read_csv(shared_data / CSV)
    df.to_parquet(tmp / "mine.parquet")
    lines = (shared_data / "amazon_clothing_seq/user_sequence.txt").read_text().splitlines()[:400]
    (tmp / "mine.txt").write_text("\n".join(lines) + "\n")
    df.rename(columns={"user_id": "user_id:token", "item_id": "item_id:token", "time": "timestamp:float"})[
        ["user_id:token", "item_id:token", "timestamp:float"]].to_csv(tmp / "mine.inter", sep="\t", index=False)
    df[["item_id", "cate_id"]].drop_duplicates("item_id").rename(
        columns={"item_id": "item_id:token", "cate_id": "categories:token_seq"}).to_csv(tmp / "mine.item", sep="\t",
                                                                                        index=False)
    table = ["dataset.options.user_col=user_id", "dataset.options.item_col=item_id",
             "dataset.options.category_col=cate_id"]
    return {"csv": [f"dataset.options.path={shared_data / CSV}", *table],
            "parquet": [f"dataset.options.path={tmp / 'mine.parquet'}", *table],
            "sequence": [f"dataset.options.path={tmp / 'mine.txt'}"],
            "recbole": [f"dataset.options.path={tmp / 'mine.inter'}", "dataset.options.user_col=user_id",
                        "dataset.options.item_col=item_id", "dataset.options.time_col=timestamp",
                        f"dataset.options.item_path={tmp / 'mine.item'}", "dataset.options.category_col=categories"]}


@pytest.mark.slow  # long CLI run: the slow tier (python -m pytest -m slow)
def test_each_format_runs_from_the_command_line(shared_data, isolated, tmp_path):
    formats = own_files(shared_data, tmp_path)
    for name, options in formats.items():
        res = run_cli(["model=pop", "dataset=interactions", f"dataset.name=mine_{name}", *options, *QUICK],
                      isolated, tmp_path)
        assert res.returncode == 0, (name, res.stderr[-2000:])
    client = mlflow.MlflowClient(isolated["MLFLOW_TRACKING_URI"])
    test_users = {}
    for name in formats:
        exp = client.get_experiment_by_name(f"mine_{name}/paper")
        (run,) = client.search_runs([exp.experiment_id])
        assert run.info.status == "FINISHED", name
        test_users[name] = run.data.metrics["n_test_users"]
        (data_input,) = run.inputs.dataset_inputs
        assert (data_input.dataset.name, data_input.dataset.digest) == (f"mine_{name}", run.data.tags["data_hash"])
    # one test user per user with at least 3 interactions (the default min_user_interactions)
    from_csv = int((pd.read_csv(shared_data / CSV).groupby("user_id").size() >= 3).sum())
    from_txt = sum(len(line.split()) - 1 >= 3 for line in (tmp_path / "mine.txt").read_text().splitlines())
    assert test_users == {"csv": from_csv, "parquet": from_csv, "sequence": from_txt, "recbole": from_csv}


SLOW = pytest.mark.slow  # the other cases of a CLI check: the slow tier (in-process tests cover them all)


@pytest.mark.parametrize("bad, parts", [
    ("u,a,1\nu,b,2,9\nu,c,3\n", ["line 3: 4 fields, expected 3"]),
    pytest.param("u,a,1\nu,b,2014-01-02\nu,c,3\n",
                 ["mixes unix timestamps ('1', line 2) and dates ('2014-01-02', line 3)"], id="mixed-dates", marks=SLOW),
    pytest.param("u,a,1\nu,b,yesterday\nu,c,3\n", ["line 3: time 'yesterday'", "expected integer seconds"],
                 id="bad-time", marks=SLOW),
], ids=["wide-line", "mixed-dates", "bad-time"])
def test_a_bad_file_exits_with_its_line_and_leaves_nothing(isolated, tmp_path, bad, parts):
    path = tmp_path / "bad.csv"
    path.write_text("user,item,time\n" + bad)
    res = run_cli(["model=pop", "dataset=interactions", f"dataset.options.path={path}", *QUICK], isolated, tmp_path)
    assert res.returncode == 1
    assert f"DataFormatError: {path}, " in res.stderr and all(p in res.stderr for p in parts), res.stderr[-2000:]
    client = mlflow.MlflowClient(isolated["MLFLOW_TRACKING_URI"])
    assert not [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert not list((Path(isolated["SEQREC_CACHE"])).glob("table_*.npz"))


def test_duplicate_rows_are_dropped_and_the_count_is_in_mlflow(shared_data, isolated, tmp_path):
    df = pd.read_csv(shared_data / CSV)
    pd.concat([df, df]).to_csv(tmp_path / "twice.csv", index=False)
    res = run_cli(["model=pop", "dataset=interactions", f"dataset.options.path={tmp_path / 'twice.csv'}",
                   "dataset.options.user_col=user_id", "dataset.options.item_col=item_id", *QUICK], isolated, tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"duplicate_rows_dropped = {len(df)}" in res.stdout + res.stderr
    client = mlflow.MlflowClient(isolated["MLFLOW_TRACKING_URI"])
    (run,) = client.search_runs([client.get_experiment_by_name("interactions/paper").experiment_id])
    assert run.data.metrics["data_duplicate_rows_dropped"] == len(df)
    assert run.data.metrics["n_interactions"] <= len(df)


ROWS = "user,item,time\n" + "".join(f"u{u},i{(u + k) % 12},{100 * u + k}\n" for u in range(6) for k in range(6))


def write_case(path: Path, case: str) -> None:
    """The real-export shapes that used to be rejected or misread (each good now, or an error with its line)."""
    import gzip

    data = ROWS.encode()
    if case == "decode-error":
        data = data.replace(b"u2,i2,200", b"u2,caf\xe9,200")  # the first row of u2: line 14
    elif case == "truncated-gzip":
        packed = gzip.compress(data * 40)
        data = packed[: len(packed) // 2]
    elif case == "bom":
        data = b"\xef\xbb\xbf" + data
    elif case == "gzip-in-csv":
        data = gzip.compress(data)
    elif case == "short-user":
        data += b"lonely,i0,5\n"
    path.write_bytes(data)


@pytest.mark.parametrize("case, suffix, parts", [
    ("decode-error", ".csv", ["line 14 (byte", "not UTF-8"]),
    pytest.param("truncated-gzip", ".csv.gz", [": the gzip stream is truncated or corrupt", "get it again"],
                 id="truncated-gzip", marks=SLOW),
], ids=["decode-error", "truncated-gzip"])
def test_unreadable_exports_exit_with_their_line(isolated, tmp_path, case, suffix, parts):
    path = tmp_path / f"export{suffix}"
    write_case(path, case)
    res = run_cli(["model=pop", "dataset=interactions", f"dataset.options.path={path}", *QUICK], isolated, tmp_path)
    assert res.returncode == 1 and f"{path}, line " in res.stderr and all(p in res.stderr for p in parts), \
        res.stderr[-2000:]
    client = mlflow.MlflowClient(isolated["MLFLOW_TRACKING_URI"])
    assert not [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert not list((Path(isolated["SEQREC_CACHE"])).glob("table_*.npz"))


@pytest.mark.parametrize("case, metric", [pytest.param("bom", None, marks=SLOW),
                                          pytest.param("gzip-in-csv", None, marks=SLOW),
                                          ("short-user", "data_short_users_dropped")])
def test_real_exports_that_used_to_fail_now_train(isolated, tmp_path, case, metric):
    path = tmp_path / "export.csv"
    write_case(path, case)
    res = run_cli(["model=pop", "dataset=interactions", f"dataset.options.path={path}", *QUICK], isolated, tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    client = mlflow.MlflowClient(isolated["MLFLOW_TRACKING_URI"])
    (run,) = client.search_runs([client.get_experiment_by_name("interactions/paper").experiment_id])
    assert run.info.status == "FINISHED" and run.data.metrics["n_users"] == 6
    if metric:
        assert run.data.metrics[metric] == 1
    assert len(list((Path(isolated["SEQREC_CACHE"])).glob("table_*.npz"))) == 1


@pytest.mark.slow  # long CLI run: the slow tier (python -m pytest -m slow)
def test_an_in_place_edit_keeping_size_and_mtime_is_new_data(isolated, tmp_path):
    """cp -p / rsync -t keep size and mtime: the table, the data_hash and skip_finished still see the new bytes."""
    import os

    path = tmp_path / "export.csv"
    path.write_text(ROWS)
    args = ["model=pop", "dataset=interactions", f"dataset.options.path={path}", *QUICK]
    assert run_cli(args, isolated, tmp_path).returncode == 0
    stat = path.stat()
    path.write_text(ROWS.replace("u0,i0,0", "u0,i9,0"))  # same size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns
    res = run_cli(args, isolated, tmp_path)
    assert res.returncode == 0 and "skip " not in res.stdout + res.stderr
    client = mlflow.MlflowClient(isolated["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name("interactions/paper").experiment_id])
    assert len(runs) == 2 and len({r.data.tags["data_hash"] for r in runs}) == 2
    assert all(r.info.status == "FINISHED" for r in runs)
