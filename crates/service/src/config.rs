//! `delineate.toml`: what the service listens on, who may send, where
//! results go, which series it processes. Every field is checked at start,
//! so a typo stops the service with the file and the field named instead of
//! surfacing at the first study.

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use crate::routing::{Action, Decision, Presence, RouteRule, SeriesFacts};
use crate::Error;

/// DICOM AE titles are at most 16 characters (PS3.5 Table 6.2-1, VR AE).
pub const AE_TITLE_MAX: usize = 16;
/// A bearer token shorter than this is refused: it could be guessed.
pub const TOKEN_MIN_CHARS: usize = 16;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub node: Node,
    pub http: Http,
    pub storage: Storage,
    #[serde(default)]
    pub worker: Worker,
    #[serde(default)]
    pub delivery: Delivery,
    #[serde(default, rename = "destination")]
    pub destinations: Vec<Destination>,
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteRule>,
    /// What happens to a series no rule matches.
    #[serde(default = "default_action")]
    pub default_action: Action,
}

/// The DICOM node (SCP and SCU).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// Our AE title; associations must call it.
    pub ae_title: String,
    #[serde(default = "default_dicom_bind")]
    pub bind: String,
    pub port: u16,
    /// Calling AE titles allowed to associate; anyone else is rejected at
    /// association (A-ASSOCIATE-RJ, calling AE title not recognised).
    pub allowed_aes: Vec<String>,
    /// Seconds without a new instance after which a series is complete
    /// (routers use 5–30 s; a slow sender needs more).
    #[serde(default = "default_quiet")]
    pub quiet_period_s: f64,
    /// Seconds a series whose slice positions show a gap (or fewer images
    /// than Images in Acquisition says) waits for the missing slices after
    /// its last instance; then it is refused as incomplete, never
    /// contoured as a slab.
    #[serde(default = "default_incomplete_wait")]
    pub incomplete_wait_s: f64,
    /// Associations served at once; more are refused (transient).
    #[serde(default = "default_max_associations")]
    pub max_associations: usize,
    /// Associations open (or waiting for a slot) at once from one address;
    /// more are refused at once with an A-ASSOCIATE-RJ (transient, local
    /// limit exceeded), so that one host's connections cannot take every
    /// slot from the others.
    #[serde(default = "default_max_per_address")]
    pub max_associations_per_address: usize,
    /// Per address range (CIDR), a limit other than
    /// `max_associations_per_address` for each address in it (the
    /// narrowest range that holds an address applies), e.g. a router that
    /// sends many studies at once: `{ "10.1.2.40" = 16 }`.
    #[serde(default)]
    pub max_associations_per_range: std::collections::BTreeMap<String, usize>,
    /// Seconds from connect within which the whole A-ASSOCIATE-RQ must
    /// arrive (dcmtk's ARTIM timer); a peer that connects and stays silent
    /// gives its slot back after this long.
    #[serde(default = "default_artim")]
    pub association_request_timeout_s: f64,
    /// Seconds a peer may stay silent inside an association.
    #[serde(default = "default_timeout")]
    pub timeout_s: f64,
    /// Largest PDU we accept (bytes).
    #[serde(default = "default_max_pdu")]
    pub max_pdu: u32,
    /// Largest instance (MiB): an Enhanced MR of a whole series fits.
    #[serde(default = "default_max_instance_mib")]
    pub max_instance_mib: u64,
    /// Bytes one association may send in all (MiB); then it is aborted.
    #[serde(default = "default_max_association_mib")]
    pub max_association_mib: u64,
    /// DICOM TLS (PS3.15 B.1) on this port, with `tls_cert` and `tls_key`
    /// (PEM); `tls_client_ca` makes it require client certificates signed
    /// by that CA. The plain `port` stays open unless `plain = false`.
    pub tls_port: Option<u16>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_client_ca: Option<PathBuf>,
    /// Serve unencrypted DICOM on `port` (set false to allow TLS only).
    #[serde(default = "yes")]
    pub plain: bool,
    /// Per calling AE title, the addresses it may connect from (CIDR, e.g.
    /// `PACS = ["10.1.2.0/24"]`); an AE title not listed may connect from
    /// anywhere (its title must still be in `allowed_aes`).
    #[serde(default)]
    pub allowed_ips: std::collections::BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Http {
    #[serde(default = "default_http_bind")]
    pub bind: String,
    /// Accounts (`delineate user add`): each person's own token and role.
    pub users_file: Option<PathBuf>,
    /// A shared bearer token for automation (acts as an operator named
    /// `shared-token`: uploads, never reviews), or…
    pub token: Option<String>,
    /// …a file holding it (relative to the config file).
    pub token_file: Option<PathBuf>,
    /// Largest upload to POST /v1/studies, in MiB (streamed to disk).
    #[serde(default = "default_upload_mib")]
    pub max_upload_mib: u64,
    /// Uploads received at once; more get 503 with Retry-After.
    #[serde(default = "default_concurrent_uploads")]
    pub max_concurrent_uploads: usize,
    /// Entries in an uploaded zip.
    #[serde(default = "default_zip_entries")]
    pub max_zip_entries: usize,
    /// What an uploaded zip may expand to, in MiB…
    #[serde(default = "default_unzipped_mib")]
    pub max_unzipped_mib: u64,
    /// …and at most this many times its own size.
    #[serde(default = "default_zip_ratio")]
    pub max_zip_ratio: u64,
    /// HTTPS: certificate chain and private key (PEM). Without them the API
    /// is plain HTTP, which the start-up line says.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Storage {
    /// Received instances, jobs, results, the queue database and the audit
    /// log (relative to the config file). Created 0700; everything under it
    /// is the service user's only.
    pub dir: PathBuf,
    /// Days after which received series and results are deleted (jobs
    /// that finished, failed or were superseded; each purge in the audit
    /// log). None: kept until deleted by hand.
    pub retention_days: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Worker {
    /// Inference jobs run at once (each is its own `delineate segment`
    /// process, so a crash in one job cannot take the node down).
    #[serde(default = "one")]
    pub workers: usize,
    /// Model file; default: the built-in model.
    pub model: Option<PathBuf>,
    /// Probability threshold; default: the model's operating threshold.
    pub threshold: Option<f32>,
    /// Mirror test-time augmentation (8× slower).
    #[serde(default)]
    pub tta: bool,
    /// Extra arguments for `delineate segment` (for example
    /// `["--allow-irregular-spacing"]`).
    #[serde(default)]
    pub segment_args: Vec<String>,
    /// The built-in model is a research model (trained on synthetic data):
    /// its unreviewed drafts go to an `on_result = "immediate"` destination
    /// only when this is true.
    #[serde(default)]
    pub allow_research_model: bool,
    /// Runs of a job that may crash (killed by a signal: out of memory, a
    /// fault; or the service stopped under it) before the job is `failed`
    /// for good. A clean error fails it at once.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Address-space limit of each `delineate segment` process (MiB), so
    /// that one huge or hostile input cannot take the machine's memory.
    pub memory_limit_mib: Option<u64>,
}

impl Default for Worker {
    fn default() -> Self {
        Self {
            workers: 1,
            model: None,
            threshold: None,
            tta: false,
            segment_args: Vec::new(),
            allow_research_model: false,
            max_attempts: default_max_attempts(),
            memory_limit_mib: None,
        }
    }
}

/// C-STORE of results: retry with exponential backoff.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delivery {
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// First wait after a failure; doubles each time, at most `backoff_max_s`.
    #[serde(default = "default_backoff")]
    pub backoff_s: f64,
    #[serde(default = "default_backoff_max")]
    pub backoff_max_s: f64,
}

