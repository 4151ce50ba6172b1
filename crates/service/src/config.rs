//! `delineate.toml`: what the service listens on, who may send, where
//! results go, which series it processes. Every field is checked at start,
//! so a typo stops the service with the file and the field named instead of
//! surfacing at the first study.

use std::path::{Path, PathBuf};

use regex::Regex;
use serde::Deserialize;

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
    /// Associations served at once; more are refused (transient).
    #[serde(default = "default_max_associations")]
    pub max_associations: usize,
    /// Seconds a peer may stay silent inside an association.
    #[serde(default = "default_timeout")]
    pub timeout_s: f64,
    /// Largest PDU we accept (bytes).
    #[serde(default = "default_max_pdu")]
    pub max_pdu: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Http {
    #[serde(default = "default_http_bind")]
    pub bind: String,
    /// The bearer token, or…
    pub token: Option<String>,
    /// …a file holding it (relative to the config file).
    pub token_file: Option<PathBuf>,
    /// Largest upload to POST /v1/studies, in MiB.
    #[serde(default = "default_upload_mib")]
    pub max_upload_mib: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Storage {
    /// Received instances, jobs, results, the queue database and the audit
    /// log (relative to the config file).
    pub dir: PathBuf,
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
}

impl Default for Worker {
    fn default() -> Self {
        Self {
            workers: 1,
            model: None,
            threshold: None,
            tta: false,
            segment_args: Vec::new(),
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
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Process,
    Skip,
}

/// One routing rule: every field given must match; the first rule that
/// matches decides.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRule {
    pub action: Action,
    /// Modality, exactly (MR, CT, ...).
    pub modality: Option<String>,
    /// A regular expression searched in Series Description (`(?i)` for
    /// case-insensitive).
    pub series_description: Option<String>,
    /// The sender's AE title, exactly.
    pub calling_ae: Option<String>,
    #[serde(skip)]
    pub description_re: Option<Regex>,
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
fn default_max_associations() -> usize {
    32
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
        if let Some(f) = &c.http.token_file {
            c.http.token_file = Some(base.join(f));
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
        if !self.node.timeout_s.is_finite() || self.node.timeout_s <= 0.0 {
            return bad("node.timeout_s must be > 0".into());
        }
        if self.node.max_pdu < 4096 {
            return bad("node.max_pdu must be ≥ 4096 bytes".into());
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
            if let Some(re) = &r.series_description {
                r.description_re = Some(Regex::new(re).map_err(|e| {
                    Error::config(path, format!("route {}: series_description: {e}", n + 1))
                })?);
            }
        }
        let token = self.token(path)?;
        if token.chars().count() < TOKEN_MIN_CHARS {
            return bad(format!(
                "http token: at least {TOKEN_MIN_CHARS} characters (try `openssl rand -hex 32`)"
            ));
        }
        self.http.token = Some(token);
        self.http.token_file = None;
        Ok(())
    }

    fn token(&self, path: &Path) -> Result<String, Error> {
        match (&self.http.token, &self.http.token_file) {
            (Some(t), None) => Ok(t.trim().to_string()),
            (None, Some(f)) => std::fs::read_to_string(f)
                .map(|t| t.trim().to_string())
                .map_err(|e| Error::config(path, format!("http.token_file {}: {e}", f.display()))),
            _ => Err(Error::config(
                path,
                "http: give exactly one of token and token_file",
            )),
        }
    }

    /// The bearer token (checked at load).
    pub fn bearer(&self) -> &str {
        self.http.token.as_deref().unwrap_or_default()
    }
}

/// What routing decided, and why (for the audit log).
pub struct Decision {
    pub action: Action,
    pub reason: String,
}

/// The attributes routing looks at.
pub struct SeriesFacts<'a> {
    pub modality: &'a str,
    pub description: &'a str,
    pub calling_ae: &'a str,
}

impl Config {
    /// First matching rule decides; else `default_action`.
    pub fn route(&self, s: &SeriesFacts) -> Decision {
        for (n, r) in self.routes.iter().enumerate() {
            let m = r.modality.as_deref().is_none_or(|m| m == s.modality)
                && r.calling_ae.as_deref().is_none_or(|a| a == s.calling_ae)
                && r.description_re
                    .as_ref()
                    .is_none_or(|re| re.is_match(s.description));
            if m {
                return Decision {
                    action: r.action,
                    reason: format!("route {}", n + 1),
                };
            }
        }
        Decision {
            action: self.default_action,
            reason: "default_action".into(),
        }
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
        let f = |m, d| {
            c.route(&SeriesFacts {
                modality: m,
                description: d,
                calling_ae: "PACS",
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
