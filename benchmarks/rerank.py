"""Benchmark: `secondsight.rerank.re_ranking` vs a faithful dense port of Zhong et al.'s released re_ranking.

Run: `python benchmarks/rerank.py [--shared 6000] [--small 3000] [--full-port]`. Prints a table and writes
benchmarks/results/rerank.json. In the same run:
- the port and ours at a shared size (default N = 6,000, 2048-d), agreement checked (max abs difference);
- the port also at a smaller size, to extrapolate its time to the full size with the fitted power law
  (labelled as an extrapolation; `--full-port` tries the real thing, bounded to 5 minutes);
- ours at the full Market size (Q = 3,368, G = 15,913, N = 19,281, 2048-d) in a subprocess that
  records its peak RSS (resource.getrusage), also for the port at the shared size.
Targets: ours <= 2 GB peak at full size, and >= 5x faster than the port.
"""

import argparse, json, sys, time, subprocess, resource
from pathlib import Path
import numpy as np
import torch

Q_FULL, G_FULL, DIM = 3368, 15913, 2048


def features(n, q, d=DIM, seed=0):
    "Re-ID-like embeddings: ~n/19 identities, each a cluster on the unit sphere; first q rows are queries."
    rng = np.random.default_rng(seed)
    n_ids = max(2, n // 19)
    centres = rng.standard_normal((n_ids, d), dtype=np.float32)
    f = centres[rng.integers(0, n_ids, n)]
    f += 0.8 * rng.standard_normal((n, d), dtype=np.float32)
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    return f[:q], f[q:]


# The faithful port (the same code as the reference in nbs/10_rerank.ipynb)
def pairwise_sq_dist_reference(qf, gf):
    "Squared Euclidean distances over all Q+G features, as the strong baseline / fast-reid compute them (torch)."
    feat = torch.cat(
        [
            torch.as_tensor(qf, dtype=torch.float32),
            torch.as_tensor(gf, dtype=torch.float32),
        ]
    )
    n = feat.shape[0]
    distmat = (
        torch.pow(feat, 2).sum(dim=1, keepdim=True).expand(n, n)
        + torch.pow(feat, 2).sum(dim=1, keepdim=True).expand(n, n).t()
    )
    distmat.addmm_(feat, feat.t(), beta=1, alpha=-2)
    return distmat.numpy()


def re_ranking_reference(
    original_dist, query_num, k1=20, k2=6, lambda_value=0.3, marks=None
):
    "Zhong et al.'s released `re_ranking`, ported line by line (dense N x N; stable argsort). `marks`: phase timer."
    tick = (
        (lambda name: marks.append((name, time.perf_counter())))
        if marks is not None
        else (lambda name: None)
    )
    all_num = gallery_num = original_dist.shape[0]
    original_dist = np.transpose(1.0 * original_dist / np.max(original_dist, axis=0))
    V = np.zeros_like(original_dist).astype(np.float32)
    initial_rank = np.argsort(original_dist, kind="stable").astype(np.int32)
    tick("normalise + argsort")
    for i in range(all_num):
        forward_k_neigh_index = initial_rank[i, : k1 + 1]
        backward_k_neigh_index = initial_rank[forward_k_neigh_index, : k1 + 1]
        fi = np.where(backward_k_neigh_index == i)[0]
        k_reciprocal_index = forward_k_neigh_index[fi]
        k_reciprocal_expansion_index = k_reciprocal_index
        for j in range(len(k_reciprocal_index)):
            candidate = k_reciprocal_index[j]
            candidate_forward_k_neigh_index = initial_rank[
                candidate, : int(np.around(k1 / 2)) + 1
            ]
            candidate_backward_k_neigh_index = initial_rank[
                candidate_forward_k_neigh_index, : int(np.around(k1 / 2)) + 1
            ]
            fi_candidate = np.where(candidate_backward_k_neigh_index == candidate)[0]
            candidate_k_reciprocal_index = candidate_forward_k_neigh_index[fi_candidate]
            if len(
                np.intersect1d(candidate_k_reciprocal_index, k_reciprocal_index)
            ) > 2 / 3 * len(candidate_k_reciprocal_index):
                k_reciprocal_expansion_index = np.append(
                    k_reciprocal_expansion_index, candidate_k_reciprocal_index
                )
        k_reciprocal_expansion_index = np.unique(k_reciprocal_expansion_index)
        weight = np.exp(-original_dist[i, k_reciprocal_expansion_index])
        V[i, k_reciprocal_expansion_index] = 1.0 * weight / np.sum(weight)
    tick("k-reciprocal loop")
    original_dist = original_dist[:query_num,]
    if k2 != 1:
        V_qe = np.zeros_like(V, dtype=np.float32)
        for i in range(all_num):
            V_qe[i, :] = np.mean(V[initial_rank[i, :k2], :], axis=0)
        V = V_qe
        del V_qe
    del initial_rank
    tick("query expansion")
    invIndex = []
    for i in range(gallery_num):
        invIndex.append(np.where(V[:, i] != 0)[0])
    jaccard_dist = np.zeros_like(original_dist, dtype=np.float32)
    tick("inverted index")
    for i in range(query_num):
        temp_min = np.zeros(shape=[1, gallery_num], dtype=np.float32)
        indNonZero = np.where(V[i, :] != 0)[0]
        indImages = [invIndex[ind] for ind in indNonZero]
        for j in range(len(indNonZero)):
            temp_min[0, indImages[j]] = temp_min[0, indImages[j]] + np.minimum(
                V[i, indNonZero[j]], V[indImages[j], indNonZero[j]]
            )
        jaccard_dist[i] = 1 - temp_min / (2.0 - temp_min)
    final_dist = jaccard_dist * (1 - lambda_value) + original_dist * lambda_value
    tick("jaccard + blend")
    return final_dist[:query_num, query_num:]


# How each phase of the port grows with N (Q grows with N): used to extrapolate it to the full size.
# Conservative: the argsort's log factor is ignored and the Python loops over images count as linear.
PHASE_EXPONENT = {
    "distances": 2,
    "normalise + argsort": 2,
    "k-reciprocal loop": 1,
    "query expansion": 2,
    "inverted index": 2,
    "jaccard + blend": 1,
}


def port(qf, gf, k1=20, k2=6, lambda_value=0.3, marks=None):
    "The faithful port: torch squared distances over all Q+G, then the released re_ranking (float32, stable argsort)."
    if marks is not None:
        marks.append(("start", time.perf_counter()))
    d = pairwise_sq_dist_reference(qf, gf)
    if marks is not None:
        marks.append(("distances", time.perf_counter()))
    return re_ranking_reference(d, len(qf), k1, k2, lambda_value, marks)


def child(which, n, q, out_path):
    "Run one method in this (fresh) process; report seconds and peak RSS."
    torch.set_num_threads(2)
    qf, gf = features(n, q)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    marks = []
    if which == "ours":
        from secondsight.rerank import re_ranking

        dist = re_ranking(qf, gf)
    else:
        dist = port(qf, gf, marks=marks)
    sec = time.perf_counter() - t
    phases = {b[0]: b[1] - a[1] for a, b in zip(marks[:-1], marks[1:])}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if out_path:
        np.save(out_path, dist)
    print(
        json.dumps(
            dict(
                method=which,
                n=n,
                q=q,
                seconds=sec,
                peak_rss_mb=peak / 1024,
                rss_before_mb=rss0 / 1024,
                phases=phases,
            )
        )
    )


def run_child(which, n, q, save=None, timeout=None):
    cmd = [sys.executable, __file__, "--child", which, "--n", str(n), "--q", str(q)] + (
        ["--save", save] if save else []
    )
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    if p.returncode:
        raise RuntimeError(p.stderr)
    return json.loads(p.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--shared",
        type=int,
        default=6000,
        help="N at which both run (agreement checked)",
    )
    ap.add_argument(
        "--small",
        type=int,
        default=3000,
        help="second N for the port, to fit its scaling",
    )
    ap.add_argument(
        "--full-port",
        action="store_true",
        help="also run the port at full size (25 min limit; ~9.4 GB)",
    )
    ap.add_argument("--child")
    ap.add_argument("--n", type=int)
    ap.add_argument("--q", type=int)
    ap.add_argument("--save")
    a = ap.parse_args()
    if a.child:
        return child(a.child, a.n, a.q, a.save)
    import tempfile

    N_FULL = Q_FULL + G_FULL
    qfrac = Q_FULL / N_FULL
    res = {
        "features": f"{DIM}-d, clustered, L2-normalised",
        "k1": 20,
        "k2": 6,
        "lambda": 0.3,
        "threads": 2,
    }
    with tempfile.TemporaryDirectory() as tmp:
        runs = {}
        for n in (a.small, a.shared):
            q = round(n * qfrac)
            runs[("port", n)] = run_child("port", n, q, f"{tmp}/port{n}.npy")
            runs[("ours", n)] = run_child("ours", n, q, f"{tmp}/ours{n}.npy")
            diff = float(
                np.abs(
                    np.load(f"{tmp}/port{n}.npy") - np.load(f"{tmp}/ours{n}.npy")
                ).max()
            )
            runs[("diff", n)] = diff
        full = run_child("ours", N_FULL, Q_FULL)
        full_port = (
            run_child("port", N_FULL, Q_FULL, timeout=1500) if a.full_port else None
        )
    shared_port = runs[("port", a.shared)]
    r = N_FULL / a.shared
    phase_est = {
        k: v * r ** PHASE_EXPONENT[k] for k, v in shared_port["phases"].items()
    }
    port_full_est = sum(phase_est.values())
    port_full = full_port["seconds"] if full_port else None
    rows = []
    for n in (a.small, a.shared):
        po, ou = runs[("port", n)], runs[("ours", n)]
        rows.append(
            dict(
                n=n,
                port_seconds=po["seconds"],
                ours_seconds=ou["seconds"],
                speedup=po["seconds"] / ou["seconds"],
                port_peak_mb=po["peak_rss_mb"],
                ours_peak_mb=ou["peak_rss_mb"],
                max_abs_diff=runs[("diff", n)],
            )
        )
    print(
        f"{'N':>7}{'port s':>10}{'ours s':>10}{'speedup':>9}{'port MB':>10}{'ours MB':>10}{'max|diff|':>11}"
    )
    for r in rows:
        print(
            f"{r['n']:>7}{r['port_seconds']:>10.1f}{r['ours_seconds']:>10.1f}{r['speedup']:>9.1f}"
            f"{r['port_peak_mb']:>10.0f}{r['ours_peak_mb']:>10.0f}{r['max_abs_diff']:>11.1e}"
        )
    print(
        f"port phases at N={a.shared} (s): "
        + ", ".join(f"{k} {v:.1f}" for k, v in shared_port["phases"].items())
    )
    port_txt = (
        f"{port_full:.1f} (measured)"
        if port_full
        else f"~{port_full_est:.0f} (EXTRAPOLATED from N={a.shared}, each phase by its growth: "
        + ", ".join(f"{k} N^{PHASE_EXPONENT[k]}" for k in phase_est)
        + ")"
    )
    print(
        f"{N_FULL:>7}{'':>10}{full['seconds']:>10.1f}{'':>9}{'':>10}{full['peak_rss_mb']:>10.0f}   (ours at full size, Q={Q_FULL}, G={G_FULL})"
    )
    print(
        f"port at full size, seconds: {port_txt}"
        + (
            ""
            if port_full or not a.full_port
            else " [the full-size port did not finish in 5 min]"
        )
    )
    speed_full = (port_full or port_full_est) / full["seconds"]
    mem_ok = full["peak_rss_mb"] <= 2048
    agree_ok = all(r["max_abs_diff"] <= 1e-4 for r in rows)
    speed_ok = rows[-1]["speedup"] >= 5 and speed_full >= 5
    print(
        f"peak memory at full size {full['peak_rss_mb']:.0f} MB (whole process; {full['rss_before_mb']:.0f} MB before re_ranking): "
        f"{'MET' if mem_ok else 'NOT MET'} (<= 2048 MB)"
    )
    print(
        f"speed: {rows[-1]['speedup']:.1f}x measured at N={a.shared}, {speed_full:.1f}x at full size "
        f"({'measured' if port_full else 'port extrapolated'}): {'MET' if speed_ok else 'NOT MET'} (>= 5x)"
    )
    print(
        f"agreement: max abs difference {max(r['max_abs_diff'] for r in rows):.1e}: {'MET' if agree_ok else 'NOT MET'} (<= 1e-4)"
    )
    res.update(
        shared=rows,
        ours_full=full,
        port_full_measured=full_port,
        port_full_extrapolated_seconds=port_full_est,
        port_phases_shared=shared_port["phases"],
        port_phase_exponents=PHASE_EXPONENT,
        port_phases_full_extrapolated=phase_est,
        speedup_full=speed_full,
        speedup_full_is_extrapolated=port_full is None,
        targets=dict(memory_mb=2048, speedup=5, max_abs_diff=1e-4),
        met=dict(memory=bool(mem_ok), speed=bool(speed_ok), agreement=bool(agree_ok)),
    )
    path = Path(__file__).parent / "results" / "rerank.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(res, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
