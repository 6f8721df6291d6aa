"""Feature extraction on a CPU: every engine against eager PyTorch, for ResNet-50 and OSNet-x0.25, and int8 accuracy.

Run: `python benchmarks/extract.py [--batch 16] [--rounds 2] [--no-compile] [--models resnet50,osnet_x0_25]`
     `python benchmarks/extract.py --market [--flip] [--calib-images 300]` (int8 accuracy on the full Market-1501)

Speed (default mode). Models: secondsight's ReIDModel ResNet-50 (last stride 1, GeM, BNNeck; untrained, batch-norm
statistics randomised so no layer is an identity) and OSNet-x0.25 (torchreid's Market-1501 zoo weights from
`$SECONDSIGHT_PEERS_DIR`, default `../shared/peers` next to the repo, when present; else untrained). 256x128 inputs, flip TTA
(each image and its mirror), L2-normalised fp32 features: what `extract_features` returns. Variants, all on the same
random batch, timed in interleaved rounds (best round kept, so a busy moment hurts every variant alike):
- eager NCHW, two passes (image, then mirror): the plain baseline, `embed_batch` before this work;
- eager channels_last (model and input), two passes;
- `backend='torch'`: one batched pass over image + mirror, channels_last input (the fallback without onnxruntime);
- torch.compile (inductor) of the channels_last model, one batched pass (`--no-compile` skips it);
- `backend='onnxruntime'` / 'auto': onnxruntime's copy of the model (the default on a CPU when it is installed);
- onnxruntime int8 (`secondsight.export.quantize_int8`'s defaults: QDQ, per-channel, reduced range, percentile ranges,
  head and stem in fp32), calibrated on random inputs here (speed only; accuracy is `--market`'s).
For each: images/s (an image counts once, with its mirror), GFLOP/s (two passes per image; FLOPs counted with
torch.utils.flop_counter, a multiply-add = 2), the share of this machine's fp32 matmul rate (a 2048^3 `torch.mm`
measured at the start, between variants and at the end; the highest rate seen is used), the one-off cost (first
call: the ONNX trace + session, or the compilation), and the max |feature - eager fp32 feature|.
Target (issue 12): the default ('auto') at least 2x the eager baseline, features within 1e-4.

Accuracy (`--market`): the OSNet-x0.25 zoo model on the full Market-1501 (3,368 queries x 15,913 gallery,
`$REID_DATA_ROOT`), fp32 (onnxruntime, the default path) against int8 calibrated on `--calib-images` random
training crops; one loader pass feeds both; mAP and Rank-1 of each, and the int8 speed relative to fp32 in the
same run. Target: int8 within 0.5 point of fp32 in mAP and Rank-1.
Writes benchmarks/results/extract.json (speed) or benchmarks/results/extract_int8_market.json (accuracy).
"""

import argparse, copy, json, os, platform, tempfile, time
from pathlib import Path
import numpy as np
import torch
import torch.nn.functional as F

from secondsight.model import ReIDModel, count_flops, load_weights
from secondsight.extract import OnnxModel, cpu_copy, _embed

RESULTS = Path(__file__).parent / "results"
PEERS = Path(
    os.environ.get(
        "SECONDSIGHT_PEERS_DIR",
        Path(__file__).resolve().parents[2] / "shared" / "peers",
    )
)
ZOO = PEERS / "osnet_x0_25_market1501.pth"


def matmul_gflops(n: int = 2048, reps: int = 3) -> float:
    "Best-of-`reps` GFLOP/s of an n x n fp32 matmul (2 n^3 FLOPs)."
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def eager_two_pass(model, x):
    "The baseline: eager NCHW fp32, the image and then its mirror, mean, L2."
    with torch.no_grad():
        return F.normalize((model(x) + model(x.flip(-1))) / 2, dim=1)


def build_model(name: str):
    "(model in eval mode, where its weights came from)."
    torch.manual_seed(0)
    if name == "osnet_x0_25" and ZOO.is_file():
        return load_weights(ZOO)[0].eval(), f"torchreid zoo {ZOO.name}"
    m = ReIDModel(backbone=name, pretrained="none", last_stride=1).eval()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
                mod.weight.uniform_(0.5, 1.5)
    return m, "untrained (random batch-norm statistics)"


