//! Starting `delineate serve` and its peers (dcmtk's storescp as the
//! planning system, Orthanc as the PACS) for the service tests, and the
//! fixtures they send.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::support::{bin, py, synth_mets};

pub const TOKEN: &str = "test-token-0123456789abcdef";

/// A free TCP port (bound and released; the race is harmless in tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// A synthetic metastasis case as a DICOM MR series (203 slices, 1 mm),
/// made once per test binary.
pub fn mr_series() -> &'static Path {
    static CASE: OnceLock<PathBuf> = OnceLock::new();
    CASE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir").keep();
        synth_mets(
            &dir.join("data"),
            "1",
            "5",
            "2-2",
            &["--met-diameter", "14-18", "--dicom"],
        );
        dir.join("data/case_000")
    })
}

pub fn dicom_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| s(&e.expect("entry").path()))
        .filter(|p| p.ends_with(".dcm"))
        .collect();
    v.sort();
    v
}

/// A running `delineate serve`.
pub struct Server {
    pub child: Child,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub dicom_port: u16,
    pub http_port: u16,
    /// The token of "Dr Review", a reviewer account (TOKEN is the shared
    /// operator token, which may not review).
    pub reviewer: String,
    /// CA of the HTTPS certificate (None: plain HTTP).
    pub https_ca: Option<PathBuf>,
}

/// Adds an account to the service's users file; returns its token.
pub fn add_user(dir: &Path, name: &str, role: &str) -> String {
    let o = Command::new(bin())
        .args(["user", "add", name, "--role", role, "--users"])
        .arg(dir.join("users.toml"))
        .output()
        .expect("delineate user add");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// The routes of the older tests: every MR series but localisers.
pub const SIMPLE_ROUTES: &str = r#"
[[route]]
action = "skip"
series_description = "(?i)localizer"
[[route]]
action = "process"
modality = "MR"
"#;

/// How a test service is set up.
pub struct Setup<'a> {
    /// `on_result` of every destination.
    pub on_result: &'a str,
    /// The `[[route]]` tables.
    pub routes: &'a str,
    /// More top-level TOML (before the routes).
    pub extra: &'a str,
    pub quiet_period_s: f64,
    /// `node.incomplete_wait_s`.
    pub incomplete_wait_s: f64,
    /// More lines in `[node]`, `[http]`, `[worker]`, `[storage]`.
    pub node_extra: &'a str,
    pub http_extra: &'a str,
    pub worker_extra: &'a str,
    pub storage_extra: &'a str,
    /// The HTTP API speaks HTTPS with a certificate of this CA.
    pub https_ca: Option<&'a Path>,
}

impl Default for Setup<'_> {
    fn default() -> Self {
        Setup {
            on_result: "immediate",
            routes: SIMPLE_ROUTES,
            extra: "",
            quiet_period_s: 1.0,
            incomplete_wait_s: 300.0,
            node_extra: "",
            http_extra: "",
            worker_extra: "",
            storage_extra: "",
            https_ca: None,
        }
    }
}

/// Destinations: (name, AE title, port) on 127.0.0.1.
pub fn config_text(
    dir: &Path,
    dicom: u16,
    http: u16,
    dests: &[(&str, &str, u16)],
    setup: &Setup,
) -> String {
    let mut t = format!(
        r#"default_action = "skip"
[node]
ae_title = "DELINEATE"
bind = "127.0.0.1"
port = {dicom}
allowed_aes = ["PACS", "ORTHANC", "LOADGEN"]
quiet_period_s = {quiet}
incomplete_wait_s = {wait}
timeout_s = 20
{node_extra}
[http]
bind = "127.0.0.1:{http}"
token = "{TOKEN}"
users_file = "users.toml"
max_upload_mib = 64
{http_extra}
[storage]
dir = "{store}"
{storage_extra}
[worker]
threshold = 0.5
allow_research_model = true
{worker_extra}
[delivery]
attempts = 4
backoff_s = 0.5
{extra}
{routes}
"#,
        store = s(&dir.join("store")),
        quiet = setup.quiet_period_s,
        wait = setup.incomplete_wait_s,
        extra = setup.extra,
        routes = setup.routes,
        node_extra = setup.node_extra,
        http_extra = setup.http_extra,
        worker_extra = setup.worker_extra,
        storage_extra = setup.storage_extra,
    );
    for (name, ae, port) in dests {
        t.push_str(&format!(
            "[[destination]]\nname = \"{name}\"\nae_title = \"{ae}\"\nhost = \"127.0.0.1\"\nport = {port}\non_result = \"{}\"\n",
            setup.on_result
        ));
    }
    t
}

impl Server {
    pub fn start(dir: &Path, dests: &[(&str, &str, u16)], extra: &str) -> Server {
        Self::start_with(
            dir,
            dests,
            &Setup {
                extra,
                ..Default::default()
            },
        )
    }

    pub fn start_with(dir: &Path, dests: &[(&str, &str, u16)], setup: &Setup) -> Server {
        std::fs::create_dir_all(dir).expect("mkdir");
        let (dicom_port, http_port) = (free_port(), free_port());
        let config = dir.join("delineate.toml");
        std::fs::write(
            &config,
            config_text(dir, dicom_port, http_port, dests, setup),
        )
        .expect("write config");
        let reviewer = add_user(dir, "Dr Review", "reviewer");
        let mut s = Server {
            child: spawn(&config, dir),
            dir: dir.to_path_buf(),
            config,
            dicom_port,
            http_port,
            reviewer,
            https_ca: setup.https_ca.map(Path::to_path_buf),
        };
        s.wait_healthy();
        s
    }

