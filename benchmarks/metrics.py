"""Benchmark: `secondsight.metrics.evaluate_rank` vs the plain numpy evaluation at the full Market-1501 size.

Run: `python benchmarks/metrics.py [--quick] [--repeats N]`. Prints tables, writes benchmarks/results/metrics.json.

Baseline (same run, same process): the plain, competent numpy version of torchreid's `eval_market1501`: one
`np.argsort` of the whole (Q, G) matrix, then per query a vectorised keep/match mask (`metrics.keep_mask`: junk
pid -1, same identity in the same camera, unknown cameras never the same), a cumulative sum for the CMC, AP and
INP from the match positions. It is tied to torchreid's own Python code on 100 queries.

Timings are the best of `--repeats` runs, baseline and ours interleaved, first on the machine as it is, then
again while a busy process of ours keeps both cores spinning. The first call in a fresh process (numba's
compilation with an empty cache, then loading that cache) is measured separately, in subprocesses.
Targets (issue 12): >= 3x, and >= 2x under the busy process, identical numbers (mAP, mINP, CMC to 1e-9);
moonshot: under 0.3 s.
"""

import argparse, json, os, platform, subprocess, sys, tempfile, time
from pathlib import Path
import numpy as np

from secondsight.metrics import evaluate_rank, keep_mask


def market_like(
    nq=3368,
    ng=15913,
    n_ids=751,
    n_cams=6,
    n_distractors=2800,
    n_junk=500,
    closer=0.0,
    seed=0,
):
    "Random float32 distances with Market-like labels; `closer` > 0 pulls true matches up the ranking."
    rng = np.random.default_rng(seed)
    g_pids = np.concatenate(
        [
            np.zeros(n_distractors, np.int64),
            -np.ones(n_junk, np.int64),
            rng.integers(1, n_ids + 1, ng - n_distractors - n_junk),
        ]
    )
    rng.shuffle(g_pids)
    g_camids = rng.integers(0, n_cams, ng)
    q_pids = rng.integers(1, n_ids + 1, nq)
    q_camids = rng.integers(0, n_cams, nq)
    distmat = rng.random((nq, ng), dtype=np.float32)
    if closer:
        distmat -= np.float32(closer) * (q_pids[:, None] == g_pids[None]).astype(
            np.float32
        )
    return distmat, q_pids, g_pids, q_camids, g_camids


def plain_numpy(
    distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50, kind="quicksort"
):
    "The baseline: one argsort of the whole matrix, then a vectorised keep/match mask and a cumsum per query."
    num_q, num_g = distmat.shape
    max_rank = min(max_rank, num_g)
    indices = np.argsort(distmat, axis=1, kind=kind)
    all_cmc, all_AP, all_INP = [], [], []
    for q in range(num_q):
        order = indices[q]
        gp = g_pids[order]
        keep = keep_mask(q_pids[q], q_camids[q], gp, g_camids[order])
        raw_cmc = gp[keep] == q_pids[q]
        if not raw_cmc.any():
            continue
        cum = raw_cmc.cumsum()
        pos = np.flatnonzero(raw_cmc)
        all_INP.append(cum[pos[-1]] / (pos[-1] + 1.0))
        cmc = np.minimum(cum[:max_rank], 1)
        if len(cmc) < max_rank:
            cmc = np.concatenate([cmc, np.ones(max_rank - len(cmc), cmc.dtype)])
        all_cmc.append(cmc)
        all_AP.append((cum[pos] / (pos + 1.0)).sum() / len(pos))
    cmc = np.asarray(all_cmc).astype(np.float32).sum(0) / len(all_cmc)
    return cmc, float(np.mean(all_AP)), float(np.mean(all_INP)), len(all_cmc)