def int8_copy(model, h, w, batches):
    "An int8 OnnxModel of `model`, calibrated on `batches`."
    from secondsight.extract import onnx_bytes
    from secondsight.export import quantize_int8

    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "m.onnx"
        fp32.write_bytes(onnx_bytes(model, h, w))
        return OnnxModel(quantize_int8(fp32, Path(tmp) / "m_int8.onnx", batches))


def bench_model(name, args, rates):
    model, source = build_model(name)
    h, w = args.height, args.width
    flops = count_flops(model, h, w)
    x = torch.randn(args.batch, 3, h, w, generator=torch.Generator().manual_seed(0))
    print(
        f"\n{name} ({source}) at {h}x{w}: {flops / 1e9:.3f} GFLOPs per image per pass, batch {args.batch}, flip TTA",
        flush=True,
    )
    ref = eager_two_pass(model, x)
    variants, setup = {}, {}
    variants["eager NCHW, 2 passes (baseline)"] = lambda: eager_two_pass(model, x)
    mcl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    xcl = x.contiguous(memory_format=torch.channels_last)
    variants["eager channels_last, 2 passes"] = lambda: eager_two_pass(mcl, xcl)
    variants["backend='torch' (1 pass, channels_last)"] = lambda: _embed(
        model, x, backend="torch"
    )
    if not args.no_compile:
        try:
            t0 = time.perf_counter()
            cm = torch.compile(mcl)
            x2 = torch.cat([x, x.flip(-1)]).contiguous(
                memory_format=torch.channels_last
            )
            with torch.no_grad():
                cm(x2)

            def compiled():
                with torch.no_grad():
                    f = cm(x2)
                return F.normalize((f[: len(x)] + f[len(x) :]) / 2, dim=1)

            setup["torch.compile (1 pass, channels_last)"] = time.perf_counter() - t0
            variants["torch.compile (1 pass, channels_last)"] = compiled
        except Exception as e:  # no compiler, unsupported platform: reported, not fatal
            print(
                f"  torch.compile unavailable: {type(e).__name__}: {str(e).splitlines()[0][:120]}"
            )
            setup["torch.compile (1 pass, channels_last)"] = (
                f"failed: {type(e).__name__}"
            )
    t0 = time.perf_counter()
    cpu_copy(model, tuple(x.shape[1:]), strict=True)
    setup["default: backend='auto' (onnxruntime fp32)"] = time.perf_counter() - t0
    variants["default: backend='auto' (onnxruntime fp32)"] = lambda: _embed(
        model, x, backend="auto"
    )
    t0 = time.perf_counter()
    q = int8_copy(model, h, w, [torch.randn(8, 3, h, w).numpy() for _ in range(2)])
    setup["onnxruntime int8 (random calibration)"] = time.perf_counter() - t0
    variants["onnxruntime int8 (random calibration)"] = lambda: _embed(q, x)

    best = {k: 0.0 for k in variants}
    diff = {}
    for r in range(args.rounds):
        for k, f in variants.items():
            t0 = time.perf_counter()
            out = f()
            best[k] = max(best[k], args.batch / (time.perf_counter() - t0))
            diff[k] = float((out - ref).abs().max())
            print(
                f"  round {r}  {k:<44} {args.batch / (time.perf_counter() - t0):8.2f} img/s  max|diff| {diff[k]:.1e}",
                flush=True,
            )
        rates.append(round(matmul_gflops(), 1))
    base = best["eager NCHW, 2 passes (baseline)"]
    rows = []
    for k in variants:
        gf = 2 * best[k] * flops / 1e9
        rows.append(
            dict(
                variant=k,
                images_per_s=round(best[k], 2),
                speedup=round(best[k] / base, 2),
                gflops_per_s=round(gf, 1),
                max_abs_diff=diff[k],
                one_off_seconds=setup.get(k)
                if isinstance(setup.get(k), str)
                else round(setup.get(k, 0.0), 1),
            )
        )
    return dict(
        model=name,
        weights=source,
        gflops_per_image_pass=round(flops / 1e9, 3),
        batch=args.batch,
        variants=rows,
    )