impl Default for Delivery {
    fn default() -> Self {
        Self {
            attempts: default_attempts(),
            backoff_s: default_backoff(),
            backoff_max_s: default_backoff_max(),
        }
    }
}

/// A C-STORE SCP that receives the RT Structure Sets (planning system, PACS).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    pub name: String,
    pub ae_title: String,
    pub host: String,
    pub port: u16,
    /// When results go here: `after_review` (default: only what a person
    /// accepted on the review page) or `immediate` (every AI draft as soon
    /// as it is computed, labelled as an unreviewed draft).
    #[serde(default)]
    pub on_result: OnResult,
}

/// When a destination receives results.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnResult {
    Immediate,
    #[default]
    AfterReview,
}

fn default_action() -> Action {
    Action::Skip
}
fn default_dicom_bind() -> String {
    "0.0.0.0".into()
}
fn default_http_bind() -> String {
    "127.0.0.1:8080".into()
}
fn default_quiet() -> f64 {
    10.0
}
fn default_max_attempts() -> u32 {
    3
}
fn default_incomplete_wait() -> f64 {
    300.0
}
fn default_max_instance_mib() -> u64 {
    1024
}
fn default_max_association_mib() -> u64 {
    16 * 1024
}
fn default_max_associations() -> usize {
    32
}
fn default_max_per_address() -> usize {
    4
}
fn default_artim() -> f64 {
    10.0
}
fn default_timeout() -> f64 {
    60.0
}
fn default_max_pdu() -> u32 {
    // dcmtk's default receive limit; what PACS send in practice.
    16_384 * 4
}
fn default_upload_mib() -> u64 {
    1024
}
fn default_concurrent_uploads() -> usize {
    2
}
fn default_zip_entries() -> usize {
    20_000
}
fn default_unzipped_mib() -> u64 {
    4096
}
fn default_zip_ratio() -> u64 {
    20
}
fn yes() -> bool {
    true
}
fn one() -> usize {
    1
}
fn default_attempts() -> u32 {
    6
}
fn default_backoff() -> f64 {
    2.0
}
fn default_backoff_max() -> f64 {
    300.0
}

