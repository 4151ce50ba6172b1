//! `delineate serve`: the clinical DICOM service (crates/service).

use std::path::PathBuf;

use anyhow::{Context, Result};

/// Run the DICOM node and HTTP API: receive studies, return RT Structure Sets.
///
/// Receives MR series by C-STORE from AE titles on the allow-list (or as a
/// zip/NIfTI over HTTP), waits for the series to be quiet, applies the
/// routing rules, runs `delineate segment` on each series (one job at a
/// time by default), and sends the RTSTRUCT by C-STORE to the configured
/// destinations with retry and backoff. Jobs live in an SQLite queue in the
/// storage folder and survive a crash or `kill -9`; a series sent again
/// with the same content is not processed twice. Every step is written to
/// the audit log (storage/audit.jsonl, identifiers only).
///
/// Write a starting configuration with `delineate serve --example-config
/// delineate.toml`; docs/service.md explains every field, the HTTP API and
/// how to send a study with dcmtk.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// The configuration file (TOML).
    #[arg(long, required_unless_present = "example_config")]
    pub config: Option<PathBuf>,
    /// Write an example configuration to this file and exit.
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    pub example_config: Option<PathBuf>,
}

/// The example configuration (also in docs/service.md).
pub const EXAMPLE: &str = include_str!("../../../../docs/delineate.example.toml");

pub fn run(a: &ServeArgs) -> Result<()> {
    if let Some(p) = &a.example_config {
        if p.exists() {
            anyhow::bail!("{}: exists; not overwritten", p.display());
        }
        delineate_imaging::atomic::write_atomically(p, ".toml", |_, mut f| {
            std::io::Write::write_all(&mut f, EXAMPLE.as_bytes()).map_err(|e| e.to_string())
        })?;
        println!(
            "wrote {}: set the token, allowed AE titles and destinations",
            p.display()
        );
        return Ok(());
    }
    let config = a.config.as_deref().context("--config is required")?;
    let exe = std::env::current_exe().context("cannot find the delineate executable")?;
    Ok(delineate_service::run(config, exe)?)
}
