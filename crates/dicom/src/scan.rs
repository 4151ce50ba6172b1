//! Finding DICOM instances in a folder: recursive, any file names, in
//! parallel, header only.

use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use rayon::prelude::*;
use serde::Serialize;

use crate::header::{has_dicm_magic, read_headers, InstanceHeader};
use crate::Error;

/// SOP Class of a DICOMDIR (Media Storage Directory Storage).
const MEDIA_STORAGE_DIRECTORY: &str = "1.2.840.10008.1.3.10";

/// What a folder holds.
#[derive(Debug, Default, Serialize)]
pub struct ScanReport {
    /// The folder (or file) scanned.
    pub root: PathBuf,
    /// Parsed DICOM instances, sorted by path.
    pub instances: Vec<InstanceHeader>,
    /// Files without the `DICM` prefix (ignored).
    pub non_dicom: Vec<PathBuf>,
    /// Files with the `DICM` prefix whose header could not be parsed.
    pub unreadable: Vec<(PathBuf, String)>,
    /// DICOMDIR index files (ignored: we read the files themselves).
    pub dicomdir: Vec<PathBuf>,
}

enum Found {
    Instances(Vec<InstanceHeader>),
    NotDicom(PathBuf),
    Unreadable(PathBuf, String),
    DicomDir(PathBuf),
}

fn classify(path: PathBuf) -> Found {
    match has_dicm_magic(&path) {
        Ok(false) => return Found::NotDicom(path),
        Err(e) => return Found::Unreadable(path, e.to_string()),
        Ok(true) => {}
    }
    match read_headers(&path) {
        Ok(h)
            if h.first()
                .is_some_and(|h| h.sop_class_uid == MEDIA_STORAGE_DIRECTORY) =>
        {
            Found::DicomDir(path)
        }
        Ok(h) => Found::Instances(h),
        Err(e) => {
            let msg = match e {
                Error::File { message, .. } => message,
                other => other.to_string(),
            };
            Found::Unreadable(path, msg)
        }
    }
}

/// Scans `root` (a folder, recursively, or a single file).
pub fn scan(root: &Path, progress: Option<&ProgressBar>) -> Result<ScanReport, Error> {
    let meta = std::fs::metadata(root).map_err(|e| Error::io(root, "cannot read", e))?;
    let mut files = Vec::new();
    if meta.is_file() {
        files.push(root.to_path_buf());
    } else {
        for entry in walkdir::WalkDir::new(root)
            .follow_links(true)
            .sort_by_file_name()
        {
            let entry = entry.map_err(|e| {
                let p = e.path().unwrap_or(root).to_path_buf();
                let io = e
                    .into_io_error()
                    .unwrap_or_else(|| std::io::Error::other("filesystem loop"));
                Error::io(&p, "cannot list", io)
            })?;
            if entry.file_type().is_file() {
                files.push(entry.into_path());
            }
        }
    }
    if let Some(pb) = progress {
        pb.set_length(files.len() as u64);
    }
    let found: Vec<Found> = files
        .into_par_iter()
        .map(|p| {
            let f = classify(p);
            if let Some(pb) = progress {
                pb.inc(1);
            }
            f
        })
        .collect();
    let mut report = ScanReport {
        root: root.to_path_buf(),
        ..Default::default()
    };
    for f in found {
        match f {
            Found::Instances(h) => report.instances.extend(h),
            Found::NotDicom(p) => report.non_dicom.push(p),
            Found::Unreadable(p, m) => report.unreadable.push((p, m)),
            Found::DicomDir(p) => report.dicomdir.push(p),
        }
    }
    Ok(report)
}
