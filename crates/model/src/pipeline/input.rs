//! Recognising and reading an input image: a NIfTI file or a DICOM folder.

use std::path::Path;

use delineate_dicom::{ReadOptions, SeriesMeta};
use delineate_imaging::{read_nifti_any, AnyVolume, NiftiInfo};

use crate::Error;

/// What kind of input a path is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputKind {
    Nifti,
    Dicom,
}

/// Decides from the path and the first bytes, never from the name alone
/// when the content says otherwise.
pub fn detect(path: &Path) -> Result<InputKind, Error> {
    let io = |source| {
        Error::Io(delineate_imaging::IoFailure {
            what: "read the input",
            path: path.to_path_buf(),
            source,
        })
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.is_dir() {
        return Ok(InputKind::Dicom);
    }
    if delineate_dicom::header::has_dicm_magic(path)? {
        return Ok(InputKind::Dicom);
    }
    let name = path.to_string_lossy().to_ascii_lowercase();
    if name.ends_with(".nii") || name.ends_with(".nii.gz") || name.ends_with(".gz") {
        return Ok(InputKind::Nifti);
    }
    let mut head = [0u8; 4];
    let n =
        std::io::Read::read(&mut std::fs::File::open(path).map_err(io)?, &mut head).unwrap_or(0);
    if n == 4
        && (head[..2] == [0x1f, 0x8b]
            || i32::from_le_bytes(head) == 348
            || i32::from_be_bytes(head) == 348)
    {
        return Ok(InputKind::Nifti);
    }
    Err(Error::Input(format!(
        "{}: neither a NIfTI file (.nii, .nii.gz) nor a DICOM file or folder",
        path.display()
    )))
}

/// Where a read volume came from.
pub enum Source {
    Nifti(NiftiInfo),
    Dicom(Box<SeriesMeta>),
}

/// A read input.
pub struct ReadInput {
    /// Float32 for DICOM (rescaled values); the stored type for NIfTI.
    pub volume: AnyVolume,
    pub source: Source,
}

/// Reads a NIfTI file or the DICOM series `series` chooses, counting files
/// on `progress`.
pub fn read_input(
    path: &Path,
    series: &ReadOptions,
    progress: Option<&indicatif::ProgressBar>,
) -> Result<ReadInput, Error> {
    match detect(path)? {
        InputKind::Nifti => {
            let (volume, info) = read_nifti_any(path)?;
            Ok(ReadInput {
                volume,
                source: Source::Nifti(info),
            })
        }
        InputKind::Dicom => {
            let s = delineate_dicom::read_series(path, series, progress)?;
            Ok(ReadInput {
                volume: AnyVolume::Float32(s.volume),
                source: Source::Dicom(Box::new(s.meta)),
            })
        }
    }
}