def faithful_port(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50):
    "torchreid's Python `eval_market1501` as written (list comprehension per query), plus junk removal."
    num_q, num_g = distmat.shape
    indices = np.argsort(distmat, axis=1)
    matches = (g_pids[indices] == q_pids[:, np.newaxis]).astype(np.int32)
    all_cmc, all_AP, all_INP, nv = [], [], [], 0.0
    for q_idx in range(num_q):
        order = indices[q_idx]
        remove = (
            (g_pids[order] == q_pids[q_idx]) & (g_camids[order] == q_camids[q_idx])
        ) | (g_pids[order] == -1)
        raw_cmc = matches[q_idx][np.invert(remove)]
        if not np.any(raw_cmc):
            continue
        cmc = raw_cmc.cumsum()
        max_pos_idx = np.max(np.where(raw_cmc == 1))
        all_INP.append(cmc[max_pos_idx] / (max_pos_idx + 1.0))
        cmc[cmc > 1] = 1
        all_cmc.append(cmc[:max_rank])
        nv += 1.0
        tmp = raw_cmc.cumsum()
        tmp = np.asarray([x / (i + 1.0) for i, x in enumerate(tmp)]) * raw_cmc
        all_AP.append(tmp.sum() / raw_cmc.sum())
    return (
        np.asarray(all_cmc).astype(np.float32).sum(0) / nv,
        np.mean(all_AP),
        np.mean(all_INP),
        int(nv),
    )


def timed(f, *a, **k):
    t = time.perf_counter()
    r = f(*a, **k)
    return r, time.perf_counter() - t


def diff(r, ref):
    "Largest absolute difference over CMC, mAP and mINP, and whether the valid-query counts agree."
    d = max(np.abs(r.cmc - ref[0]).max(), abs(r.mAP - ref[1]), abs(r.mINP - ref[2]))
    return float(d), r.num_valid == ref[3]


BUSY = "import os, time\nfor _ in range(os.cpu_count() - 1):\n    if os.fork() == 0: break\nwhile True: pass\n"


def start_busy():
    "A process of ours (forking one child per extra core) that keeps every core spinning until we stop it."
    return subprocess.Popen([sys.executable, "-c", BUSY], start_new_session=True)


def stop_busy(p):
    os.killpg(p.pid, 15)  # its own session: the children we forked, nothing else
    p.wait()


FIRST_CALL = """
import time, numpy as np
t = time.perf_counter()
from secondsight.metrics import evaluate_rank
import numba
t_import = time.perf_counter() - t
rng = np.random.default_rng(0)
t = time.perf_counter()
evaluate_rank(rng.random((8, 500), dtype=np.float32), rng.integers(0, 9, 8), rng.integers(0, 9, 500),
              rng.integers(0, 6, 8), rng.integers(0, 6, 500), backend='numba')
print(t_import, time.perf_counter() - t)
"""


