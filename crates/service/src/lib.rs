//! The clinical DICOM service: receive studies, return RT Structure Sets,
//! lose nothing.
//!
//! One process (`delineate serve --config delineate.toml`) holds:
//! - a DICOM node ([`scp`]): C-ECHO and C-STORE from AE titles on an
//!   allow-list; instances are fsynced before success is answered;
//! - a durable queue in SQLite ([`queue`], [`batches`], [`deliveries`]):
//!   routing rules that know MR sequences choose what to process
//!   ([`routing`]), a series is processed whole (quiet period and slice
//!   geometry, [`completeness`]; late instances supersede), jobs survive
//!   `kill -9`;
//! - inference workers ([`worker`]): each job is one `delineate segment`
//!   process, so a failure in a job cannot take the node down;
//! - result delivery by C-STORE with retry and backoff ([`scu`]), per
//!   destination immediately (unreviewed AI drafts, labelled so) or only
//!   after a person's review;
//! - an HTTP API with a bearer token ([`http`]), Prometheus metrics, and an
//!   audit log with identifiers only ([`audit`]);
//! - the review page ([`review`]): accept or reject proposed lesions and
//!   send the accepted ones on (also `delineate review CASE_DIR`).
//!
//! Design and operation: docs/service.md.

pub mod admission;
pub mod audit;
pub mod batches;
pub mod cidr;
pub mod completeness;
pub mod config;
pub mod deliveries;
pub mod dimse;
pub mod durable;
pub mod http;
pub mod job_state;
pub mod queue;
pub mod review;
pub mod review_export;
pub mod review_http;
pub mod routing;
pub mod scp;
pub mod scu;
pub mod tls;
pub mod upload;
pub mod users;
pub mod worker;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

