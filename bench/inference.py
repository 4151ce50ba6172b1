#!/usr/bin/env python3
"""Inference benchmark: the U-Net forward pass on the fast CPU path, on burn
flex and on ONNX Runtime (same weights, same input, same thread count, one
run), then `delineate segment` end to end on a 1 mm brain case.

    pip install onnx==1.23.2 onnxruntime==1.32.0
    cargo build --release -p delineate-cli
    cargo build --release -p delineate-model --example forward
    python3 bench/inference.py [--threads 2] [--quick]

For each configuration the `forward` example times the fast path and burn
and exports the weights, the input and the fast path's output; this script
builds the identical network in ONNX (Conv, ConvTranspose, GroupNorm as
Reshape + InstanceNormalization + affine, Relu, Add, Sigmoid), checks that
ORT's output matches ours, and times ORT. GFLOP/s count 2 FLOP per
multiply-add of the convolutions; the peak is the `gemm` crate's SGEMM
(2048³) measured in the same run on the same threads, and the theoretical
FMA peak from the CPU flags and clock. Writes bench/results/inference.json.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
FORWARD = os.path.join(TARGET, "release", "examples", "forward")
DELINEATE = os.path.join(TARGET, "release", "delineate")
MODEL = os.path.join(ROOT, "models", "unet-synth.dlm")


def build_onnx(meta, weights):
    """The U-Net of crates/model/src/unet.rs as an ONNX graph."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    params = meta["params"]
    widths = meta["widths"]
    it = iter(params)
    inits, nodes = [], []
    counter = [0]

    def take(shape_len):
        p = next(it)
        assert len(p["shape"]) == shape_len, p
        n = int(np.prod(p["shape"]))
        arr = weights[p["offset"]: p["offset"] + n].reshape(p["shape"])
        name = p["name"]
        inits.append(numpy_helper.from_array(arr.astype(np.float32), name))
        return name, p["shape"]

    def fresh(prefix):
        counter[0] += 1
        return f"{prefix}{counter[0]}"

    def const(arr, prefix):
        name = fresh(prefix)
        inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def conv(x, kernel, stride=1, pad=0):
        w, _ = take(5)
        b, _ = take(1)
        y = fresh("conv")
        nodes.append(helper.make_node("Conv", [x, w, b], [y], kernel_shape=[kernel] * 3,
                                      strides=[stride] * 3, pads=[pad] * 6))
        return y

    def deconv(x):
        w, _ = take(5)
        b, _ = take(1)
        y = fresh("deconv")
        nodes.append(helper.make_node("ConvTranspose", [x, w, b], [y], kernel_shape=[2] * 3,
                                      strides=[2] * 3))
        return y

    def gn_relu(x, c):
        gamma, _ = take(1)
        beta, _ = take(1)
        g = 8
        while c % g:
            g -= 1
        g = min(g, c)
        r = fresh("r")
        nodes.append(helper.make_node("Reshape", [x, const(np.array([1, g, -1], np.int64), "s")], [r]))
        n = fresh("in")
        nodes.append(helper.make_node("InstanceNormalization",
                                      [r, const(np.ones(g, np.float32), "o"), const(np.zeros(g, np.float32), "z")],
                                      [n], epsilon=1e-5))
        shape = fresh("shape")
        nodes.append(helper.make_node("Shape", [x], [shape]))
        back = fresh("b")
        nodes.append(helper.make_node("Reshape", [n, shape], [back]))
        gr, br = fresh("gr"), fresh("br")
        nodes.append(helper.make_node("Reshape", [gamma, const(np.array([1, c, 1, 1, 1], np.int64), "s")], [gr]))
        nodes.append(helper.make_node("Reshape", [beta, const(np.array([1, c, 1, 1, 1], np.int64), "s")], [br]))
        m, a, y = fresh("m"), fresh("a"), fresh("relu")
        nodes.append(helper.make_node("Mul", [back, gr], [m]))
        nodes.append(helper.make_node("Add", [m, br], [a]))
        nodes.append(helper.make_node("Relu", [a], [y]))
        return y

    def block(x, c):
        h = conv(gn_relu(x, c), 3, pad=1)
        h = conv(gn_relu(h, c), 3, pad=1)
        y = fresh("res")
        nodes.append(helper.make_node("Add", [x, h], [y]))
        return y

    # Parameter order = burn's visiting order = field order of UNet: stem,
    # encoders, downs, ups, decoders, head norm, head. Each group is
    # sliced out and consumed in forward order.
    h = conv("input", 3, pad=1)
    n = len(widths)
    order = list(params)
    per_block = 8
    i0 = 2
    enc = [order[i0 + k * per_block: i0 + (k + 1) * per_block] for k in range(n)]
    i1 = i0 + n * per_block
    downs = [order[i1 + 2 * k: i1 + 2 * k + 2] for k in range(n - 1)]
    i2 = i1 + 2 * (n - 1)
    ups = [order[i2 + 2 * k: i2 + 2 * k + 2] for k in range(n - 1)]
    i3 = i2 + 2 * (n - 1)
    dec = [order[i3 + k * per_block: i3 + (k + 1) * per_block] for k in range(n - 1)]
    i4 = i3 + (n - 1) * per_block
    head = order[i4: i4 + 4]
    assert i4 + 4 == len(order), (i4, len(order))

    def run(group, fn, *a):
        nonlocal it
        it = iter(group)
        return fn(*a)

    skips = []
    for l in range(n):
        h = run(enc[l], block, h, widths[l])
        if l < n - 1:
            skips.append(h)
            h = run(downs[l], conv, h, 2, 2)
    for l in reversed(range(n - 1)):
        u = run(ups[l], deconv, h)
        s = fresh("skip")
        nodes.append(helper.make_node("Add", [u, skips.pop()], [s]))
        h = run(dec[l], block, s, widths[l])

    def head_fn(x):
        y = conv(gn_relu(x, widths[0]), 1)
        p = "output"
        nodes.append(helper.make_node("Sigmoid", [y], [p]))
        return p

    run(head, head_fn, h)
    dims = meta["dims_xyz"]
    graph = helper.make_graph(
        nodes, "unet3d",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, dims[2], dims[1], dims[0]])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, dims[2], dims[1], dims[0]])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def time_ort(model, x, threads, reps):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    out = sess.run(None, {"input": x})[0]
    best = 1e9
    for _ in range(reps):
        t = time.perf_counter()
        out = sess.run(None, {"input": x})[0]
        best = min(best, time.perf_counter() - t)
    return best, out


