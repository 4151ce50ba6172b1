//! NIfTI-1 writing: both an sform and a qform (codes 1, scanner anatomy,
//! unless told otherwise) in float32, the LPS geometry converted to NIfTI's
//! RAS, through a temporary file that is renamed into place.

use std::path::Path;

use nifti::{DataElement, NiftiHeader};

use crate::any_volume::AnyVolume;
use crate::nifti_xform::matrix_to_quatern;
use crate::{with_any_volume, Error, Geometry, Volume};

/// How to write a NIfTI file.
#[derive(Clone, Debug)]
pub struct NiftiWriteOptions {
    /// sform_code (default 1, scanner anatomical).
    pub sform_code: i16,
    /// qform_code (default 1). Set to 0 automatically for sheared grids.
    pub qform_code: i16,
    /// `descrip` (truncated to 79 bytes).
    pub description: String,
}

impl Default for NiftiWriteOptions {
    fn default() -> Self {
        Self {
            sform_code: 1,
            qform_code: 1,
            description: "delineate".into(),
        }
    }
}

/// Writes `vol` to `path` (`.nii` or `.nii.gz`) atomically.
pub fn write_nifti<T>(path: &Path, vol: &Volume<T>, opts: &NiftiWriteOptions) -> Result<(), Error>
where
    T: DataElement + bytemuck::Pod + Clone,
{
    let name = path.to_string_lossy().to_string();
    let ext = if name.ends_with(".nii.gz") {
        ".nii.gz"
    } else if name.ends_with(".nii") {
        ".nii"
    } else {
        return Err(Error::file(path, "output name must end in .nii or .nii.gz"));
    };
    let header = make_header(vol.geometry(), opts);
    crate::atomic::write_atomically(path, ext, |tmp, _| {
        nifti::writer::WriterOptions::new(tmp)
            .reference_header(&header)
            .write_nifti(vol.data())
            .map_err(|e| format!("cannot write NIfTI: {e}"))
    })
}

/// Writes an [`AnyVolume`] in its own type.
pub fn write_nifti_any(
    path: &Path,
    vol: &AnyVolume,
    opts: &NiftiWriteOptions,
) -> Result<(), Error> {
    with_any_volume!(vol, v => write_nifti(path, v, opts))
}

fn make_header(g: &Geometry, opts: &NiftiWriteOptions) -> NiftiHeader {
    let ras = g.affine_ras();
    let mut h = NiftiHeader {
        srow_x: [0, 1, 2, 3].map(|c| ras[0][c] as f32),
        srow_y: [0, 1, 2, 3].map(|c| ras[1][c] as f32),
        srow_z: [0, 1, 2, 3].map(|c| ras[2][c] as f32),
        sform_code: opts.sform_code,
        qform_code: 0,
        xyzt_units: 2 | 8, // mm, seconds
        ..NiftiHeader::default()
    };
    h.pixdim = [1.0; 8];
    for a in 0..3 {
        h.pixdim[a + 1] = g.spacing[a] as f32;
    }
    if g.is_orthonormal() && opts.qform_code > 0 {
        let mut d = g.direction_matrix();
        for r in 0..2 {
            let mut row = d.row_mut(r);
            row.neg_mut();
        }
        let q = matrix_to_quatern(&d, g.spacing, [ras[0][3], ras[1][3], ras[2][3]]);
        h.quatern_b = q.b as f32;
        h.quatern_c = q.c as f32;
        h.quatern_d = q.d as f32;
        h.quatern_x = q.offset[0] as f32;
        h.quatern_y = q.offset[1] as f32;
        h.quatern_z = q.offset[2] as f32;
        h.pixdim[0] = q.qfac as f32;
        h.qform_code = opts.qform_code;
    }
    let mut desc = opts.description.as_bytes().to_vec();
    desc.truncate(79);
    desc.resize(80, 0);
    h.descrip = desc;
    h
}