def speed(args):
    load0 = os.getloadavg()
    rates = [round(matmul_gflops(), 1)]
    models = [bench_model(n, args, rates) for n in args.models.split(",")]
    peak = max(rates)
    print(
        f"\nfp32 torch.mm 2048^3 rates seen: {rates} GFLOP/s; shares use the highest, {peak}. Load average {load0[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end."
    )
    print(
        f"{'model':<12} {'variant':<44} {'img/s':>8} {'x eager':>8} {'% matmul':>9} {'max|diff|':>10} {'one-off s':>10}"
    )
    ok = True
    for m in models:
        for r in m["variants"]:
            r["share_of_matmul"] = round(r["gflops_per_s"] / peak, 3)
            print(
                f"{m['model']:<12} {r['variant']:<44} {r['images_per_s']:8.2f} {r['speedup']:8.2f} {100 * r['share_of_matmul']:8.1f}% {r['max_abs_diff']:10.1e} {str(r['one_off_seconds']):>10}"
            )
            if r["variant"].startswith("default"):
                met = r["speedup"] >= 2 and r["max_abs_diff"] <= 1e-4
                ok &= met
                print(
                    f"{'':<12} target (>= 2x eager, features within 1e-4): {'met' if met else 'MISSED'}"
                )
    res = dict(
        machine=dict(
            platform=platform.platform(),
            processor=platform.processor() or platform.machine(),
            cpus=os.cpu_count(),
            threads=torch.get_num_threads(),
            load_average_start=load0,
            load_average_end=os.getloadavg(),
        ),
        torch=torch.__version__,
        input=[args.batch, 3, args.height, args.width],
        matmul_gflops_per_s=peak,
        matmul_gflops_seen=rates,
        models=models,
        target_met=ok,
    )
    write(res, args.out or RESULTS / "extract.json")


