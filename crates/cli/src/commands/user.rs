//! `delineate user` and `delineate audit`: accounts of the service and the
//! audit log's integrity.

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use delineate_service::users::{Role, Users};

/// Accounts of `delineate serve` (the file named by http.users_file).
///
/// Each person gets a token of their own and a role: viewer (read jobs,
/// results and the review page), reviewer (also decide on lesions and
/// export reviewed contours: decisions and exports name the account), or
/// operator (also upload studies). The file stores a salted SHA-256 of each
/// token, never the token; the service reads it again when it changes.
#[derive(clap::Subcommand)]
pub enum UserCommand {
    /// Add an account and print its token (shown once).
    Add {
        /// The person's name, as decisions and exports will record it.
        name: String,
        #[arg(long, value_parser = ["viewer", "reviewer", "operator"])]
        role: String,
        /// The accounts file (created with mode 0600).
        #[arg(long)]
        users: PathBuf,
    },
    /// List the accounts (name, role, created, revoked).
    List {
        #[arg(long)]
        users: PathBuf,
    },
    /// Revoke an account: its token stops working at once.
    Revoke {
        name: String,
        #[arg(long)]
        users: PathBuf,
    },
}

pub fn run(cmd: &UserCommand) -> Result<()> {
    match cmd {
        UserCommand::Add { name, role, users } => {
            let role: Role = role.parse().map_err(|e: String| anyhow!("--role: {e}"))?;
            let mut u = Users::load(users)?;
            let token = u.add(name, role)?;
            eprintln!(
                "added {name:?} ({role:?}) to {}; the token below is shown once: give it to {name} only",
                users.display()
            );
            println!("{token}");
        }
        UserCommand::List { users } => {
            let u = Users::load(users)?;
            for x in &u.list {
                println!(
                    "{:<24} {:<9} created {}{}",
                    x.name,
                    format!("{:?}", x.role).to_lowercase(),
                    x.created,
                    if x.revoked { "  REVOKED" } else { "" }
                );
            }
        }
        UserCommand::Revoke { name, users } => {
            let mut u = Users::load(users)?;
            u.revoke(name)?;
            println!("revoked {name:?} in {}", users.display());
        }
    }
    Ok(())
}

/// The audit log of `delineate serve`.
#[derive(clap::Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain of an audit log: every line names the SHA-256
    /// of the line before, so a changed, removed or inserted line breaks the
    /// chain where it happened. Prints the head hash: record it elsewhere
    /// to detect lines cut off at the end.
    Verify {
        /// The audit log (storage/audit.jsonl).
        file: PathBuf,
    },
}

pub fn run_audit(cmd: &AuditCommand) -> Result<()> {
    let AuditCommand::Verify { file } = cmd;
    let v = delineate_service::audit::verify(file).map_err(|e| anyhow!("{e}"))?;
    println!(
        "{}: {} lines, the chain is intact; head {}",
        file.display(),
        v.lines,
        v.head
    );
    Ok(())
}