    /// Starts the service again on the same configuration and storage.
    pub fn restart(&mut self) {
        self.child = spawn(&self.config, &self.dir);
        self.wait_healthy();
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill(); // SIGKILL on Unix
        let _ = self.child.wait();
    }

    fn wait_healthy(&mut self) {
        let t = Instant::now();
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("delineate serve exited ({st}):\n{}", self.log());
            }
            if self.http("GET", "/healthz", None, None).0 == 200 {
                return;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "service not healthy:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("serve.log")).unwrap_or_default()
    }

    pub fn audit(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.join("store/audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("audit lines are JSON"))
            .collect()
    }

    pub fn events(&self, event: &str) -> Vec<serde_json::Value> {
        self.audit()
            .into_iter()
            .filter(|e| e["event"] == event)
            .collect()
    }

    /// (status, body) of an HTTP request with curl; `token` None sends none.
    pub fn http(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Path>,
    ) -> (u16, Vec<u8>) {
        let out = tempfile::NamedTempFile::new().expect("tmp");
        let mut c = Command::new("curl");
        c.args(["-s", "-X", method, "-o"]).arg(out.path()).args([
            "-w",
            "%{http_code}",
            "--max-time",
            "60",
        ]);
        if let Some(t) = token {
            c.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
        if let Some(b) = body {
            c.args(["--data-binary", &format!("@{}", s(b))]);
            c.args(["-H", "Content-Type: application/octet-stream"]);
        }
        match &self.https_ca {
            Some(ca) => {
                c.arg("--cacert").arg(ca);
                c.arg(format!("https://127.0.0.1:{}{path}", self.http_port));
            }
            None => {
                c.arg(format!("http://127.0.0.1:{}{path}", self.http_port));
            }
        }
        let o = c
            .output()
            .expect("curl (apt-get install curl; ./setup.sh does)");
        let code = String::from_utf8_lossy(&o.stdout)
            .trim()
            .parse()
            .unwrap_or(0);
        (code, std::fs::read(out.path()).unwrap_or_default())
    }

    pub fn get_json(&self, path: &str) -> serde_json::Value {
        let (code, body) = self.http("GET", path, Some(TOKEN), None);
        assert_eq!(code, 200, "GET {path}: {}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).expect("JSON")
    }

    pub fn jobs(&self) -> Vec<serde_json::Value> {
        self.get_json("/v1/jobs")["jobs"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until `done(jobs)` holds; panics with the jobs and log after
    /// `secs`.
    pub fn wait_jobs(
        &self,
        secs: u64,
        done: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let t = Instant::now();
        loop {
            let j = self.jobs();
            if done(&j) {
                return j;
            }
            assert!(
                t.elapsed() < Duration::from_secs(secs),
                "timed out; jobs: {j:#?}\nlog:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A dcmtk SCU (`echoscu`, `storescu`) calling us as `calling`.
    pub fn dcmtk(&self, tool: &str, calling: &str, args: &[String]) -> std::process::Output {
        let port = self.dicom_port.to_string();
        Command::new(tool)
            .args(["-aet", calling, "-aec", "DELINEATE", "127.0.0.1", &port])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{tool} (dcmtk: ./setup.sh installs it): {e}"))
    }

    pub fn echo(&self, calling: &str) -> std::process::Output {
        self.dcmtk("echoscu", calling, &[])
    }

    pub fn storescu(&self, calling: &str, files: &[String]) -> std::process::Output {
        self.dcmtk("storescu", calling, files)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(config: &Path, dir: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("serve.log"))
        .expect("log file");
    Command::new(bin())
        .args(["serve", "--config"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start delineate serve")
}

/// dcmtk's storescp as a planning system: receives into `dir`.
pub struct StoreScp {
    pub child: Child,
    pub port: u16,
    pub dir: PathBuf,
}

impl StoreScp {
    pub fn start(ae: &str, dir: &Path) -> StoreScp {
        std::fs::create_dir_all(dir).expect("mkdir");
        let port = free_port();
        let child = Command::new("storescp")
            .args(["-aet", ae, "-od"])
            .arg(dir)
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("storescp (dcmtk)");
        std::thread::sleep(Duration::from_millis(300));
        StoreScp {
            child,
            port,
            dir: dir.to_path_buf(),
        }
    }

    pub fn received(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map(|r| r.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }
}

impl Drop for StoreScp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Copies of `n` files of a series rewritten by pydicom as another series
/// with `modality`/`sop_class` (new UIDs): a CT, a localiser, ...
pub fn rewrite_series(
    src: &Path,
    out: &Path,
    n: usize,
    modality: &str,
    sop_class: &str,
    description: &str,
) {
    py(&format!(
        r#"
from pydicom.uid import generate_uid
src = sorted(os.path.join({src:?}, f) for f in os.listdir({src:?}))[:{n}]
os.makedirs({out:?}, exist_ok=True)
series = generate_uid()
for i, f in enumerate(src):
    d = pydicom.dcmread(f)
    d.Modality = {modality:?}; d.SOPClassUID = {sop_class:?}; d.file_meta.MediaStorageSOPClassUID = {sop_class:?}
    d.SeriesInstanceUID = series; d.SeriesDescription = {description:?}
    d.SOPInstanceUID = generate_uid(); d.file_meta.MediaStorageSOPInstanceUID = d.SOPInstanceUID
    d.save_as(os.path.join({out:?}, f"{{i:04d}}.dcm"))
print(json.dumps({{"series": series}}))
"#,
        src = s(src),
        out = s(out),
    ));
}
