"""A run killed after a checkpoint and resumed equals an uninterrupted one, with two loader workers.

Both runs go through `secondsight-train` in a subprocess on the synthetic Market-1501 (tiny ResNet-18 from
scratch, 64x32 crops, CPU). The killed run is stopped with SIGKILL as soon as its first `last.pth` appears, so it
dies in the middle of a later epoch with its worker processes running; it is then resumed from that checkpoint.
Losses, mAP and the final weights must be identical, bit for bit.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from secondsight.checkpoint import load_checkpoint, read_history
from secondsight.config import Config, apply_overrides, save_config
from secondsight.datasets import make_fake_market

TRAIN = str(Path(sys.executable).parent / "secondsight-train")  # the console script
SETTINGS = [
    "data.height=64",
    "data.width=32",
    "data.p=2",
    "data.k=2",
    "data.num_workers=2",
    "data.test_batch_size=8",
    "model.backbone=resnet18",
    "model.pretrained=none",
    "solver.max_iters_per_epoch=2",
    "solver.warmup_epochs=2",
    "solver.epochs=3",
    "solver.eval_period=3",
    "solver.checkpoint_period=1",
    "solver.deterministic=true",
    "device=cpu",
]


def _command(cfg: Path, root: Path, out: Path, *extra: str) -> list[str]:
    return [
        TRAIN,
        f"--config={cfg}",
        f"--data-root={root}",
        f"--output-dir={out}",
        "--quiet",
        *extra,
    ]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _run(cmd: list[str]) -> None:
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]


def test_killed_and_resumed_with_workers_equals_uninterrupted(tmp_path):
    root = make_fake_market(
        tmp_path / "market", train_ids=4, test_ids=3, cams=2, per_cam=2, size=(32, 64)
    )
    cfg = save_config(apply_overrides(Config(), SETTINGS), tmp_path / "tiny.yaml")
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    _run(_command(cfg, root, straight))

    # the same run, killed (SIGKILL, with its loader workers) once its first checkpoint is on disk
    proc = subprocess.Popen(
        _command(cfg, root, killed),
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.time() + 900
    while (
        not (killed / "last.pth").exists()
        and proc.poll() is None
        and time.time() < deadline
    ):
        time.sleep(0.01)
    assert proc.poll() is None, (
        f"the run ended before it could be killed: {proc.stderr.read()[-2000:]}"
    )
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    stopped_at = load_checkpoint(killed / "last.pth")["epoch"]
    assert 1 <= stopped_at < 3 and not (killed / "model_inference.pth").exists()

    _run(_command(cfg, root, killed, f"--resume={killed / 'last.pth'}"))

    a, b = (
        read_history(straight / "history.jsonl"),
        read_history(killed / "history.jsonl"),
    )
    assert [r["epoch"] for r in b] == [1, 2, 3]
    for key in ("loss", "loss_ce", "loss_triplet", "loss_center", "acc", "lr", "mAP"):
        assert [r.get(key) for r in b] == [r.get(key) for r in a], (
            key,
            json.dumps(a),
            json.dumps(b),
        )
    wa, wb = (
        load_checkpoint(straight / "last.pth")["model"],
        load_checkpoint(killed / "last.pth")["model"],
    )
    assert list(wa) == list(wb)
    differ = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not differ, (
        f"resumed after epoch {stopped_at}: {len(differ)} tensors differ, e.g. {differ[:3]}"
    )
