//! The clinical DICOM service: receive studies, return RT Structure Sets,
//! lose nothing.
//!
//! One process (`delineate serve --config delineate.toml`) holds:
//! - a DICOM node ([`scp`]): C-ECHO and C-STORE from AE titles on an
//!   allow-list; instances are fsynced before success is answered;
//! - a durable queue in SQLite ([`queue`]): series complete after a quiet
//!   period, routing rules choose what to process, jobs survive `kill -9`;
//! - inference workers ([`worker`]): each job is one `delineate segment`
//!   process, so a failure in a job cannot take the node down;
//! - result delivery by C-STORE with retry and backoff ([`scu`]);
//! - an HTTP API with a bearer token ([`http`]), Prometheus metrics, and an
//!   audit log with identifiers only ([`audit`]);
//! - the review page ([`review`]): accept or reject proposed lesions and
//!   send the accepted ones on (also `delineate review CASE_DIR`).
//!
//! Design and operation: docs/service.md.

pub mod audit;
pub mod config;
pub mod dimse;
pub mod durable;
pub mod http;
pub mod queue;
pub mod review;
pub mod review_http;
pub mod scp;
pub mod scu;
pub mod worker;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub use config::Config;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {message}", path.display())]
    Config { path: PathBuf, message: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("job queue: {0}")]
    Queue(String),
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn config(path: &Path, message: impl Into<String>) -> Self {
        Error::Config {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Folders under the storage directory.
pub struct Dirs {
    pub root: PathBuf,
    /// Incoming instances before they are recorded.
    pub spool: PathBuf,
    /// Received series, one folder per batch (a DICOM job's input).
    pub batches: PathBuf,
    /// One folder per job: uploaded input, outputs, the segment log.
    pub jobs: PathBuf,
}

impl Dirs {
    fn create(root: &Path) -> Result<Self, Error> {
        let d = Dirs {
            root: root.to_path_buf(),
            spool: root.join("spool"),
            batches: root.join("series"),
            jobs: root.join("jobs"),
        };
        for p in [&d.root, &d.spool, &d.batches, &d.jobs] {
            std::fs::create_dir_all(p).map_err(|e| Error::io(p, e))?;
        }
        // Spooled files were never acknowledged: the sender will resend.
        if let Ok(rd) = std::fs::read_dir(&d.spool) {
            for e in rd.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(d)
    }

    pub fn job(&self, id: &str) -> PathBuf {
        self.jobs.join(durable::safe_file_name(id))
    }
}

/// Counters that are not in the queue database (reset at start).
#[derive(Default)]
pub struct Counters {
    pub associations: AtomicU64,
    pub associations_rejected: AtomicU64,
    pub instances_stored: AtomicU64,
    pub instances_refused: AtomicU64,
    pub echoes: AtomicU64,
    pub uploads: AtomicU64,
    pub uploads_refused: AtomicU64,
    pub http_unauthorized: AtomicU64,
    pub series_skipped: AtomicU64,
    pub series_duplicate: AtomicU64,
    pub active_associations: AtomicU64,
}

impl Counters {
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// Everything the threads share.
pub struct Service {
    pub config: Config,
    pub queue: queue::Queue,
    pub audit: Arc<audit::Audit>,
    pub dirs: Dirs,
    /// The `delineate` executable that runs `segment` for each job.
    pub exe: PathBuf,
    pub counters: Counters,
    pub stop: AtomicBool,
    /// Child processes running now (killed on shutdown).
    pub children: Mutex<Vec<u32>>,
}

impl Service {
    pub fn new(config: Config, exe: PathBuf) -> Result<Arc<Self>, Error> {
        let dirs = Dirs::create(&config.storage.dir)?;
        let queue = queue::Queue::open(&dirs.root.join("queue.sqlite"))?;
        let audit = Arc::new(audit::Audit::open(&dirs.root.join("audit.jsonl"))?);
        Ok(Arc::new(Service {
            config,
            queue,
            audit,
            dirs,
            exe,
            counters: Counters::default(),
            stop: AtomicBool::new(false),
            children: Mutex::new(Vec::new()),
        }))
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// Runs the service until SIGINT/SIGTERM. `exe` is the `delineate` binary.
pub fn run(config_path: &Path, exe: PathBuf) -> anyhow::Result<()> {
    use anyhow::Context;
    let config = Config::load(config_path)?;
    let svc = Service::new(config, exe)?;
    worker::recover(&svc)?;
    let n = &svc.config.node;
    let dicom = std::net::TcpListener::bind((n.bind.as_str(), n.port))
        .with_context(|| format!("DICOM port {}:{}: cannot listen", n.bind, n.port))?;
    let rt = http_runtime()?;
    let http = rt
        .block_on(tokio::net::TcpListener::bind(&svc.config.http.bind))
        .with_context(|| format!("HTTP {}: cannot listen", svc.config.http.bind))?;
    let mut threads = Vec::new();
    {
        let s = svc.clone();
        threads.push(std::thread::spawn(move || scp::accept_loop(s, dicom)));
    }
    {
        let s = svc.clone();
        threads.push(std::thread::spawn(move || worker::completion_loop(s)));
    }
    for _ in 0..svc.config.worker.workers {
        let s = svc.clone();
        threads.push(std::thread::spawn(move || worker::inference_loop(s)));
    }
    {
        let s = svc.clone();
        threads.push(std::thread::spawn(move || worker::delivery_loop(s)));
    }
    println!(
        "delineate serve: DICOM AE {} on {}:{}, HTTP on {}, data in {}",
        n.ae_title,
        n.bind,
        n.port,
        svc.config.http.bind,
        svc.dirs.root.display()
    );
    svc.audit.event(
        "service_started",
        serde_json::json!({"pid": std::process::id()}),
    );
    rt.block_on(http::serve(svc.clone(), http))?;
    svc.stop.store(true, Ordering::Relaxed);
    worker::kill_children(&svc);
    svc.audit.event("service_stopped", serde_json::json!({}));
    Ok(())
}

/// `delineate review`: serves the review page of one `delineate segment`
/// output folder on 127.0.0.1 until Ctrl-C. The token is made here and
/// printed in the link.
pub fn run_review(out: &Path, image: Option<&Path>, port: u16) -> anyhow::Result<()> {
    use anyhow::Context;
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "case".into());
    let case = review::Case::load(&name, out, image, None).map_err(anyhow::Error::msg)?;
    let audit = Arc::new(audit::Audit::open(&out.join("review-audit.jsonl"))?);
    let app = Arc::new(review::ReviewApp {
        token: queue::new_id() + &queue::new_id(),
        cases: review::Cases::One(Arc::new(case)),
        audit,
        service: None,
    });
    let rt = http_runtime()?;
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(("127.0.0.1", port)))
        .with_context(|| format!("127.0.0.1:{port}: cannot listen"))?;
    let addr = listener.local_addr()?;
    // A closed stdout (a caller that read the link and left) is no reason
    // to stop serving.
    let mut stdout = std::io::stdout();
    let _ = std::io::Write::write_all(
        &mut stdout,
        format!(
            "review page: http://{addr}/review/case/#token={}\n(Ctrl-C to stop; decisions go to {}/review.json)\n",
            app.token,
            out.display()
        )
        .as_bytes(),
    );
    let _ = std::io::Write::flush(&mut stdout);
    rt.block_on(review_http::serve_one(app, listener))
}

/// The tokio runtime behind the HTTP servers: two threads are plenty, the
/// heavy work runs on blocking threads and in worker processes.
fn http_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the HTTP runtime")
}
