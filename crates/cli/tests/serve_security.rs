//! `delineate serve` against a security reviewer's list, on loopback:
//! DICOM TLS with dcmtk's `storescu +tls` and a test CA (a plain
//! association to the TLS port fails), HTTPS with curl; accounts and roles
//! (a viewer cannot upload or decide, a revoked token gets 401); uploads
//! bounded (2 GiB against a 64 MiB limit, a zip bomb, 100 000 entries);
//! a case that crashes `segment` every time ends `failed` after its
//! attempts and the next case is processed; files private; retention
//! purges; the audit log's chain verifies and detects an edit; no patient
//! name in any log.

#![allow(clippy::unwrap_used)]

mod service_support;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use service_support::*;
use support::{bin, py};

fn sh(script: &str) {
    let o = Command::new("bash")
        .args(["-c", script])
        .output()
        .expect("bash");
    assert!(
        o.status.success(),
        "{script}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A test CA and a server certificate for 127.0.0.1/localhost (openssl).
fn test_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    sh(&format!(
        r#"set -e; cd {d}
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=delineate-test-ca 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=localhost 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n' > ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile ext 2>/dev/null"#,
        d = s(dir)
    ));
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

fn vm_hwm_mib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
}

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool, srv: &Server) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}\n{}",
            srv.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn tls_accounts_and_bounded_uploads() {
    let tmp = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_ca(&tmp.path().join("pki"));
    let tls_port = free_port();
    let node = format!(
        "tls_port = {tls_port}\ntls_cert = {:?}\ntls_key = {:?}\nplain = false",
        s(&cert),
        s(&key)
    );
    let http = format!("tls_cert = {:?}\ntls_key = {:?}", s(&cert), s(&key));
    let srv = Server::start_with(
        &tmp.path().join("svc"),
        &[],
        &Setup {
            node_extra: &node,
            http_extra: &http,
            https_ca: Some(&ca),
            ..Default::default()
        },
    );
    assert!(srv.log().contains("HTTPS on"), "{}", srv.log());
    assert!(srv.log().contains("(TLS)"), "{}", srv.log());

    // DICOM over TLS with dcmtk (server certificate checked against the CA).
    let case = mr_series().join("dicom");
    let files = dicom_files(&case);
    let port = tls_port.to_string();
    let o = Command::new("storescu")
        .args(["+tla", "+cf", &s(&ca), "-aet", "PACS", "-aec", "DELINEATE"])
        .args(["127.0.0.1", &port])
        .args(&files)
        .output()
        .expect("storescu");
    assert!(
        o.status.success(),
        "storescu +tls: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let jobs = srv.wait_jobs(600, |j| {
        j.len() == 1 && ["done", "failed"].contains(&j[0]["state"].as_str().unwrap_or(""))
    });
    assert_eq!(jobs[0]["state"], "done", "{:#}", jobs[0]);
    assert!(srv
        .events("association")
        .iter()
        .any(|e| e["transport"] == "tls" && e["stored"] == files.len() as u64));
    // A plain association to the TLS port fails; no plain port is open.
    let o = Command::new("echoscu")
        .args([
            "-aet",
            "PACS",
            "-aec",
            "DELINEATE",
            "-to",
            "5",
            "127.0.0.1",
            &port,
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let o = Command::new("echoscu")
        .args(["-aet", "PACS", "-aec", "DELINEATE", "-to", "5", "127.0.0.1"])
        .arg(srv.dicom_port.to_string())
        .output()
        .unwrap();
    assert!(!o.status.success());
    // Plain HTTP to the HTTPS port gets nothing useful.
    let o = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
        ])
        .arg(format!("http://127.0.0.1:{}/healthz", srv.http_port))
        .output()
        .unwrap();
    assert_ne!(String::from_utf8_lossy(&o.stdout), "200");

    // Roles: a viewer reads but cannot upload; a revoked token gets 401.
    let viewer = add_user(&srv.dir, "Ward Viewer", "viewer");
    let ops = add_user(&srv.dir, "IT Ops", "operator");
    assert_eq!(srv.http("GET", "/v1/jobs", Some(&viewer), None).0, 200);
    let nii = tmp.path().join("small.nii.gz");
    std::fs::copy(mr_series().join("image.nii.gz"), &nii).unwrap();
    assert_eq!(
        srv.http("POST", "/v1/studies", Some(&viewer), Some(&nii)).0,
        403
    );
    let o = Command::new(bin())
        .args(["user", "revoke", "Ward Viewer", "--users"])
        .arg(srv.dir.join("users.toml"))
        .output()
        .unwrap();
    assert!(o.status.success());
    assert_eq!(srv.http("GET", "/v1/jobs", Some(&viewer), None).0, 401);
    assert_eq!(
        srv.http("GET", "/v1/jobs", Some("0123456789abcdef0000"), None)
            .0,
        401
    );
    let users = std::fs::read_to_string(srv.dir.join("users.toml")).unwrap();
    assert!(!users.contains(&ops) && !users.contains(&viewer));

    // Uploads: 2 GiB streamed against a 64 MiB limit, a zip bomb, a zip of
    // 100 000 entries: each refused with a 4xx, memory bounded.
    let pid = srv.child.id();
    let before = vm_hwm_mib(pid);
    let o = Command::new("bash")
        .args([
            "-c",
            &format!(
                "head -c 2147483648 /dev/zero | curl -s -o /dev/null -w '%{{http_code}}' --max-time 120 \
                 --cacert {ca} -H 'Authorization: Bearer {ops}' -H 'Content-Type: application/octet-stream' \
                 -H 'Expect:' -X POST -T - https://127.0.0.1:{port}/v1/studies",
                ca = s(&ca),
                port = srv.http_port
            ),
        ])
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let code = String::from_utf8_lossy(&o.stdout).to_string();
    // 413, or 000 when the service closed the connection while curl was
    // still sending (the refusal is then a reset); never a success. Without
    // `Expect: 100-continue` the interim 100 cannot be the last code seen.
    assert!(code == "413" || code == "000", "2 GiB upload: {code}");
    let zips = tmp.path().join("zips");
    py(&format!(
        r#"
import zipfile
os.makedirs({z:?}, exist_ok=True)
with zipfile.ZipFile(os.path.join({z:?}, "bomb.zip"), "w", zipfile.ZIP_DEFLATED) as f:
    with f.open("zeros.dcm", "w", force_zip64=True) as e:
        chunk = bytes(1 << 20)
        for _ in range(1024): e.write(chunk)
with zipfile.ZipFile(os.path.join({z:?}, "many.zip"), "w", zipfile.ZIP_STORED) as f:
    for i in range(100000): f.writestr(f"d/{{i}}.dcm", b"")
print("null")
"#,
        z = s(&zips)
    ));
    for (name, want) in [("bomb.zip", 413), ("many.zip", 413)] {
        let (code, body) = srv.http("POST", "/v1/studies", Some(&ops), Some(&zips.join(name)));
        assert_eq!(code, want, "{name}: {}", String::from_utf8_lossy(&body));
    }
    let peak = vm_hwm_mib(pid);
    eprintln!("service peak RSS: {before} MiB before the uploads, {peak} MiB after");
    assert!(peak < 256, "{peak} MiB");
    let refused = srv.events("upload_refused");
    assert!(refused.len() >= 3, "{refused:#?}");
    assert!(refused.iter().any(|e| e["reason"]
        .as_str()
        .unwrap_or("")
        .contains("max_upload_mib")));
    // Each refusal names the account: the viewer's 403, the operator's 413s.
    assert!(refused.iter().any(|e| e["user"] == "Ward Viewer"));
    assert_eq!(
        refused.iter().filter(|e| e["user"] == "IT Ops").count(),
        refused.len() - 1,
        "{refused:#?}"
    );
    // Nothing left in the spool or outside the storage folder.
    let spool: Vec<_> = std::fs::read_dir(srv.dir.join("store/spool"))
        .unwrap()
        .flatten()
        .collect();
    assert!(spool.is_empty(), "{spool:?}");
}

