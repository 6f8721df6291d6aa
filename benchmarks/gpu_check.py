"""The GPU check: the path a Colab user takes, on CUDA, in one command and without Market-1501.

It writes a synthetic Market-style folder of JPEGs (`secondsight.datasets.make_fake_market`: tens of identities, six
cameras), then checks, each step recorded with its time and peak GPU memory:

1. `notebooks`: the `#| cuda` cells of the notebooks, run the way `nbdev-test --flags cuda` runs them (nbdev's own
   list of cells, in execnb's shell), with `REID_DATA_ROOT` unset: a cell that stops on the missing Market-1501
   (and any later cell that uses what it would have defined) is recorded as skipped with the reason.
2. `train`: `secondsight.train.train` with the `market1501_strong_baseline` recipe (ResNet-50, AMP fp16 with
   GradScaler, channels_last) shortened to a few epochs on the synthetic folder through the real loader: the loss
   falls, no NaN, the GradScaler scale in the checkpoint is finite; then the CUDA-saved `last.pth` resumes.
3. `throughput`: images/s of the training step (the real loader, model, loss and optimizers) for fp32 (the
   baseline), fp16 AMP, fp16 + channels_last, + torch.compile, and bf16 where the GPU has it; the share of each
   step spent waiting for data; images/s of the step alone.
4. `extract_eval`: `extract_features` and the evaluation end to end on CUDA (fp16) against CPU fp32 features of the
   same model (within 1e-2), `metrics.evaluate_rank` and `rerank.re_ranking` on them.

Everything goes to `benchmarks/results/gpu.json` with the GPU's name, the device and the versions; the exit status
is 1 when a check failed. Target: under 8 minutes on one H100.

`--device cpu` runs a reduced form (tiny sizes, fp32 / bf16 autocast / channels_last, CUDA-only parts skipped with
the reason recorded) into `benchmarks/results/gpu_check_cpu.json`; it never writes `gpu.json`.
`tests/test_gpu_check.py` runs it so the check cannot rot.

    python benchmarks/gpu_check.py                  # on a machine with a GPU (Colab: after the install cell)
    python benchmarks/gpu_check.py --device cpu     # the reduced form, a minute or two on 2 cores

On the project's lent GPU machine (see the device README: PyTorch 2.11 and torchvision are there; fastcore, nbdev,
execnb and IPython are not, nothing can be downloaded there, and `../shared` does not travel), carry wheels. Once,
here, in the repository root (all are pure-Python wheels):

    echo /.whl/ >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl \\
        fastcore==2.2.41 nbdev==3.3.26 execnb==0.3.4 ipython==8.12.3 traitlets==5.15.0 \\
        jedi==0.20.0 parso==0.8.7 pexpect==4.8.0 ptyprocess==0.7.0 prompt_toolkit==3.0.52 wcwidth==0.7.0 \\
        decorator==5.2.1 matplotlib-inline==0.2.2 stack_data==0.6.3 asttokens==3.0.1 executing==2.2.1 \\
        pure_eval==0.2.3 backcall==0.2.0 pickleshare==0.7.5 astunparse==1.6.3

then one device call (carry `.whl`; `timeout_s` 600 leaves room for the 8 minutes; `gpu.json` and the log come back
under $OUT):

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \\
        .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit; set -o pipefail;
    PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py --out $OUT/gpu.json 2>&1 | tee $OUT/gpu_check.log

and copy `gpu.json` into `benchmarks/results/`. Timings are the machine's of that run; compare variants inside one
file only.
"""

from __future__ import annotations

import argparse, ast, contextlib, json, math, os, platform, sys, tempfile, time
import traceback, warnings
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
GPU_JSON = HERE / "results" / "gpu.json"
CPU_JSON = HERE / "results" / "gpu_check_cpu.json"
RECIPE = "market1501_strong_baseline"
FEATURE_TOL = {
    "cuda": 1e-2,
    "cpu": 1e-4,
}  # max |difference| of L2-normalised features vs eager fp32 on the CPU

# The full check (one GPU) and the reduced one (`--device cpu`, a couple of minutes on 2 shared cores).
SIZES = {
    "cuda": dict(
        backbone="resnet50",
        train_ids=64,
        test_ids=24,
        per_cam=2,
        height=256,
        width=128,
        p=16,
        k=4,
        epochs=4,
        resume_epochs=1,
        max_iters=None,
        warmup_epochs=1,
        base_lr=3.5e-4,
        steps=20,
        warmup=3,
        ref_images=128,
    ),
    "cpu": dict(
        backbone="resnet18",
        train_ids=8,
        test_ids=4,
        per_cam=1,
        height=64,
        width=32,
        p=4,
        k=2,
        epochs=2,
        resume_epochs=1,
        max_iters=6,
        warmup_epochs=0,
        base_lr=1e-3,
        steps=2,
        warmup=1,
        ref_images=48,
    ),
}


class Skip(Exception):
    "A check (or part of one) that cannot run here; the message is the recorded reason."


def _short(e: BaseException) -> str:
    "`Type: first line of the message`, at most 300 characters."
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0] if msg else ''}"[:300]