def theoretical_peak(threads):
    """GFLOP/s of `threads` cores: FMA lanes × 2 FLOP × 2 FMA units × clock."""
    info = open("/proc/cpuinfo").read()
    flags = re.search(r"^flags\s*:(.*)$", info, re.M).group(1).split()
    mhz = float(re.search(r"^cpu MHz\s*:\s*([\d.]+)", info, re.M).group(1))
    lanes = 16 if "avx512f" in flags else 8 if "fma" in flags else 4
    return threads * lanes * 2 * 2 * mhz / 1e3, lanes, mhz


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="64³ only, no end-to-end")
    args = ap.parse_args()
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    peak = json.loads(subprocess.run([FORWARD, "--peak"], env=env, capture_output=True,
                                     text=True, check=True).stdout.strip().splitlines()[-1])
    theo, lanes, mhz = theoretical_peak(args.threads)
    configs = [("shipped 8-16-32-64", ["--model", MODEL], [64, 64, 64])]
    configs.append(("16-32-64-128 (random)", ["--widths", "16,32,64,128"], [64, 64, 64]))
    if not args.quick:
        configs.append(("shipped 8-16-32-64", ["--model", MODEL], [160, 192, 160]))
        configs.append(("16-32-64-128 (random)", ["--widths", "16,32,64,128"], [160, 192, 160]))
    rows = []
    for name, model_args, dims in configs:
        with tempfile.TemporaryDirectory() as d:
            reps = args.reps if dims[0] <= 64 else 1
            r = subprocess.run([FORWARD, *model_args, "--dims", ",".join(map(str, dims)),
                                "--reps", str(reps), "--export", d], env=env,
                               capture_output=True, text=True, check=True)
            res = {j["engine"]: j for j in map(json.loads, r.stdout.strip().splitlines())}
            meta = json.load(open(os.path.join(d, "weights.json")))
            w = np.fromfile(os.path.join(d, "weights.bin"), dtype="<f4")
            x = np.fromfile(os.path.join(d, "input.bin"), dtype="<f4").reshape(1, 1, dims[2], dims[1], dims[0])
            ours = np.fromfile(os.path.join(d, "fast_output.bin"), dtype="<f4").reshape(x.shape)
            onnx_model = build_onnx(meta, w)
            t_ort, out = time_ort(onnx_model, x, args.threads, reps)
            diff = float(np.abs(out - ours).max())
            macs = res["fast"]["macs"]
            for engine, t in [("fast (ours)", res["fast"]["seconds"]),
                              ("burn flex", res["burn-flex"]["seconds"]),
                              ("ONNX Runtime", t_ort)]:
                g = 2 * macs / t / 1e9
                rows.append({"network": name, "dims": dims, "engine": engine, "seconds": t,
                             "gflops": g, "speed_vs_ort": t_ort / t,
                             "of_gemm_peak": g / peak["gflops"], "of_fma_peak": g / theo,
                             "max_abs_diff_vs_fast": diff if engine == "ONNX Runtime" else None})
    print(f"threads {args.threads}; SGEMM 2048³ (gemm crate) {peak['gflops']:.0f} GFLOP/s; "
          f"theoretical FMA peak {theo:.0f} GFLOP/s ({lanes} lanes × 2 FMA units × {mhz:.0f} MHz)")
    print(f"| network | input | engine | seconds | GFLOP/s | speed vs ORT | of SGEMM peak | of FMA peak |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['network']} | {'×'.join(map(str, r['dims']))} | {r['engine']} | {r['seconds']:.3f} | "
              f"{r['gflops']:.1f} | {r['speed_vs_ort']:.2f}× | {100 * r['of_gemm_peak']:.0f} % | "
              f"{100 * r['of_fma_peak']:.0f} % |")
    diffs = [r["max_abs_diff_vs_fast"] for r in rows if r["max_abs_diff_vs_fast"] is not None]
    print(f"ORT vs fast path, max abs difference of probabilities: {max(diffs):.2e}")
    end_to_end = None
    if not args.quick:
        end_to_end = segment_end_to_end(env)
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "results", "inference.json"), "w") as f:
        json.dump({"threads": args.threads, "sgemm_peak": peak, "theoretical_peak_gflops": theo,
                   "forward": rows, "segment": end_to_end}, f, indent=1)


