"""runners/bench.py --contend: its arguments, the busy process it starts and ends, and its side-by-side table."""
from __future__ import annotations

import os
import subprocess
import sys

from runners.bench import apply_defaults, parse_args
from runners.benchkit.bench_contend import busy_code, busy_cpu, busy_process, contend_markdown, contend_row, dataset_spec
from tests.runners.conftest import alive


def test_contend_parses_with_the_models_and_sizes_given():
    _, args = parse_args(["--contend", "--models", "atrank,bpr", "--steps", "4", "trainer.num_threads=1"])
    apply_defaults(args)
    assert args.contend and args.models == "atrank,bpr" and args.steps == 4 and args.repeats == 3
    assert args.overrides == ["trainer.num_threads=1"]
    assert not parse_args([])[1].contend


def test_the_busy_process_spins_pinned_and_is_gone_after_the_block():
    with busy_process(limit_s=120) as proc:
        assert alive(proc.pid)
        if busy_cpu() is not None:
            assert os.sched_getaffinity(proc.pid) == {busy_cpu()}
    assert proc.returncode is not None and not alive(proc.pid)


def test_the_busy_loop_ends_by_itself():
    assert subprocess.run([sys.executable, "-c", busy_code(0.2)], timeout=60).returncode == 0


def test_the_side_by_side_row_and_table():
    row = contend_row("atrank", {"threads": 2, "ex_per_s": 4000.0}, {"threads": 2, "ex_per_s": 3400.0})
    assert row == {"model": "atrank", "threads": 2, "quiet_ex_per_s": 4000.0, "busy_ex_per_s": 3400.0,
                   "ratio": 0.85}
    failed = contend_row("bpr", {"threads": 2, "ex_per_s": 1.0}, {"error": "timed out after 5 s"})
    assert failed == {"model": "bpr", "error": "timed out after 5 s"}
    text = contend_markdown([row, failed], "some CPU", 1)
    assert "| atrank | 2 | 4,000 | 3,400 | 0.85x |" in text and "| bpr | - | FAILED: timed out after 5 s" in text
    assert "pinned to CPU 1" in text


def test_the_contend_dataset_is_sample_with_its_configured_options(tmp_path):
    spec = dataset_spec(tmp_path / "data", tmp_path / "cache")
    assert spec["dataset"] == "sample" and spec["kind"] == "sample"
    assert spec["options"] == {"n_users": 3000, "n_items": 1500, "n_categories": 40, "seed": 0,
                               "duplicates": "drop", "min_user_interactions": 3, "k_core": 0}
