"""int8 quantization settings for the OSNet-x0.25 zoo model: screened on a Market-1501 subset, the chosen ones on the full split.

Run: `python benchmarks/int8_settings.py [--variants current,full_range,...] [--max-query 300] [--max-gallery 3000]`
     `python benchmarks/int8_settings.py --full --variants current,default` (the full Market-1501, 3,368 x 15,913)

Each variant is a set of `secondsight.export.quantize_int8` arguments (`VARIANTS` below; `default` is quantize_int8 as
it is, `current` the setting it had before this benchmark: reduced range, min/max ranges, every layer quantized).
All are calibrated on random training crops (`--calib-seed`), never on test images; the ranges are cached per crop
count, seed, method and percentile, so variants that differ only in how the ranges are used calibrate once.

Screen (default): a fixed subset (`subset_split`, seed 0: `--max-query` queries, all their identities' gallery
images, and random distractors while the gallery is under `--max-gallery`); fp32 (onnxruntime) first, then each
variant, one at a time (one loader pass each, so memory holds one onnxruntime session). For each variant: the cosine between its embeddings
and fp32's (flip TTA and L2 as in evaluation: the zoo config's protocol), mean / 1st percentile / min, mAP and Rank-1
on the subset next to fp32's, and images/s (taken at different moments: compare speeds in `--full`'s results).

Full (`--full`): one loader pass over the full query + gallery feeds fp32 and every listed variant, taking each batch
in turn, each timed on the same batches (images/s, an image counts once with its mirror); mAP and Rank-1 of each and
their difference from fp32.
Target: int8 within 0.5 point of fp32 in mAP and Rank-1.
Writes benchmarks/results/int8_settings_subset.json or benchmarks/results/int8_settings_market.json.
"""

import argparse, json, os, tempfile, time
from pathlib import Path
import numpy as np
import torch

from secondsight.datasets import build_dataset, subset_split
from secondsight.evaluate import evaluate_features
from secondsight.extract import Features, OnnxModel, _embed, onnx_bytes
from secondsight.export import calibration_batches, quantize_int8
from secondsight.loaders import build_test_loader
from secondsight.model import load_weights

RESULTS = Path(__file__).parent / "results"
PEERS = Path(
    os.environ.get(
        "SECONDSIGHT_PEERS_DIR",
        Path(__file__).resolve().parents[2] / "shared" / "peers",
    )
)
ZOO = PEERS / "osnet_x0_25_market1501.pth"


def old(**kw):
    "The setting quantize_int8 had before: reduced range, min/max ranges, every layer quantized (the BN scale per tensor)."
    base = dict(
        reduce_range=True, percentile=None, keep_head_fp32=False, keep_stem_fp32=False
    )
    extra = {"QDQOpTypePerChannelSupportToAxis": {}} | kw.pop("extra_options", {})
    return base | kw | dict(extra_options=extra)


# quantize_int8 arguments; `calib_images` = how many training crops calibrate (default 300)
VARIANTS = {
    "default": {},
    "current": old(),
    "full_range": old(reduce_range=False),
    "u8u8": old(reduce_range=False, weight_type="QUInt8"),
    "bn_per_channel": old(
        extra_options={"QDQOpTypePerChannelSupportToAxis": {"BatchNormalization": 0}}
    ),
    "head_fp32": old(keep_head_fp32=True),
    "stem_fp32": old(keep_stem_fp32=True),
    "percentile": old(percentile=99.999),
    "percentile_9999": old(percentile=99.99),
    "entropy": old(calibrate_method="Entropy", extra_options={"CalibStridedMinMax": 1}),
    "calib1000": old(calib_images=1000),
    "act_symmetric": old(extra_options={"ActivationSymmetric": True}),
    "weight_asymmetric": old(extra_options={"WeightSymmetric": False}),
    "pct_head": dict(keep_stem_fp32=False),
    "minmax1000_head_stem": dict(percentile=None, calib_images=1000),
    "pct1000_head_stem": dict(calib_images=1000),
}


