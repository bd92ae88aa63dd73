"""runners/parallel/lifeline.py: a worker that asked to die with its parent ends when the parent is killed -9, and one whose
parent is gone before it asked exits at once (torchrun ranks, data-parallel helpers)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from runners.parallel.lifeline import ORPHANED_EXIT, launched_by_torchrun, torchrun_rank_dies_with_parent
from tests.runners.conftest import REPO_ROOT, alive

LIVENESS_S = 30.0  # generous bound for polling a process's end on a busy machine (no timing is asserted)
TORCHRUN_ENV = {"RANK": "1", "WORLD_SIZE": "2", "TORCHELASTIC_RUN_ID": "none"}

# The parent starts the child, which arms die_with_parent(parent) (or not), writes its pid and sleeps; the parent
# writes the child's pid once the child is armed, then sleeps until killed.
PARENT = textwrap.dedent("""
    import os, subprocess, sys, time
    marker, arm = sys.argv[1], sys.argv[2] == "1"
    child = '''
    import os, sys, time
    sys.path.insert(0, {root!r})
    from runners.parallel.lifeline import die_with_parent
    if sys.argv[2] == "1":
        die_with_parent(int(sys.argv[1]))
    open(sys.argv[3] + ".child", "w").write(str(os.getpid()))
    time.sleep(300)
    '''
    subprocess.Popen([sys.executable, "-c", child, str(os.getpid()), sys.argv[2], marker])
    time.sleep(300)
""")


def wait_for(predicate, timeout: float = LIVENESS_S) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def start_chain(tmp_path, arm: bool) -> tuple[subprocess.Popen, int]:
    marker = tmp_path / "chain"
    parent = subprocess.Popen([sys.executable, "-c", PARENT.replace("{root!r}", repr(str(REPO_ROOT))), str(marker),
                               "1" if arm else "0"])
    child_file = marker.with_suffix(".child")
    assert wait_for(lambda: child_file.exists() and child_file.read_text().isdigit(), 120), "the child never started"
    return parent, int(child_file.read_text())


@pytest.mark.parametrize("arm", [True, False], ids=["armed", "not_armed"])
def test_a_child_dies_with_its_parent_killed_9_only_when_armed(tmp_path, arm):
    parent, child = start_chain(tmp_path, arm)
    try:
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        if arm:
            assert wait_for(lambda: not alive(child)), f"child {child} still alive {LIVENESS_S:.0f} s after its parent"
        else:  # the control: without the request the orphan lives on (what torchrun's ranks did)
            time.sleep(1.0)
            assert alive(child)
    finally:
        if alive(child):
            os.kill(child, signal.SIGKILL)


def run_python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})})


def test_a_child_whose_parent_is_already_gone_exits_at_once():
    # pid 1 is not this child's parent: as if the parent died and the child was re-parented before the call
    proc = run_python("from runners.parallel.lifeline import die_with_parent\ndie_with_parent(1)\nprint('survived')")
    assert proc.returncode == ORPHANED_EXIT and "survived" not in proc.stdout, proc.stderr


def test_a_torchrun_rank_arms_itself_and_an_orphaned_one_leaves():
    armed = run_python("import os\nfrom runners.parallel.lifeline import torchrun_rank_dies_with_parent, _guarded_parent\n"
                       "torchrun_rank_dies_with_parent()\nimport runners.parallel.lifeline as l\n"
                       "print(l._guarded_parent == os.getppid())", TORCHRUN_ENV)
    assert armed.returncode == 0 and armed.stdout.strip() == "True", armed.stderr
    orphan = run_python("from runners.parallel.lifeline import torchrun_rank_dies_with_parent\n"
                        "torchrun_rank_dies_with_parent(parent_pid=1)\nprint('survived')", TORCHRUN_ENV)
    assert orphan.returncode == ORPHANED_EXIT and "survived" not in orphan.stdout, orphan.stderr


def test_outside_torchrun_nothing_is_armed():
    assert not launched_by_torchrun({"RANK": "0"})
    assert launched_by_torchrun(TORCHRUN_ENV)
    torchrun_rank_dies_with_parent(parent_pid=1, environ={})  # not a rank: returns, does not exit


def test_a_data_parallel_helper_whose_rank_0_is_gone_leaves_before_loading_its_job(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "runners.data_parallel", str(tmp_path / "no-job"), "1", "0:99", "1"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert proc.returncode == ORPHANED_EXIT and "Traceback" not in proc.stderr, proc.stderr
