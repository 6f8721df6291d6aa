"""A full disk during training or export: a clear "no space left on <folder>", and nothing already saved is lost.

A small tmpfs is mounted for the run folder (root only; skipped with the reason otherwise). A tiny OSNet-x0.25
trains one epoch on the synthetic Market-1501, then the disk is filled so that the next checkpoint cannot be
written. The error must name the folder, `last.pth` must come out byte-for-byte unchanged, and no temporary file
may be left behind. The same for the inference weights and for `secondsight-export` (no `.onnx` without its
weights file).
"""

import errno
import os
import subprocess
from pathlib import Path

import pytest
import torch

from secondsight.config import Config, apply_overrides
from secondsight.datasets import make_fake_market
from secondsight.train import train

SETTINGS = [
    "data.height=64",
    "data.width=32",
    "data.p=2",
    "data.k=2",
    "data.num_workers=0",
    "model.backbone=osnet_x0_25",
    "model.pretrained=none",
    "solver.max_iters_per_epoch=1",
    "solver.epochs=1",
    "solver.eval_period=0",
    "solver.checkpoint_period=1",
    "device=cpu",
]


@pytest.fixture
def small_disk(tmp_path):
    "A 16 MiB tmpfs at `tmp_path/disk`, unmounted afterwards."
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        pytest.skip(
            f"mount -t tmpfs is not permitted here: {(r.stderr or r.stdout).strip()}"
        )
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def _fill(disk: Path, leave: int) -> Path:
    "Fill `disk` until about `leave` bytes are free; the filler file."
    filler = disk / "filler.bin"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
    size = filler.stat().st_size
    os.truncate(filler, max(0, size - leave))
    return filler


def _temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _cfg(epochs: int):
    return apply_overrides(Config(), SETTINGS + [f"solver.epochs={epochs}"])


def test_training_on_a_full_disk(tmp_path, small_disk):
    root = make_fake_market(
        tmp_path / "market", train_ids=4, test_ids=2, cams=2, per_cam=2, size=(32, 64)
    )
    run = small_disk / "run"
    train(_cfg(1), root, output_dir=run, progress=False)
    before = (run / "last.pth").read_bytes()
    _fill(
        small_disk, leave=200_000
    )  # room for config.yaml and the history, not for a checkpoint
    with pytest.raises(OSError) as e:
        train(_cfg(2), root, output_dir=run, resume=run / "last.pth", progress=False)
    msg = str(e.value)
    assert f"no space left on {run} while writing last.pth" in msg, msg
    assert f"the last good checkpoint {run / 'last.pth'} was left intact" in msg, msg
    assert (run / "last.pth").read_bytes() == before
    assert _temps(run) == []


def test_inference_weights_on_a_full_disk(tmp_path, small_disk):
    from secondsight.model import ReIDModel, save_inference

    model = ReIDModel(4, backbone="osnet_x0_25", pretrained="none")
    path = save_inference(model, _cfg(1), small_disk / "model_inference.pth")
    before = path.read_bytes()
    _fill(small_disk, leave=100_000)
    with torch.no_grad():
        model.classifier.weight.add_(1)
    with pytest.raises(OSError, match=f"no space left on {small_disk}"):
        save_inference(model, _cfg(1), path)
    assert path.read_bytes() == before and _temps(small_disk) == []


def test_export_on_a_full_disk(tmp_path, small_disk):
    "`secondsight-export` on a disk with room for the `.onnx` but not for the weights file too."
    pytest.importorskip("onnx")
    from secondsight.export import export_cli
    from secondsight.model import ReIDModel, save_inference

    weights = save_inference(
        ReIDModel(4, backbone="osnet_x0_25", pretrained="none"),
        _cfg(1),
        tmp_path / "m.pth",
    )
    sizes = export_cli(
        weights=str(weights), output_dir=str(tmp_path / "roomy"), name="m", check=False
    )
    onnx_bytes, weights_bytes = (
        Path(sizes[k]).stat().st_size for k in ("onnx", "weights")
    )
    _fill(small_disk, leave=onnx_bytes + weights_bytes // 2)
    out = small_disk / "export"
    with pytest.raises(OSError, match="no space left on"):
        export_cli(weights=str(weights), output_dir=str(out), name="m", check=False)
    left = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert left in ([], ["m.onnx", "m_inference.pth"]), (
        f"a half export was left: {left}"
    )