def first_call_seconds():
    "Import, and the first `evaluate_rank` call, in fresh processes: empty numba cache (compile), then that cache."
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        run = lambda: [  # noqa: E731
            float(x)
            for x in subprocess.run(
                [sys.executable, "-c", FIRST_CALL],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
        ]
        (t_import, t_compile), (_, t_cache) = run(), run()
        return t_import, t_compile, t_cache


def measure(prob, repeats, threads):
    "Best-of-`repeats` seconds of the baseline and our backends, interleaved; each result kept for the checks."
    import numba

    methods = {
        "plain numpy (baseline)": lambda: plain_numpy(*prob),
        "numba (parallel)": lambda: evaluate_rank(*prob, backend="numba"),
        "numba (1 thread)": lambda: evaluate_rank(*prob, backend="numba"),
        "numpy backend": lambda: evaluate_rank(*prob, backend="numpy"),
    }
    best, results = {k: float("inf") for k in methods}, {}
    for _ in range(repeats):
        for name, f in methods.items():
            numba.set_num_threads(1 if name == "numba (1 thread)" else threads)
            results[name], t = timed(f)
            best[name] = min(best[name], t)
    numba.set_num_threads(threads)
    return best, results


def table(label, shape, best, results, ref_stable):
    t_base = best["plain numpy (baseline)"]
    ref = results["plain numpy (baseline)"]
    print(f"\n{label}: {shape[0]} x {shape[1]}")
    print(
        f"{'method':<24}{'seconds':>9}{'speedup':>9}{'max|diff|':>12}{'vs stable':>12}"
    )
    rows = {}
    for name, t in best.items():
        r = results[name]
        if name.startswith("plain"):
            print(f"{name:<24}{t:>9.3f}{1:>9.2f}{'':>12}{'':>12}")
            continue
        d, same = diff(r, ref)
        d_stable, same_stable = diff(r, ref_stable)
        rows[name] = dict(
            seconds=t,
            speedup=t_base / t,
            max_abs_diff=d,
            max_abs_diff_vs_stable_baseline=d_stable,
            same_num_valid=same and same_stable,
        )
        print(f"{name:<24}{t:>9.3f}{t_base / t:>9.2f}{d:>12.1e}{d_stable:>12.1e}")
    return dict(baseline_seconds=t_base, ours=rows)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="a 10x smaller problem")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each method")
    args = ap.parse_args()
    import numba

    threads = numba.get_num_threads()
    size = dict(nq=337, ng=1591, n_distractors=280, n_junk=50) if args.quick else {}
    t_import, t_compile, t_cache = first_call_seconds()
    print(
        f"first call in a fresh process: {t_compile:.2f} s compiling (empty numba cache), {t_cache:.2f} s from "
        f"the cache (after importing secondsight.metrics and numba, {t_import:.2f} s)"
    )
    out = {
        "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "numba_threads": threads,
        "load_average_at_start": os.getloadavg(),
        "first_call_seconds": {
            "compile": t_compile,
            "from_cache": t_cache,
            "import": t_import,
        },
        "baseline": "plain numpy: one np.argsort of the whole matrix, per query a vectorised keep/match mask, cumsum",
    }
    evaluate_rank(*market_like(nq=8, ng=500, n_distractors=50, n_junk=20))  # warm
    for label, closer in (("random distances", 0.0), ("matches pulled closer", 0.3)):
        prob = market_like(closer=closer, **size)
        shape = prob[0].shape
        # random float32 distances have exact ties (~8 per row); numpy's default sort orders them arbitrarily,
        # we order them by gallery index, so the exact comparison is against the stable-sort baseline
        ref_stable = plain_numpy(*prob, kind="stable")
        sub = slice(
            0, 100
        )  # tie the baseline to torchreid's Python code on 100 queries
        port = faithful_port(prob[0][sub], prob[1][sub], prob[2], prob[3][sub], prob[4])
        base_sub = plain_numpy(
            prob[0][sub], prob[1][sub], prob[2], prob[3][sub], prob[4]
        )
        d_port = float(max(np.abs(port[0] - base_sub[0]).max(), abs(port[1] - base_sub[1]), abs(port[2] - base_sub[2])))  # fmt: skip
        res = {
            "shape": list(shape),
            "mAP": ref_stable[1],
            "rank1": float(ref_stable[0][0]),
            "num_valid": ref_stable[3],
            "baseline_vs_faithful_port_max_abs_diff_100q": d_port,
        }
        best, results = measure(prob, args.repeats, threads)
        res["as is"] = table(label + ", machine as it is", shape, best, results, ref_stable)  # fmt: skip
        busy = start_busy()
        try:
            time.sleep(1)
            best, results = measure(prob, args.repeats, threads)
        finally:
            stop_busy(busy)
        res["busy"] = table(label + ", a busy process on every core", shape, best, results, ref_stable)  # fmt: skip
        print(
            f"(mAP {ref_stable[1] * 100:.2f}%, rank-1 {ref_stable[0][0] * 100:.2f}%; baseline vs torchreid's Python "
            f"code on 100 queries: max|diff| {d_port:.1e}; 'vs stable': against the baseline with a stable argsort, "
            f"as we order ties by gallery index)"
        )
        out[label] = res
    checks = [
        v
        for k in ("random distances", "matches pulled closer")
        for s in ("as is", "busy")
        for v in out[k][s]["ours"].values()
    ]
    same = all(
        v["max_abs_diff_vs_stable_baseline"] <= 1e-9 and v["same_num_valid"]
        for v in checks
    )
    main_as_is = out["random distances"]["as is"]["ours"]["numba (parallel)"]
    main_busy = out["random distances"]["busy"]["ours"]["numba (parallel)"]
    met = same and main_as_is["speedup"] >= 3 and main_busy["speedup"] >= 2
    out["target"] = (
        ">= 3x the plain numpy version at full Market size, >= 2x with both cores busy, "
        "identical numbers (<= 1e-9); moonshot < 0.3 s"
    )
    out["target_met"] = bool(met) and not args.quick
    out["moonshot_met"] = main_as_is["seconds"] < 0.3 and not args.quick
    out["quick"] = args.quick
    print(
        f"\nTarget (>= 3x, >= 2x busy, identical to 1e-9): {'MET' if met else 'NOT MET'} "
        f"({main_as_is['speedup']:.1f}x as is, {main_busy['speedup']:.1f}x busy); "
        f"moonshot (< 0.3 s): {main_as_is['seconds']:.3f} s"
        f"{' [quick run: not the full size]' if args.quick else ''}"
    )
    path = Path(__file__).parent / "results" / "metrics.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
