"""Verification on the real Market-1501 (issue 22): the TMR-at-FMR table, the camera-split drift, thresholds moved
between models, and how often a gallery without the probe's identity gives "no likely match".

Run: `python benchmarks/verify_market.py` from the repository root (about 6 minutes of 2 CPU cores for the two
feature extractions; reruns read the features cached in --cache and take about a minute).
Needs: `REID_DATA_ROOT` (the Market-1501 folder) and torchreid's model-zoo state dicts
`osnet_x0_25_market1501.pth` and `osnet_x0_25_msmt17.pth` in `SECONDSIGHT_PEERS_DIR` (default ../shared/peers).

What runs: the evaluation's own path (`evaluate.evaluation_inputs`, `extract.extract_features` with flip TTA and L2,
cosine distances), then `secondsight.verify` on the query x gallery pairs under the Market-1501 protocol
(`metrics.keep_mask`), and `analysis.camera_drift` for the camera split. Prints the tables, writes
benchmarks/results/verify_market.json and the figures nbs/images/verify_roc.png and nbs/images/verify_distances.png
(curves and histograms only: no person images).
"""

import argparse, json, os, time
from pathlib import Path
import numpy as np
import torch
from secondsight.analysis import apply_calibration, camera_drift
from secondsight.evaluate import evaluation_inputs
from secondsight.extract import extract_features
from secondsight.loaders import build_test_loader
from secondsight.metrics import keep_mask
from secondsight.plots import plot_distance_distributions, plot_roc
from secondsight.verify import (
    calibration_from,
    pair_distances,
    verification_dict,
    verification_from_pairs,
    verification_table,
)

REPO = Path(__file__).resolve().parents[1]
ROOT = os.environ.get("REID_DATA_ROOT") or str(
    REPO.parent / "shared" / "data" / "Market-1501-v15.09.15"
)
PEERS = Path(os.environ.get("SECONDSIGHT_PEERS_DIR", REPO.parent / "shared" / "peers"))
MODELS = {"market": "osnet_x0_25_market1501.pth", "msmt": "osnet_x0_25_msmt17.pth"}


def features(name, cache):
    "Query and gallery features of a zoo model on Market-1501 (cached)."
    f = cache / f"{name}.pt"
    if not f.exists():
        model, cfg, _, _, query, gallery = evaluation_inputs(
            PEERS / MODELS[name], None, ROOT, "cpu", None, None, 0, None
        )
        fs = extract_features(
            model, build_test_loader(cfg, list(query) + list(gallery)), progress=False
        )
        torch.save(
            {"feats": fs.feats, "pids": fs.pids, "camids": fs.camids, "nq": len(query)},
            f,
        )
    return torch.load(f, weights_only=False)


def distances(d):
    "Cosine distances (torch: numpy's BLAS is slow on this CPU) and the labels."
    nq, f = d["nq"], d["feats"]
    return (1 - f[:nq] @ f[nq:].T).numpy(), (
        d["pids"][:nq],
        d["pids"][nq:],
        d["camids"][:nq],
        d["camids"][nq:],
    )


def no_likely_match(dm, lab, thresholds, sizes=(100, 1000), seed=0):
    "Share of queries whose nearest impostor (gallery without the query's identity) stays above each threshold."
    q_pids, g_pids, q_cam, g_cam = lab
    rng, out = np.random.default_rng(seed), {}
    for size in (*sizes, "all"):
        mins = np.empty(len(dm))
        for i in range(len(dm)):
            imp = np.flatnonzero(
                keep_mask(q_pids[i], q_cam[i], g_pids, g_cam) & (g_pids != q_pids[i])
            )
            if size != "all" and size < len(imp):
                imp = rng.choice(imp, size, replace=False)
            mins[i] = dm[i, imp].min()
        out[str(size)] = {k: float((mins > t).mean()) for k, t in thresholds.items()}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", default="/tmp/secondsight_verify_market")
    args = ap.parse_args()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    res, vers, pairs = {}, {}, {}
    for name in MODELS:
        dm, lab = distances(features(name, cache))
        t = time.perf_counter()
        pos, neg = pair_distances(dm, *lab)
        v = verification_from_pairs(pos, neg)
        secs = time.perf_counter() - t
        d = verification_dict(v)
        print(
            f"{MODELS[name]} on Market-1501 ({secs:.1f} s for pairs, ROC, rates)\n{verification_table(d)}"
        )
        cal = calibration_from(v)
        drift = {
            f"{a[0] + 1}-{a[-1] + 1} -> {b[0] + 1}-{b[-1] + 1}": camera_drift(
                dm, lab, a, b
            )
            for a, b in (((0, 1, 2), (3, 4, 5)), ((3, 4, 5), (0, 1, 2)))
        }
        for k, x in drift.items():
            print(
                f"  cameras {k}: "
                + ", ".join(
                    f"FMR {r} -> {y['observed_fmr']:.2e} (TMR {100 * x['calibration_tmr'][r]:.1f}% -> {100 * y['tmr']:.1f}%)"
                    for r, y in x["rates"].items()
                )
            )
        nlm = no_likely_match(dm, lab, cal.thresholds)
        print(
            "  no likely match without the identity (share of probes): "
            + json.dumps(nlm)
        )
        res[name] = {
            "verification": d,
            "camera_drift": drift,
            "no_likely_match": nlm,
            "seconds": round(secs, 2),
        }
        vers[name], pairs[name] = v, (pos, neg, cal)
        if name == "market":
            plot_distance_distributions(
                dm,
                *lab,
                thresholds=cal.thresholds,
                title="OSNet-x0.25 (Market-1501), query-gallery distances",
                save_path=REPO / "nbs/images/verify_distances.png",
            )
    for a, b in (("market", "msmt"), ("msmt", "market")):
        pos, neg, _ = pairs[b]
        res[f"{a}_thresholds_on_{b}_model"] = x = apply_calibration(
            pairs[a][2], pos, neg
        )
        print(
            f"{a} model's thresholds on the {b} model's distances: "
            + ", ".join(f"FMR {k} -> {y['observed_fmr']:.2e}" for k, y in x.items())
        )
    plot_roc(
        {"trained on Market-1501": vers["market"], "trained on MSMT17": vers["msmt"]},
        title="OSNet-x0.25 on Market-1501: verification ROC",
        save_path=REPO / "nbs/images/verify_roc.png",
    )
    out = REPO / "benchmarks/results/verify_market.json"
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(
        f"wrote {out.relative_to(REPO)}, nbs/images/verify_roc.png, nbs/images/verify_distances.png"
    )


if __name__ == "__main__":
    main()
