"""Cross-check of our evaluation pipeline on the real Market-1501 with a trained outside model (torchreid's OSNet-x0.25).

Run: `python benchmarks/peers_osnet.py [--quick] [--no-msmt] [--no-rerank]` from the repository root.
Needs: `SECONDSIGHT_PEERS_DIR` (default `../shared/peers` next to the repo) holding torchreid's model-zoo state dicts
`osnet_x0_25_market1501.pth` (and `osnet_x0_25_msmt17.pth` for the cross-domain figure); they are read from there,
never copied into the repo. `REID_DATA_ROOT` (default `../shared/data/Market-1501-v15.09.15` next to the repo) is Market-1501.

What runs: secondsight's OSNet (`secondsight.osnet.load_osnet`, Zhou et al., ICCV 2019), loaded with strict key checking; our data pipeline
(`Market1501`, `build_test_loader`: 256x128, ImageNet normalisation), `secondsight.extract.extract_features`,
`secondsight.evaluate.feature_distances`, `secondsight.metrics.evaluate_rank`, `secondsight.rerank.re_ranking`.
Every image is embedded once with its mirror (features cached under /tmp, so reruns are cheap); the settings are
derived from the cache: flip TTA off/on x L2-normalised (cosine) / raw (Euclidean, torchreid's default test).

Baselines measured in the same run:
- a faithful numpy port of torchreid's `eval_market1501` (below) on every distance matrix: must agree with
  `evaluate_rank` to float rounding (1e-6);
- torchreid's own test preprocessing (PIL `Image.open().convert('RGB')`, `T.Resize((256, 128))` bilinear on PIL,
  `T.ToTensor`, `T.Normalize`) against ours on a subset of images: pixels and features must match closely;
- `extract_features(flip=True, normalize=True)` on a subset against the cached raw features;
- the numbers torchreid's model zoo publishes for osnet_x0_25 on Market-1501 (recalled from memory, approximate:
  Rank-1 ~91.2%, mAP ~75.0%, Euclidean on raw features, no flip): the torchreid-default setting must land within
  1.5 points of Rank-1 and 2 points of mAP, else something in our pipeline is wrong.
Prints a table and writes benchmarks/results/peers_osnet.json.
"""

import argparse, hashlib, json, os, platform, sys, time
from pathlib import Path
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from secondsight.osnet import load_osnet

REPO = Path(__file__).resolve().parents[1]
ZOO = {
    "market1501": {"rank1": 0.912, "mAP": 0.750}
}  # torchreid model zoo, osnet_x0_25, Market-1501 (from memory, approximate)
TOL = {"rank1": 0.015, "mAP": 0.02}


# ---------------------------------------------------------------- the baseline: torchreid's eval_market1501, ported
def torchreid_eval_market1501(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50):
    "torchreid.metrics.rank.eval_market1501 (Python version) step by step; AP's per-position list comprehension vectorised."
    num_q, num_g = distmat.shape
    if num_g < max_rank:
        max_rank = num_g
    indices = np.argsort(distmat, axis=1)
    matches = (g_pids[indices] == q_pids[:, np.newaxis]).astype(np.int32)
    all_cmc, all_AP, all_INP, num_valid_q = [], [], [], 0.0
    for q_idx in range(num_q):
        q_pid, q_camid = q_pids[q_idx], q_camids[q_idx]
        order = indices[q_idx]
        remove = (g_pids[order] == q_pid) & (g_camids[order] == q_camid)
        keep = np.invert(remove)
        raw_cmc = matches[q_idx][keep]
        if not np.any(raw_cmc):
            continue
        cmc = raw_cmc.cumsum()
        max_pos_idx = np.max(np.where(raw_cmc == 1))
        all_INP.append(cmc[max_pos_idx] / (max_pos_idx + 1.0))
        cmc[cmc > 1] = 1
        all_cmc.append(cmc[:max_rank])
        num_valid_q += 1.0
        num_rel = raw_cmc.sum()
        tmp_cmc = raw_cmc.cumsum() / (
            np.arange(len(raw_cmc)) + 1.0
        )  # == [x / (i + 1.) for i, x in enumerate(...)]
        all_AP.append((tmp_cmc * raw_cmc).sum() / num_rel)
    assert num_valid_q > 0, "Error: all query identities do not appear in gallery"
    all_cmc = np.asarray(all_cmc).astype(np.float32).sum(0) / num_valid_q
    return all_cmc, float(np.mean(all_AP)), float(np.mean(all_INP)), int(num_valid_q)


