//! `delineate convert`: DICOM series or NIfTI in, NIfTI out, geometry exact.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use delineate_imaging::{write_nifti_any, AnyVolume, DataType, NiftiWriteOptions};

use crate::input::{load, SeriesArgs, Source};

/// Convert a DICOM series (a folder, searched recursively) or a NIfTI file
/// to NIfTI (.nii or .nii.gz).
///
/// The output's sform and qform place every voxel exactly where the input
/// placed it (DICOM LPS is converted to NIfTI RAS). Voxel order is kept
/// (slices ordered along the slice normal for DICOM) unless --reorient is
/// given. DICOM values are written after Rescale Slope/Intercept.
///
/// The output appears only when complete (it is written to a temporary file
/// in the same folder, then renamed).
#[derive(clap::Args)]
pub struct ConvertArgs {
    /// A DICOM folder or a .nii/.nii.gz file.
    pub input: PathBuf,
    /// The NIfTI file to write (.nii or .nii.gz).
    pub output: PathBuf,
    /// Permute/flip axes (exactly, no interpolation) to this orientation code,
    /// e.g. RAS (nibabel's canonical) or LPS.
    #[arg(long, value_name = "CODE")]
    pub reorient: Option<String>,
    /// Output voxel type: auto, uint8, int8, uint16, int16, uint32, int32,
    /// uint64, int64, float32 or float64. "auto" keeps a NIfTI input's type
    /// and stores DICOM as int16/uint16 when that is exact, float32 otherwise.
    /// Integer types refuse values they cannot hold exactly.
    #[arg(long, default_value = "auto")]
    pub dtype: String,
    #[command(flatten)]
    pub series: SeriesArgs,
}

pub fn run(args: &ConvertArgs) -> Result<()> {
    let dtype = match args.dtype.as_str() {
        "auto" => None,
        s => Some(DataType::parse(s).with_context(|| format!("unknown --dtype {s:?}"))?),
    };
    let name = args.output.to_string_lossy();
    if !(name.ends_with(".nii") || name.ends_with(".nii.gz")) {
        bail!(
            "{}: the output must end in .nii or .nii.gz",
            args.output.display()
        );
    }
    let t_read = std::time::Instant::now();
    let loaded = load(&args.input, &args.series)?;
    tracing::info!(seconds = t_read.elapsed().as_secs_f64(), "read input");
    let mut opts = NiftiWriteOptions::default();
    let mut volume = match (&loaded.source, dtype) {
        (_, Some(t)) => AnyVolume::from_f32(loaded.volume.into_f32(), t)
            .with_context(|| format!("{}: --dtype {}", args.input.display(), args.dtype))?,
        (Source::Dicom(meta), None) if meta.integer_valued => {
            AnyVolume::smallest_exact(loaded.volume.into_f32())
        }
        _ => loaded.volume,
    };
    match &loaded.source {
        Source::Nifti(info) => {
            if info.sform_code > 0 {
                opts.sform_code = info.sform_code;
            }
            if info.qform_code > 0 {
                opts.qform_code = info.qform_code;
            }
            for w in &info.warnings {
                eprintln!("warning: {}: {w}", args.input.display());
            }
        }
        Source::Dicom(meta) => {
            opts.description = format!(
                "delineate from DICOM series {}",
                meta.series_number
                    .map(|n| n.to_string())
                    .unwrap_or_default()
            );
            for w in &meta.warnings {
                eprintln!("warning: {}: {w}", args.input.display());
            }
        }
    }
    if let Some(code) = &args.reorient {
        volume = volume.reorient(code)?;
    }
    let t_write = std::time::Instant::now();
    write_nifti_any(&args.output, &volume, &opts)?;
    tracing::info!(seconds = t_write.elapsed().as_secs_f64(), "wrote output");
    let g = volume.geometry();
    println!(
        "wrote {} ({} x {} x {}, {:.4} x {:.4} x {:.4} mm, {}, {:?})",
        args.output.display(),
        g.size[0],
        g.size[1],
        g.size[2],
        g.spacing[0],
        g.spacing[1],
        g.spacing[2],
        g.orientation_code(),
        volume.datatype()
    );
    Ok(())
}
