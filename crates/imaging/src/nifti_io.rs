//! NIfTI-1 (`.nii`, `.nii.gz`) reading and writing on the `nifti` crate.
//!
//! Geometry rules (the same as nibabel's `get_best_affine`):
//! 1. `sform_code > 0`: the sform rows;
//! 2. else `qform_code > 0`: the quaternion (with qfac);
//! 3. else the voxel sizes only, no orientation (a warning says so).
//!
//! NIfTI affines are RAS; we negate the first two rows to get LPS. Spatial
//! units of metres or microns are converted to mm (unknown units are taken
//! as mm). Voxel values are scaled by `scl_slope`/`scl_inter` when the slope
//! is non-zero, as the standard says.
//!
//! Files are validated before the `nifti` crate sees them (dimensions,
//! datatype, offsets and length), so bad input gives an error naming the
//! file and the problem rather than a panic or a huge allocation.
//!
//! Writing is in [`crate::nifti_write`] (re-exported here).

use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

use nalgebra::{Matrix3, Vector3};
use nifti::{DataElement, InMemNiftiObject, IntoNdArray, NiftiHeader, NiftiObject};
use serde::Serialize;

use crate::any_volume::{AnyVolume, DataType};
pub use crate::nifti_write::{write_nifti, write_nifti_any, NiftiWriteOptions};
use crate::nifti_xform::{quatern_to_matrix, Quatern};
use crate::{Error, Geometry, Volume};

/// Largest voxel payload we agree to read (bytes): 8 GiB.
pub const MAX_VOXEL_BYTES: u64 = 8 << 30;
/// Size of a NIfTI-1 header.
const HEADER_BYTES: usize = 348;
/// Single-file NIfTI-1 data start no earlier than this (header + extender).
const MIN_VOX_OFFSET: usize = 352;
/// sform and qform further apart than this (mm, at any grid corner) are reported.
const XFORM_DISAGREEMENT_MM: f64 = 1e-3;

/// Which header transform defined the geometry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TransformSource {
    Sform,
    Qform,
    /// No sform or qform: voxel sizes only, orientation unknown.
    Pixdim,
}

/// What the header said, for `delineate info` and for callers that care.
#[derive(Clone, Debug, Serialize)]
pub struct NiftiInfo {
    /// The file.
    pub path: PathBuf,
    /// Stored voxel type.
    pub datatype: DataType,
    /// `dim[1..=dim[0]]`.
    pub dims: Vec<usize>,
    pub sform_code: i16,
    pub qform_code: i16,
    /// The transform used for the geometry.
    pub transform: TransformSource,
    pub scl_slope: f32,
    pub scl_inter: f32,
    /// `descrip`, trimmed.
    pub description: String,
    /// Gzip-compressed on disk.
    pub compressed: bool,
    /// Things a careful user should know (disagreeing transforms, ...).
    pub warnings: Vec<String>,
}

impl NiftiInfo {
    /// True when stored values are scaled on reading.
    pub fn is_scaled(&self) -> bool {
        self.scl_slope != 0.0
            && self.scl_slope.is_finite()
            && self.scl_inter.is_finite()
            && (self.scl_slope != 1.0 || self.scl_inter != 0.0)
    }
}

/// Reads the header and geometry only (the voxels are not decoded).
pub fn read_nifti_header(path: &Path) -> Result<(Geometry, NiftiInfo), Error> {
    let bytes = read_file_bytes(path, true)?;
    let (_, geometry, info) = parse_validated(&bytes.data, path, bytes.compressed, false)?;
    Ok((geometry, info))
}

/// Reads a 3-D volume as float32, with scaling applied.
pub fn read_nifti_f32(path: &Path) -> Result<(Volume<f32>, NiftiInfo), Error> {
    read_nifti::<f32>(path)
}

/// Reads a 3-D volume converted to `T` (scaling applied before the cast).
pub fn read_nifti<T: DataElement + Clone>(path: &Path) -> Result<(Volume<T>, NiftiInfo), Error> {
    let bytes = read_file_bytes(path, false)?;
    parse_nifti_bytes::<T>(&bytes.data, path, bytes.compressed)
}

