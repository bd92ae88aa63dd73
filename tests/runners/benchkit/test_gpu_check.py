"""runners/gpu_check.py cannot rot: its --smoke mode runs on the CPU (tiny sizes, the device-resident path forced
on), in a fresh interpreter where mlflow and tqdm cannot be imported (the GPU machine has neither), and its
clothing_seq AUC is the one runners/run.py gives for the same settings."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from tests.runners.conftest import REPO_ROOT, compose, isolated_env

BLOCKED = ("import runpy, sys; sys.modules['mlflow'] = sys.modules['tqdm'] = None; sys.argv = sys.argv[1:]; "
           "runpy.run_path(sys.argv[0], run_name='__main__')")


def test_gpu_check_smoke_runs_on_cpu_without_mlflow(tmp_path, shared_data):
    out = tmp_path / "out"
    args = [sys.executable, "-c", BLOCKED, str(REPO_ROOT / "runners" / "gpu_check.py"), "--device", "cpu", "--smoke",
            "--models", "bpr", "--set", "trainer.device_batches=true", "--set", "trainer.num_threads=1",
            "--data-root", str(shared_data), "--out", str(out)]
    proc = subprocess.run(args, env=isolated_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((out / "gpu_check.json").read_text())
    assert result["device"]["device"] == "cpu" and result["smoke"] and not result["skipped"]
    (bpr,) = result["throughput"]
    assert bpr["label"] == "bpr" and bpr["ex_per_s"] > 0 and bpr["eval_s"] > 0
    (auc,) = result["clothing_seq_atrank"]
    assert auc["device"] == "cpu" and auc["steps"] == 30
    assert "AUC     cpu fp32" in proc.stdout
    assert auc["test_auc"] == pytest.approx(runner_auc(tmp_path, shared_data), abs=1e-6)


def runner_auc(tmp_path, shared_data) -> float:
    """The test AUC runners/run.py reports for gpu_check's smoke clothing_seq settings (in-process, 1 thread)."""
    from runners.run import run

    overrides = ["model=atrank", "dataset=clothing_seq", "trainer.epochs=1", "trainer.eval_every=0",
                 "trainer.device=cpu", "trainer.precision=fp32", "trainer.device_batches=true",
                 "trainer.num_threads=1", "trainer.max_steps=30", f"paths.data_root={shared_data}",
                 f"paths.cache_dir={tmp_path / 'run_cache'}", f"mlflow.tracking_uri=sqlite:///{tmp_path / 'run.db'}",
                 "skip_finished=false"]
    return run(compose(overrides))["test_auc"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: cuda is found")
def test_gpu_check_asked_for_cuda_without_a_gpu_says_what_it_found(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "runners" / "gpu_check.py"), "--device", "cuda"],
                          env=isolated_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "no CUDA GPU was found" in proc.stderr and "is_available()=False" in proc.stderr