def quantize(name, fp32_path, cfg, ds, tmp, seed=0):
    "The int8 file of variant `name` and the seconds quantize_int8 took (calibration included unless cached)."
    from onnxruntime.quantization import CalibrationMethod, QuantType

    kw = dict(VARIANTS[name])
    n = kw.pop("calib_images", 300)
    method = kw.get(
        "calibrate_method",
        "MinMax" if kw.get("percentile", 99.999) is None else "Percentile",
    )
    for k, enum in (
        ("weight_type", QuantType),
        ("calibrate_method", CalibrationMethod),
    ):
        if k in kw:
            kw[k] = getattr(enum, kw[k])
    cache = (
        Path(tmp) / f"calib_{n}_{seed}_{method}_{kw.get('percentile', 99.999)}.json"
    )  # the ranges depend on these alone
    t0 = time.perf_counter()
    batches = calibration_batches(cfg, ds.train, n, seed)
    q = quantize_int8(
        fp32_path,
        Path(tmp) / f"{name}.onnx",
        batches,
        calibration_cache_path=str(cache),
        **kw,
    )
    return q, time.perf_counter() - t0


def embed(engines, batches, flip, total):
    "Features of every engine ({name: [batch features]}) and the seconds each spent, the engines taking each batch in turn."
    feats, secs, t_start = (
        {k: [] for k in engines},
        {k: 0.0 for k in engines},
        time.perf_counter(),
    )
    for i, (imgs, *_) in enumerate(batches):
        for k, m in engines.items():
            t0 = time.perf_counter()
            feats[k].append(_embed(m, imgs, flip, True))
            secs[k] += time.perf_counter() - t0
        if i % 20 == 0:
            n = sum(len(f) for f in next(iter(feats.values())))
            print(
                f"  {', '.join(engines)}: {n:,}/{total:,} images, {time.perf_counter() - t_start:.0f}s",
                flush=True,
            )
    return feats, secs


def scores(feats, pids, camids, paths, nq, cfg):
    fs = Features(feats, pids, camids, paths)
    sc = evaluate_features(
        fs.subset(slice(0, nq)), fs.subset(slice(nq, None)), cfg.test, rerank=False
    )
    return round(100 * sc.rows["Baseline"].mAP, 2), round(
        100 * sc.rank("Baseline", 1), 2
    )


def cosines(a, b):
    c = (a * b).sum(1)  # both L2-normalised
    return dict(
        cos_mean=round(c.mean().item(), 5),
        cos_p1=round(float(np.percentile(c.numpy(), 1)), 5),
        cos_min=round(c.min().item(), 5),
    )