class Report:
    "The checks of one run: status, reason or error, seconds and peak GPU memory of each."

    def __init__(self, device: torch.device):
        self.device, self.checks = device, {}

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextlib.contextmanager
    def check(self, name: str, into: dict | None = None):
        "Run the body as check `name`: an exception fails it (recorded), `Skip` skips it, `expect` adds problems."
        rec = {"status": "ok", "problems": []}
        (self.checks if into is None else into)[name] = rec
        self._sync()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        t0 = time.perf_counter()
        try:
            yield rec
        except Skip as e:
            rec.update(status="skipped", reason=str(e))
        except Exception as e:
            rec.update(
                status="failed",
                error=_short(e),
                traceback=traceback.format_exc(limit=-6)[-3000:],
            )
        finally:
            self._sync()
            rec["seconds"] = round(time.perf_counter() - t0, 3)
            rec["peak_gpu_mem_mb"] = (
                round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1)
                if self.device.type == "cuda"
                else None
            )
            if rec["status"] == "ok" and rec["problems"]:
                rec["status"] = "failed"
            status = rec["status"] + (
                f" ({rec.get('reason') or rec.get('error') or '; '.join(rec['problems'])})"
                if rec["status"] != "ok"
                else ""
            )
            print(f"[{name}] {status} in {rec['seconds']:.1f} s", flush=True)


def expect(rec: dict, ok: bool, problem: str):
    "Record `problem` in the check `rec` when `ok` is false."
    if not ok:
        rec["problems"].append(problem)


def finite(xs) -> bool:
    return all(isinstance(x, (int, float)) and math.isfinite(x) for x in xs)


# ---------------------------------------------------------------- environment


