//! # delineate
//!
//! The command-line front of delineate: one thin subcommand per job, each
//! calling into the library crates. Exit status 0 on success, 1 on any
//! error (the message names the file and the problem), 2 on bad usage.

mod commands;
mod input;
mod progress;

use std::process::ExitCode;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};

/// Brain-tumour contouring for stereotactic radiosurgery.
///
/// Reads contrast-enhanced T1 MRI as a DICOM series or NIfTI file, with the
/// geometry of every voxel in DICOM patient coordinates (LPS, mm).
#[derive(Parser)]
#[command(name = "delineate", version, about, long_about = None, propagate_version = true)]
struct Cli {
    /// Log what each step does (to stderr).
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Info(commands::info::InfoArgs),
    Convert(commands::convert::ConvertArgs),
    /// RT Structure Sets: write contours for a label map, read them back.
    #[command(subcommand)]
    Rtstruct(commands::rtstruct::RtstructCommand),
    /// DICOM image series: write a NIfTI image as an MR series.
    #[command(subcommand)]
    Dicom(commands::dicom::DicomCommand),
    Synth(commands::synth::SynthArgs),
    Evaluate(commands::evaluate::EvaluateArgs),
    Study(commands::study::StudyArgs),
    Train(commands::train::TrainArgs),
    Curves(commands::curves::CurvesArgs),
    Segment(commands::segment::SegmentArgs),
    Candidates(commands::candidates::CandidatesArgs),
    Export(commands::export::ExportArgs),
    /// Model files: add stages (the intracranial mask) to a lesion model.
    #[command(subcommand)]
    Model(commands::model::ModelCommand),
    Demo(commands::demo::DemoArgs),
    Serve(commands::serve::ServeArgs),
    Review(commands::review::ReviewArgs),
    /// Accounts of the service: add, list, revoke.
    #[command(subcommand)]
    User(commands::user::UserCommand),
    /// The service's audit log: verify its hash chain.
    #[command(subcommand)]
    Audit(commands::user::AuditCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = if cli.verbose {
        "info,delineate=debug"
    } else {
        "warn,dicom_object=error,dicom_parser=error,dicom_encoding=error"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| level.into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .init();
    let result = match cli.command {
        Command::Info(a) => commands::info::run(&a),
        Command::Convert(a) => commands::convert::run(&a),
        Command::Rtstruct(c) => commands::rtstruct::run(&c),
        Command::Dicom(c) => commands::dicom::run(&c),
        Command::Synth(a) => commands::synth::run(&a),
        Command::Evaluate(a) => commands::evaluate::run(&a),
        Command::Study(a) => commands::study::run(&a),
        Command::Train(a) => commands::train::run(&a),
        Command::Curves(a) => commands::curves::run(&a),
        Command::Segment(a) => commands::segment::run(&a),
        Command::Candidates(a) => commands::candidates::run(&a),
        Command::Export(a) => commands::export::run(&a),
        Command::Model(c) => commands::model::run(&c),
        Command::Demo(a) => commands::demo::run(&a),
        Command::Serve(a) => commands::serve::run(&a),
        Command::Review(a) => commands::review::run(&a),
        Command::User(c) => commands::user::run(&c),
        Command::Audit(c) => commands::user::run_audit(&c),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, each cause once: some library
/// errors already quote their source in their own message, and the chain
/// would otherwise repeat it.
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !out.contains(&c) {
            out.push_str(": ");
            out.push_str(&c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn each_cause_is_printed_once() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let text = io.to_string();
        let e = anyhow::Error::new(io).context(format!("users.toml: cannot sync: {text}"));
        let printed = super::error_chain(&e);
        assert_eq!(printed.matches(&text).count(), 1, "{printed}");
        let e = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::NotFound))
            .context("users.toml: cannot sync the folder");
        assert_eq!(
            super::error_chain(&e),
            format!("users.toml: cannot sync the folder: {text}")
        );
    }
}