#[test]
fn failing_cases_stay_failed_files_are_private_and_expire() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = Server::start_with(
        &tmp.path().join("svc"),
        &[],
        &Setup {
            worker_extra: "max_attempts = 2\nmemory_limit_mib = 1536",
            storage_extra: "retention_days = 0.0004",
            ..Default::default()
        },
    );
    let ops = add_user(&srv.dir, "IT Ops", "operator");
    // A volume that decodes to 1.7 G voxels: out of memory in segment, on
    // every attempt (gzip of zeros, streamed: 1.7 MB on disk).
    let huge = tmp.path().join("huge.nii.gz");
    py(&format!(
        r#"
import gzip
h = nib.Nifti1Header(); h.set_data_shape((1200, 1200, 1200)); h.set_data_dtype(np.uint8)
h.set_qform(np.eye(4), 1); h.set_sform(np.eye(4), 1)
with gzip.open({p:?}, "wb", compresslevel=1) as f:
    f.write(h.binaryblock); f.write(b"\0" * (int(h["vox_offset"]) - 348))
    z = bytes(1 << 24)
    for _ in range(1200 * 1200 * 1200 // len(z)): f.write(z)
    f.write(bytes(1200 * 1200 * 1200 % len(z)))
print("null")
"#,
        p = s(&huge)
    ));
    let (code, b) = srv.http("POST", "/v1/studies", Some(&ops), Some(&huge));
    assert_eq!(code, 202, "{}", String::from_utf8_lossy(&b));
    // The next case, by C-STORE (with a patient name that must not leak).
    let files = dicom_files(&mr_series().join("dicom"));
    let o = srv.storescu("PACS", &files);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let jobs = srv.wait_jobs(900, |j| {
        j.len() == 2
            && j.iter()
                .all(|x| ["done", "failed"].contains(&x["state"].as_str().unwrap_or("")))
    });
    let failed = jobs.iter().find(|j| j["state"] == "failed").unwrap();
    let done = jobs.iter().find(|j| j["state"] == "done").unwrap();
    assert_eq!(failed["attempts"], 2, "{failed:#}");
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("crashed on each of 2 attempts"),
        "{failed:#}"
    );
    assert_eq!(srv.events("job_retry").len(), 1);
    // Everything under the storage folder is the service user's only:
    // every file and folder, the queue's SQLite -wal and -shm files and
    // what the segment workers wrote included.
    let id = done["id"].as_str().unwrap();
    let mut paths = vec![srv.dir.join("store"), srv.dir.join("users.toml")];
    paths.extend(walk_all(&srv.dir.join("store")));
    for must in [
        "store/queue.sqlite-wal",
        "store/queue.sqlite-shm",
        "store/audit.jsonl",
    ] {
        assert!(
            paths.contains(&srv.dir.join(must)),
            "{must} not found: {paths:?}"
        );
    }
    assert!(paths.contains(&srv.dir.join(format!("store/jobs/{id}/out/lesions.json"))));
    for p in &paths {
        use std::os::unix::fs::PermissionsExt;
        let m = std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            m & 0o077,
            0,
            "{}: mode {m:o} is open to others",
            p.display()
        );
    }
    // /healthz says nothing about internals.
    let (code, body) = srv.http("GET", "/healthz", None, None);
    assert_eq!(
        (code, String::from_utf8_lossy(&body).to_string()),
        (200, r#"{"status":"ok"}"#.to_string())
    );
    // Retention (35 s): both jobs' files are purged, each in the audit log.
    wait_for("the purge", 180, || srv.events("purged").len() >= 2, &srv);
    assert!(!srv.dir.join(format!("store/jobs/{id}")).exists());
    // The audit log verifies; an edited line is found.
    let audit = srv.dir.join("store/audit.jsonl");
    let o = Command::new(bin())
        .args(["audit", "verify"])
        .arg(&audit)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let copy = tmp.path().join("audit-copy.jsonl");
    let text = std::fs::read_to_string(&audit).unwrap();
    std::fs::write(&copy, text.replacen("\"job_retry\"", "\"job_started\"", 1)).unwrap();
    let o = Command::new(bin())
        .args(["audit", "verify"])
        .arg(&copy)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("the chain breaks"));
    // No patient name anywhere in the logs.
    let name = py(&format!(
        "d = pydicom.dcmread({:?}, stop_before_pixels=True); print(json.dumps(str(d.PatientName)))",
        dicom_files(&mr_series().join("dicom"))[0]
    ));
    let name = name.as_str().unwrap();
    assert!(!name.is_empty());
    for log in walkdir(&srv.dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "log" || e == "jsonl"))
    {
        let t = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(!t.contains(name), "{name:?} in {}", log.display());
    }
}