def environment(device: torch.device) -> dict:
    "The machine, the GPU and the versions."
    import secondsight

    env = {
        "device": str(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version()
        if torch.backends.cudnn.is_available()
        else None,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "secondsight": secondsight.__version__,
    }
    try:
        env["load_avg"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        env["load_avg"] = None
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        env.update(
            gpu_name=torch.cuda.get_device_name(device),
            gpu_capability=list(torch.cuda.get_device_capability(device)),
            gpu_memory_gb=round(p.total_memory / 2**30, 1),
            gpu_multiprocessors=p.multi_processor_count,
            bf16_supported=bool(torch.cuda.is_bf16_supported()),
            # torch's defaults, left as they are: the fp32 baseline is what a user gets
            tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
            tf32_cudnn=torch.backends.cudnn.allow_tf32,
            cudnn_benchmark=torch.backends.cudnn.benchmark,
        )
    else:
        env.update(
            gpu_name=None, bf16_supported=True
        )  # CPU autocast runs bf16 everywhere (slowly on most CPUs)
    return env


# ---------------------------------------------------------------- 1. synthetic data


def synthetic_market(report: Report, root: Path, size: dict) -> object:
    "A Market-style folder of JPEG crops (six cameras) read back with `Market1501`."
    from secondsight.datasets import Market1501, make_fake_market

    with report.check("data") as rec:
        make_fake_market(
            root,
            train_ids=size["train_ids"],
            test_ids=size["test_ids"],
            cams=6,
            per_cam=size["per_cam"],
            size=(64, 128),
        )
        ds = Market1501(root)
        rec["counts"] = {
            s: {"images": n, "ids": i, "cameras": c}
            for s, (n, i, c) in ds.counts().items()
        }
        expect(
            rec,
            ds.num_train_pids == size["train_ids"],
            f"{ds.num_train_pids} training ids, expected {size['train_ids']}",
        )
        expect(
            rec,
            ds.num_train_cams == 6,
            f"{ds.num_train_cams} training cameras, expected 6",
        )
        expect(rec, len(ds.query) > 0 and len(ds.gallery) > 0, "empty query or gallery")
        return ds
    return None


# ---------------------------------------------------------------- 2. the `#| cuda` notebook cells


def _cuda_notebooks(nbs: Path) -> list[Path]:
    "Notebooks with a code cell that carries the `cuda` flag (a cheap text scan; nbdev parses the hits)."
    out = []
    for fn in sorted(nbs.rglob("*.ipynb")):
        if ".ipynb_checkpoints" in fn.parts:
            continue
        cells = json.loads(fn.read_text()).get("cells", [])
        src = (
            "".join(c.get("source", "")) for c in cells if c.get("cell_type") == "code"
        )
        if any(
            line.replace(" ", "").startswith("#|cuda")
            for s in src
            for line in s.splitlines()
        ):
            out.append(fn)
    return out


def _defined_names(src: str) -> set[str]:
    "The names a cell binds at its top level (assignments, imports, defs)."
    try:
        tree = ast.parse(src)
    except SyntaxError:
        return set()
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def _needs_market(e: BaseException | None) -> bool:
    "Did a cell stop because Market-1501 is not there (the library's one-line message)?"
    return isinstance(e, FileNotFoundError) and (
        "REID_DATA_ROOT" in str(e) or "Market-1501" in str(e)
    )


@contextlib.contextmanager
def _no_market_env():
    "`REID_DATA_ROOT` unset (the check never trains on the real data set) and `IN_TEST=1`, as nbdev-test sets."
    saved = {k: os.environ.get(k) for k in ("REID_DATA_ROOT", "IN_TEST")}
    os.environ.pop("REID_DATA_ROOT", None)
    os.environ["IN_TEST"] = "1"
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def notebook_cells(report: Report, nbs: Path, on_cuda: bool, cell_timeout: int):
    "Run the cells of each notebook with `#| cuda` cells as `nbdev-test --flags cuda` would (`on_cuda`: with a GPU)."
    with report.check("notebooks") as rec:
        try:
            from nbdev.config import get_config
            from nbdev.test import nb_test_cells
        except ImportError as e:
            raise Skip(
                f"nbdev is not installed ({_short(e)}); carry its wheels (see the docstring)"
            ) from None
        flags = get_config(REPO).tst_flags
        flags = flags.split() if isinstance(flags, str) else list(flags)
        rec["tst_flags"], rec["notebooks"] = flags, {}
        files = _cuda_notebooks(nbs)
        expect(rec, bool(files), f"no notebook under {nbs} has a `#| cuda` code cell")
        for fn in files:
            name = str(fn.relative_to(REPO))
            cells = nb_test_cells(fn, skip_flags=flags, force_flags=["cuda"])
            cuda = [
                c for c in cells if "cuda" in (getattr(c, "directives_", None) or {})
            ]
            nbrec = rec["notebooks"][name] = {
                "cells_run_by_nbdev_test_cuda": len(cells),
                "cuda_cells": [
                    {"cell": c.idx_, "first_line": _first_code_line(c.source)}
                    for c in cuda
                ],
            }
            _run_notebook(fn, cells, nbrec, cell_timeout, on_cuda)
            expect(
                rec,
                all(c["status"] != "failed" for c in nbrec["cuda_cells"])
                and not nbrec.get("error"),
                f"{name}: " + (nbrec.get("error") or "a cuda cell failed"),
            )
        n = [c for nb in rec["notebooks"].values() for c in nb["cuda_cells"]]
        rec["cuda_cells"] = {
            s: sum(c["status"] == s for c in n) for s in ("ok", "skipped", "failed")
        }


def _first_code_line(src: str) -> str:
    lines = [
        ln for ln in src.splitlines() if ln.strip() and not ln.lstrip().startswith("#|")
    ]
    return (lines[0] if lines else "")[:120]


def _run_notebook(fn: Path, cells: list, nbrec: dict, cell_timeout: int, on_cuda: bool):
    """Run `cells` of `fn` in execnb's shell (nbdev-test's), from the notebook's folder, without Market-1501.

    Without a GPU (`on_cuda` false) a `#| cuda` cell that fails for another reason is recorded as skipped (it needs
    CUDA), so the reduced form still exercises this runner and the skip rules."""
    from execnb.shell import CaptureShell
    from fastcore.xtras import working_directory

    by_idx = {c["cell"]: c for c in nbrec["cuda_cells"]}
    missing: dict[str, int] = {}  # name -> the skipped cell that would have defined it
    with _no_market_env(), working_directory(fn.parent):
        shell = CaptureShell(fn)
        try:
            for cell in cells:
                t0 = time.perf_counter()
                shell.run(cell.source, timeout=cell_timeout)
                e, crec = shell.exc, by_idx.get(cell.idx_)
                if crec is None:  # an ordinary cell: it must pass, as under nbdev-test
                    if e is not None:
                        nbrec["error"] = f"cell {cell.idx_} failed: {_short(e)}"
                        break
                    continue
                crec["seconds"] = round(time.perf_counter() - t0, 2)
                if e is None:
                    crec["status"] = "ok"
                elif _needs_market(e):
                    crec.update(
                        status="skipped", reason="needs Market-1501: " + _short(e)
                    )
                    missing.update(
                        dict.fromkeys(_defined_names(cell.source), cell.idx_)
                    )
                elif isinstance(e, NameError) and getattr(e, "name", None) in missing:
                    crec.update(
                        status="skipped",
                        reason=f"uses {e.name!r} from cell {missing[e.name]}, which was skipped",
                    )
                    missing.update(
                        dict.fromkeys(_defined_names(cell.source), missing[e.name])
                    )
                elif not on_cuda:
                    crec.update(
                        status="skipped",
                        reason="needs CUDA (--device cpu form): " + _short(e),
                    )
                    missing.update(
                        dict.fromkeys(_defined_names(cell.source), cell.idx_)
                    )
                else:
                    crec.update(status="failed", error=_short(e))
        finally:
            shell.close()
    for c in nbrec["cuda_cells"]:
        c.setdefault("status", "failed" if nbrec.get("error") else "not run")
        if c["status"] == "failed" and "error" not in c:
            c["error"] = "not reached: " + nbrec.get("error", "")


# ---------------------------------------------------------------- 3. training through `train`


def run_config(size: dict, device: torch.device, workers: int | None, out: Path):
    "The Colab recipe, shortened: from scratch (no network), a short warmup, no LR decay, evaluated at the end."
    from secondsight.config import apply_overrides, load_config

    s = size
    sets = [
        f"device={device}",
        f"output_dir={out}",
        f"model.backbone={s['backbone']}",
        "model.pretrained=none",
        f"data.height={s['height']}",
        f"data.width={s['width']}",
        f"data.p={s['p']}",
        f"data.k={s['k']}",
        f"data.test_batch_size={4 * s['p'] * s['k']}",
        f"solver.epochs={s['epochs']}",
        f"solver.warmup_epochs={s['warmup_epochs']}",
        f"solver.milestones=[{s['epochs'] + s['resume_epochs'] + 10}]",
        f"solver.base_lr={s['base_lr']}",
        f"solver.eval_period={s['epochs']}",
        f"solver.checkpoint_period={s['epochs']}",
        f"solver.max_iters_per_epoch={'null' if s['max_iters'] is None else s['max_iters']}",
    ]
    if workers is not None:
        sets.append(f"data.num_workers={workers}")
    if s.get("seed") is not None:
        sets.append(f"seed={s['seed']}")
    return apply_overrides(load_config(RECIPE), sets)


def train_and_resume(report: Report, ds, cfg, size: dict):
    "Train a few epochs with `train`, check loss, NaN and the GradScaler, then resume the CUDA-saved `last.pth`."
    from secondsight.checkpoint import load_checkpoint
    from secondsight.train import train

    out, hist = Path(cfg.output_dir), None
    with report.check("train") as rec:
        rec["config"] = {
            "recipe": RECIPE,
            "backbone": cfg.model.backbone,
            "pretrained": cfg.model.pretrained,
            "size": f"{cfg.data.height}x{cfg.data.width}",
            "batch": cfg.data.p * cfg.data.k,
            "amp": cfg.solver.amp
            if report.device.type == "cuda"
            else cfg.solver.amp_cpu,
            "channels_last": cfg.solver.channels_last,
            "epochs": cfg.solver.epochs,
            "max_iters_per_epoch": cfg.solver.max_iters_per_epoch,
            "num_workers": cfg.data.num_workers,
        }
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            hist = train(cfg, dataset=ds, output_dir=out, progress=False)
        rec["warnings"] = sorted({str(w.message)[:200] for w in caught})
        rec["epochs"] = [_epoch(r) for r in hist]
        losses = [r["loss"] for r in hist]
        expect(
            rec,
            len(hist) == cfg.solver.epochs,
            f"{len(hist)} epochs recorded, expected {cfg.solver.epochs}",
        )
        expect(rec, finite(losses), f"non-finite loss: {losses}")
        expect(
            rec,
            losses[-1] < losses[0],
            f"the loss did not fall: {losses[0]:.4f} -> {losses[-1]:.4f}",
        )
        rec["loss_first"], rec["loss_last"] = losses[0], losses[-1]
        rec["images_per_s_last_epoch"] = hist[-1]["images_per_s"]
        rec["data_wait_share_last_epoch"] = hist[-1]["data_frac"]
        rec["mAP"] = hist[-1].get("mAP")
        expect(
            rec,
            rec["mAP"] is not None and 0 <= rec["mAP"] <= 1,
            f"mAP at the last epoch: {rec['mAP']}",
        )
        ck = load_checkpoint(out / "last.pth")
        rec["checkpoint_epoch"] = ck["epoch"]
        expect(
            rec, ck["epoch"] == cfg.solver.epochs, f"last.pth is at epoch {ck['epoch']}"
        )
        rec["grad_scaler"] = _scaler_state(rec, ck, report.device)
        for f in ("last.pth", "model_inference.pth", "history.jsonl"):
            expect(rec, (out / f).is_file(), f"{f} was not written")

    if hist is None or not (out / "last.pth").is_file():
        report.checks["resume"] = {
            "status": "skipped",
            "reason": "training failed: no last.pth to resume",
        }
        return hist
    with report.check("resume") as rec:
        import dataclasses

        first = [r["loss"] for r in hist]
        saved = load_checkpoint(out / "last.pth")["model"]
        # Another seed: a resume that restored nothing would retrain from scratch with it, and differ. (With the
        # same seed a deterministic CPU run would reproduce the first epochs and hide it.)
        more = dataclasses.replace(
            cfg,
            seed=cfg.seed + 1,
            solver=dataclasses.replace(
                cfg.solver, epochs=cfg.solver.epochs + size["resume_epochs"]
            ),
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            hist2 = train(
                more,
                dataset=ds,
                output_dir=out,
                resume=out / "last.pth",
                progress=False,
            )
        rec["warnings"] = sorted({str(w.message)[:200] for w in caught})
        rec["epochs"] = [_epoch(r) for r in hist2]
        expect(
            rec,
            [r["epoch"] for r in hist2] == list(range(1, more.solver.epochs + 1)),
            "epochs not 1..N after resume",
        )
        expect(
            rec,
            [r["loss"] for r in hist2[: len(first)]] == first,
            "the resumed history does not start with the first run's",
        )
        new = [r["loss"] for r in hist2[len(first) :]]
        expect(rec, bool(new) and finite(new), f"resumed epochs' losses: {new}")
        expect(
            rec,
            bool(new) and new[0] < first[0],
            f"the resumed epoch's loss {new[:1]} is not below the first epoch's {first[0]:.4f} (a fresh start?)",
        )
        # the weights continued from the checkpoint: close to it, unlike a fresh network's
        rec["weights_cosine_to_checkpoint"] = _cosine(hist2.model.state_dict(), saved)
        torch.manual_seed(more.seed)
        fresh = (
            type(hist2.model).from_config(more.model, ds.num_train_pids).state_dict()
        )
        rec["weights_cosine_fresh_to_checkpoint"] = _cosine(fresh, saved)
        expect(
            rec,
            rec["weights_cosine_to_checkpoint"] > 0.5,
            f"the resumed weights are far from the checkpoint's (cosine {rec['weights_cosine_to_checkpoint']:.3f})",
        )
        ck = load_checkpoint(out / "last.pth")
        expect(
            rec,
            ck["epoch"] == more.solver.epochs,
            f"last.pth is at epoch {ck['epoch']} after resuming",
        )
        rec["grad_scaler"] = _scaler_state(rec, ck, report.device)
        rec["resumed_from_epoch"], rec["loss_resumed"] = len(first), new
        return hist2
    return hist


def _cosine(a: dict, b: dict) -> float:
    "Cosine similarity of two state dicts' convolution and linear weights, flattened."
    # only tensors of 2+ dimensions: BatchNorm's ones and zeros would make two random networks look alike
    keys = [
        k
        for k in b
        if k in a
        and torch.is_floating_point(b[k])
        and b[k].dim() >= 2
        and a[k].shape == b[k].shape
    ]
    x = torch.cat([a[k].detach().float().cpu().reshape(-1) for k in keys])
    y = torch.cat([b[k].detach().float().cpu().reshape(-1) for k in keys])
    return float(torch.nn.functional.cosine_similarity(x, y, dim=0))


def _epoch(r: dict) -> dict:
    keys = (
        "epoch",
        "loss",
        "acc",
        "lr",
        "images_per_s",
        "data_frac",
        "seconds",
        "mAP",
        "rank1",
    )
    return {k: r[k] for k in keys if k in r}


def _scaler_state(rec: dict, ck: dict, device: torch.device) -> dict:
    "The GradScaler's state in a checkpoint: finite and positive on CUDA; disabled on the CPU."
    sc = ck.get("scaler") or {}
    if device.type != "cuda":
        return {
            "enabled": bool(sc),
            "note": "GradScaler is disabled on the CPU (bf16 autocast needs none)",
        }
    scale = float(sc["scale"]) if "scale" in sc else None
    expect(
        rec,
        scale is not None and math.isfinite(scale) and scale > 0,
        f"GradScaler scale in the checkpoint: {scale}",
    )
    return {
        "enabled": True,
        "scale": scale,
        "growth_tracker": int(sc.get("_growth_tracker", -1)),
    }


# ---------------------------------------------------------------- 4. training-step throughput


def variants(device: torch.device, bf16: bool, compile_: bool) -> list[dict]:
    "The variants to time: fp32 first (the baseline)."
    if device.type == "cuda":
        vs = [
            dict(name="fp32", dtype=None, cl=False, compile=False),
            dict(name="fp16_amp", dtype=torch.float16, cl=False, compile=False),
            dict(
                name="fp16_amp_channels_last",
                dtype=torch.float16,
                cl=True,
                compile=False,
            ),
            dict(
                name="fp16_amp_channels_last_compile",
                dtype=torch.float16,
                cl=True,
                compile=True,
            ),
            dict(
                name="bf16_amp_channels_last",
                dtype=torch.bfloat16,
                cl=True,
                compile=False,
            ),
        ]
    else:
        vs = [
            dict(name="fp32", dtype=None, cl=False, compile=False),
            dict(name="fp32_channels_last", dtype=None, cl=True, compile=False),
            # bf16 is emulated on most CPUs (about 10x slower than fp32): one step shows it runs
            dict(
                name="bf16_autocast",
                dtype=torch.bfloat16,
                cl=False,
                compile=False,
                steps=1,
                warmup=0,
            ),
            dict(name="fp32_compile", dtype=None, cl=False, compile=True),
        ]
    for v in vs:
        if v["dtype"] is torch.bfloat16 and not bf16:
            v["skip"] = "this GPU has no bf16"
        if v["compile"] and not compile_:
            v["skip"] = (
                "torch.compile skipped (--no-compile)"
                if device.type == "cuda"
                else "torch.compile takes minutes to compile on a small CPU; pass --compile to time it"
            )
    return vs


def time_steps(
    cfg, ds, device: torch.device, v: dict, steps: int, warmup: int, rec: dict
):
    "Time `steps` training steps of variant `v` after `warmup`, fed by `build_train_loader` (the real loader)."
    from secondsight.loaders import build_train_loader
    from secondsight.losses import ReIDLoss
    from secondsight.model import ReIDModel
    from secondsight.schedule import build_optimizers

    torch.manual_seed(cfg.seed)
    n_cls = ds.num_train_pids
    model = ReIDModel.from_config(cfg.model, n_cls).to(device)
    criterion = ReIDLoss(cfg.loss, n_cls, model.feat_dim).to(device)
    if v["cl"]:
        model = model.to(memory_format=torch.channels_last)
    opt, copt = build_optimizers(cfg, model, criterion)
    use_scaler = device.type == "cuda" and v["dtype"] is torch.float16
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
    net = torch.compile(model) if v["compile"] else model
    model.train()
    criterion.train()
    loader = build_train_loader(cfg, ds.train, device=device)
    sync = (
        (lambda: torch.cuda.synchronize(device))
        if device.type == "cuda"
        else (lambda: None)
    )
    epoch, it = 0, None
    waits, totals, n_img, losses, first_step = [], [], 0, [], None
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        batch = next(it, None) if it is not None else None
        if batch is None:
            loader.batch_sampler.set_epoch(epoch)
            epoch += 1
            it = iter(loader)
            batch = next(it)
        imgs = batch[0].to(device, non_blocking=True)
        pids = batch[1].to(device, non_blocking=True)
        if v["cl"]:
            imgs = imgs.contiguous(memory_format=torch.channels_last)
        t1 = time.perf_counter()
        with torch.autocast(
            device.type,
            dtype=v["dtype"] or torch.float32,
            enabled=v["dtype"] is not None,
        ):
            logits, feat = net(imgs)
        loss, _ = criterion(logits.float(), feat.float(), pids)
        opt.zero_grad(set_to_none=True)
        if copt is not None:
            copt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if copt is not None:
            criterion.step_centers(copt, scaler)
        scaler.step(opt)
        scaler.update()
        losses.append(float(loss.detach()))
        sync()
        t2 = time.perf_counter()
        if i == 0:
            first_step = t2 - t0
        if i >= warmup:
            waits.append(t1 - t0)
            totals.append(t2 - t0)
            n_img += len(pids)
    del it, loader
    busy = sum(totals) - sum(waits)
    rec.update(
        images_per_s=round(n_img / sum(totals), 2),
        images_per_s_step_only=round(n_img / busy, 2) if busy > 0 else None,
        data_wait_share=round(sum(waits) / sum(totals), 4),
        sec_per_step=round(sum(totals) / len(totals), 5),
        first_step_s=round(first_step, 3),
        steps=steps,
        warmup=warmup,
        batch=int(cfg.data.p * cfg.data.k),
        loss_first=losses[0],
        loss_last=losses[-1],
    )
    expect(
        rec,
        finite(losses),
        f"non-finite loss in {sum(not math.isfinite(x) for x in losses)} of {len(losses)} steps",
    )
    if use_scaler:
        rec["grad_scaler_scale"] = float(scaler.get_scale())
        expect(
            rec,
            math.isfinite(rec["grad_scaler_scale"]) and rec["grad_scaler_scale"] > 0,
            "GradScaler scale not finite",
        )


def throughput(report: Report, ds, cfg, size: dict, bf16: bool, compile_: bool):
    "Images/s of the training step for every variant; fp32 is the baseline measured in the same run."
    with report.check("throughput") as rec:
        rec["baseline"] = "fp32"
        rows = rec["variants"] = {}
        for v in variants(report.device, bf16, compile_):
            if v.get("skip"):
                rows[v["name"]] = {"status": "skipped", "reason": v["skip"]}
                print(f"[throughput/{v['name']}] skipped ({v['skip']})", flush=True)
                continue
            with report.check(v["name"], into=rows) as row:
                steps, warm = (
                    v.get("steps", size["steps"]),
                    v.get("warmup", size["warmup"]),
                )
                time_steps(cfg, ds, report.device, v, steps, warm, row)
        base = rows.get("fp32", {}).get("images_per_s")
        for r in rows.values():
            if base and r.get("images_per_s"):
                r["vs_fp32"] = round(r["images_per_s"] / base, 3)
        bad = [n for n, r in rows.items() if r["status"] == "failed"]
        expect(rec, not bad, f"variants failed: {', '.join(bad)}")
        expect(rec, base is not None, "the fp32 baseline did not run")


# ---------------------------------------------------------------- 5. extraction and evaluation


def _eager_reference(model, loader, flip: bool, normalize: bool) -> torch.Tensor:
    "Plain eager fp32 features on the CPU: model(x), plus the mirror's, averaged, L2-normalised."
    import torch.nn.functional as F

    model = model.cpu().float().eval()
    out = []
    with torch.no_grad():
        for imgs, *_ in loader:
            f = model(imgs)
            if flip:
                f = (f + model(imgs.flip(-1))) / 2
            out.append(F.normalize(f, dim=1) if normalize else f)
    return torch.cat(out)


def extract_eval(report: Report, ds, cfg, hist, size: dict):
    "Features and metrics on the device, against eager fp32 on the CPU; `evaluate_rank` and `re_ranking` on them."
    from secondsight.evaluate import evaluate_model, feature_distances
    from secondsight.extract import extract_features
    from secondsight.loaders import build_test_loader
    from secondsight.metrics import evaluate_rank
    from secondsight.model import load_inference
    from secondsight.rerank import re_ranking

    dev = report.device
    with report.check("extract_eval") as rec:
        if hist is None or hist.inference is None or not Path(hist.inference).is_file():
            raise Skip("training failed: no model_inference.pth")
        model, mcfg = load_inference(hist.inference, device=dev)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # max_rank larger than the small gallery
            sc, qf, gf = evaluate_model(
                model,
                ds.query,
                ds.gallery,
                cfg,
                rerank=True,
                progress=False,
                return_features=True,
            )
        rec["scorecard"] = {
            name: {
                k: round(v, 6)
                for k, v in s.items()
                if k in ("mAP", "rank1", "rank5", "mINP")
            }
            for name, s in sc.to_dict()["settings"].items()
        }
        rec["extract_images_per_s"] = sc.info.get("images_per_second")
        rec["num_query"], rec["num_gallery"] = len(qf), len(gf)
        expect(
            rec,
            set(rec["scorecard"]) == {"Baseline", "Re-ranked"},
            f"settings: {sorted(rec['scorecard'])}",
        )
        expect(
            rec,
            finite([v for s in rec["scorecard"].values() for v in s.values()]),
            "non-finite metrics",
        )
        expect(
            rec,
            bool(torch.isfinite(qf.feats).all() and torch.isfinite(gf.feats).all()),
            "non-finite features",
        )

        # the same numbers from the public pieces: distances -> evaluate_rank, re_ranking -> evaluate_rank
        dist = feature_distances(qf.feats, gf.feats)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            base = evaluate_rank(dist, qf.pids, gf.pids, qf.camids, gf.camids)
            rr = re_ranking(
                qf.feats,
                gf.feats,
                k1=cfg.test.k1,
                k2=cfg.test.k2,
                lambda_value=cfg.test.lambda_value,
            )
            rer = evaluate_rank(rr, qf.pids, gf.pids, qf.camids, gf.camids)
        rec["rerank_shape"] = list(np.shape(rr))
        expect(
            rec,
            bool(np.isfinite(np.asarray(rr)).all()),
            "non-finite re-ranked distances",
        )
        for name, r in (("Baseline", base), ("Re-ranked", rer)):
            got = rec["scorecard"].get(name, {}).get("mAP")
            expect(
                rec,
                got is not None and abs(r.mAP - got) < 1e-6,
                f"{name}: evaluate_rank mAP {r.mAP} vs scorecard {got}",
            )

        # features on the device against plain eager fp32 on the CPU, on the first `ref_images` query+gallery crops
        recs = (list(ds.query) + list(ds.gallery))[: size["ref_images"]]
        loader = build_test_loader(cfg, recs, device="cpu")
        cpu_model, _ = load_inference(hist.inference, device="cpu")
        ref = _eager_reference(cpu_model, loader, cfg.test.flip, cfg.test.normalize)
        both = torch.cat([qf.feats, gf.feats])[: len(recs)]
        tol = FEATURE_TOL[dev.type]
        rec["feature_check"] = {
            "images": len(recs),
            "against": "eager fp32 on the CPU",
            "device_path": "extract_features on "
            + ("CUDA (fp16 autocast)" if dev.type == "cuda" else "the CPU"),
            "max_abs_diff": float((both - ref).abs().max()),
            "min_cosine": float((both * ref).sum(1).min()),
            "tolerance": tol,
        }
        expect(
            rec,
            rec["feature_check"]["max_abs_diff"] <= tol,
            f"device features differ from CPU fp32 by {rec['feature_check']['max_abs_diff']:.2e} > {tol}",
        )
        if dev.type == "cuda":  # the CPU default path too, on the GPU machine's CPU
            t0 = time.perf_counter()
            cpu = extract_features(
                cpu_model,
                loader,
                flip=cfg.test.flip,
                normalize=cfg.test.normalize,
                progress=False,
            )
            rec["cpu_default_path"] = {
                "max_abs_diff": float((cpu.feats - ref).abs().max()),
                "images_per_s": round(len(recs) / (time.perf_counter() - t0), 1),
                "tolerance": FEATURE_TOL["cpu"],
            }
            expect(
                rec,
                rec["cpu_default_path"]["max_abs_diff"] <= FEATURE_TOL["cpu"],
                "CPU extract_features differs from eager fp32",
            )


# ---------------------------------------------------------------- main


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--device", default="cuda", help="'cuda', 'cuda:N' or 'cpu' (the reduced form)"
    )
    ap.add_argument(
        "--out",
        default=None,
        help=f"JSON file (default {GPU_JSON.relative_to(REPO)}; --device cpu: {CPU_JSON.relative_to(REPO)})",
    )
    ap.add_argument(
        "--backbone",
        default=None,
        help="the recipe's backbone (default: resnet50; resnet18 with --device cpu)",
    )
    ap.add_argument(
        "--seed", type=int, default=None, help="the run's seed (default: the recipe's)"
    )
    ap.add_argument(
        "--workers",
        type=int,
        default=None,
        help="loader workers (default: the recipe's)",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's; 1 with --device cpu, faster on a busy 2-core machine)",
    )
    ap.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="training epochs before the resume (default: by device)",
    )
    ap.add_argument(
        "--steps",
        type=int,
        default=None,
        help="timed steps per throughput variant (default: by device)",
    )
    ap.add_argument(
        "--compile",
        dest="compile_",
        action="store_true",
        default=None,
        help="time torch.compile (default on CUDA)",
    )
    ap.add_argument(
        "--no-compile",
        dest="compile_",
        action="store_false",
        help="skip the torch.compile variant",
    )
    ap.add_argument(
        "--no-notebooks", action="store_true", help="skip the `#| cuda` notebook cells"
    )
    ap.add_argument(
        "--cell-timeout", type=int, default=300, help="seconds per notebook cell"
    )
    ap.add_argument(
        "--keep",
        default=None,
        help="keep the synthetic data and run folder here (default: a temp dir)",
    )
    return ap.parse_args(argv)


def main(argv=None) -> int:
    a = parse_args(argv)
    try:
        device = torch.device(a.device)
    except RuntimeError:
        sys.exit(f"gpu_check: --device must be cuda, cuda:N or cpu, got {a.device!r}")
    if device.type not in ("cuda", "cpu"):
        sys.exit(f"gpu_check: --device must be cuda, cuda:N or cpu, got {a.device!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit(
            "gpu_check: CUDA is not available here; run the reduced form with --device cpu"
        )
    out = Path(a.out) if a.out else (GPU_JSON if device.type == "cuda" else CPU_JSON)
    if device.type == "cpu" and out.resolve() == GPU_JSON.resolve():
        sys.exit(
            f"gpu_check: a --device cpu run never writes {GPU_JSON.relative_to(REPO)}; choose another --out"
        )
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if a.threads or device.type == "cpu":
        torch.set_num_threads(a.threads or 1)
    size = dict(SIZES[device.type])
    if a.backbone:
        size["backbone"] = a.backbone
    if a.seed is not None:
        size["seed"] = a.seed
    if a.epochs:
        size["epochs"] = a.epochs
    if a.steps:
        size["steps"] = a.steps
    compile_ = device.type == "cuda" if a.compile_ is None else a.compile_

    from secondsight.runtime import atomic_write

    t_start = time.perf_counter()
    report = Report(device)
    res = {
        "benchmark": "gpu_check",
        "form": "full" if device.type == "cuda" else "reduced (--device cpu)",
    }
    res.update(environment(device))
    res["sizes"] = size
    res["started"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    print(
        f"gpu_check on {res['gpu_name'] or 'the CPU'} (torch {torch.__version__}) -> {out}",
        flush=True,
    )
    tmp = None
    if a.keep:
        work = Path(a.keep)
        work.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="gpu_check_")
        work = Path(tmp.name)
    try:
        ds = synthetic_market(report, work / "Market-fake", size)
        if a.no_notebooks:
            report.checks["notebooks"] = {
                "status": "skipped",
                "reason": "--no-notebooks",
            }
        else:
            notebook_cells(report, REPO / "nbs", device.type == "cuda", a.cell_timeout)
        hist = None
        if ds is not None:
            cfg = run_config(size, device, a.workers, work / "run")
            res["config"] = {"recipe": RECIPE, "overrides": "see checks.train.config"}
            hist = train_and_resume(report, ds, cfg, size)
            throughput(report, ds, cfg, size, res["bf16_supported"], compile_)
            extract_eval(report, ds, cfg, hist, size)
    finally:
        if tmp is not None:
            tmp.cleanup()
    res["checks"] = report.checks
    res["failed"] = [n for n, r in report.checks.items() if r["status"] == "failed"]
    res["ok"] = not res["failed"]
    res["total_seconds"] = round(time.perf_counter() - t_start, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, json.dumps(res, indent=2, default=str) + "\n")
    summary(res)
    print(f"wrote {out}")
    return 0 if res["ok"] else 1


def summary(res: dict):
    "The table a person reads."
    print(
        f"\n{res['form']} on {res.get('gpu_name') or 'CPU'}, torch {res['torch']}, {res['total_seconds']:.0f} s"
    )
    for name, r in res["checks"].items():
        extra = r.get("reason") or r.get("error") or "; ".join(r.get("problems", []))
        mem = (
            f"{r['peak_gpu_mem_mb']:>9.0f} MB"
            if r.get("peak_gpu_mem_mb") is not None
            else " " * 12
        )
        print(
            f"  {name:<14}{r['status']:<9}{r.get('seconds', 0):>7.1f} s{mem}  {extra}"[
                :200
            ]
        )
    tp = res["checks"].get("throughput", {}).get("variants", {})
    if tp:
        print(
            f"\n  {'variant':<32}{'img/s':>9}{'vs fp32':>9}{'step-only':>11}{'data wait':>11}{'peak MB':>9}"
        )
        for n, r in tp.items():
            if r["status"] != "ok":
                print(
                    f"  {n:<32}{r['status']}: {r.get('reason') or r.get('error') or r.get('problems')}"[
                        :200
                    ]
                )
                continue
            mem = (
                f"{r['peak_gpu_mem_mb']:>9.0f}"
                if r.get("peak_gpu_mem_mb") is not None
                else f"{'-':>9}"
            )
            print(
                f"  {n:<32}{r['images_per_s']:>9.1f}{r.get('vs_fp32', float('nan')):>8.2f}x"
                f"{r['images_per_s_step_only'] or float('nan'):>11.1f}{r['data_wait_share']:>10.1%}{mem}"
            )
    print(
        f"\n{'all checks passed' if res['ok'] else 'FAILED: ' + ', '.join(res['failed'])}"
    )


if __name__ == "__main__":
    sys.exit(main())