/// Reads a 3-D volume in its stored type; scaled files come back as
/// float32 (float64 for 64-bit stored types) with the scaling applied.
pub fn read_nifti_any(path: &Path) -> Result<(AnyVolume, NiftiInfo), Error> {
    any_from_bytes(read_file_bytes(path, false)?, path)
}

/// [`read_nifti_any`] on a file held in memory, gzipped or not (a fuzzing
/// entry point: it covers the direct-copy path for native voxels).
pub fn read_nifti_any_from_memory(
    raw: &[u8],
    path: &Path,
) -> Result<(AnyVolume, NiftiInfo), Error> {
    any_from_bytes(
        read_maybe_gzip(Cursor::new(raw), path, false, raw.len() as u64)?,
        path,
    )
}

fn any_from_bytes(bytes: FileBytes, path: &Path) -> Result<(AnyVolume, NiftiInfo), Error> {
    let (h, geometry, info) = parse_validated(&bytes.data, path, bytes.compressed, true)?;
    let b = &bytes.data;
    let c = bytes.compressed;
    if let Some(v) = native_volume(b, &h, &geometry, &info) {
        return Ok((v, info));
    }
    let wide = info.datatype.size_of() == 8 || info.datatype == DataType::Float64;
    Ok(match (info.is_scaled(), info.datatype) {
        (true, _) if wide => (AnyVolume::Float64(parse_nifti_bytes(b, path, c)?.0), info),
        (true, _) => (AnyVolume::Float32(parse_nifti_bytes(b, path, c)?.0), info),
        (false, DataType::Uint8) => (AnyVolume::Uint8(parse_nifti_bytes(b, path, c)?.0), info),
        (false, DataType::Int8) => (AnyVolume::Int8(parse_nifti_bytes(b, path, c)?.0), info),
        (false, DataType::Uint16) => (AnyVolume::Uint16(parse_nifti_bytes(b, path, c)?.0), info),
        (false, DataType::Int16) => (AnyVolume::Int16(parse_nifti_bytes(b, path, c)?.0), info),
        (false, DataType::Uint32) => (AnyVolume::Uint32(parse_nifti_bytes(b, path, c)?.0), info),
        (false, DataType::Int32) => (AnyVolume::Int32(parse_nifti_bytes(b, path, c)?.0), info),
        (false, DataType::Uint64) => (AnyVolume::Uint64(parse_nifti_bytes(b, path, c)?.0), info),
        (false, DataType::Int64) => (AnyVolume::Int64(parse_nifti_bytes(b, path, c)?.0), info),
        (false, DataType::Float32) => (AnyVolume::Float32(parse_nifti_bytes(b, path, c)?.0), info),
        (false, DataType::Float64) => (AnyVolume::Float64(parse_nifti_bytes(b, path, c)?.0), info),
    })
}

/// Fast path for unscaled little-endian voxels on a little-endian machine:
/// NIfTI stores voxels with i fastest, which is our order, so the bytes
/// are the volume (one copy, no per-voxel conversion). `parse_validated`
/// has checked that the bytes are there.
fn native_volume(
    bytes: &[u8],
    h: &NiftiHeader,
    g: &Geometry,
    info: &NiftiInfo,
) -> Option<AnyVolume> {
    if cfg!(target_endian = "big") || h.endianness != nifti::Endianness::Little || info.is_scaled()
    {
        return None;
    }
    let offset = h.vox_offset as usize;
    let n = g.len();
    fn take<T: bytemuck::Pod>(
        bytes: &[u8],
        offset: usize,
        n: usize,
        g: &Geometry,
    ) -> Option<Volume<T>> {
        let raw = bytes.get(offset..offset + n * std::mem::size_of::<T>())?;
        Volume::from_vec(g.clone(), bytemuck::pod_collect_to_vec(raw)).ok()
    }
    Some(match info.datatype {
        DataType::Uint8 => AnyVolume::Uint8(take(bytes, offset, n, g)?),
        DataType::Int8 => AnyVolume::Int8(take(bytes, offset, n, g)?),
        DataType::Uint16 => AnyVolume::Uint16(take(bytes, offset, n, g)?),
        DataType::Int16 => AnyVolume::Int16(take(bytes, offset, n, g)?),
        DataType::Uint32 => AnyVolume::Uint32(take(bytes, offset, n, g)?),
        DataType::Int32 => AnyVolume::Int32(take(bytes, offset, n, g)?),
        DataType::Uint64 => AnyVolume::Uint64(take(bytes, offset, n, g)?),
        DataType::Int64 => AnyVolume::Int64(take(bytes, offset, n, g)?),
        DataType::Float32 => AnyVolume::Float32(take(bytes, offset, n, g)?),
        DataType::Float64 => AnyVolume::Float64(take(bytes, offset, n, g)?),
    })
}

