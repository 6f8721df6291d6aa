"""How fast is feature extraction on this CPU, and how close to the machine's matmul rate does it get?

Run: `python benchmarks/extract.py [--threads 2] [--batch 32] [--iters 3] [--no-compile]`.
Model: secondsight's ReIDModel (ResNet-50, last stride 1, GeM, BNNeck), untrained, 256x128 inputs, fp32,
eval mode, no grad. Variants: eager NCHW (the baseline), eager channels_last, torch.compile + channels_last,
and `secondsight.evaluate.extract_features` itself (each batch through `embed_batch` with flip TTA: two
forward passes per image).
FLOPs per image are counted with torch.utils.flop_counter (a multiply-add is 2 FLOPs); the machine's rate
is that of a large fp32 `torch.mm` timed in the same run with the same thread count.
Prints a table and writes benchmarks/results/extract.json. Target (issue 6): reported, not fixed;
the script states whether channels_last / compile beat the eager baseline.
"""

import argparse, json, os, platform, time
from pathlib import Path
import torch

from secondsight.model import ReIDModel, count_flops
from secondsight.evaluate import extract_features


def matmul_gflops(n: int = 2048, reps: int = 5) -> float:
    "Best-of-`reps` GFLOP/s of an n x n fp32 matmul (2 n^3 FLOPs)."
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def time_forward(model, x, iters: int) -> tuple[float, float]:
    "(seconds of the first call, best images/s over `iters` timed calls)."
    with torch.inference_mode():
        t0 = time.perf_counter()
        model(x)
        first = time.perf_counter() - t0
        best = float("inf")
        for _ in range(iters):
            t0 = time.perf_counter()
            model(x)
            best = min(best, time.perf_counter() - t0)
    return first, len(x) / best


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--threads",
        type=int,
        default=2,
        help="torch threads (the machine has 2 shared cores)",
    )
    ap.add_argument("--batch", type=int, default=32, help="images per forward pass")
    ap.add_argument(
        "--iters",
        type=int,
        default=3,
        help="timed batches per variant (best is reported)",
    )
    ap.add_argument("--height", type=int, default=256)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument(
        "--no-compile", action="store_true", help="skip the torch.compile variant"
    )
    ap.add_argument(
        "--out", default=str(Path(__file__).parent / "results" / "extract.json")
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load0 = os.getloadavg()

    model = ReIDModel(backbone="resnet50", pretrained="none", last_stride=1).eval()
    flops = count_flops(model, args.height, args.width)
    # on a shared machine the matmul rate moves with the load: it is measured at the start, after each variant
    # and at the end, and the fractions use the highest rate seen (the conservative choice)
    peak = matmul_gflops()
    matmul_rates = [round(peak, 1)]
    x = torch.randn(args.batch, 3, args.height, args.width)
    rows = []

    def add(name, ips, first, note="", passes=1):
        gf = passes * ips * flops / 1e9
        rows.append(
            dict(
                variant=name,
                images_per_s=round(ips, 2),
                gflops_per_s=round(gf, 1),
                fraction_of_matmul=round(gf / peak, 3),
                first_call_s=round(first, 1),
                note=note,
            )
        )
        print(
            f"  {name:<32} {ips:7.2f} img/s  {gf:6.1f} GFLOP/s  {100 * gf / peak:5.1f}% of the start matmul rate  (first call {first:.1f}s) {note}",
            flush=True,
        )
        matmul_rates.append(round(matmul_gflops(), 1))

    print(
        f"ResNet-50 (last stride 1, GeM, BNNeck) at {args.height}x{args.width}: {flops / 1e9:.2f} GFLOPs per image per pass"
    )
    print(
        f"fp32 torch.mm 2048^3 with {args.threads} threads: {peak:.1f} GFLOP/s (load average {load0[0]:.1f})"
    )
    first, ips = time_forward(model, x, args.iters)
    add("eager NCHW (baseline)", ips, first)
    base = ips

    model_cl = model.to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    first, ips = time_forward(model_cl, x_cl, args.iters)
    add("eager channels_last", ips, first)

    if not args.no_compile:
        try:
            cmodel = torch.compile(model_cl)
            first, ips = time_forward(cmodel, x_cl, args.iters)
            add(
                "torch.compile channels_last",
                ips,
                first,
                "(first call includes compilation)",
            )
        except Exception as e:
            msg = (
                f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
            )
            rows.append(dict(variant="torch.compile channels_last", error=msg))
            print("  torch.compile failed:", msg)

    # extract_features as the evaluator runs it: flip TTA (2 passes), normalisation, in-memory batches
    loader = [
        (
            x,
            torch.zeros(len(x), dtype=torch.long),
            torch.zeros(len(x), dtype=torch.long),
            [""] * len(x),
        )
    ] * args.iters
    extract_features(model_cl, loader[:1], progress=False)  # warm-up
    t0 = time.perf_counter()
    extract_features(model_cl, loader, progress=False)
    dt = time.perf_counter() - t0
    ips = args.batch * args.iters / dt
    add("extract_features (flip, cl)", ips, 0.0, "(2 passes per image)", passes=2)

    peak = max(matmul_rates)
    for r in rows:
        if "gflops_per_s" in r:
            r["fraction_of_matmul"] = round(r["gflops_per_s"] / peak, 3)
    print(
        f"fp32 torch.mm rates seen during the run: {matmul_rates} GFLOP/s; fractions below use the highest, {peak:.1f}"
    )
    for r in rows:
        if "images_per_s" in r:
            print(
                f"  {r['variant']:<32} {r['images_per_s']:7.2f} img/s  {100 * r['fraction_of_matmul']:5.1f}% of the matmul rate"
            )
    best = max(
        (
            r
            for r in rows
            if "images_per_s" in r and "extract_features" not in r["variant"]
        ),
        key=lambda r: r["images_per_s"],
    )
    speedup = best["images_per_s"] / base
    print(
        f"best single-pass variant: {best['variant']} at {best['images_per_s']} img/s, {speedup:.2f}x the eager NCHW baseline, "
        f"{100 * best['fraction_of_matmul']:.1f}% of the matmul rate"
    )
    print(
        f"full Market-1501 (19,281 images) with flip TTA would take about {2 * 19281 / best['images_per_s'] / 60:.0f} min at that rate"
    )
    print(
        "target: reported (no fixed target); channels_last/compile beat the baseline:",
        "yes" if speedup > 1.0 else "no",
    )
    res = dict(
        machine=dict(
            platform=platform.platform(),
            processor=platform.processor() or platform.machine(),
            cpus=os.cpu_count(),
            threads=args.threads,
            load_average_start=load0,
            load_average_end=os.getloadavg(),
        ),
        torch=torch.__version__,
        model="ReIDModel resnet50 last_stride=1 gem bnneck (untrained)",
        input=[args.batch, 3, args.height, args.width],
        gflops_per_image=round(flops / 1e9, 3),
        matmul_gflops_per_s=round(peak, 1),
        matmul_gflops_seen=matmul_rates,
        variants=rows,
        best=best["variant"],
        speedup_vs_baseline=round(speedup, 3),
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