def market(args):
    "int8 against fp32 (both onnxruntime) on the full Market-1501 with the OSNet-x0.25 zoo model."
    from secondsight.datasets import build_dataset
    from secondsight.loaders import build_test_loader
    from secondsight.evaluate import evaluate_features
    from secondsight.extract import Features, onnx_bytes
    from secondsight.export import calibration_batches, quantize_int8

    if not ZOO.is_file():
        raise SystemExit(
            f"{ZOO} not found: set SECONDSIGHT_PEERS_DIR to the folder holding torchreid's osnet_x0_25_market1501.pth"
        )
    model, cfg = load_weights(ZOO)
    ds = build_dataset(cfg, args.data_root)
    h, w = cfg.data.height, cfg.data.width
    with tempfile.TemporaryDirectory() as tmp:
        fp32_path = Path(tmp) / "osnet.onnx"
        fp32_path.write_bytes(onnx_bytes(model, h, w))
        t0 = time.perf_counter()
        q = quantize_int8(
            fp32_path,
            Path(tmp) / "osnet_int8.onnx",
            calibration_batches(cfg, ds.train, args.calib_images, 0),
        )
        calib_s = time.perf_counter() - t0
        engines = {"fp32": OnnxModel(fp32_path), "int8": OnnxModel(q)}
        query, gallery = ds.query, ds.gallery
        if args.limit:  # a trial on a subset: limit/5 queries, `limit` gallery images
            from secondsight.datasets import subset_split

            query, gallery = subset_split(
                query, gallery, max(1, args.limit // 5), args.limit, 0
            )
        records = list(query) + list(gallery)
        feats, secs = {k: [] for k in engines}, {k: 0.0 for k in engines}
        eager_diff, t_start = None, time.perf_counter()
        loader = build_test_loader(
            cfg, records, device="cpu", num_workers=args.num_workers
        )
        for i, (imgs, *_) in enumerate(loader):
            for k, m in engines.items():
                t0 = time.perf_counter()
                feats[k].append(_embed(m, imgs, args.flip, True))
                secs[k] += time.perf_counter() - t0
            if (
                i == 0
            ):  # the fp32 engine is the eager model's copy: check on the first batch
                with torch.no_grad():
                    f = (
                        model(imgs[:16])
                        if not args.flip
                        else (model(imgs[:16]) + model(imgs[:16].flip(-1))) / 2
                    )
                eager_diff = float(
                    (F.normalize(f, dim=1) - feats["fp32"][0][:16]).abs().max()
                )
            if i % 20 == 0:
                n = sum(len(f) for f in feats["fp32"])
                print(
                    f"  {n:,}/{len(records):,} images, {time.perf_counter() - t_start:.0f}s: fp32 {n / secs['fp32']:.1f} img/s, int8 {n / secs['int8']:.1f} img/s",
                    flush=True,
                )
    nq = len(query)
    pids, camids, paths = (
        np.array([r.pid for r in records]),
        np.array([r.camid for r in records]),
        [r.path for r in records],
    )
    out = dict(
        model=f"osnet_x0_25 torchreid zoo ({ZOO.name})",
        flip=args.flip,
        normalize=True,
        calib_images=args.calib_images,
        calibration_seconds=round(calib_s, 1),
        num_query=nq,
        num_gallery=len(records) - nq,
        fp32_vs_eager_max_abs_diff=eager_diff,
        load_average=os.getloadavg(),
        threads=torch.get_num_threads(),
    )
    for k in engines:
        fs = Features(torch.cat(feats[k]), pids, camids, paths)
        sc = evaluate_features(
            fs.subset(slice(0, nq)), fs.subset(slice(nq, None)), cfg.test, rerank=False
        )
        out[k] = dict(
            mAP=round(100 * sc.rows["Baseline"].mAP, 2),
            rank1=round(100 * sc.rank("Baseline", 1), 2),
            images_per_s=round(len(records) / secs[k], 1),
        )
        print(
            f"{k}: mAP {out[k]['mAP']:.2f}%, Rank-1 {out[k]['rank1']:.2f}%, {out[k]['images_per_s']} img/s"
        )
    out["delta_points"] = {
        m: round(out["int8"][m] - out["fp32"][m], 2) for m in ("mAP", "rank1")
    }
    out["int8_speedup"] = round(
        out["int8"]["images_per_s"] / out["fp32"]["images_per_s"], 2
    )
    out["target_met"] = all(abs(v) <= 0.5 for v in out["delta_points"].values())
    print(
        f"int8 - fp32: mAP {out['delta_points']['mAP']:+.2f}, Rank-1 {out['delta_points']['rank1']:+.2f} points; "
        f"int8 speed {out['int8_speedup']}x fp32; target (within 0.5 point): {'met' if out['target_met'] else 'MISSED'}"
    )
    write(out, args.out or RESULTS / "extract_int8_market.json")


def write(res, path):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(res, indent=2) + "\n")
    print("wrote", path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--models", default="resnet50,osnet_x0_25", help="comma-separated backbones"
    )
    ap.add_argument(
        "--batch",
        type=int,
        default=16,
        help="images per timed batch (each with its mirror)",
    )
    ap.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="interleaved timing rounds (the best is kept)",
    )
    ap.add_argument("--height", type=int, default=256)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument(
        "--no-compile", action="store_true", help="skip the torch.compile variant"
    )
    ap.add_argument(
        "--market",
        action="store_true",
        help="int8 vs fp32 accuracy on the full Market-1501 instead",
    )
    ap.add_argument(
        "--flip",
        action="store_true",
        help="with --market: flip TTA (default off: torchreid's protocol)",
    )
    ap.add_argument(
        "--calib-images",
        type=int,
        default=300,
        help="with --market: training crops to calibrate int8 on",
    )
    ap.add_argument(
        "--limit",
        type=int,
        default=0,
        help="with --market: only the first N query+gallery images (a trial)",
    )
    ap.add_argument(
        "--num-workers", type=int, default=1, help="with --market: loader workers"
    )
    ap.add_argument(
        "--data-root",
        default=None,
        help="Market-1501 folder (default: $REID_DATA_ROOT)",
    )
    ap.add_argument("--out", default=None, help="the JSON file to write")
    args = ap.parse_args()
    for k in ("batch", "rounds", "calib_images"):
        if getattr(args, k) < 1:
            ap.error(f"--{k.replace('_', '-')} must be >= 1, got {getattr(args, k)}")
    market(args) if args.market else speed(args)


if __name__ == "__main__":
    main()
