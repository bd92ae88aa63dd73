"""A compact, committable archive of a sqlite MLflow store, and its restore: how long sweeps survive a machine
that does not (a fresh clone restores the archive, then skip_finished and the reports see every archived run).

  python runners/archive.py export --tracking-uri sqlite:////abs/mlruns/mlflow.db --out <archive dir>
  python runners/archive.py restore --archive <archive dir> --tracking-uri sqlite:////abs/mlruns/mlflow.db

The archive holds the database (xz) and each finished run's per-user test outcomes without their repeated
columns: the (reviewerID, pos, neg) keys are stored once per split (xz CSV, named by their digest) and each run
keeps its two float32 score columns (npz). Restore writes the database back and rebuilds every outcomes CSV at
the artifact location the database records (the store's own folder: restore to the path it was exported from).
"""
from __future__ import annotations

import argparse
import hashlib
import io
import lzma
import shutil
import sqlite3
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from datasets.atomic import atomic_path, atomic_write_bytes  # noqa: E402
from reports.runs import OUTCOMES_ARTIFACT  # noqa: E402

KEY_COLUMNS = ["reviewerID", "pos", "neg"]


def db_path(tracking_uri: str) -> Path:
    if not tracking_uri.startswith("sqlite:///"):
        raise ValueError(f"--tracking-uri must be a sqlite URI (sqlite:////abs/path/mlflow.db), got {tracking_uri!r}")
    return Path(tracking_uri[len("sqlite:///"):])


def finished_runs(db: Path) -> list[tuple[str, str]]:
    """(run id, artifact location) of every FINISHED run."""
    with sqlite3.connect(db) as con:
        return con.execute("SELECT run_uuid, artifact_uri FROM runs WHERE status = 'FINISHED'").fetchall()


def local_path(artifact_uri: str) -> Path:
    return Path(artifact_uri[len("file://"):] if artifact_uri.startswith("file://") else artifact_uri)


def export(tracking_uri: str, out: Path) -> dict[str, int]:
    db = db_path(tracking_uri)
    out.mkdir(parents=True, exist_ok=True)
    (out / "outcomes").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:  # a consistent copy even while a sweep writes
        copy = Path(tmp) / "mlflow.db"
        with sqlite3.connect(db) as src, sqlite3.connect(copy) as dst:
            src.backup(dst)
        atomic_write_bytes(out / "mlflow.db.xz", lzma.compress(copy.read_bytes(), preset=9))
    n_runs = 0
    for run_id, uri in finished_runs(db):
        csv = local_path(uri) / OUTCOMES_ARTIFACT
        target = out / "outcomes" / f"{run_id}.npz"
        if not csv.is_file() or target.exists():
            continue
        df = pd.read_csv(csv, dtype={k: str for k in KEY_COLUMNS})
        keys = df[KEY_COLUMNS].to_csv(index=False).encode()
        digest = hashlib.sha256(keys).hexdigest()[:16]
        keys_file = out / "outcomes" / f"keys_{digest}.csv.xz"
        if not keys_file.exists():
            atomic_write_bytes(keys_file, lzma.compress(keys, preset=9))
        with atomic_path(target, suffix=".tmp.npz") as tmp_npz:
            np.savez_compressed(tmp_npz, keys=np.array(digest), score_pos=df["score_pos"].to_numpy(np.float32),
                                score_neg=df["score_neg"].to_numpy(np.float32))
        n_runs += 1
    return {"runs_added": n_runs, "runs_archived": len(list((out / "outcomes").glob("*.npz")))}


def restore(archive: Path, tracking_uri: str) -> dict[str, int]:
    db = db_path(tracking_uri)
    if db.exists():
        raise FileExistsError(f"{db} exists: restore into a new store (move the old one aside first)")
    db.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(db, lzma.decompress((archive / "mlflow.db.xz").read_bytes()))
    keys_cache: dict[str, pd.DataFrame] = {}
    n = 0
    for run_id, uri in finished_runs(db):
        npz = archive / "outcomes" / f"{run_id}.npz"
        if not npz.exists():
            continue
        with np.load(npz) as z:
            digest, pos, neg = str(z["keys"]), z["score_pos"], z["score_neg"]
        if digest not in keys_cache:
            raw = lzma.decompress((archive / "outcomes" / f"keys_{digest}.csv.xz").read_bytes())
            keys_cache[digest] = pd.read_csv(io.BytesIO(raw), dtype=str)
        df = keys_cache[digest].assign(score_pos=pos, score_neg=neg, correct=(pos > neg).astype(int))
        target = local_path(uri) / OUTCOMES_ARTIFACT
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, df.to_csv(index=False, float_format="%.8g").encode())
        n += 1
    return {"runs_restored": n}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export")
    e.add_argument("--tracking-uri", required=True)
    e.add_argument("--out", type=Path, required=True)
    r = sub.add_parser("restore")
    r.add_argument("--archive", type=Path, required=True)
    r.add_argument("--tracking-uri", required=True)
    a = p.parse_args(argv)
    result = export(a.tracking_uri, a.out) if a.command == "export" else restore(a.archive, a.tracking_uri)
    print(", ".join(f"{k} {v}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
