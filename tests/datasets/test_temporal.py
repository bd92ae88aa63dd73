"""protocol=temporal: a global cut in time (datasets/temporal.py), on a hand-drawn case and on amazon_hin."""
from __future__ import annotations

import numpy as np
import pytest

from datasets.batching import eval_rows, train_rows
from datasets.split import data_options, make_split
from tests.datasets.conftest import make_table


def hand_table():
    """Times (seconds), users in id order a, b, c, d; all 14 times sorted: 1 1 2 2 3 4 7 8 8 9 9 10 10 11, so the
    0.5 / 0.75 quantiles ("lower") are t1 = 7, t2 = 9:

        a: 1 2 3 | 8 | 9      trains on 3, validates on 8 (position 3), tests on 9 (position 4)
        b:       | 7 8 | 10   no interaction before t1: skipped
        c: 1 2 4 |   |        training data only
        d:       |   | 9 10 11  skipped
    """
    times = {"a": [1, 2, 3, 8, 9], "b": [7, 8, 10], "c": [1, 2, 4], "d": [9, 10, 11]}
    return make_table({u: [f"{u}{k}" for k in range(len(ts))] for u, ts in times.items()}, times=times)


def test_hand_drawn_temporal_split():
    t = hand_table()
    split = make_split(t, "temporal", eval_negatives=2, temporal_cut=(0.5, 0.75))
    assert split.cut_times == (7, 9)
    assert split.train_end.tolist() == [3, 5, 11, 11]  # b, d: train_end = their start: no training item
    assert split.valid_pos.tolist() == [3, -1, -1, -1] and split.test_pos.tolist() == [4, -1, -1, -1]
    assert split.short_user_counts(t) == {"temporal_users_no_history_skipped": 2, "temporal_users_train_only": 1,
                                          "temporal_valid_users": 1, "temporal_test_users": 1}
    assert train_rows(t, split, "sequence").user.tolist() == [0, 2]  # users with training items only
    assert eval_rows(t, split, "test").end.tolist() == [4]
    assert split.provenance() == {"temporal_cut_times": "7,9"}


def test_positions_only_times_bad_cuts_and_drop_are_refused():
    positions = make_table({"a": ["x", "y", "z"], "b": ["y", "z", "w"]})  # one day apart from 0: a file's order
    with pytest.raises(ValueError, match="protocol=temporal needs real interaction times.*positions only"):
        make_split(positions, "temporal")
    for cut in ([0.9, 0.8], [0.8], [0.0, 0.5], "0.8"):
        with pytest.raises(ValueError, match=r"protocol.temporal_cut=.*0 < q1 < q2 < 1"):
            make_split(hand_table(), "temporal", temporal_cut=cut)
    with pytest.raises(ValueError, match="set protocol.short_users=train"):
        data_options({}, "temporal", "drop")


@pytest.fixture(scope="module")
def amazon_hin(shared_data, tmp_path_factory):
    from datasets.load import load_dataset

    return load_dataset("amazon_hin", "amazon_hin", shared_data, tmp_path_factory.mktemp("cache"),
                        {"behaviours": None, "time_unit": "s", "duplicates": "drop", "min_user_interactions": 3,
                         "k_core": 0})


def test_amazon_hin_no_training_interaction_at_or_after_the_first_cut(amazon_hin):
    t = amazon_hin
    split = make_split(t, "temporal")
    t1, t2 = split.cut_times
    assert (t1, t2) == tuple(int(q) for q in np.quantile(t.times, [0.8, 0.9], method="lower")) and t1 < t2
    rows = train_rows(t, split, "pointwise")
    assert len(rows) and t.times[rows.end].max() < t1  # no training target at or after t1
    seq = train_rows(t, split, "sequence")
    assert (t.times[seq.end - 1] < t1).all()  # the last item of each training sequence too
    users = np.repeat(np.arange(t.n_users), t.lengths)
    trained = np.arange(t.n_interactions) < split.train_end[users]
    assert (t.times[trained] < t1).all() and (t.times[~trained] >= t1).all()  # training = everything before t1
    valid, test = eval_rows(t, split, "valid"), eval_rows(t, split, "test")
    assert len(valid) and len(test)
    assert ((t.times[valid.end] >= t1) & (t.times[valid.end] < t2)).all() and (t.times[test.end] >= t2).all()
    first = t.indptr[test.user]  # each the user's first interaction in its window
    assert (t.times[test.end - 1] < t2).all() and (test.end > first).all()
    assert (valid.end == split.train_end[valid.user]).all()
    counts = split.short_user_counts(t)
    skipped = split.train_end == t.indptr[:-1]
    assert counts["temporal_users_no_history_skipped"] == int(skipped.sum()) > 0
    assert not ((split.valid_pos >= 0) | (split.test_pos >= 0))[skipped].any()


NAMED_RUNS = {  # overrides -> the MLflow tag its split adds
    "temporal_cut_times": ["protocol=temporal", "dataset=amazon_hin", "protocol.full_ranking_users=0",
                           "protocol.eval_negatives=10"],
    "eval_negatives_file_sha256": ["protocol=s3rec", "dataset=lastfm", "protocol.full_ranking_users=0",
                                   "protocol.eval_negatives_file=s3rec/LastFM_sample.txt"]}


def test_named_protocols_run_to_finished_with_every_knob_in_mlflow(tmp_path):
    """protocol=temporal on amazon_hin and protocol=s3rec with LastFM's negatives file, in one MLflow store (its
    creation is most of the time)."""
    import mlflow

    from runners.run import run
    from tests.runners.conftest import compose

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    for tag, overrides in NAMED_RUNS.items():
        out = run(compose(["model=pop", *overrides, "trainer.max_steps=1", "trainer.num_threads=1",
                           f"paths.cache_dir={tmp_path / 'cache'}", f"mlflow.tracking_uri={uri}"]))
        run_data = mlflow.MlflowClient(uri).get_run(out["run_id"]).data
        assert out["status"] == "FINISHED"
        for knob in ("eval_negatives", "eval_negatives_kind", "eval_negatives_pool", "eval_negatives_redraw",
                     "eval_negatives_file", "temporal_cut", "split"):
            assert f"protocol.{knob}" in run_data.params, knob
        assert run_data.tags[tag] and run_data.metrics["test_sampled_hr_10"] > 0