# ---------------------------------------------------------------- helpers
def peers_dir() -> Path:
    d = Path(
        os.environ.get("SECONDSIGHT_PEERS_DIR", REPO.parent / "shared" / "peers")
    ).expanduser()
    if not (d / "osnet_x0_25_market1501.pth").is_file():
        sys.exit(
            f"peers_osnet: {d / 'osnet_x0_25_market1501.pth'} not found. Set SECONDSIGHT_PEERS_DIR to the folder holding "
            "torchreid's osnet_x0_25_market1501.pth (and osnet_x0_25_msmt17.pth); they are never copied into the repo."
        )
    return d


def cache_key(weights: Path, records, cfg) -> str:
    st = weights.stat()
    h = hashlib.sha1(
        json.dumps(
            [
                weights.name,
                st.st_size,
                int(st.st_mtime),
                cfg.data.height,
                cfg.data.width,
                list(cfg.data.mean),
                list(cfg.data.std),
                len(records),
                records[0].path,
                records[-1].path,
            ]
        ).encode()
    )
    return h.hexdigest()[:12]


def fuse_bn(model: nn.Module) -> nn.Module:
    "Eval-mode copy with every conv+BN pair folded into one conv (same function, ~10% less time on this busy CPU)."
    import copy
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    m = copy.deepcopy(model).eval()
    for mod in m.modules():
        for c, b in (("conv", "bn"), ("conv2", "bn")):
            if isinstance(getattr(mod, c, None), nn.Conv2d) and isinstance(
                getattr(mod, b, None), nn.BatchNorm2d
            ):
                setattr(mod, c, fuse_conv_bn_eval(getattr(mod, c), getattr(mod, b)))
                setattr(mod, b, nn.Identity())
    return m


class Mirrored(nn.Module):
    "`model` applied to the horizontal mirror of the batch."

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x.flip(-1))


def embed(
    model, records, cfg, cache_dir: Path, weights: Path, num_workers: int, mirror: bool
):
    "Raw (unnormalised) features of `records` (or of their mirrors), from the cache or with `extract_features`."
    from secondsight.loaders import build_test_loader
    from secondsight.extract import extract_features

    path = (
        cache_dir
        / f"{weights.stem}_{cache_key(weights, records, cfg)}_{'mirror' if mirror else 'plain'}.pt"
    )
    if path.is_file():
        c = torch.load(path, map_location="cpu", weights_only=True)
        print(f"  features from cache {path}")
        return c["f"], c["seconds"], True
    loader = build_test_loader(cfg, records, device="cpu", num_workers=num_workers)
    net = Mirrored(model) if mirror else model
    t0 = time.perf_counter()
    f = extract_features(net, loader, flip=False, normalize=False, device="cpu").feats
    secs = time.perf_counter() - t0
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"f": f, "seconds": secs}, tmp)
    os.replace(tmp, path)
    return f, secs, False


