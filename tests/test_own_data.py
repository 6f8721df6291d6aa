"""Your own data, proved on real crops: part of Market-1501 re-packed, at test time, into a manifest and into a
folder-per-identity tree (the crops are linked or copied into a temporary folder, never committed) must give the
same records, counts and, for the same model, the same scorecard as the Market-1501 loader; with the cameras
dropped, the pre-flight and the scorecard must say that the protocol changed. Skipped, with the reason, without
`REID_DATA_ROOT`.

The bad-input tests need no real data: a user's mistake in a manifest or a folder tree ends `secondsight-train`
and `secondsight-check-data` with one line naming the file and row, exit status 1, and no run folder written.
"""

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from secondsight import config as C
from secondsight.data import parse_market_name, synthetic_person
from secondsight.datasets import (
    Market1501,
    read_folders,
    read_manifests,
    subset_dataset,
)
from secondsight.evaluate import evaluate_model
from secondsight.model import ReIDModel
from secondsight.preflight import preflight

ROOT = os.environ.get("REID_DATA_ROOT")
needs_market = pytest.mark.skipif(
    not ROOT, reason="REID_DATA_ROOT not set: no Market-1501 to re-pack"
)
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def market():
    "A small part of Market-1501: 8 training identities, 5 test identities (their queries and gallery images)."
    return subset_dataset(Market1501(ROOT), num_train_pids=8, num_test_pids=5, seed=0)


def original_pid(path):
    return parse_market_name(path)[0]


def write_manifest(path, records, cameras=True):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "pid", "camid"])
        for r in records:
            w.writerow([r.path, original_pid(r.path), r.camid if cameras else ""])


def link(src, dst):
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.symlink(src, dst)
    except OSError:
        shutil.copy(src, dst)


def as_tuples(records, name_only=False):
    return [
        (Path(r.path).name if name_only else r.path, r.pid, r.camid) for r in records
    ]


@pytest.fixture(scope="module")
def repacked(market, tmp_path_factory):
    "The same crops as a manifest (cameras kept), a manifest without cameras, and a folder-per-identity tree."
    t = tmp_path_factory.mktemp("repacked")
    (t / "manifest").mkdir()
    (t / "nocam").mkdir()
    for split in ("train", "query", "gallery"):
        recs = getattr(market, split)
        write_manifest(t / "manifest" / f"{split}.csv", recs)
        write_manifest(t / "nocam" / f"{split}.csv", recs, cameras=False)
        for r in recs:
            link(
                r.path,
                t
                / "folders"
                / split
                / f"{original_pid(r.path):04d}"
                / Path(r.path).name,
            )
    return t


@needs_market
def test_manifest_gives_the_same_records(market, repacked):
    ds = read_manifests(repacked / "manifest")
    for split in ("train", "query", "gallery"):
        assert as_tuples(getattr(ds, split)) == as_tuples(getattr(market, split)), split
    assert ds.counts() == Market1501.counts(market)
    assert ds.num_train_pids == market.num_train_pids == 8


@needs_market
def test_folders_give_the_same_records(market, repacked):
    ds = read_folders(repacked / "folders")  # cameras from the file names (`_c3`)
    for split in ("train", "query", "gallery"):
        ours = sorted(as_tuples(getattr(ds, split), name_only=True))
        assert ours == sorted(as_tuples(getattr(market, split), name_only=True)), split
    assert ds.identities == {
        f"{p:04d}": p
        for p in {
            original_pid(r.path)
            for s in ("train", "query", "gallery")
            for r in getattr(market, s)
        }
    }


@pytest.fixture(scope="module")
def scorecards(market, repacked):
    "Scorecards of one untrained model on the Market-1501 part and on each re-packed copy."
    cfg = C.Config(
        data=C.DataConfig(height=64, width=32, test_batch_size=64, num_workers=0),
        model=C.ModelConfig(backbone="resnet18", pretrained="none", last_stride=2),
        test=C.TestConfig(flip=False),
        device="cpu",
    )
    torch.manual_seed(0)
    model = ReIDModel.from_config(cfg.model).eval()
    out = {}
    for name, ds in (
        ("market", market),
        ("manifest", read_manifests(repacked / "manifest")),
        ("folders", read_folders(repacked / "folders")),
        ("nocam", read_manifests(repacked / "nocam")),
    ):
        out[name] = evaluate_model(model, ds.query, ds.gallery, cfg, progress=False)
    return out


