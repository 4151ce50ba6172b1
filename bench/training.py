#!/usr/bin/env python3
"""Training-step benchmark: the residual U-Net of crates/model/src/unet.rs
trained by the native engine (`delineate train --engine fast`), by burn
flex (`--engine burn`) and by PyTorch CPU, same network, same batch, Adam,
weighted BCE, same thread count, in one run.

    python3 -m pip install torch==2.9.1        # benchmark only, never a test dependency
    cargo build --release -p delineate-model --example train_step
    python3 bench/training.py [--threads 2] [--steps 8] [--rounds 2] [--quick]

The machine is shared and noisy (PyTorch's step time varies 2-3x between
runs), so every contender runs in its own process, rows are measured in
rounds that interleave the contenders, and each figure is the minimum step
time over all rounds (each round: 2 warm-up steps, then --steps timed
steps). GFLOP per step = 3 x the forward convolutions' multiply-adds x 2
(forward, input gradient, weight gradient); the FMA peak is computed from
the CPU flags and clock. Peak RSS is GNU time's maximum resident set of
each contender's process. Writes bench/results/training.json.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
STEP = os.path.join(TARGET, "release", "examples", "train_step")
ROWS = [([8, 16, 32, 64], 2, 48), ([8, 16, 32, 64], 2, 64), ([16, 32, 64, 128], 2, 64)]


def theoretical_peak(threads):
    """GFLOP/s of `threads` cores: FMA lanes x 2 FLOP x 2 FMA units x clock."""
    info = open("/proc/cpuinfo").read()
    flags = re.search(r"^flags\s*:(.*)$", info, re.M).group(1).split()
    mhz = float(re.search(r"^cpu MHz\s*:\s*([\d.]+)", info, re.M).group(1))
    lanes = 16 if "avx512f" in flags else 8 if "fma" in flags else 4
    return threads * lanes * 2 * 2 * mhz / 1e3, lanes, mhz


def torch_step(widths, batch, patch, steps, warmup):
    """Runs in a child process: PyTorch's step times for one row."""
    import time

    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    def groups(c):
        g = min(8, c)
        while c % g:
            g -= 1
        return g

    class Block(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.n1, self.c1 = nn.GroupNorm(groups(c), c), nn.Conv3d(c, c, 3, padding=1)
            self.n2, self.c2 = nn.GroupNorm(groups(c), c), nn.Conv3d(c, c, 3, padding=1)

        def forward(self, x):
            h = self.c1(F.relu(self.n1(x)))
            return x + self.c2(F.relu(self.n2(h)))

    class UNet(nn.Module):
        def __init__(self, w):
            super().__init__()
            self.stem = nn.Conv3d(1, w[0], 3, padding=1)
            self.enc = nn.ModuleList([Block(c) for c in w])
            self.down = nn.ModuleList([nn.Conv3d(a, b, 2, stride=2) for a, b in zip(w, w[1:])])
            self.up = nn.ModuleList([nn.ConvTranspose3d(b, a, 2, stride=2) for a, b in zip(w, w[1:])])
            self.dec = nn.ModuleList([Block(c) for c in w[:-1]])
            self.hn, self.head = nn.GroupNorm(groups(w[0]), w[0]), nn.Conv3d(w[0], 1, 1)

        def forward(self, x):
            h, skips = self.stem(x), []
            for i, e in enumerate(self.enc):
                h = e(h)
                if i < len(self.down):
                    skips.append(h)
                    h = self.down[i](h)
            for i in reversed(range(len(self.up))):
                h = self.dec[i](self.up[i](h) + skips.pop())
            return self.head(F.relu(self.hn(h)))

    torch.manual_seed(0)
    net = UNet(widths)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, eps=1e-5)
    shape = (batch, 1, patch, patch, patch)
    times = []
    for i in range(warmup + steps):
        x = torch.randn(shape)
        t = (torch.rand(shape) > 0.97).float()
        w = 1.0 + 20.0 * t
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        logits = net(x)
        loss = (F.binary_cross_entropy_with_logits(logits, t, reduction="none") * w).sum() / w.sum()
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return {"engine": "pytorch", "ms_min": 1e3 * min(times),
            "ms_median": 1e3 * sorted(times)[len(times) // 2], "steps": len(times),
            "torch": torch.__version__}


def run_measured(cmd, env):
    """Runs `cmd` under GNU time; its last JSON line and the peak RSS (MiB)."""
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as f:
        r = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", f.name] + cmd,
                           capture_output=True, text=True, env=env)
        if r.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
        rss = int(open(f.name).read().strip().splitlines()[-1]) / 1024
    line = [l for l in r.stdout.splitlines() if l.startswith("{")][-1]
    out = json.loads(line)
    out["peak_rss_mib"] = rss
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="first row, one round, no burn")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        widths, batch, patch = json.loads(args.child)
        import torch
        torch.set_num_threads(args.threads)
        print(json.dumps(torch_step(widths, batch, patch, args.steps, 2)))
        return
    if not os.path.exists(STEP):
        sys.exit(f"{STEP} missing: cargo build --release -p delineate-model --example train_step")
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads))
    theo, lanes, mhz = theoretical_peak(args.threads)
    rows = ROWS[:1] if args.quick else ROWS
    rounds = 1 if args.quick else args.rounds
    engines = ["fast", "pytorch"] + ([] if args.quick else ["burn"])
    best = {}
    for rnd in range(rounds):
        for widths, batch, patch in rows:
            key = ("-".join(map(str, widths)), batch, patch)
            for eng in engines:
                if eng == "pytorch":
                    cmd = [sys.executable, os.path.abspath(__file__), "--threads", str(args.threads),
                           "--steps", str(args.steps), "--child", json.dumps([widths, batch, patch])]
                else:
                    cmd = [STEP, "--widths", ",".join(map(str, widths)), "--patch", str(patch),
                           "--batch", str(batch), "--steps", str(args.steps), "--warmup", "2",
                           "--engine", eng]
                r = run_measured(cmd, env)
                print(f"round {rnd + 1}: {key[0]} b{batch} {patch}^3 {eng}: {r['ms_min']:.0f} ms, "
                      f"{r['peak_rss_mib']:.0f} MiB", flush=True)
                prev = best.get((key, eng))
                if prev is None or r["ms_min"] < prev["ms_min"]:
                    r["peak_rss_mib"] = max(r["peak_rss_mib"], prev["peak_rss_mib"] if prev else 0)
                    best[(key, eng)] = r
                elif prev is not None:
                    prev["peak_rss_mib"] = max(prev["peak_rss_mib"], r["peak_rss_mib"])
    # GFLOP per step from the fast engine's report (same network for all).
    table = []
    print(f"\n{args.threads} threads; theoretical FMA peak {theo:.0f} GFLOP/s "
          f"({lanes} lanes x 2 FMA units x {mhz:.0f} MHz)\n")
    print("| widths, batch x patch | engine | ms per step (min) | vs PyTorch | vs burn flex "
          "| GFLOP/s | of FMA peak | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for widths, batch, patch in rows:
        key = ("-".join(map(str, widths)), batch, patch)
        gflop = best[(key, "fast")]["gflop"]
        torch_ms = best[(key, "pytorch")]["ms_min"]
        burn_ms = best.get((key, "burn"), {}).get("ms_min")
        for eng in engines:
            r = best[(key, eng)]
            ms = r["ms_min"]
            gfs = gflop / (ms / 1e3)
            vs_burn = f"{burn_ms / ms:.2f}x" if burn_ms else "-"
            print(f"| {key[0]}, {batch} x {patch}^3 | {eng} | {ms:.0f} | {torch_ms / ms:.2f}x | "
                  f"{vs_burn} | {gfs:.1f} | {100 * gfs / theo:.0f} % | {r['peak_rss_mib']:.0f} |")
            table.append({"widths": widths, "batch": batch, "patch": patch, "engine": eng,
                          "ms_min": ms, "ms_median": r["ms_median"], "gflop_per_step": gflop,
                          "gflops": gfs, "fraction_of_fma_peak": gfs / theo,
                          "speed_vs_pytorch": torch_ms / ms,
                          "speed_vs_burn": (burn_ms / ms) if burn_ms else None,
                          "peak_rss_mib": r["peak_rss_mib"], "torch": r.get("torch")})
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    if not args.quick:
        with open(os.path.join(ROOT, "bench", "results", "training.json"), "w") as f:
            json.dump({"threads": args.threads, "theoretical_peak_gflops": theo,
                       "steps": args.steps, "rounds": rounds, "rows": table}, f, indent=1)


if __name__ == "__main__":
    main()
