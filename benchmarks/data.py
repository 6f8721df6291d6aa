"""Can data loading starve the model? Images/s of the train loader (0, 1, 2 workers) next to images/s of a training step.

Run: `python benchmarks/data.py` (uses $REID_DATA_ROOT, else the synthetic crops of `data.make_fake_market`).
Prints a table and writes benchmarks/results/data.json. Target: the loader with the default worker count
(cfg.data.num_workers) delivers at least as many images/s as a training step consumes on the CPU.
"""

import argparse, json, os, platform, sys, tempfile, time
from pathlib import Path
import torch

from secondsight.config import Config
from secondsight.datasets import Market1501, make_fake_market
from secondsight.loaders import build_train_loader


def time_loader(cfg: Config, records, workers: int, batches: int):
    "(first-batch seconds, images/s over the next `batches` batches)."
    loader = build_train_loader(cfg, records, num_workers=workers, device="cpu")
    loader.batch_sampler.set_epoch(0)
    t0 = time.perf_counter()
    it = iter(loader)
    x = next(it)[0]
    first = time.perf_counter() - t0
    n, t1 = 0, time.perf_counter()
    for _ in range(batches):
        n += len(next(it)[0])
    dt = time.perf_counter() - t1
    del it, loader
    return first, n / dt, tuple(x.shape)


def build_model(backbone: str, num_classes: int):
    "secondsight's ReIDModel (no pretrained weights)."
    from secondsight.model import ReIDModel

    return ReIDModel(
        num_classes=num_classes, backbone=backbone, pretrained="none"
    ), "secondsight.model.ReIDModel"


def time_train_step(cfg: Config, backbone: str, steps: int, batch: int):
    "Images/s of forward + backward + Adam step on random 3 x H x W inputs, CPU fp32."
    model, name = build_model(backbone, 751)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=3.5e-4)
    x = torch.randn(batch, 3, cfg.data.height, cfg.data.width)
    y = torch.randint(0, 751, (batch,))

    def step():
        out = model(x)
        logits = out[0] if isinstance(out, (tuple, list)) else out
        loss = torch.nn.functional.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    dt = time.perf_counter() - t0
    return batch * steps / dt, dt / steps, name


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--data-root",
        default=os.environ.get("REID_DATA_ROOT"),
        help="Market-1501 folder (default $REID_DATA_ROOT; synthetic data if unset)",
    )
    ap.add_argument("--workers", default="0,1,2", help="worker counts to time")
    ap.add_argument(
        "--batches",
        type=int,
        default=8,
        help="timed batches per worker count (after the first)",
    )
    ap.add_argument("--backbone", default="resnet50")
    ap.add_argument(
        "--steps", type=int, default=2, help="timed training steps (after one warm-up)"
    )
    ap.add_argument(
        "--step-batch",
        type=int,
        default=16,
        help="batch of the timed training step (CPU images/s barely depend on it; 64 takes minutes here)",
    )
    ap.add_argument(
        "--threads", type=int, default=2, help="torch threads in the main process"
    )
    ap.add_argument(
        "--out", default=str(Path(__file__).parent / "results" / "data.json")
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = Config(device="cpu")
    bs = cfg.data.p * cfg.data.k

    tmp = None
    if args.data_root:
        records, source = (
            Market1501(args.data_root).train,
            f"Market-1501 train ({args.data_root})",
        )
    else:
        tmp = tempfile.TemporaryDirectory()
        root = make_fake_market(
            Path(tmp.name) / "market",
            train_ids=64,
            test_ids=1,
            cams=4,
            per_cam=2,
            extras=False,
        )
        records, source = (
            Market1501(root).train,
            "synthetic 128x64 JPEGs of data.make_fake_market (REID_DATA_ROOT not set)",
        )
    print(
        f"data: {source}, {len(records)} images; batch {cfg.data.p}x{cfg.data.k}={bs} at {cfg.data.height}x{cfg.data.width}; "
        f"{os.cpu_count()} CPUs, torch {torch.__version__}, {args.threads} torch threads"
    )

    # The loader runs with 1 torch thread in the main process, as DataLoader workers do: on a shared, loaded CPU,
    # intra-op threads in the transforms oversubscribe the cores (we measured 146 ms/image with 2 threads vs 6 ms with 1).
    torch.set_num_threads(1)
    rows = []
    for w in [int(v) for v in args.workers.split(",")]:
        first, ips, shape = time_loader(cfg, records, w, args.batches)
        rows.append(
            {
                "workers": w,
                "images_per_s": ips,
                "first_batch_s": first,
                "batch_shape": list(shape),
            }
        )
        print(
            f"  loader, {w} workers: {ips:7.1f} images/s (first batch after {first:.2f} s)"
        )

    torch.set_num_threads(args.threads)
    train_ips, step_s, model_name = time_train_step(
        cfg, args.backbone, args.steps, args.step_batch
    )
    print(
        f"  training step ({model_name}, CPU fp32): {train_ips:.1f} images/s ({step_s:.2f} s per batch of {args.step_batch})"
    )

    default_w = cfg.data.num_workers
    loader_default = next(
        (r["images_per_s"] for r in rows if r["workers"] == default_w),
        max(r["images_per_s"] for r in rows),
    )
    met = loader_default >= train_ips
    print()
    print(f"| {'what':<36} | {'images/s':>9} | {'x train step':>12} |")
    print(f"|{'-' * 38}|{'-' * 11}|{'-' * 14}|")
    for r in rows:
        print(
            f"| {'train loader, ' + str(r['workers']) + ' workers':<36} | {r['images_per_s']:>9.1f} | {r['images_per_s'] / train_ips:>12.2f} |"
        )
    print(
        f"| {'training step (' + args.backbone + ', CPU)':<36} | {train_ips:>9.1f} | {1.0:>12.2f} |"
    )
    print()
    print(
        f"target (loader with cfg.data.num_workers={default_w} >= training step): {'MET' if met else 'NOT MET'} "
        f"({loader_default:.1f} vs {train_ips:.1f} images/s)"
    )
    print(
        "per-image decode + augmentation cost in one process: "
        f"{1000 / rows[0]['images_per_s']:.1f} ms"
        if rows and rows[0]["workers"] == 0
        else ""
    )
    print(
        "A GPU consumes far more images/s than this CPU: divide the 0-worker rate into it to size num_workers there."
    )

    res = {
        "benchmark": "data",
        "source": source,
        "num_images": len(records),
        "batch_size": bs,
        "image_size": [cfg.data.height, cfg.data.width],
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": args.threads,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "loader": rows,
        "train_step": {
            "model": model_name,
            "backbone": args.backbone,
            "device": "cpu",
            "images_per_s": train_ips,
            "seconds_per_batch": step_s,
            "batch": args.step_batch,
            "timed_steps": args.steps,
        },
        "loader_torch_threads": 1,
        "load_average": list(os.getloadavg()),
        "target": f"train loader with num_workers={default_w} >= training-step images/s",
        "target_met": met,
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {out}")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