/// Parses a whole (already decompressed) NIfTI-1 file held in memory.
/// `path` is only used in messages. This is the fuzzing entry point.
pub fn parse_nifti_bytes<T: DataElement + Clone>(
    bytes: &[u8],
    path: &Path,
    compressed: bool,
) -> Result<(Volume<T>, NiftiInfo), Error> {
    let (_, geometry, info) = parse_validated(bytes, path, compressed, true)?;
    let obj = InMemNiftiObject::from_reader(Cursor::new(bytes))
        .map_err(|e| Error::file(path, format!("cannot decode NIfTI voxels: {e}")))?;
    let arr = obj
        .into_volume()
        .into_ndarray::<T>()
        .map_err(|e| Error::file(path, format!("cannot convert NIfTI voxels: {e}")))?;
    // Drop the trailing singleton axes of a 4-D+ file with one volume.
    let mut arr = arr;
    while arr.ndim() > 3 {
        let last = ndarray::Axis(arr.ndim() - 1);
        arr = arr.index_axis_move(last, 0);
    }
    let arr = arr
        .into_dimensionality::<ndarray::Ix3>()
        .map_err(|e| Error::file(path, format!("unexpected voxel array rank: {e}")))?;
    let vol = Volume::new(geometry, arr).map_err(|e| Error::file(path, e.to_string()))?;
    Ok((vol, info))
}

struct FileBytes {
    data: Vec<u8>,
    compressed: bool,
}

/// Reads a file, gunzipping when it starts with the gzip magic (whatever
/// its name). With `header_only`, stops after the fixed header.
fn read_file_bytes(path: &Path, header_only: bool) -> Result<FileBytes, Error> {
    let name = path.to_string_lossy().to_ascii_lowercase();
    if name.ends_with(".hdr") || name.ends_with(".img") || name.ends_with(".hdr.gz") {
        return Err(Error::file(
            path,
            "NIfTI/Analyze .hdr/.img pairs are not supported; convert to a single .nii or .nii.gz",
        ));
    }
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, "cannot open", e))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    read_maybe_gzip(std::io::BufReader::new(file), path, header_only, size)
}

/// Reads all bytes of `raw`, decompressing gzip when it starts with the
/// gzip magic, up to [`MAX_VOXEL_BYTES`] plus headers.
/// `size_hint` (the file size, 0 if unknown) sizes the buffer up front.
fn read_maybe_gzip(
    mut raw: impl Read,
    path: &Path,
    header_only: bool,
    size_hint: u64,
) -> Result<FileBytes, Error> {
    let mut magic = [0u8; 2];
    let n = read_up_to(&mut raw, &mut magic).map_err(|e| Error::io(path, "cannot read", e))?;
    let head = Cursor::new(magic[..n].to_vec()).chain(raw);
    let compressed = n == 2 && magic == [0x1f, 0x8b];
    let mut reader: Box<dyn Read> = if compressed {
        Box::new(flate2::read::MultiGzDecoder::new(head))
    } else {
        Box::new(head)
    };
    let limit = if header_only {
        HEADER_BYTES as u64
    } else {
        MAX_VOXEL_BYTES + 1_048_576
    };
    // Compressed voxels usually take 2-4x their file size.
    let hint = if header_only {
        0
    } else if compressed {
        size_hint.saturating_mul(3)
    } else {
        size_hint
    };
    let mut data = Vec::with_capacity(hint.min(limit) as usize);
    reader
        .by_ref()
        .take(limit)
        .read_to_end(&mut data)
        .map_err(|e| {
            let what = if compressed {
                "cannot decompress (corrupt or truncated gzip)"
            } else {
                "cannot read"
            };
            Error::io(path, what, e)
        })?;
    Ok(FileBytes { data, compressed })
}

