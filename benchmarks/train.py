"""Images/s of a full training step on this CPU, for OSNet-x0.25 and ResNet-50 at 256x128: the whole loss
(label-smoothed CE + batch-hard triplet + center), both optimizers, real PK batches from the loader.

Variants: eager NCHW fp32 (the baseline, measured in the same run), channels_last, bf16 autocast (only where
the CPU computes bf16 natively: `runtime.cpu_has_bf16`), bf16 + channels_last, and torch.compile; plus the
thread count and the loader workers of the fastest variant, and that variant with the trunk's first layers frozen
(`solver.frozen_layers`, the fine-tuning recipe's setting: no backward pass through them). Each row also reports
the share of the step spent waiting for the loader.

Run: `python benchmarks/train.py [--backbones osnet_x0_25 resnet50] [--batch 64] [--steps 6] [--no-compile]`.
Uses $REID_DATA_ROOT for real Market-1501 crops (else synthetic JPEGs in a temp dir).
Prints a table per backbone and writes benchmarks/results/train.json. Target: the default of the fine-tuning
recipe is the fastest variant; a variant >= 1.1x fp32 is flagged (on a shared machine ~15% is within noise).
"""

import argparse, json, os, platform, sys, tempfile, time
from pathlib import Path
import numpy as np
import torch

from secondsight.config import Config, apply_overrides, load_config
from secondsight.datasets import Market1501, make_fake_market
from secondsight.finetune import set_trunk_frozen
from secondsight.loaders import build_train_loader
from secondsight.losses import ReIDLoss
from secondsight.model import ReIDModel
from secondsight.runtime import cpu_has_bf16
from secondsight.schedule import build_optimizers

HERE = Path(__file__).resolve().parent
VARIANTS = {  # name -> (channels_last, bf16, compile)
    "fp32": (False, False, False),
    "channels_last": (True, False, False),
    "bf16": (False, True, False),
    "bf16+channels_last": (True, True, False),
    "compile+bf16+channels_last": (True, True, True),
}


def synthetic_records(folder: Path, ids: int = 32, per_id: int = 8):
    "Training records of a synthetic Market-1501 (`datasets.make_fake_market`: 128x64 JPEG persons, 2 cameras)."
    root = make_fake_market(
        folder, train_ids=ids, test_ids=1, cams=2, per_cam=per_id // 2, extras=False
    )
    return Market1501(root).train


def bench(
    name: str, cfg: Config, records, steps: int, warmup: int, workers: int, frozen=()
):
    "Seconds per step, data-wait fraction and images/s of `steps` timed training steps (after `warmup`)."
    cl, bf16, comp = VARIANTS[name]
    torch.manual_seed(0)
    num_classes = len({r.pid for r in records})
    model = ReIDModel.from_config(cfg.model, num_classes)
    criterion = ReIDLoss(cfg.loss, num_classes, model.feat_dim)
    opt, copt = build_optimizers(cfg, model, criterion)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    if cl:
        model = model.to(memory_format=torch.channels_last)
    net = torch.compile(model) if comp else model
    model.train()
    set_trunk_frozen(model, False, keep_frozen=frozen)
    cfg = apply_overrides(cfg, [f"data.num_workers={workers}"])
    loader = build_train_loader(cfg, records, device="cpu")
    loader.batch_sampler.set_epoch(0)
    it = iter(loader)
    waits, totals, n_img, first = [], [], 0, None
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        imgs, pids = next(it)[:2]
        if cl:
            imgs = imgs.contiguous(memory_format=torch.channels_last)
        t1 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits, feat = net(imgs)
        loss, _ = criterion(logits.float(), feat.float(), pids)
        opt.zero_grad(set_to_none=True)
        copt.zero_grad(set_to_none=True)
        loss.backward()
        criterion.step_centers(copt, scaler)
        opt.step()
        t2 = time.perf_counter()
        if i == 0:
            first = t2 - t0
        if i >= warmup:
            waits.append(t1 - t0)
            totals.append(t2 - t0)
            n_img += len(pids)
    del it, loader
    return {
        "variant": name,
        "threads": torch.get_num_threads(),
        "workers": workers,
        "frozen": list(frozen),
        "sec_per_step": float(np.mean(totals)),
        "images_per_s": n_img / sum(totals),
        "best_step_images_per_s": len(pids) / min(totals),
        "data_wait_frac": float(sum(waits) / sum(totals)),
        "first_step_s": first,
    }