pub use config::Config;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {message}", path.display())]
    Config { path: PathBuf, message: String },
    /// An operating-system error while doing `action` to `path`; the
    /// cause is the error's source (printed once, by whoever prints the
    /// chain).
    #[error("{}: cannot {action}", path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// `path` was written and renamed into place, but its folder could not
    /// be synced: the new content is there, its survival of a power cut is
    /// not certain.
    #[error("{}: written, but cannot sync its folder", path.display())]
    NotSynced {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("job queue: {0}")]
    Queue(String),
    /// A port could not be opened, or a server stopped on an I/O error.
    #[error("{address}: cannot {action}")]
    Net {
        address: String,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
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
    pub fn io(path: &Path, action: &'static str, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            action,
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
            std::fs::create_dir_all(p).map_err(|e| Error::io(p, "create the folder", e))?;
            // Patient data: the service's user only.
            durable::private(p, true)?;
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
    pub series_incomplete: AtomicU64,
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
    /// Who may use the HTTP API and the review page.
    pub auth: Arc<users::Auth>,
    /// Uploads being received now.
    pub uploads_running: AtomicUsize,
    pub stop: AtomicBool,
    /// Child processes running now (killed on shutdown).
    pub children: Mutex<Vec<u32>>,
}

impl Service {
    pub fn new(config: Config, exe: PathBuf) -> Result<Arc<Self>, Error> {
        let dirs = Dirs::create(&config.storage.dir)?;
        let queue = queue::Queue::open(&dirs.root.join("queue.sqlite"))?;
        let audit = Arc::new(audit::Audit::open(&dirs.root.join("audit.jsonl"))?);
        let auth = Arc::new(config.auth()?);
        Ok(Arc::new(Service {
            config,
            queue,
            audit,
            dirs,
            exe,
            counters: Counters::default(),
            auth,
            uploads_running: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            children: Mutex::new(Vec::new()),
        }))
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// The file-mode creation mask of every service process: whatever it, the
/// SQLite library (the queue's `-wal` and `-shm` files) or a `delineate
/// segment` worker it starts creates is readable by the service's account
/// only. Set before any file is opened.
pub const SERVICE_UMASK: u32 = 0o077;

/// Sets [`SERVICE_UMASK`] for this process and the processes it starts.
pub fn private_umask() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(SERVICE_UMASK));
}

/// Runs the service until SIGINT/SIGTERM. `exe` is the `delineate` binary.
pub fn run(config_path: &Path, exe: PathBuf) -> Result<(), Error> {
    private_umask();
    let config = Config::load(config_path)?;
    let svc = Service::new(config, exe)?;
    worker::recover(&svc)?;
    let n = &svc.config.node;
    let dicom = if n.plain {
        Some(
            std::net::TcpListener::bind((n.bind.as_str(), n.port)).map_err(|source| {
                Error::Net {
                    address: format!("DICOM port {}:{}", n.bind, n.port),
                    action: "listen",
                    source,
                }
            })?,
        )
    } else {
        None
    };
    let dicom_tls = match (n.tls_port, &n.tls_cert, &n.tls_key) {
        (Some(port), Some(cert), Some(key)) => Some((
            std::net::TcpListener::bind((n.bind.as_str(), port)).map_err(|source| Error::Net {
                address: format!("DICOM TLS port {}:{port}", n.bind),
                action: "listen",
                source,
            })?,
            tls::server_config(cert, key, n.tls_client_ca.as_deref(), false)?,
        )),
        _ => None,
    };
    let https = match (&svc.config.http.tls_cert, &svc.config.http.tls_key) {
        (Some(cert), Some(key)) => Some(tls::server_config(cert, key, None, true)?),
        _ => None,
    };
    let rt = http_runtime()?;
    let http = rt
        .block_on(tokio::net::TcpListener::bind(&svc.config.http.bind))
        .map_err(|source| Error::Net {
            address: format!("HTTP {}", svc.config.http.bind),
            action: "listen",
            source,
        })?;
    let mut threads = Vec::new();
    if let Some(l) = dicom {
        let s = svc.clone();
        threads.push(std::thread::spawn(move || scp::accept_loop(s, l, None)));
    }
    if let Some((l, cfg)) = dicom_tls {
        let s = svc.clone();
        threads.push(std::thread::spawn(move || {
            scp::accept_loop(s, l, Some(cfg))
        }));
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
    {
        let s = svc.clone();
        threads.push(std::thread::spawn(move || worker::purge_loop(s)));
    }
    let mut dicom_on = Vec::new();
    if n.plain {
        dicom_on.push(format!("{}:{} (plain, unencrypted)", n.bind, n.port));
    }
    if let Some(p) = n.tls_port {
        dicom_on.push(format!(
            "{}:{p} (TLS{})",
            n.bind,
            if n.tls_client_ca.is_some() {
                ", client certificates required"
            } else {
                ""
            }
        ));
    }
    println!(
        "delineate serve: DICOM AE {} on {}; {} on {}; data in {}",
        n.ae_title,
        dicom_on.join(" and "),
        if https.is_some() {
            "HTTPS"
        } else {
            "HTTP (plain, unencrypted)"
        },
        svc.config.http.bind,
        svc.dirs.root.display()
    );
    for line in delivery_policy(&svc.config) {
        println!("{line}");
    }
    svc.audit.event(
        crate::audit::AuditEvent::ServiceStarted,
        serde_json::json!({"pid": std::process::id(),
            "research_model": svc.config.research_model(),
            "immediate": svc.config.immediate_destinations().map(|d| d.name.clone()).collect::<Vec<_>>()}),
    );
    match https {
        Some(cfg) => rt.block_on(tls::serve_https(
            http::router(svc.clone()),
            http,
            cfg,
            http::shutdown(),
        ))?,
        None => rt.block_on(http::serve(svc.clone(), http))?,
    }
    svc.stop.store(true, Ordering::Relaxed);
    worker::kill_children(&svc);
    svc.audit.event(
        crate::audit::AuditEvent::ServiceStopped,
        serde_json::json!({}),
    );
    Ok(())
}

/// What the service tells its operator at start-up about where results go.
pub fn delivery_policy(c: &Config) -> Vec<String> {
    let mut v = Vec::new();
    let model = match &c.worker.model {
        Some(m) => m.display().to_string(),
        None => "the built-in model (research use only)".into(),
    };
    v.push(format!("model: {model}"));
    for d in &c.destinations {
        v.push(format!(
            "destination {} ({}@{}:{}): {}",
            d.name,
            d.ae_title,
            d.host,
            d.port,
            match d.on_result {
                config::OnResult::Immediate =>
                    "every AI draft as soon as it is computed (labelled AI DRAFT, unreviewed)",
                config::OnResult::AfterReview => "only reviewed exports",
            }
        ));
    }
    if c.research_model() && c.immediate_destinations().next().is_some() {
        v.push(
            "WARNING: unreviewed drafts of a research model are sent immediately (worker.allow_research_model = true)"
                .into(),
        );
    }
    if c.destinations.is_empty() {
        v.push("no destination: results stay in the HTTP API and on the review page".into());
    }
    v
}

/// `delineate review`: serves the review page of one `delineate segment`
/// output folder on 127.0.0.1 until Ctrl-C. The token is made here and
/// printed in the link.
pub fn run_review(
    out: &Path,
    image: Option<&Path>,
    port: u16,
    reviewer: &str,
) -> Result<(), Error> {
    private_umask();
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "case".into());
    let case = review::Case::load(&name, out, image, None).map_err(Error::Other)?;
    let audit = Arc::new(audit::Audit::open(&out.join("review-audit.jsonl"))?);
    let token = queue::new_id() + &queue::new_id();
    let app = Arc::new(review::ReviewApp {
        auth: Arc::new(users::Auth::single(token.clone(), reviewer)),
        cases: review::Cases::One(Arc::new(case)),
        audit,
        exports: Arc::new(review_export::FileLog::new(out)),
        service: None,
    });
    let rt = http_runtime()?;
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(("127.0.0.1", port)))
        .map_err(|source| Error::Net {
            address: format!("127.0.0.1:{port}"),
            action: "listen",
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| Error::Net {
        address: format!("127.0.0.1:{port}"),
        action: "read the bound address",
        source,
    })?;
    // A closed stdout (a caller that read the link and left) is no reason
    // to stop serving.
    let mut stdout = std::io::stdout();
    let _ = std::io::Write::write_all(
        &mut stdout,
        format!(
            "review page: http://{addr}/review/case/#token={}\n(Ctrl-C to stop; decisions by {reviewer} go to {}/review.json)\n",
            token,
            out.display()
        )
        .as_bytes(),
    );
    let _ = std::io::Write::flush(&mut stdout);
    rt.block_on(review_http::serve_one(app, listener))
}

/// The tokio runtime behind the HTTP servers: two threads are plenty, the
/// heavy work runs on blocking threads and in worker processes.
fn http_runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|source| Error::Net {
            address: "the HTTP runtime".into(),
            action: "start",
            source,
        })
}