def torchreid_transform(h, w):
    "torchreid's test transform (build_transforms: Resize((h, w)) on the PIL image, ToTensor, Normalize)."
    import torchvision.transforms as T

    return T.Compose(
        [
            T.Resize((h, w)),
            T.ToTensor(),
            T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )


def preprocessing_check(model, records, cfg, n: int):
    "Our test transform vs torchreid's on `n` images: pixel differences and feature agreement."
    from PIL import Image
    from secondsight.data import test_transform, read_image

    ours, theirs = (
        test_transform(cfg),
        torchreid_transform(cfg.data.height, cfg.data.width),
    )
    rng = np.random.default_rng(0)
    idx = rng.choice(len(records), n, replace=False)
    xo = torch.stack([ours(read_image(records[i].path)) for i in idx])
    xt = torch.stack([theirs(Image.open(records[i].path).convert("RGB")) for i in idx])
    # RGB order / range: un-normalise ours and compare with the raw file bytes resized by PIL
    raw = (
        torch.stack(
            [
                torch.from_numpy(
                    np.array(
                        Image.open(records[i].path)
                        .convert("RGB")
                        .resize((cfg.data.width, cfg.data.height), Image.BILINEAR)
                    )
                ).permute(2, 0, 1)
                for i in idx
            ]
        ).float()
        / 255
    )
    mean, std = (
        torch.tensor(cfg.data.mean)[:, None, None],
        torch.tensor(cfg.data.std)[:, None, None],
    )
    with torch.inference_mode():
        fo, ft = model(xo), model(xt)
    cos = F.cosine_similarity(fo, ft).numpy()
    return {
        "images": n,
        "input_shape": list(xo.shape[1:]),
        "ours_min": float(xo.min()),
        "ours_max": float(xo.max()),
        "ours_channel_means": [round(float(v), 4) for v in xo.mean((0, 2, 3))],
        "max_abs_pixel_diff_vs_torchreid_normalised": float((xo - xt).abs().max()),
        "mean_abs_pixel_diff_vs_torchreid_normalised": float((xo - xt).abs().mean()),
        "max_abs_diff_unnormalised_vs_PIL_bilinear_0_1": float(
            ((xo * std + mean) - raw).abs().max()
        ),
        "feature_cosine_vs_torchreid_min": float(cos.min()),
        "feature_cosine_vs_torchreid_mean": float(cos.mean()),
        "feature_rel_l2_diff_max": float(
            ((fo - ft).norm(dim=1) / ft.norm(dim=1)).max()
        ),
    }


def extract_features_check(model, records, cfg, f, fm, n: int):
    "`extract_features(flip=True, normalize=True)` on the first `n` records vs the cached raw features (and mirrors)."
    from secondsight.loaders import build_test_loader
    from secondsight.extract import embed_batch, extract_features

    loader = build_test_loader(cfg, records[:n], device="cpu", num_workers=0)
    r = extract_features(
        model, loader, flip=True, normalize=True, device="cpu", progress=False
    )
    if fm is None:  # no cached mirrors: embed this subset's mirrors directly
        fm = torch.cat(
            [
                embed_batch(model, b[0].flip(-1), flip=False, normalize=False)
                for b in loader
            ]
        )
    ref = F.normalize((f[:n] + fm[:n]) / 2, dim=1)
    ok_labels = (r.pids == np.array([x.pid for x in records[:n]])).all() and (
        r.camids == np.array([x.camid for x in records[:n]])
    ).all()
    return {
        "images": n,
        "flip": True,
        "max_abs_diff": float((r.feats - ref).abs().max()),
        "labels_and_order_match": bool(ok_labels),
    }


def score(distmat, q, g, args):
    "Ours (`evaluate_rank`) and the torchreid port on the same matrix, with their agreement."
    from secondsight.metrics import evaluate_rank

    qp, gp = np.array([r.pid for r in q]), np.array([r.pid for r in g])
    qc, gc = np.array([r.camid for r in q]), np.array([r.camid for r in g])
    t0 = time.perf_counter()
    r = evaluate_rank(distmat, qp, gp, qc, gc, max_rank=50)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    cmc, mAP, mINP, nv = torchreid_eval_market1501(distmat, qp, gp, qc, gc, 50)
    t_ref = time.perf_counter() - t0
    diff = float(max(np.abs(r.cmc - cmc).max(), abs(r.mAP - mAP), abs(r.mINP - mINP)))
    ties = (
        int((np.diff(np.sort(distmat, axis=1), axis=1) == 0).sum())
        if args.count_ties
        else None
    )
    return {
        "mAP": r.mAP,
        "rank1": float(r.cmc[0]),
        "rank5": float(r.cmc[4]),
        "rank10": float(r.cmc[9]),
        "mINP": r.mINP,
        "num_valid": r.num_valid,
        "num_skipped": r.num_skipped,
        "torchreid_port": {
            "mAP": mAP,
            "rank1": float(cmc[0]),
            "rank5": float(cmc[4]),
            "rank10": float(cmc[9]),
            "mINP": mINP,
            "num_valid": nv,
        },
        "max_abs_diff_vs_torchreid_port": diff,
        "agree": diff <= 1e-6 and nv == r.num_valid,
        "seconds_ours": round(t_ours, 3),
        "seconds_torchreid_port": round(t_ref, 3),
        "tied_distances": ties,
    }


def run_model(name, weights, ds, q, g, cfg, args):
    from secondsight.evaluate import feature_distances

    print(f"\n== {weights.name}: {len(q)} queries x {len(g)} gallery")
    model = load_osnet(weights)
    n_params = sum(
        p.numel() for k, p in model.named_parameters() if not k.startswith("classifier")
    )
    fast = fuse_bn(model)
    with torch.inference_mode():
        xb = torch.randn(4, 3, cfg.data.height, cfg.data.width)
        fuse_diff = float(((fast(xb) - model(xb)).abs().max() / model(xb).abs().max()))
    assert fuse_diff < 1e-4, f"BN folding changed the features: {fuse_diff}"
    out = {
        "weights": weights.name,
        "params_without_classifier": n_params,
        "num_classes": model.classifier.out_features,
        "bn_folding_max_rel_diff": fuse_diff,
        "settings": {},
    }
    f, secs, cached = embed(
        fast, q + g, cfg, Path(args.cache_dir), weights, args.num_workers, mirror=False
    )
    print(
        f"  extraction: {secs:.1f} s, {len(f) / secs:.1f} images/s"
        + (" (measured when cached)" if cached else "")
    )
    out.update(
        extract_seconds=round(secs, 1),
        images_per_second=round(len(f) / secs, 1),
        features_from_cache=cached,
    )
    fm = None
    if not args.no_flip and (name == "market1501" or args.msmt_flip):
        fm, secs, cached = embed(
            fast,
            q + g,
            cfg,
            Path(args.cache_dir),
            weights,
            args.num_workers,
            mirror=True,
        )
        print(
            f"  extraction of the mirrors: {secs:.1f} s, {len(fm) / secs:.1f} images/s"
            + (" (measured when cached)" if cached else "")
        )
        out.update(extract_mirror_seconds=round(secs, 1))
    nq = len(q)
    settings = [
        ("torchreid default (raw, Euclidean, no flip)", False, False),
        ("raw, Euclidean, flip", True, False),
        ("L2-norm, cosine, no flip", False, True),
        ("L2-norm, cosine, flip (ours)", True, True),
    ]
    feats = {}
    for label, flip, norm in settings:
        if flip and fm is None:
            continue
        x = (f + fm) / 2 if flip else f
        if norm:
            x = F.normalize(x, dim=1)
        feats[label] = x
        t0 = time.perf_counter()
        distmat = feature_distances(x[:nq], x[nq:], "cosine" if norm else "euclidean")
        s = score(distmat, q, g, args)
        s["distance_seconds"] = round(time.perf_counter() - t0, 2)
        out["settings"][label] = s
        print(
            f"  {label:<46} mAP {100 * s['mAP']:.2f}  R1 {100 * s['rank1']:.2f}  agree with port: {s['agree']} ({s['max_abs_diff_vs_torchreid_port']:.1e})"
        )
    if not args.no_rerank:
        from secondsight.rerank import re_ranking

        for base in (
            "L2-norm, cosine, flip (ours)",
            "L2-norm, cosine, no flip",
            "torchreid default (raw, Euclidean, no flip)",
        ):
            if base not in feats or (
                base == "L2-norm, cosine, no flip" and fm is not None
            ):
                continue
            x = feats[base]
            t0 = time.perf_counter()
            rr = re_ranking(x[:nq], x[nq:], k1=20, k2=6, lambda_value=0.3)
            t_rr = time.perf_counter() - t0
            label = f"re-ranked: {base}"
            s = score(rr, q, g, args)
            s["rerank_seconds"] = round(t_rr, 1)
            out["settings"][label] = s
            print(
                f"  {label:<46} mAP {100 * s['mAP']:.2f}  R1 {100 * s['rank1']:.2f}  ({t_rr:.0f} s)  agree with port: {s['agree']}"
            )
            if args.quick:
                break
    if name == "market1501":
        out["preprocessing_vs_torchreid"] = preprocessing_check(
            model, q + g, cfg, args.check_images
        )
        out["extract_features_vs_cache"] = extract_features_check(
            fast, q + g, cfg, f, fm, args.check_images
        )
    return out


def table(results) -> str:
    w = max([len(l) for r in results.values() for l in r["settings"]] + [44]) + 2
    rule = "-" * (11 + w + 45)
    lines = [
        rule,
        f"{'Model':<11}{'Setting':<{w}}{'mAP':>9}{'Rank-1':>9}{'Rank-5':>9}{'Rank-10':>9}{'mINP':>9}",
        rule,
    ]
    for name, r in results.items():
        for label, s in r["settings"].items():
            lines.append(
                f"{name:<11}{label:<{w}}"
                + "".join(
                    f"{100 * s[k]:.2f}%".rjust(9)
                    for k in ("mAP", "rank1", "rank5", "rank10", "mINP")
                )
            )
    for name, z in ZOO.items():
        lines.append(
            f"{name:<11}{'torchreid model zoo (recalled, approximate)':<{w}}"
            + f"~{100 * z['mAP']:.1f}%".rjust(9)
            + f"~{100 * z['rank1']:.1f}%".rjust(9)
            + "        -        -        -"
        )
    return "\n".join(lines + [rule])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 60 queries, their gallery identities and others up to 600 images",
    )
    ap.add_argument(
        "--no-msmt", action="store_true", help="skip the MSMT17 (cross-domain) model"
    )
    ap.add_argument("--no-rerank", action="store_true", help="skip re-ranking")
    ap.add_argument(
        "--msmt-flip",
        action="store_true",
        help="also embed the mirrors for the MSMT17 model (cross-domain figure is scored without flip by default, to save CPU)",
    )
    ap.add_argument(
        "--no-flip",
        action="store_true",
        help="skip the mirror pass (halves extraction; flip settings not scored)",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--num-workers",
        type=int,
        default=1,
        help="loader worker processes (the machine has 2 shared cores)",
    )
    ap.add_argument(
        "--check-images",
        type=int,
        default=128,
        help="images for the preprocessing / extract_features checks",
    )
    ap.add_argument(
        "--count-ties",
        action="store_true",
        help="count tied distances in every matrix (slow)",
    )
    ap.add_argument(
        "--cache-dir",
        default=os.environ.get("SECONDSIGHT_CACHE", "/tmp/secondsight_peers_osnet"),
    )
    ap.add_argument(
        "--out", default=str(REPO / "benchmarks" / "results" / "peers_osnet.json")
    )
    args = ap.parse_args()
    if args.quick and args.out == ap.get_default("out"):
        args.out = "/tmp/peers_osnet_quick.json"  # never overwrite the full run
    torch.set_num_threads(args.threads)
    from secondsight.config import Config
    from secondsight.datasets import Market1501

    peers = peers_dir()
    root = os.environ.get(
        "REID_DATA_ROOT", str(REPO.parent / "shared" / "data" / "Market-1501-v15.09.15")
    )
    ds = Market1501(root)
    ds.summary()
    q, g = ds.query, ds.gallery
    if args.quick:
        from secondsight.datasets import subset_split

        q, g = subset_split(q, g, 60, 600, seed=0)
    cfg = Config()
    t_all = time.perf_counter()
    results = {}
    for name in ("market1501", "msmt17"):
        w = peers / f"osnet_x0_25_{name}.pth"
        if name == "msmt17" and (args.no_msmt or not w.is_file()):
            print(f"\nskipping {w.name}" + ("" if args.no_msmt else " (not found)"))
            continue
        results[name] = run_model(name, w, ds, q, g, cfg, args)
        report(
            results, ds, q, g, cfg, args, t_all
        )  # after each model, so a late MSMT17 run still leaves the Market numbers