def run_rows(backbone, a, records):
    "The variant rows of one backbone, then thread and worker settings of the fastest variant, then it with the first layers frozen."
    over = [f"data.p={a.batch // 4}", "data.k=4", f"model.backbone={backbone}"]
    over += ["model.pretrained=none", "device=cpu"]
    frozen = ("conv1", "bn1", "layer1")  # ResNet's stem and first stage
    if backbone.startswith("osnet"):
        over += ["model.pooling=avg", "model.neck=fc"]  # the fine-tuning recipe's head
        # and its frozen layers
        frozen = load_config("market1501_finetune_osnet").solver.frozen_layers
    cfg = apply_overrides(Config(), over)
    names = [
        n
        for n, (_, bf, comp) in VARIANTS.items()
        if (not bf or cpu_has_bf16()) and (not comp or not a.no_compile)
    ]
    rows = []

    def one(name, threads, workers, frozen=()):
        torch.set_num_threads(threads)
        try:
            r = bench(name, cfg, records, a.steps, a.warmup, workers, frozen)
        except Exception as e:
            r = {"variant": name, "threads": threads, "workers": workers}
            r["frozen"] = list(frozen)
            r["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        rows.append(r)
        print(backbone, r, flush=True)

    for n in names:
        one(n, a.threads, a.workers)
    ok = [r for r in rows if "error" not in r]
    eager = max(
        (r for r in ok if not VARIANTS[r["variant"]][2]),
        key=lambda r: r["images_per_s"],
    )
    comp = [r for r in ok if VARIANTS[r["variant"]][2]]
    # compile must beat the fastest eager variant clearly (its first step compiles: minutes), else the eager one is varied
    best = (
        comp[0]["variant"]
        if comp and comp[0]["images_per_s"] > 1.1 * eager["images_per_s"]
        else eager["variant"]
    )
    for threads, workers in ((1, a.workers), (a.threads, 0)):
        one(best, threads, workers)
    one(best, a.threads, 0, frozen)
    return rows


def table(backbone, rows, base, batch):
    print(
        f"\n{backbone}: training step at 256x128, batch {batch}, CE + triplet + center, Adam"
    )
    print(
        f"{'variant':<40}{'threads':>8}{'workers':>8}{'s/step':>9}{'img/s':>8}{'vs fp32':>9}{'data wait':>11}"
    )
    for r in rows:
        name = r["variant"] + (
            f" frozen {'+'.join(r['frozen'])}" if r.get("frozen") else ""
        )
        head = f"{name:<40}{r['threads']:>8}{r['workers']:>8}"
        if "error" in r:
            print(f"{head}  failed: {r['error']}")
            continue
        print(
            f"{head}{r['sec_per_step']:>9.2f}{r['images_per_s']:>8.1f}{r['images_per_s'] / base:>8.2f}x{r['data_wait_frac']:>10.1%}"
        )


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", nargs="+", default=["osnet_x0_25", "resnet50"])
    ap.add_argument("--batch", type=int, default=64, help="images per step (P x 4)")
    ap.add_argument("--steps", type=int, default=6, help="timed steps per variant")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per variant")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--workers", type=int, default=2, help="loader workers")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    ap.add_argument("--out", default=str(HERE / "results" / "train.json"))
    a = ap.parse_args()
    root = os.environ.get("REID_DATA_ROOT")
    tmp = None
    if root:
        records, source = Market1501(root).train, f"Market-1501 ({Path(root).name})"
    else:
        tmp = tempfile.TemporaryDirectory()
        records, source = synthetic_records(Path(tmp.name)), "synthetic JPEGs"
    load0 = os.getloadavg()
    results = {}
    for bb in a.backbones:
        rows = run_rows(bb, a, records)
        base = rows[0]["images_per_s"]
        table(bb, rows, base, a.batch)
        ok = [r for r in rows if "error" not in r]
        best = max(ok, key=lambda r: r["images_per_s"])
        print(
            f"fastest: {best['variant']} ({best['threads']} threads, {best['workers']} workers"
            f"{', frozen ' + '+'.join(best['frozen']) if best.get('frozen') else ''}): "
            f"{best['images_per_s'] / base:.2f}x eager fp32"
        )
        results[bb] = {
            "rows": rows,
            "baseline": "fp32",
            "fastest": best["variant"],
            "speedup": best["images_per_s"] / base,
        }
    res = {
        "benchmark": "train",
        "batch": a.batch,
        "height": 256,
        "width": 128,
        "steps": a.steps,
        "data": source,
        "cpu_bf16": cpu_has_bf16(),
        "backbones": results,
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "load_avg_start": load0,
        "load_avg_end": os.getloadavg(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {a.out}")
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