def run(args):
    model, cfg = load_weights(ZOO)
    ds = build_dataset(cfg, args.data_root)
    flip = cfg.test.flip
    query, gallery = (
        (ds.query, ds.gallery)
        if args.full
        else subset_split(ds.query, ds.gallery, args.max_query, args.max_gallery, 0)
    )
    records, nq = list(query) + list(gallery), len(query)
    pids, camids, paths = (
        np.array([r.pid for r in records]),
        np.array([r.camid for r in records]),
        [r.path for r in records],
    )
    tmp = args.work or tempfile.mkdtemp()
    Path(tmp).mkdir(parents=True, exist_ok=True)
    fp32_path = Path(tmp) / "osnet.onnx"
    fp32_path.write_bytes(onnx_bytes(model, cfg.data.height, cfg.data.width))
    names = args.variants.split(",")
    out = dict(
        model=f"osnet_x0_25 torchreid zoo ({ZOO.name})",
        split="full" if args.full else "subset",
        flip=flip,
        normalize=True,
        num_query=nq,
        num_gallery=len(records) - nq,
        calib_seed=args.calib_seed,
        threads=torch.get_num_threads(),
        load_average_start=os.getloadavg(),
        variants={k: VARIANTS[k] for k in names},
    )
    qsecs = {}

    def int8(k):
        q, qsecs[k] = quantize(k, fp32_path, cfg, ds, tmp, args.calib_seed)
        print(f"  quantized {k} in {qsecs[k]:.1f}s", flush=True)
        return OnnxModel(q)

    def loader():
        return build_test_loader(
            cfg, records, device="cpu", num_workers=args.num_workers
        )

    if args.full:
        # every engine on the same batches in turn: a busy moment slows them alike
        engines = {"fp32": OnnxModel(fp32_path)} | {k: int8(k) for k in names}
        feats, secs = embed(engines, loader(), flip, len(records))
    else:
        # one engine at a time, so memory holds one onnxruntime session
        feats, secs = embed(
            {"fp32": OnnxModel(fp32_path)}, loader(), flip, len(records)
        )
        for k in names:
            f, t = embed({k: int8(k)}, loader(), flip, len(records))
            feats, secs = feats | f, secs | t
    ref = torch.cat(feats["fp32"])
    rows = {}
    for k in feats:
        f = torch.cat(feats[k])
        m, r1 = scores(f, pids, camids, paths, nq, cfg)
        rows[k] = dict(mAP=m, rank1=r1, images_per_s=round(len(records) / secs[k], 1))
        if k != "fp32":
            rows[k].update(
                cosines(f, ref),
                quantize_seconds=round(qsecs[k], 1),
                d_mAP=round(m - rows["fp32"]["mAP"], 2),
                d_rank1=round(r1 - rows["fp32"]["rank1"], 2),
            )
            rows[k]["target_met"] = (
                abs(rows[k]["d_mAP"]) <= 0.5 and abs(rows[k]["d_rank1"]) <= 0.5
            )
    out.update(results=rows, load_average_end=os.getloadavg())
    print(f"\n{out['split']}: {nq} queries x {len(records) - nq} gallery, flip {flip}")
    print(
        f"{'variant':<18} {'cos mean':>9} {'cos p1':>8} {'cos min':>8} {'mAP':>7} {'dmAP':>6} {'R1':>7} {'dR1':>6} {'img/s':>7}"
    )
    for k, r in rows.items():
        print(
            f"{k:<18} {r.get('cos_mean', 1):9.5f} {r.get('cos_p1', 1):8.5f} {r.get('cos_min', 1):8.5f} {r['mAP']:7.2f} "
            f"{r.get('d_mAP', 0):+6.2f} {r['rank1']:7.2f} {r.get('d_rank1', 0):+6.2f} {r['images_per_s']:7.1f}"
        )
    path = (
        args.out
        or RESULTS / f"int8_settings_{'market' if args.full else 'subset'}.json"
    )
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(out, indent=2) + "\n")
    print("wrote", path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated, from: {', '.join(VARIANTS)}",
    )
    ap.add_argument(
        "--full",
        action="store_true",
        help="the full query and gallery instead of a subset",
    )
    ap.add_argument("--max-query", type=int, default=300)
    ap.add_argument("--max-gallery", type=int, default=3000)
    ap.add_argument(
        "--calib-seed", type=int, default=0, help="seed of the random calibration crops"
    )
    ap.add_argument("--num-workers", type=int, default=1, help="loader workers")
    ap.add_argument(
        "--data-root",
        default=None,
        help="Market-1501 folder (default: $REID_DATA_ROOT)",
    )
    ap.add_argument(
        "--work",
        default=None,
        help="folder for the ONNX files and calibration caches (default: a temporary one)",
    )
    ap.add_argument("--out", default=None, help="the JSON file to write")
    args = ap.parse_args()
    if unknown := set(args.variants.split(",")) - set(VARIANTS):
        ap.error(f"unknown variants {sorted(unknown)}")
    if not ZOO.is_file():
        raise SystemExit(
            f"{ZOO} not found: set SECONDSIGHT_PEERS_DIR to the folder holding it"
        )
    run(args)


if __name__ == "__main__":
    main()