def segment_end_to_end(env):
    """`delineate segment` on a 1 mm synthetic brain (DICOM in, RTSTRUCT out)."""
    with tempfile.TemporaryDirectory() as d:
        subprocess.run([DELINEATE, "synth", "--cases", "1", "--seed", "3", "--kinds", "met",
                        "--grid", "1mm", "--dicom", "--out", os.path.join(d, "data")],
                       env=env, check=True, capture_output=True)
        rows = []
        for label, extra in [("default", []), ("--tta", ["--tta"])]:
            out = os.path.join(d, "out" + label)
            t = time.perf_counter()
            r = subprocess.run(["/usr/bin/time", "-f", "%M", DELINEATE, "segment",
                                os.path.join(d, "data", "case_000", "dicom"), "--out", out, *extra],
                               env=env, capture_output=True, text=True, check=True)
            wall = time.perf_counter() - t
            rss_mb = int(r.stderr.strip().splitlines()[-1]) / 1024
            les = json.load(open(os.path.join(out, "lesions.json")))
            stages = {s["stage"]: s["seconds"] for s in les["timings_s"]}
            rows.append({"options": label, "wall_s": wall, "peak_rss_mib": rss_mb,
                         "windows": les["windows"], "stages": stages,
                         "rtstruct": os.path.exists(os.path.join(out, "rtstruct.dcm"))})
        print("\n| segment (1 mm brain, DICOM in, RTSTRUCT out) | wall s | peak RSS MiB | windows | "
              "preprocess | network | postprocess |")
        print("|---|---|---|---|---|---|---|")
        for r in rows:
            s = r["stages"]
            print(f"| {r['options']} | {r['wall_s']:.1f} | {r['peak_rss_mib']:.0f} | {r['windows']} | "
                  f"{s.get('preprocess', 0):.2f} | {s.get('network', 0):.2f} | {s.get('postprocess', 0):.2f} |")
        return rows


if __name__ == "__main__":
    sys.exit(main())
