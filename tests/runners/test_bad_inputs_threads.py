"""Bad thread settings and bench --contend inputs: refused before anything runs, naming the key or the flag."""
from __future__ import annotations

import pytest

from tests.runners.conftest import compose


@pytest.mark.parametrize("value", ["0", "-2", "1.5", "two", "true"])
def test_a_thread_count_that_is_not_a_positive_integer_is_refused_before_anything_runs(tmp_path, value):
    from runners.run import run

    cfg = compose(["model=bpr", "dataset=sample", f"trainer.num_threads={value}",
                   f"paths.cache_dir={tmp_path / 'cache'}", f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"])
    with pytest.raises(ValueError, match=r"trainer\.num_threads must be an integer >= 1 or null \(null = the CPUs "
                                         r"shared out between the processes\), got"):
        run(cfg)
    assert not (tmp_path / "cache").exists() and not (tmp_path / "mlflow.db").exists()  # no data, no run


def test_bench_contend_refuses_an_unknown_model(capsys):
    from runners.bench import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--contend", "--models", "atrank,nope"])
    assert exit_info.value.code == 2
    assert "unknown model(s) ['nope']; choose from" in capsys.readouterr().err


def test_bench_contend_refuses_a_non_numeric_step_count(capsys):
    from runners.bench import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--contend", "--steps", "many"])
    assert exit_info.value.code == 2
    assert "argument --steps: invalid int value: 'many'" in capsys.readouterr().err