/// Every file and folder under `d`.
fn walk_all(d: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(d) {
        for e in rd.flatten() {
            let p = e.path();
            out.push(p.clone());
            if p.is_dir() && !p.is_symlink() {
                out.extend(walk_all(&p));
            }
        }
    }
    out
}

fn walkdir(d: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(d) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walkdir(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// A TCP connection to `port` from the loopback address `from`.
fn connect_from(from: &str, port: u16) -> std::net::TcpStream {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let local: std::net::SocketAddr = format!("{from}:0").parse().unwrap();
    sock.bind(&local.into()).unwrap();
    let remote: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    sock.connect(&remote.into()).unwrap();
    sock.into()
}

/// What a connection that sent nothing receives within `secs`: the bytes
/// before the node closed it.
fn answer_to_silence(s: &mut std::net::TcpStream, secs: u64) -> (Vec<u8>, Duration) {
    use std::io::Read;
    let t = Instant::now();
    s.set_read_timeout(Some(Duration::from_secs(secs))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return (got, t.elapsed()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

fn threads_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn one_noisy_host_cannot_lock_the_pacs_out() {
    /// A-ASSOCIATE-RJ: rejected-transient, service provider (presentation),
    /// local-limit-exceeded (PS3.8 9.3.4).
    const RJ_LIMIT: [u8; 10] = [3, 0, 0, 0, 0, 4, 0, 2, 3, 2];
    let tmp = tempfile::tempdir().unwrap();
    let srv = Server::start_with(
        &tmp.path().join("svc"),
        &[],
        &Setup {
            node_extra: "max_associations = 8\nassociation_request_timeout_s = 4",
            routes: "",
            ..Default::default()
        },
    );
    let pid = srv.child.id();
    let threads_before = threads_of(pid);
    let files: Vec<String> = dicom_files(&mr_series().join("dicom"))
        .into_iter()
        .take(20)
        .collect();
    // 100 idle connections from 127.0.0.2: 4 of them (the default per
    // address) hold a slot, the rest are refused at once.
    let mut idle: Vec<std::net::TcpStream> = (0..100)
        .map(|_| connect_from("127.0.0.2", srv.dicom_port))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // Meanwhile the PACS on 127.0.0.1 is served at once.
    let t = Instant::now();
    let o = srv.echo("PACS");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = srv.storescu("PACS", &files);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let served = t.elapsed();
    eprintln!("C-ECHO and a 20-instance C-STORE beside 100 idle connections: {served:?}");
    assert!(served < Duration::from_secs(5), "{served:?}");
    let threads = threads_of(pid);
    eprintln!("service threads: {threads_before} before, {threads} with 100 idle peers");
    assert!(
        threads <= threads_before + 12,
        "{threads_before} -> {threads}"
    );
    assert!(vm_hwm_mib(pid) < 256, "{} MiB", vm_hwm_mib(pid));
    // Every idle connection ends: 96 with an A-ASSOCIATE-RJ, the 4 that
    // held a slot closed silently within the ARTIM time (4 s).
    let (mut refused, mut dropped) = (0, 0);
    for s in &mut idle {
        let (got, after) = answer_to_silence(s, 15);
        if got.is_empty() {
            dropped += 1;
            assert!(after < Duration::from_secs(8), "{after:?}");
        } else {
            assert_eq!(got, RJ_LIMIT);
            refused += 1;
        }
    }
    assert_eq!((refused, dropped), (96, 4));
    let refusals = srv.events("association_rejected");
    assert!(
        refusals.iter().any(|e| e["reason"]
            .as_str()
            .unwrap_or("")
            .contains("4 associations already open from 127.0.0.2")),
        "{refusals:?}"
    );
    assert!(srv.log().contains("max_associations_per_address"));
    // The same from the PACS's own address: with its 4 places taken, its
    // next association is refused, and dcmtk reads the refusal.
    let held: Vec<std::net::TcpStream> = (0..4)
        .map(|_| connect_from("127.0.0.1", srv.dicom_port))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let o = srv.echo("PACS");
    let said = String::from_utf8_lossy(&o.stderr).to_string() + &String::from_utf8_lossy(&o.stdout);
    assert!(!o.status.success());
    assert!(said.to_lowercase().contains("reject"), "{said}");
    drop(held);
    // Places are given back when the peers leave.
    let t = Instant::now();
    while !srv.echo("PACS").status.success() {
        assert!(t.elapsed() < Duration::from_secs(10), "never served again");
        std::thread::sleep(Duration::from_millis(200));
    }
}
