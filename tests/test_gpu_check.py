"""The GPU check cannot rot: `benchmarks/gpu_check.py --device cpu` (its reduced form) runs end to end here and
writes a JSON whose numbers make sense. The full form needs a GPU and runs on demand (see the script's docstring)."""

import json, math, subprocess, sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"
CHECKS = ("data", "notebooks", "train", "resume", "throughput", "extract_eval")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    "One reduced run (about a minute or two on 2 cores) into a temporary JSON: `(process, results)`."
    out = tmp_path_factory.mktemp("gpu_check") / "cpu.json"
    p = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert out.is_file(), (
        f"no JSON written (exit {p.returncode}):\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}"
    )
    return p, json.loads(out.read_text())


def _walk(d, path=""):
    "Every dict in a nested JSON, with its path."
    if isinstance(d, dict):
        yield path, d
        for k, v in d.items():
            yield from _walk(v, f"{path}/{k}")
    elif isinstance(d, list):
        for i, v in enumerate(d):
            yield from _walk(v, f"{path}/{i}")


def test_passes_and_says_what_ran(run):
    p, res = run
    failed = {n: res["checks"][n] for n in res.get("failed", [])}
    assert p.returncode == 0 and res["ok"], (
        f"failed checks: {json.dumps(failed, indent=1)[:4000]}\n{p.stderr[-2000:]}"
    )
    assert (
        res["device"] == "cpu"
        and res["gpu_name"] is None
        and res["form"].startswith("reduced")
    )
    assert res["torch"] and res["python"] and res["total_seconds"] > 0
    assert set(CHECKS) <= set(res["checks"])
    for name in CHECKS:
        assert res["checks"][name]["status"] in ("ok", "skipped"), name
        assert res["checks"][name]["seconds"] >= 0
    for path, d in _walk(res["checks"]):  # nothing skipped without a reason
        if d.get("status") == "skipped":
            assert d.get("reason"), f"{path} skipped without a reason"
    assert "all checks passed" in p.stdout and "wrote" in p.stdout


def test_training_learns_and_resumes(run):
    _, res = run
    tr, rs = res["checks"]["train"], res["checks"]["resume"]
    assert tr["status"] == "ok" and rs["status"] == "ok"
    losses = [e["loss"] for e in tr["epochs"]]
    assert len(losses) == tr["config"]["epochs"] >= 2
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0], losses
    assert 0 <= tr["mAP"] <= 1 and 0 <= tr["data_wait_share_last_epoch"] <= 1
    assert tr["checkpoint_epoch"] == len(losses)
    # resumed from last.pth: the history continues (epochs 1..N+1, the first N unchanged), it did not start over
    resumed = [e["loss"] for e in rs["epochs"]]
    assert [e["epoch"] for e in rs["epochs"]] == list(range(1, len(losses) + 2))
    assert resumed[: len(losses)] == losses
    assert math.isfinite(resumed[-1]) and resumed[-1] < losses[0]
    # the weights continued from last.pth (a fresh network, the control, is nowhere near it)
    assert (
        rs["weights_cosine_to_checkpoint"]
        > 0.5
        > rs["weights_cosine_fresh_to_checkpoint"]
    )
    assert (
        rs["grad_scaler"]["enabled"] is False
    )  # no GradScaler on the CPU; the CUDA run checks its scale


def test_throughput_rows(run):
    _, res = run
    tp = res["checks"]["throughput"]
    rows = tp["variants"]
    assert (
        tp["baseline"] == "fp32"
        and rows["fp32"]["status"] == "ok"
        and rows["fp32"]["vs_fp32"] == 1
    )
    assert (
        rows["fp32_compile"]["status"] == "skipped"
    )  # minutes of compiling on a small CPU; on by default on CUDA
    for name, r in rows.items():
        if r["status"] != "ok":
            continue
        assert (
            r["images_per_s"] > 0 and r["images_per_s_step_only"] >= r["images_per_s"]
        ), name
        assert 0 <= r["data_wait_share"] < 1 and r["batch"] > 0, name
        assert math.isfinite(r["loss_first"]) and math.isfinite(r["loss_last"]), name
        assert r["peak_gpu_mem_mb"] is None  # the CPU has no GPU memory to report
    assert rows["bf16_autocast"]["status"] == "ok"


def test_extraction_and_evaluation(run):
    _, res = run
    ev = res["checks"]["extract_eval"]
    assert ev["status"] == "ok"
    fc = ev["feature_check"]
    assert fc["images"] > 0 and fc["max_abs_diff"] <= fc["tolerance"] == 1e-4
    assert set(ev["scorecard"]) == {"Baseline", "Re-ranked"}
    for s in ev["scorecard"].values():
        assert 0 <= s["mAP"] <= 1 and 0 <= s["rank1"] <= 1
    assert ev["rerank_shape"] == [ev["num_query"], ev["num_gallery"]]


def test_cuda_cells_found_and_skipped_with_reasons(run):
    _, res = run
    nb = res["checks"]["notebooks"]
    tut = nb["notebooks"]["nbs/tutorials/train_market1501.ipynb"]
    assert len(tut["cuda_cells"]) >= 2 and tut["cells_run_by_nbdev_test_cuda"] > len(
        tut["cuda_cells"]
    )
    assert nb["cuda_cells"]["failed"] == 0
    # without a GPU and without Market-1501 each cuda cell is skipped, saying why
    reasons = [c["reason"] for c in tut["cuda_cells"]]
    assert "Market-1501" in reasons[0], reasons
    assert all(c["status"] == "skipped" for c in tut["cuda_cells"]), tut


def test_cpu_run_never_writes_gpu_json():
    p = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--device",
            "cpu",
            "--out",
            str(REPO / "benchmarks/results/gpu.json"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode != 0 and "never writes" in p.stderr
