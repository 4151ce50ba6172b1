#!/usr/bin/env python3
"""Throughput of `delineate serve` on this machine: cases per hour.

Makes synthetic metastasis cases as DICOM MR series (1 mm, whole head,
`delineate synth --dicom`, contrast-enhanced T1 as routing sees it), starts
a dcmtk storescp as the planning system and `delineate serve` (one worker,
the built-in model, immediate delivery), sends N series back to back with
storescu, and waits until every RTSTRUCT has been delivered; for each N in
--queued (1, 5 and 20 series queued at once by default).

Then the flood: 100 concurrent echoscu associations against
max_associations = 8; how many were served, how many refused, and the
service's peak RSS.

Prints a table and writes bench/results/service.json:
  cases per hour (first instance sent -> last RTSTRUCT delivered),
  receive rate (instances/s, fsync included), inference per case,
  turnaround per case (first instance received -> RTSTRUCT delivered),
  peak RSS of the service process (inference runs in child processes:
  their peak is `delineate segment`'s, docs/inference.md).

  python3 bench/service.py [--queued 1,5,20] [--delineate target/release/delineate]
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


def config(tmp, dicom, http, tps, extra_node=""):
    with open(f"{tmp}/d.toml", "w") as f:
        f.write(f"""default_action = "process"
[node]
ae_title = "DELINEATE"
bind = "127.0.0.1"
port = {dicom}
allowed_aes = ["PACS"]
quiet_period_s = 2
{extra_node}
[http]
bind = "127.0.0.1:{http}"
token = "{TOKEN}"
[storage]
dir = "store-{dicom}"
[worker]
allow_research_model = true
[[destination]]
name = "tps"
ae_title = "TPS"
host = "127.0.0.1"
port = {tps}
on_result = "immediate"
""")


def start(a, tmp, http):
    log = open(f"{tmp}/serve.log", "a")
    srv = subprocess.Popen([a.delineate, "serve", "--config", f"{tmp}/d.toml"], stdout=log, stderr=log)
    for _ in range(200):
        try:
            get(http, "/v1/jobs"); return srv
        except Exception:
            time.sleep(0.1)
    raise SystemExit(f"delineate serve did not start; see {tmp}/serve.log")


def run_queued(a, tmp, series):
    """N series sent back to back; returns the measurements."""
    dicom, http, tps = free_port(), free_port(), free_port()
    out = f"{tmp}/tps-{dicom}"
    os.makedirs(out)
    scp = subprocess.Popen(["storescp", "-aet", "TPS", "-od", out, str(tps)])
    config(tmp, dicom, http, tps)
    srv = start(a, tmp, http)
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
    turn = [j["finished_at"] - j["received_at"] for j in done]
    return {
        "queued": len(series),
        "done": len(done),
        "rtstructs_delivered": len(os.listdir(out)),
        "instances_per_case": statistics.mean(n for _, n in send_s),
        "elapsed_s": elapsed,
        "cases_per_hour": len(done) / elapsed * 3600,
        "receive_instances_per_s": sum(n for _, n in send_s) / sum(t for t, _ in send_s),
        "inference_s_mean": statistics.mean(j["inference_s"] for j in done),
        "turnaround_s_median": statistics.median(turn),
        "turnaround_s_max": max(turn),
        "service_peak_rss_mib": rss,
    }


def run_flood(a, tmp, n=100, limit=8):
    """n concurrent echoscu associations against max_associations = limit."""
    dicom, http, tps = free_port(), free_port(), free_port()
    # All from one address (loopback): the per-address limit is raised so
    # that the node's own pool and queue are what is measured.
    config(tmp, dicom, http, tps,
           f"max_associations = {limit}\nmax_associations_per_address = {n}\ntimeout_s = 10")
    srv = start(a, tmp, http)
    rss0 = peak_rss_mib(srv.pid)
    t = time.time()
    procs = [subprocess.Popen(["echoscu", "-aet", "PACS", "-aec", "DELINEATE", "-to", "20", "127.0.0.1", str(dicom)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(n)]
    ok = sum(p.wait() == 0 for p in procs)
    secs = time.time() - t
    after = subprocess.run(["echoscu", "-aet", "PACS", "-aec", "DELINEATE", "127.0.0.1", str(dicom)]).returncode == 0
    rss = peak_rss_mib(srv.pid)
    srv.terminate(); srv.wait()
    return {"associations": n, "max_associations": limit, "served": ok, "refused": n - ok,
            "seconds": secs, "serving_after": after, "service_rss_before_mib": rss0,
            "service_peak_rss_mib": rss}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--queued", default="1,5,20", help="series queued at once, comma-separated")
    ap.add_argument("--delineate", default=shutil.which("delineate") or "target/release/delineate")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "service.json"))
    a = ap.parse_args()
    queued = [int(x) for x in a.queued.split(",")]
    tmp = tempfile.mkdtemp(prefix="delineate-bench-")
    try:
        n = max(queued)
        subprocess.run([a.delineate, "synth", "--cases", str(n), "--seed", "77", "--out", f"{tmp}/data",
                        "--kinds", "met", "--grid", "1mm", "--dicom"], check=True, stdout=subprocess.DEVNULL)
        series = [sorted(os.path.join(f"{tmp}/data/{c}/dicom", f) for f in os.listdir(f"{tmp}/data/{c}/dicom"))
                  for c in sorted(os.listdir(f"{tmp}/data")) if c.startswith("case_")]
        runs = [run_queued(a, tmp, series[:q]) for q in queued]
        flood = run_flood(a, tmp)
        res = {
            "runs": runs,
            "flood": flood,
            "cpu": subprocess.run("lscpu | grep 'Model name' | cut -d: -f2", shell=True, capture_output=True,
                                  text=True).stdout.strip(),
            "threads": os.cpu_count(),
        }
        os.makedirs(os.path.dirname(a.out), exist_ok=True)
        json.dump(res, open(a.out, "w"), indent=2)
        print("| series queued | done | cases/hour | receive (instances/s) | inference/case (s) | turnaround median / max (s) | service peak RSS |")
        print("|---|---|---|---|---|---|---|")
        for r in runs:
            print(f"| {r['queued']} | {r['done']} ({r['rtstructs_delivered']} RTSTRUCTs) | {r['cases_per_hour']:.0f} | "
                  f"{r['receive_instances_per_s']:.0f} | {r['inference_s_mean']:.1f} | "
                  f"{r['turnaround_s_median']:.1f} / {r['turnaround_s_max']:.1f} | {r['service_peak_rss_mib']:.0f} MiB |")
        f = flood
        print(f"\n{f['associations']} concurrent associations against max_associations = {f['max_associations']}: "
              f"{f['served']} served, {f['refused']} refused in {f['seconds']:.1f} s; serving afterwards: "
              f"{f['serving_after']}; service RSS {f['service_rss_before_mib']:.0f} -> {f['service_peak_rss_mib']:.0f} MiB")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
