//! Pixel data of one instance → float32 values with the modality rescale
//! (Rescale Slope/Intercept) applied.
//!
//! Uncompressed data (implicit/explicit VR little endian, explicit VR big
//! endian, deflated) of 8- or 16-bit greyscale images take a direct path:
//! the stored integers are read from the parsed Pixel Data value, masked or
//! sign-extended to Bits Stored, and rescaled into the caller's buffer (no
//! intermediate copies: this is what keeps reading a series I/O-bound).
//! Everything else goes through dicom-pixeldata, which decodes JPEG
//! baseline/extended(8-bit)/lossless and RLE in pure Rust. JPEG-LS, JPEG
//! 2000, HTJ2K and JPEG XL are refused with an error naming the transfer
//! syntax (they would need C/C++ codecs). Both paths are compared with
//! pydicom in `tests/pydicom_pixels.rs`.

use std::path::Path;

use dicom_core::value::{PrimitiveValue, Value};
use dicom_dictionary_std::tags;
use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
use dicom_object::DefaultDicomObject;
use dicom_pixeldata::PixelDecoder;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use crate::header::{extract, open_full, transfer_syntax_name, InstanceHeader};
use crate::Error;

/// Transfer syntaxes whose pixel data are stored uncompressed.
const NATIVE: [&str; 4] = [
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.1.99",
];
const BIG_ENDIAN: &str = "1.2.840.10008.1.2.2";

/// Refuses transfer syntaxes whose pixel data dicom-rs cannot decode here.
pub fn check_transfer_syntax(h: &InstanceHeader) -> Result<(), Error> {
    let uid = h.transfer_syntax_uid.as_str();
    match TransferSyntaxRegistry.get(uid) {
        None => Err(Error::file(&h.path, format!("unknown transfer syntax {uid}"))),
        Some(ts) if !ts.can_decode_all() => Err(Error::file(
            &h.path,
            format!(
                "transfer syntax {} ({uid}) cannot be decoded by delineate (no pure-Rust codec); \
                 decompress the series first, e.g. with `gdcmconv --raw` or dcmtk's dcmdjpls/dcmdjp2k",
                ts.name()
            ),
        )),
        Some(_) => Ok(()),
    }
}

pub(crate) fn check_photometric(
    h: &InstanceHeader,
    warnings: &mut Vec<String>,
) -> Result<(), Error> {
    match h.photometric_interpretation.as_str() {
        "MONOCHROME2" | "" => Ok(()),
        "MONOCHROME1" => {
            if !warnings.iter().any(|w| w.contains("MONOCHROME1")) {
                warnings.push("MONOCHROME1 images: values are kept as stored (display inversion is not applied)".into());
            }
            Ok(())
        }
        other => Err(Error::file(&h.path, format!("photometric interpretation {other}: only greyscale (MONOCHROME1/2) images are read"))),
    }
}

/// Reads `h.path` and decodes its first frame into `out` (`nx·ny` values).
pub(crate) fn decode_file_into(
    h: &InstanceHeader,
    nx: usize,
    ny: usize,
    out: &mut [f32],
) -> Result<(), Error> {
    let obj = open_full(&h.path)?;
    decode_into(&obj, &h.path, nx, ny, out)
}

/// Decodes the first frame of a parsed object to `nx·ny` float32 values.
pub fn decode_object(
    obj: &DefaultDicomObject,
    path: &Path,
    nx: usize,
    ny: usize,
) -> Result<Vec<f32>, Error> {
    let mut v = vec![0.0f32; nx * ny];
    decode_into(obj, path, nx, ny, &mut v)?;
    Ok(v)
}

/// The direct path for uncompressed greyscale data; `None` when it does not
/// apply (the general decoder then runs).
fn decode_native(obj: &DefaultDicomObject, h: &InstanceHeader, out: &mut [f32]) -> Option<()> {
    let ts = h.transfer_syntax_uid.as_str();
    let bits = h.bits_allocated?;
    let stored = obj
        .get(tags::BITS_STORED)
        .and_then(|e| e.to_int::<u32>().ok())
        .unwrap_or(bits);
    if !NATIVE.contains(&ts)
        || h.samples_per_pixel.unwrap_or(1) != 1
        || h.number_of_frames != 1
        || !(1..=bits).contains(&stored)
    {
        return None;
    }
    let signed = h.pixel_representation == Some(1);
    let (slope, intercept) = (h.rescale_slope, h.rescale_intercept);
    let convert = |raw: u32| -> f32 {
        let shift = 32 - stored;
        let v = if signed {
            ((raw << shift) as i32 >> shift) as f64
        } else {
            (raw & (u32::MAX >> shift)) as f64
        };
        (v * slope + intercept) as f32
    };
    let n = out.len();
    match (obj.get(tags::PIXEL_DATA)?.value(), bits) {
        (Value::Primitive(PrimitiveValue::U8(b)), 8) if b.len() >= n => {
            for (o, &x) in out.iter_mut().zip(b.iter()) {
                *o = convert(u32::from(x));
            }
        }
        (Value::Primitive(PrimitiveValue::U8(b)), 16) if b.len() >= 2 * n && ts != BIG_ENDIAN => {
            for (o, c) in out.iter_mut().zip(b.chunks_exact(2)) {
                *o = convert(u32::from(u16::from_le_bytes([c[0], c[1]])));
            }
        }
        (Value::Primitive(PrimitiveValue::U16(w)), 16) if w.len() >= n => {
            for (o, &x) in out.iter_mut().zip(w.iter()) {
                *o = convert(u32::from(x));
            }
        }
        _ => return None,
    }
    Some(())
}