@needs_market
def test_same_scorecard_where_the_information_is_the_same(scorecards):
    ref = scorecards["market"].rows["Baseline"]
    for name in ("manifest", "folders"):
        got = scorecards[name].rows["Baseline"]
        assert (got.mAP, got.num_valid, list(got.cmc)) == (
            ref.mAP,
            ref.num_valid,
            list(ref.cmc),
        ), name
        assert scorecards[name].protocol() == scorecards["market"].protocol()
    assert "same-camera matches excluded," in scorecards["market"].protocol()


@needs_market
def test_cameras_dropped_the_protocol_changed(market, repacked, scorecards):
    nocam = read_manifests(repacked / "nocam")
    assert {r.camid for r in nocam.query + nocam.gallery} == {-1}
    rep = preflight(nocam, p=4, k=2)
    assert rep.protocol().startswith("same-camera matches NOT excluded")
    assert any("protocol changed" in f.effect for f in rep.findings)
    assert (
        preflight(market, p=4, k=2)
        .protocol()
        .startswith("same-camera matches excluded;")
    )
    line = scorecards["nocam"].protocol()
    assert "same-camera matches NOT excluded (cameras unknown)" in line, line
    # the same-camera images now count: the scorecard is not the Market-1501 one
    assert (
        scorecards["nocam"].rows["Baseline"].mAP
        != scorecards["market"].rows["Baseline"].mAP
    )


# ---- bad input: one line naming the file and row, exit 1, nothing written ----


@pytest.fixture
def crops(tmp_path):
    for i, name in enumerate(["a.jpg", "b.jpg", "c.jpg", "d.jpg"]):
        synthetic_person(i // 2, i).save(tmp_path / name)
    return tmp_path


def run(cmd, cwd):
    return subprocess.run(
        [str(BIN / cmd[0]), *cmd[1:]], capture_output=True, text=True, cwd=cwd
    )


BAD_MANIFESTS = {
    "missing column": (
        "path,camid,split\na.jpg,0,train\nb.jpg,1,query\nc.jpg,1,gallery\n",
        "manifest.csv: no 'pid' column",
    ),
    "missing path": (
        "path,pid,camid,split\na.jpg,1,0,train\nzz.jpg,1,1,query\n",
        "manifest.csv, line 3: image not found",
    ),
    "non-integer camera": (
        "path,pid,camid,split\na.jpg,1,0,train\nb.jpg,1,cam1,query\n",
        "manifest.csv, line 3: camid must be an integer",
    ),
    "empty split": (
        "path,pid,camid,split\na.jpg,1,0,train\nb.jpg,1,1,query\n",
        "manifest.csv: no gallery images",
    ),
}


@pytest.mark.parametrize("case", BAD_MANIFESTS)
@pytest.mark.parametrize("command", ["secondsight-train", "secondsight-check-data"])
def test_bad_manifest(crops, case, command):
    text, message = BAD_MANIFESTS[case]
    (crops / "manifest.csv").write_text(text)
    args = (
        ["--set", "data.dataset=manifest", f"data.root={crops}", "--output-dir", "run"]
        if command == "secondsight-train"
        else ["--dataset", "manifest", "--data-root", str(crops)]
    )
    r = run([command, *args], cwd=crops)
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], r.stderr
    assert not (crops / "run").exists()


def test_folder_with_no_identities(crops):
    for split in ("train", "query", "gallery"):
        (crops / "tree" / split).mkdir(parents=True)
    shutil.copy(
        crops / "a.jpg", crops / "tree" / "query" / "a.jpg"
    )  # loose: no identity
    r = run(
        [
            "secondsight-train",
            "--set",
            "data.dataset=folders",
            f"data.root={crops / 'tree'}",
            "--output-dir",
            "run",
        ],
        cwd=crops,
    )
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "train: no identities" in lines[0], r.stderr
    assert not (crops / "run").exists()