impl Node {
    /// Associations `ip` may have open at once: the limit of the narrowest
    /// range in `max_associations_per_range` that holds it, else
    /// `max_associations_per_address`.
    pub fn limit_for(&self, ip: std::net::IpAddr) -> usize {
        self.max_associations_per_range
            .iter()
            .filter_map(|(r, &n)| crate::cidr::Cidr::parse(r).ok().map(|c| (c, n)))
            .filter(|(c, _)| c.contains(ip))
            .max_by_key(|(c, _)| c.bits())
            .map_or(self.max_associations_per_address, |(_, n)| n)
    }
}

impl Config {
    /// Reads and checks `path`; relative paths become relative to its folder.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::config(path, format!("cannot read: {e}")))?;
        let mut c: Config =
            toml::from_str(&text).map_err(|e| Error::config(path, e.to_string()))?;
        // Relative paths are taken from the config file's folder, made
        // absolute so that worker processes and logs name them exactly.
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
        let base = match parent {
            Some(p) => std::path::absolute(p),
            None => std::env::current_dir(),
        }
        .map_err(|e| Error::config(path, format!("cannot resolve its folder: {e}")))?;
        c.storage.dir = base.join(&c.storage.dir);
        for p in [
            &mut c.node.tls_cert,
            &mut c.node.tls_key,
            &mut c.node.tls_client_ca,
            &mut c.http.token_file,
            &mut c.http.users_file,
            &mut c.http.tls_cert,
            &mut c.http.tls_key,
        ]
        .into_iter()
        .flatten()
        {
            *p = base.join(&*p);
        }
        if let Some(m) = &c.worker.model {
            c.worker.model = Some(base.join(m));
        }
        c.check(path)?;
        Ok(c)
    }

    fn check(&mut self, path: &Path) -> Result<(), Error> {
        let bad = |m: String| Err(Error::config(path, m));
        for (what, ae) in std::iter::once(("node.ae_title", &self.node.ae_title))
            .chain(
                self.node
                    .allowed_aes
                    .iter()
                    .map(|a| ("node.allowed_aes", a)),
            )
            .chain(
                self.destinations
                    .iter()
                    .map(|d| ("destination.ae_title", &d.ae_title)),
            )
        {
            if ae.trim().is_empty() || ae.len() > AE_TITLE_MAX || ae.contains('\\') {
                return bad(format!(
                    "{what} {ae:?}: an AE title has 1 to {AE_TITLE_MAX} characters and no backslash"
                ));
            }
        }
        if self.node.allowed_aes.is_empty() {
            return bad("node.allowed_aes is empty: no one could send studies".into());
        }
        if !self.node.quiet_period_s.is_finite() || self.node.quiet_period_s < 0.0 {
            return bad("node.quiet_period_s must be ≥ 0".into());
        }
        if self.node.max_associations == 0 || self.worker.workers == 0 {
            return bad("node.max_associations and worker.workers must be ≥ 1".into());
        }
        if self.worker.max_attempts == 0 {
            return bad("worker.max_attempts must be ≥ 1".into());
        }
        if self.worker.memory_limit_mib.is_some_and(|m| m < 256) {
            return bad(
                "worker.memory_limit_mib must be ≥ 256 (a 1 mm brain needs about 300 MiB)".into(),
            );
        }
        if self
            .storage
            .retention_days
            .is_some_and(|d| !d.is_finite() || d <= 0.0)
        {
            return bad("storage.retention_days must be > 0".into());
        }
        if !self.node.incomplete_wait_s.is_finite() || self.node.incomplete_wait_s < 0.0 {
            return bad("node.incomplete_wait_s must be ≥ 0".into());
        }
        if self.research_model() && !self.worker.allow_research_model {
            if let Some(d) = self
                .destinations
                .iter()
                .find(|d| d.on_result == OnResult::Immediate)
            {
                return bad(format!(
                    "destination {:?}: on_result = \"immediate\" would send unreviewed drafts of the built-in \
                     research model; use on_result = \"after_review\", a model of your own (worker.model), \
                     or say so explicitly with worker.allow_research_model = true",
                    d.name
                ));
            }
        }
        if !self.node.timeout_s.is_finite() || self.node.timeout_s <= 0.0 {
            return bad("node.timeout_s must be > 0".into());
        }
        let artim = self.node.association_request_timeout_s;
        if !artim.is_finite() || artim <= 0.0 {
            return bad("node.association_request_timeout_s must be > 0".into());
        }
        if self.node.max_associations_per_address == 0 {
            return bad("node.max_associations_per_address must be ≥ 1".into());
        }
        for (range, &n) in &self.node.max_associations_per_range {
            if let Err(e) = crate::cidr::Cidr::parse(range) {
                return bad(format!("node.max_associations_per_range: {e}"));
            }
            if n == 0 {
                return bad(format!(
                    "node.max_associations_per_range {range:?}: must be ≥ 1"
                ));
            }
        }
        if self.node.max_pdu < 4096 {
            return bad("node.max_pdu must be ≥ 4096 bytes".into());
        }
        if self.node.max_instance_mib == 0
            || self.node.max_association_mib < self.node.max_instance_mib
        {
            return bad(
                "node.max_instance_mib must be ≥ 1 and node.max_association_mib ≥ it".into(),
            );
        }
        if self.node.tls_port.is_some()
            != (self.node.tls_cert.is_some() && self.node.tls_key.is_some())
            || self.node.tls_cert.is_some() != self.node.tls_key.is_some()
        {
            return bad("node: tls_port, tls_cert and tls_key go together".into());
        }
        if !self.node.plain && self.node.tls_port.is_none() {
            return bad("node.plain = false needs tls_port (else nothing would listen)".into());
        }
        for (ae, nets) in &self.node.allowed_ips {
            if !self.node.allowed_aes.contains(ae) {
                return bad(format!(
                    "node.allowed_ips: {ae:?} is not in node.allowed_aes"
                ));
            }
            for n in nets {
                crate::cidr::Cidr::parse(n)
                    .map_err(|e| Error::config(path, format!("node.allowed_ips.{ae}: {e}")))?;
            }
        }
        if let Some(t) = self.worker.threshold {
            if !(0.0..1.0).contains(&t) {
                return bad("worker.threshold must lie in [0, 1)".into());
            }
        }
        if self.delivery.attempts == 0
            || !self.delivery.backoff_s.is_finite()
            || self.delivery.backoff_s < 0.0
        {
            return bad("delivery.attempts must be ≥ 1 and delivery.backoff_s ≥ 0".into());
        }
        let mut names = std::collections::HashSet::new();
        for d in &self.destinations {
            if !names.insert(d.name.clone()) {
                return bad(format!("destination {:?} is named twice", d.name));
            }
        }
        for (n, r) in self.routes.iter_mut().enumerate() {
            r.compile()
                .map_err(|e| Error::config(path, format!("route {}: {e}", n + 1)))?;
        }
        let token = self.token(path)?;
        if let Some(t) = &token {
            if t.chars().count() < TOKEN_MIN_CHARS {
                return bad(format!(
                    "http token: at least {TOKEN_MIN_CHARS} characters (try `openssl rand -hex 32`)"
                ));
            }
        }
        if token.is_none() && self.http.users_file.is_none() {
            return bad(
                "http: give users_file (accounts: `delineate user add`), a token, or both".into(),
            );
        }
        self.http.token = token;
        self.http.token_file = None;
        if self.http.tls_cert.is_some() != self.http.tls_key.is_some() {
            return bad("http: give both tls_cert and tls_key, or neither".into());
        }
        if self.http.max_concurrent_uploads == 0
            || self.http.max_zip_entries == 0
            || self.http.max_zip_ratio == 0
        {
            return bad(
                "http: max_concurrent_uploads, max_zip_entries and max_zip_ratio must be ≥ 1"
                    .into(),
            );
        }
        Ok(())
    }

    fn token(&self, path: &Path) -> Result<Option<String>, Error> {
        match (&self.http.token, &self.http.token_file) {
            (Some(t), None) => Ok(Some(t.trim().to_string())),
            (None, Some(f)) => std::fs::read_to_string(f)
                .map(|t| Some(t.trim().to_string()))
                .map_err(|e| Error::config(path, format!("http.token_file {}: {e}", f.display()))),
            (None, None) => Ok(None),
            _ => Err(Error::config(
                path,
                "http: give at most one of token and token_file",
            )),
        }
    }

    /// How HTTP requests are authenticated.
    pub fn auth(&self) -> Result<crate::users::Auth, Error> {
        crate::users::Auth::new(self.http.token.clone(), self.http.users_file.clone())
    }

    /// True when jobs run the built-in research model.
    pub fn research_model(&self) -> bool {
        self.worker.model.is_none()
    }

    /// Destinations that get every AI draft as soon as it is computed.
    pub fn immediate_destinations(&self) -> impl Iterator<Item = &Destination> {
        self.destinations
            .iter()
            .filter(|d| d.on_result == OnResult::Immediate)
    }

    /// True when some destination waits for a review.
    pub fn review_required(&self) -> bool {
        self.destinations
            .iter()
            .any(|d| d.on_result == OnResult::AfterReview)
    }
}