/// Parses a NIfTI-1 file held in memory, gzipped or not (the fuzzing entry
/// point); `path` only names the source in messages.
pub fn read_nifti_from_memory<T: DataElement + Clone>(
    raw: &[u8],
    path: &Path,
) -> Result<(Volume<T>, NiftiInfo), Error> {
    let bytes = read_maybe_gzip(raw, path, false, 0)?;
    parse_nifti_bytes::<T>(&bytes.data, path, bytes.compressed)
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Validates the header (and, with `need_data`, the voxel payload length)
/// and computes the geometry.
/// Walks the header extensions the way the nifti crate reads them (from
/// byte 352 up to `vox_offset`, each `esize` bytes long) and refuses any
/// whose size does not fit in the file: the crate would otherwise reserve
/// the declared size first (fuzzing found a 1.5 GB request from a small
/// file) or loop on a zero size.
fn check_extensions(
    bytes: &[u8],
    h: &NiftiHeader,
    vox_offset: usize,
    path: &Path,
) -> Result<(), Error> {
    const FIRST: usize = 352;
    if bytes.get(348).copied().unwrap_or(0) == 0 {
        return Ok(());
    }
    let end = vox_offset.min(bytes.len());
    let mut at = FIRST;
    while at < vox_offset {
        let Some(raw) = bytes.get(at..at + 4) else {
            return Err(Error::file(
                path,
                format!("header extension at byte {at} is cut off"),
            ));
        };
        let raw = [raw[0], raw[1], raw[2], raw[3]];
        let esize = if h.endianness == nifti::Endianness::Big {
            i32::from_be_bytes(raw)
        } else {
            i32::from_le_bytes(raw)
        };
        if esize < 8 || at + esize as usize > end {
            return Err(Error::file(
                path,
                format!("corrupt header extension at byte {at}: size {esize} does not fit before the voxels (byte {vox_offset})"),
            ));
        }
        at += esize as usize;
    }
    Ok(())
}

fn parse_validated(
    bytes: &[u8],
    path: &Path,
    compressed: bool,
    need_data: bool,
) -> Result<(NiftiHeader, Geometry, NiftiInfo), Error> {
    if bytes.len() < HEADER_BYTES {
        return Err(Error::file(
            path,
            format!(
                "not a NIfTI file: {} bytes, shorter than the 348-byte header",
                bytes.len()
            ),
        ));
    }
    let first = i32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if first == 540 || first.swap_bytes() == 540 {
        return Err(Error::file(
            path,
            "NIfTI-2 files are not supported (NIfTI-1 only)",
        ));
    }
    let h = NiftiHeader::from_reader(Cursor::new(bytes))
        .map_err(|e| Error::file(path, format!("not a readable NIfTI-1 header: {e}")))?;
    if h.sizeof_hdr != HEADER_BYTES as i32 {
        return Err(Error::file(
            path,
            format!("not a NIfTI-1 file (sizeof_hdr = {})", h.sizeof_hdr),
        ));
    }
    match &h.magic {
        b"n+1\0" => {}
        b"ni1\0" => {
            return Err(Error::file(
                path,
                "header of a .hdr/.img pair: single-file .nii is required",
            ))
        }
        m => {
            return Err(Error::file(
                path,
                format!(
                    "bad NIfTI magic {:?} (an Analyze 7.5 file?)",
                    String::from_utf8_lossy(m)
                ),
            ))
        }
    }
    let rank = h.dim[0] as usize;
    if !(1..=7).contains(&rank) {
        return Err(Error::file(path, format!("invalid dim[0] = {}", h.dim[0])));
    }
    let dims: Vec<usize> = h.dim[1..=rank].iter().map(|&d| d as usize).collect();
    if rank < 3 {
        return Err(Error::file(
            path,
            format!("{rank}-D image with dimensions {dims:?}: a 3-D volume is needed"),
        ));
    }
    if dims.iter().any(|&d| d == 0 || d > i16::MAX as usize) {
        return Err(Error::file(path, format!("invalid dimensions {dims:?}")));
    }
    if dims[3..].iter().any(|&d| d != 1) {
        return Err(Error::file(
            path,
            format!(
                "{rank}-D image with dimensions {dims:?}: a 3-D volume is needed \
                 (extract one volume first, e.g. with fslroi)"
            ),
        ));
    }
    let datatype = h
        .data_type()
        .ok()
        .and_then(DataType::from_nifti)
        .ok_or_else(|| {
            Error::file(
                path,
                format!(
                    "unsupported NIfTI datatype code {} (RGB, complex and float128 are not read)",
                    h.datatype
                ),
            )
        })?;
    if h.bitpix as i64 != 8 * datatype.size_of() as i64 {
        // The nifti crate sizes the voxel buffer from bitpix, so a mismatch
        // would misread (or crash) later.
        return Err(Error::file(
            path,
            format!(
                "bitpix {} does not match datatype {:?} ({} bits)",
                h.bitpix,
                datatype,
                8 * datatype.size_of()
            ),
        ));
    }
    let nvox: u64 = dims.iter().map(|&d| d as u64).product();
    let payload = nvox * datatype.size_of() as u64;
    if payload > MAX_VOXEL_BYTES {
        return Err(Error::file(
            path,
            format!("{payload} bytes of voxels exceed the {MAX_VOXEL_BYTES}-byte limit"),
        ));
    }
    if !h.vox_offset.is_finite() || (h.vox_offset as usize) < MIN_VOX_OFFSET || h.vox_offset > 1e9 {
        return Err(Error::file(
            path,
            format!("invalid vox_offset {}", h.vox_offset),
        ));
    }
    let offset = h.vox_offset as usize;
    check_extensions(bytes, &h, offset, path)?;
    if need_data && (bytes.len() as u64) < offset as u64 + payload {
        return Err(Error::file(
            path,
            format!(
                "truncated: the header declares {payload} bytes of voxels at offset {offset}, \
                 but the {}file holds {} bytes",
                if compressed { "decompressed " } else { "" },
                bytes.len()
            ),
        ));
    }
    let mut warnings = Vec::new();
    let geometry = header_geometry(&h, [dims[0], dims[1], dims[2]], &mut warnings)
        .map_err(|e| Error::file(path, e.to_string()))?;
    let transform = if h.sform_code > 0 {
        TransformSource::Sform
    } else if h.qform_code > 0 {
        TransformSource::Qform
    } else {
        TransformSource::Pixdim
    };
    let description = String::from_utf8_lossy(&h.descrip)
        .trim_end_matches('\0')
        .trim()
        .to_string();
    let info = NiftiInfo {
        path: path.to_path_buf(),
        datatype,
        dims,
        sform_code: h.sform_code,
        qform_code: h.qform_code,
        transform,
        scl_slope: h.scl_slope,
        scl_inter: h.scl_inter,
        description,
        compressed,
        warnings,
    };
    Ok((h, geometry, info))
}

/// Millimetres per stored spatial unit (xyzt_units bits 0–2).
fn unit_scale(h: &NiftiHeader, warnings: &mut Vec<String>) -> f64 {
    match h.xyzt_units & 0x07 {
        1 => {
            warnings.push("spatial units are metres: converted to mm".into());
            1000.0
        }
        3 => {
            warnings.push("spatial units are microns: converted to mm".into());
            0.001
        }
        _ => 1.0,
    }
}

fn sform_matrix(h: &NiftiHeader) -> (Matrix3<f64>, Vector3<f64>) {
    let rows = [h.srow_x, h.srow_y, h.srow_z];
    let m = Matrix3::from_fn(|r, c| rows[r][c] as f64);
    let o = Vector3::new(rows[0][3] as f64, rows[1][3] as f64, rows[2][3] as f64);
    (m, o)
}

fn qform_matrix(h: &NiftiHeader, warnings: &mut Vec<String>) -> (Matrix3<f64>, Vector3<f64>) {
    let pix = [h.pixdim[1] as f64, h.pixdim[2] as f64, h.pixdim[3] as f64];
    if pix.iter().any(|&p| p.is_nan() || p <= 0.0) {
        warnings.push(format!("non-positive voxel size in pixdim {pix:?}: taken as 1 mm in the qform (as nifti1_io does)"));
    }
    let qfac = h.pixdim[0] as f64;
    if qfac != 1.0 && qfac != -1.0 {
        warnings.push(format!(
            "qfac (pixdim[0]) = {qfac}: taken as {}",
            if qfac < 0.0 { -1 } else { 1 }
        ));
    }
    quatern_to_matrix(&Quatern {
        b: h.quatern_b as f64,
        c: h.quatern_c as f64,
        d: h.quatern_d as f64,
        offset: [h.quatern_x as f64, h.quatern_y as f64, h.quatern_z as f64],
        pixdim: pix,
        qfac,
    })
}

fn to_lps_geometry(
    size: [usize; 3],
    m: &Matrix3<f64>,
    o: &Vector3<f64>,
    scale: f64,
) -> Result<Geometry, Error> {
    let mut a = [[0.0; 4]; 4];
    for r in 0..3 {
        let s = if r < 2 { -scale } else { scale };
        for c in 0..3 {
            a[r][c] = s * m[(r, c)];
        }
        a[r][3] = s * o[r];
    }
    a[3][3] = 1.0;
    Geometry::from_affine_lps(size, &a)
}

fn header_geometry(
    h: &NiftiHeader,
    size: [usize; 3],
    warnings: &mut Vec<String>,
) -> Result<Geometry, Error> {
    let scale = unit_scale(h, warnings);
    let g = if h.sform_code > 0 {
        let (m, o) = sform_matrix(h);
        let g = to_lps_geometry(size, &m, &o, scale)
            .map_err(|e| Error::Geometry(format!("sform: {e}")))?;
        if h.qform_code > 0 {
            let mut qw = Vec::new();
            let (qm, qo) = qform_matrix(h, &mut qw);
            if let Ok(q) = to_lps_geometry(size, &qm, &qo, scale) {
                if !g.same_grid(&q, XFORM_DISAGREEMENT_MM) {
                    warnings.push(format!(
                        "sform and qform disagree by more than {XFORM_DISAGREEMENT_MM} mm; using the sform (as nibabel does; ITK may choose the qform)"
                    ));
                }
            }
        }
        g
    } else if h.qform_code > 0 {
        let (m, o) = qform_matrix(h, warnings);
        to_lps_geometry(size, &m, &o, scale).map_err(|e| Error::Geometry(format!("qform: {e}")))?
    } else {
        warnings.push(
            "no sform or qform: orientation unknown, voxel sizes only (NIfTI method 1)".into(),
        );
        let pix = [1, 2, 3].map(|a| {
            let p = h.pixdim[a] as f64;
            if p.is_finite() && p > 0.0 {
                p
            } else {
                1.0
            }
        });
        to_lps_geometry(
            size,
            &Matrix3::from_diagonal(&Vector3::from(pix)),
            &Vector3::zeros(),
            scale,
        )?
    };
    let pixdim = [h.pixdim[1], h.pixdim[2], h.pixdim[3]].map(|p| (p as f64).abs() * scale);
    if h.sform_code > 0
        && (0..3).any(|a| (pixdim[a] - g.spacing[a]).abs() > 1e-4 * g.spacing[a].max(1.0))
    {
        warnings.push(format!(
            "pixdim {pixdim:?} differs from the sform voxel size {:?}; the sform wins",
            g.spacing
        ));
    }
    if !g.is_orthonormal() {
        warnings.push(format!(
            "sheared grid: axes are not orthogonal (max |DᵀD−I| = {:.2e})",
            g.orthonormality_error()
        ));
    }
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oblique() -> Geometry {
        let r = nalgebra::Rotation3::from_euler_angles(0.2, -0.1, 0.4);
        let m = r.matrix();
        let dir = [0, 1, 2].map(|row| [0, 1, 2].map(|c| m[(row, c)]));
        Geometry::new([6, 5, 4], [0.9, 1.1, 2.0], [-91.25, 126.5, -72.0], dir).unwrap()
    }

    #[test]
    fn write_read_round_trip_all_types() {
        let dir = tempfile::tempdir().unwrap();
        let g = oblique();
        macro_rules! check {
            ($t:ty, $name:expr) => {{
                let v =
                    Volume::from_vec(g.clone(), (0..g.len()).map(|x| (x % 100) as $t).collect())
                        .unwrap();
                let p = dir.path().join(concat!($name, ".nii.gz"));
                write_nifti(&p, &v, &NiftiWriteOptions::default()).unwrap();
                let (any, info) = read_nifti_any(&p).unwrap();
                assert_eq!(info.datatype, DataType::parse($name).unwrap());
                assert!(any.geometry().same_grid(&g, 1e-5));
                match any {
                    AnyVolume::Float32(_) | AnyVolume::Float64(_)
                        if !$name.starts_with("float") =>
                    {
                        panic!("type changed")
                    }
                    _ => {}
                }
                let (back, _) = read_nifti::<$t>(&p).unwrap();
                assert_eq!(back.as_slice(), v.as_slice());
            }};
        }
        check!(u8, "uint8");
        check!(i8, "int8");
        check!(u16, "uint16");
        check!(i16, "int16");
        check!(u32, "uint32");
        check!(i32, "int32");
        check!(u64, "uint64");
        check!(i64, "int64");
        check!(f32, "float32");
        check!(f64, "float64");
    }

    #[test]
    fn sform_only_qform_only_and_none() {
        let dir = tempfile::tempdir().unwrap();
        let g = oblique();
        let v = Volume::filled(g.clone(), 1.0f32);
        for (s, q, expect) in [
            (1, 0, TransformSource::Sform),
            (0, 1, TransformSource::Qform),
            (2, 1, TransformSource::Sform),
        ] {
            let p = dir.path().join(format!("x{s}{q}.nii"));
            let opts = NiftiWriteOptions {
                sform_code: s,
                qform_code: q,
                ..Default::default()
            };
            write_nifti(&p, &v, &opts).unwrap();
            let (g2, info) = read_nifti_header(&p).unwrap();
            assert_eq!(info.transform, expect);
            assert!(g2.same_grid(&g, 1e-5), "{g2:?}");
            assert!(info.warnings.is_empty(), "{:?}", info.warnings);
        }
        let p = dir.path().join("none.nii");
        write_nifti(
            &p,
            &v,
            &NiftiWriteOptions {
                sform_code: 0,
                qform_code: 0,
                ..Default::default()
            },
        )
        .unwrap();
        let (g3, info) = read_nifti_header(&p).unwrap();
        assert_eq!(info.transform, TransformSource::Pixdim);
        assert_eq!(
            g3.spacing.map(|s| (s * 1e4).round()),
            [9000.0, 11000.0, 20000.0]
        );
        assert_eq!(info.warnings.len(), 1);
    }

    #[test]
    fn bad_files_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let g = oblique();
        let p = dir.path().join("ok.nii");
        write_nifti(&p, &Volume::filled(g, 3i16), &NiftiWriteOptions::default()).unwrap();
        let full = std::fs::read(&p).unwrap();
        let t = dir.path().join("trunc.nii");
        std::fs::write(&t, &full[..full.len() - 10]).unwrap();
        let e = read_nifti_f32(&t).unwrap_err().to_string();
        assert!(e.contains("trunc.nii") && e.contains("truncated"), "{e}");
        let gz = dir.path().join("bad.nii.gz");
        std::fs::write(&gz, [0x1f, 0x8b, 8, 0, 1, 2, 3]).unwrap();
        let e = read_nifti_f32(&gz).unwrap_err().to_string();
        assert!(e.contains("bad.nii.gz") && e.contains("gzip"), "{e}");
        let junk = dir.path().join("junk.nii");
        std::fs::write(&junk, b"hello").unwrap();
        assert!(read_nifti_f32(&junk)
            .unwrap_err()
            .to_string()
            .contains("junk.nii"));
        assert!(write_nifti(
            &dir.path().join("x.txt"),
            &Volume::filled(oblique(), 0u8),
            &Default::default()
        )
        .is_err());
    }
}