/// The pixel-format attributes of a greyscale MR/CT image, checked before
/// any decoder sees them (dicom-pixeldata asserts on some, e.g. a Bits
/// Stored of 0: found by fuzzing).
fn check_pixel_attributes(obj: &DefaultDicomObject, h: &InstanceHeader) -> Result<(), String> {
    let int = |tag| obj.get(tag).and_then(|e| e.to_int::<i64>().ok());
    let allocated = h.bits_allocated.ok_or("BitsAllocated is missing")?;
    if allocated != 8 && allocated != 16 {
        return Err(format!(
            "BitsAllocated {allocated} is not supported (greyscale images with 8 or 16 bits)"
        ));
    }
    let stored = int(tags::BITS_STORED).unwrap_or(allocated as i64);
    if !(1..=allocated as i64).contains(&stored) {
        return Err(format!("BitsStored {stored} is outside 1..={allocated}"));
    }
    if let Some(high) = int(tags::HIGH_BIT) {
        if high != stored - 1 {
            return Err(format!(
                "HighBit {high} is not BitsStored − 1 = {}",
                stored - 1
            ));
        }
    }
    match h.pixel_representation {
        None | Some(0) | Some(1) => {}
        Some(other) => return Err(format!("PixelRepresentation {other} is neither 0 nor 1")),
    }
    if h.samples_per_pixel.unwrap_or(1) != 1 {
        return Err("colour pixel data: only greyscale images are read".into());
    }
    if !h.rescale_slope.is_finite() || !h.rescale_intercept.is_finite() || h.rescale_slope == 0.0 {
        return Err(format!(
            "invalid rescale slope {} / intercept {}",
            h.rescale_slope, h.rescale_intercept
        ));
    }
    Ok(())
}

/// Decodes the first frame of a parsed object into `out` (`nx·ny` values),
/// checking its size.
pub fn decode_into(
    obj: &DefaultDicomObject,
    path: &Path,
    nx: usize,
    ny: usize,
    out: &mut [f32],
) -> Result<(), Error> {
    decode_frame_into(obj, path, 0, nx, ny, out)
}

/// Decodes frame `frame` (0-based) of a parsed object into `out`.
pub fn decode_frame_into(
    obj: &DefaultDicomObject,
    path: &Path,
    frame: u32,
    nx: usize,
    ny: usize,
    out: &mut [f32],
) -> Result<(), Error> {
    if out.len() != nx * ny {
        return Err(Error::file(
            path,
            format!(
                "output buffer holds {} values, expected {}",
                out.len(),
                nx * ny
            ),
        ));
    }
    let ts = obj.meta().transfer_syntax().trim_end_matches(['\0', ' ']);
    let h = extract(obj, path);
    if (h.rows, h.columns) != (Some(ny as u32), Some(nx as u32)) {
        return Err(Error::file(
            path,
            format!("image is {:?}x{:?}, expected {ny}x{nx}", h.rows, h.columns),
        ));
    }
    check_pixel_attributes(obj, &h).map_err(|m| Error::file(path, m))?;
    if decode_native(obj, &h, out).is_some() {
        return Ok(());
    }
    let samples = h.samples_per_pixel.unwrap_or(1) as usize;
    let bits = h.bits_allocated.unwrap_or(0) as usize;
    crate::codec_guard::check(obj, ny, nx, samples, bits).map_err(|m| Error::file(path, m))?;
    if frame >= h.number_of_frames {
        return Err(Error::file(
            path,
            format!(
                "frame {} asked of {} frame(s)",
                frame + 1,
                h.number_of_frames
            ),
        ));
    }
    // One frame at a time: this bounds the work per call.
    let pd = obj.decode_pixel_data_frame(frame).map_err(|e| {
        Error::file(
            path,
            format!(
                "cannot decode pixel data ({}): {e}",
                transfer_syntax_name(ts)
            ),
        )
    })?;
    if pd.rows() as usize != ny || pd.columns() as usize != nx {
        return Err(Error::file(
            path,
            format!(
                "pixel data is {}x{}, expected {ny}x{nx}",
                pd.rows(),
                pd.columns()
            ),
        ));
    }
    if pd.samples_per_pixel() != 1 {
        return Err(Error::file(
            path,
            "colour pixel data: only greyscale images are read",
        ));
    }
    let v: Vec<f32> = pd
        .to_vec_frame(0)
        .map_err(|e| Error::file(path, format!("cannot convert pixel data: {e}")))?;
    if v.len() != nx * ny {
        return Err(Error::file(
            path,
            format!("pixel data holds {} values, expected {}", v.len(), nx * ny),
        ));
    }
    out.copy_from_slice(&v);
    Ok(())
}
