#!/usr/bin/env python3
"""Throughput of `delineate serve` on this machine: cases per hour.

Makes N synthetic metastasis cases as DICOM MR series (1 mm, whole head,
`delineate synth --dicom`), starts a dcmtk storescp as the planning system
and `delineate serve` (one worker, the built-in model), sends the series back
to back with storescu, and waits until every RTSTRUCT has been delivered.

Prints a table and writes bench/results/service.json:
  cases per hour (first instance sent -> last RTSTRUCT delivered),
  receive rate (instances/s, fsync included), inference per case,
  turnaround per case (first instance received -> RTSTRUCT delivered),
  peak RSS of the service process (inference runs in child processes:
  their peak is `delineate segment`'s, docs/inference.md).

  python3 bench/service.py [--cases 6] [--delineate target/release/delineate]
"""
import argparse, json, os, shutil, socket, statistics, subprocess, sys, tempfile, time
import urllib.request

TOKEN = "bench-token-0123456789abcdef"


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def get(port, path):
    r = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(r, timeout=30) as f:
        return json.loads(f.read())


def peak_rss_mib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=6)
    ap.add_argument("--delineate", default=shutil.which("delineate") or "target/release/delineate")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "service.json"))
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="delineate-bench-")
    try:
        subprocess.run([a.delineate, "synth", "--cases", str(a.cases), "--seed", "77", "--out", f"{tmp}/data",
                        "--kinds", "met", "--grid", "1mm", "--dicom"], check=True, stdout=subprocess.DEVNULL)
        series = [sorted(os.path.join(f"{tmp}/data/{c}/dicom", f) for f in os.listdir(f"{tmp}/data/{c}/dicom"))
                  for c in sorted(os.listdir(f"{tmp}/data")) if c.startswith("case_")]
        dicom, http, tps = free_port(), free_port(), free_port()
        os.makedirs(f"{tmp}/tps")
        scp = subprocess.Popen(["storescp", "-aet", "TPS", "-od", f"{tmp}/tps", str(tps)])
        with open(f"{tmp}/d.toml", "w") as f:
            f.write(f"""default_action = "process"
[node]
ae_title = "DELINEATE"
bind = "127.0.0.1"
port = {dicom}
allowed_aes = ["PACS"]
quiet_period_s = 2
[http]
bind = "127.0.0.1:{http}"
token = "{TOKEN}"
[storage]
dir = "store"
[[destination]]
name = "tps"
ae_title = "TPS"
host = "127.0.0.1"
port = {tps}
""")
        log = open(f"{tmp}/serve.log", "w")
        srv = subprocess.Popen([a.delineate, "serve", "--config", f"{tmp}/d.toml"], stdout=log, stderr=log)
        for _ in range(100):
            try:
                get(http, "/v1/jobs"); break
            except Exception:
                time.sleep(0.1)
        t0 = time.time()
        send_s = []
        for files in series:
            t = time.time()
            subprocess.run(["storescu", "-aet", "PACS", "-aec", "DELINEATE", "127.0.0.1", str(dicom), *files],
                           check=True)
            send_s.append((time.time() - t, len(files)))
        while True:
            jobs = get(http, "/v1/jobs")["jobs"]
            if len(jobs) == len(series) and all(j["state"] in ("done", "failed") for j in jobs):
                break
            time.sleep(0.5)
        elapsed = time.time() - t0
        rss = peak_rss_mib(srv.pid)
        srv.terminate(); srv.wait(); scp.terminate(); scp.wait()
        done = [j for j in jobs if j["state"] == "done"]
        delivered = len(os.listdir(f"{tmp}/tps"))
        res = {
            "cases": len(series),
            "done": len(done),
            "rtstructs_delivered": delivered,
            "instances_per_case": statistics.mean(n for _, n in send_s),
            "elapsed_s": elapsed,
            "cases_per_hour": len(done) / elapsed * 3600,
            "receive_instances_per_s": sum(n for _, n in send_s) / sum(t for t, _ in send_s),
            "inference_s_mean": statistics.mean(j["inference_s"] for j in done),
            "turnaround_s_median": statistics.median(j["finished_at"] - j["received_at"] for j in done),
            "turnaround_s_max": max(j["finished_at"] - j["received_at"] for j in done),
            "service_peak_rss_mib": rss,
            "cpu": subprocess.run("lscpu | grep 'Model name' | cut -d: -f2", shell=True, capture_output=True,
                                  text=True).stdout.strip(),
            "threads": os.cpu_count(),
        }
        os.makedirs(os.path.dirname(a.out), exist_ok=True)
        json.dump(res, open(a.out, "w"), indent=2)
        print(f"| cases | cases/hour | receive (instances/s) | inference/case (s) | turnaround median / max (s) | service peak RSS |")
        print(f"|---|---|---|---|---|---|")
        print(f"| {res['done']}/{res['cases']} ({delivered} RTSTRUCTs) | {res['cases_per_hour']:.0f} | "
              f"{res['receive_instances_per_s']:.0f} | {res['inference_s_mean']:.1f} | "
              f"{res['turnaround_s_median']:.1f} / {res['turnaround_s_max']:.1f} | {rss:.0f} MiB |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