def report(results, ds, q, g, cfg, args, t_all):
    "Print the table and the checks, write the JSON."
    print("\n" + table(results))
    m = results["market1501"]["settings"]["torchreid default (raw, Euclidean, no flip)"]
    zoo = (
        None
        if args.quick
        else {
            k: {
                "zoo": v,
                "ours": m[k],
                "diff_points": round(100 * (m[k] - v), 2),
                "within": abs(m[k] - v) <= TOL[k],
            }
            for k, v in ZOO["market1501"].items()
        }
    )
    agree = all(s["agree"] for r in results.values() for s in r["settings"].values())
    pre = results["market1501"]["preprocessing_vs_torchreid"]
    ef = results["market1501"]["extract_features_vs_cache"]
    print(
        f"evaluate_rank vs torchreid eval_market1501 port, every matrix (<= 1e-6): {'MET' if agree else 'NOT MET'}"
    )
    print(
        f"preprocessing vs torchreid's (PIL resize + ToTensor + Normalize) on {pre['images']} images: max |pixel diff| "
        f"{pre['max_abs_pixel_diff_vs_torchreid_normalised']:.3g} (normalised units), feature cosine min {pre['feature_cosine_vs_torchreid_min']:.5f}"
    )
    print(
        f"extract_features(flip={ef['flip']}, normalize) vs cached raw features on {ef['images']} images: max |diff| {ef['max_abs_diff']:.2e}, "
        f"labels/order {'OK' if ef['labels_and_order_match'] else 'WRONG'}"
    )
    if zoo:
        met = all(v["within"] for v in zoo.values())
        print(
            f"torchreid default vs model zoo (recalled, approximate; tolerance R1 {100 * TOL['rank1']:.1f} / mAP {100 * TOL['mAP']:.1f} points): "
            + ", ".join(
                f"{k} {100 * v['ours']:.2f} vs {100 * v['zoo']:.1f} ({v['diff_points']:+.2f})"
                for k, v in zoo.items()
            )
            + f": {'MET' if met else 'NOT MET'}"
        )
    res = {
        "flip_scored": not args.no_flip,
        "machine": platform.machine(),
        "torch": torch.__version__,
        "threads": args.threads,
        "quick": args.quick,
        "data_root": str(ds.root),
        "num_query": len(q),
        "num_gallery": len(g),
        "junk_dropped": ds.dropped,
        "input": [cfg.data.height, cfg.data.width],
        "mean": list(cfg.data.mean),
        "std": list(cfg.data.std),
        "zoo_reference": {
            "values": ZOO,
            "note": "torchreid model zoo, osnet_x0_25 trained and tested on Market-1501, "
            "256x128, Euclidean on raw fc features, no flip; recalled from memory, approximate",
            "tolerance": TOL,
        },
        "zoo_comparison": zoo,
        "metrics_agree_with_torchreid_port": agree,
        "results": results,
        "total_seconds": round(time.perf_counter() - t_all, 1),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1, default=float) + "\n")
    print("wrote", out)


if __name__ == "__main__":
    main()