impl Config {
    /// First matching rule decides; else `default_action`.
    pub fn route(&self, s: &SeriesFacts) -> Decision {
        crate::routing::route(&self.routes, self.default_action, s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, Error> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.toml");
        std::fs::write(&p, text).unwrap();
        Config::load(&p)
    }

    const BASE: &str = r#"
[node]
ae_title = "DELINEATE"
port = 11112
allowed_aes = ["PACS"]
[http]
token = "0123456789abcdef0123"
[storage]
dir = "data"
"#;

    #[test]
    fn routes_first_match_and_default() {
        let c = load(&format!(
            "{BASE}\n[[route]]\naction = \"skip\"\nseries_description = \"(?i)localizer\"\n[[route]]\naction = \"process\"\nmodality = \"MR\"\n"
        ))
        .unwrap();
        let acq = delineate_dicom::Acquisition::default();
        let f = |m, d| {
            c.route(&SeriesFacts {
                modality: m,
                description: d,
                calling_ae: "PACS",
                acquisition: &acq,
            })
            .action
        };
        assert_eq!(f("MR", "T1 post"), Action::Process);
        assert_eq!(f("MR", "3-plane LOCALIZER"), Action::Skip);
        assert_eq!(f("CT", "head"), Action::Skip);
    }

    #[test]
    fn bad_configs_name_the_field() {
        let e = load(&BASE.replace("0123456789abcdef0123", "short")).unwrap_err();
        assert!(e.to_string().contains("at least 16"), "{e}");
        let e = load(&BASE.replace("\"PACS\"", "\"A_TITLE_LONGER_THAN_16\"")).unwrap_err();
        assert!(e.to_string().contains("node.allowed_aes"), "{e}");
        let e = load(&format!(
            "{BASE}\n[[route]]\naction = \"skip\"\nseries_description = \"(\"\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("route 1"), "{e}");
        let e = load(&BASE.replace("port", "prot")).unwrap_err();
        assert!(e.to_string().contains("d.toml"), "{e}");
    }
}
