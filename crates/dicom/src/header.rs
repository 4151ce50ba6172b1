//! The attributes of one DICOM instance that series assembly and RTSTRUCT
//! writing need, read without touching the pixel data.

use std::io::Read;
use std::path::{Path, PathBuf};

use dicom_dictionary_std::tags;
use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
use dicom_object::file::ReadPreamble;
use dicom_object::{DefaultDicomObject, InMemDicomObject, OpenFileOptions};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use serde::Serialize;

use crate::Error;

/// Offset of the `DICM` magic in a Part 10 file (after the preamble).
pub const PREAMBLE_BYTES: usize = 128;

/// Patient module attributes (kept for RTSTRUCT/SEG; never logged).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Patient {
    pub name: String,
    pub id: String,
    pub birth_date: String,
    pub sex: String,
}

/// General Study module attributes.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Study {
    pub instance_uid: String,
    pub id: String,
    pub date: String,
    pub time: String,
    pub description: String,
    pub accession_number: String,
    pub referring_physician_name: String,
}

/// One instance's header.
#[derive(Clone, Debug, Serialize)]
pub struct InstanceHeader {
    pub path: PathBuf,
    pub transfer_syntax_uid: String,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub series_instance_uid: String,
    pub frame_of_reference_uid: String,
    pub modality: String,
    pub series_description: String,
    pub series_number: Option<i64>,
    pub instance_number: Option<i64>,
    pub manufacturer: String,
    pub patient: Patient,
    pub study: Study,
    pub rows: Option<u32>,
    pub columns: Option<u32>,
    /// (row spacing, column spacing) in mm, as stored.
    pub pixel_spacing: Option<[f64; 2]>,
    pub image_position: Option<[f64; 3]>,
    pub image_orientation: Option<[f64; 6]>,
    pub slice_thickness: Option<f64>,
    pub samples_per_pixel: Option<u32>,
    pub photometric_interpretation: String,
    pub bits_allocated: Option<u32>,
    pub pixel_representation: Option<u32>,
    pub number_of_frames: u32,
    /// For one frame of a multi-frame instance: its index (0-based).
    pub frame: Option<u32>,
    pub rescale_slope: f64,
    pub rescale_intercept: f64,
    pub has_pixel_data: bool,
    /// Attributes present but unparsable (e.g. a DS that is not a number).
    pub problems: Vec<String>,
}

impl InstanceHeader {
    /// Human name of the transfer syntax, or the UID when unknown.
    pub fn transfer_syntax_name(&self) -> String {
        transfer_syntax_name(&self.transfer_syntax_uid)
    }
}

/// Name of a transfer syntax UID known to dicom-rs.
pub fn transfer_syntax_name(uid: &str) -> String {
    TransferSyntaxRegistry
        .get(uid)
        .map(|ts| ts.name().to_string())
        .unwrap_or_else(|| format!("unknown transfer syntax {uid}"))
}

/// True when the file starts with a 128-byte preamble and `DICM`.
pub fn has_dicm_magic(path: &Path) -> Result<bool, Error> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, "cannot open", e))?;
    let mut buf = [0u8; PREAMBLE_BYTES + 4];
    let mut n = 0;
    while n < buf.len() {
        match f
            .read(&mut buf[n..])
            .map_err(|e| Error::io(path, "cannot read", e))?
        {
            0 => break,
            k => n += k,
        }
    }
    Ok(n == buf.len() && &buf[PREAMBLE_BYTES..] == b"DICM")
}

fn read_bytes(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| Error::io(path, "cannot read", e))
}

fn check_structure(bytes: &[u8], path: &Path) -> Result<(), Error> {
    if bytes.len() < PREAMBLE_BYTES + 4 || &bytes[PREAMBLE_BYTES..PREAMBLE_BYTES + 4] != b"DICM" {
        return Err(Error::file(
            path,
            "not a DICOM Part 10 file (no DICM prefix at byte 128)",
        ));
    }
    crate::length_guard::check(bytes)
        .map_err(|m| Error::file(path, format!("corrupt DICOM file: {m}")))
}

/// Parses a Part 10 file up to (not including) its pixel data.
fn header_object(path: &Path) -> Result<DefaultDicomObject, Error> {
    let bytes = read_bytes(path)?;
    check_structure(&bytes, path)?;
    OpenFileOptions::new()
        .read_preamble(ReadPreamble::Never)
        .read_until(tags::PIXEL_DATA)
        .from_reader(&bytes[PREAMBLE_BYTES..])
        .map_err(|e| Error::file(path, format!("cannot parse DICOM header: {e}")))
}

/// Reads the header of a Part 10 file (the parse stops before the pixel data).
pub fn read_header(path: &Path) -> Result<InstanceHeader, Error> {
    Ok(extract(&header_object(path)?, path))
}

/// Reads the header of a Part 10 file, one header per frame for a
/// multi-frame (Enhanced MR) instance.
pub fn read_headers(path: &Path) -> Result<Vec<InstanceHeader>, Error> {
    let obj = header_object(path)?;
    let h = extract(&obj, path);
    crate::multiframe::expand(&obj, h).map_err(|m| Error::file(path, m))
}

/// Opens a Part 10 file completely (header and pixel data).
pub fn open_full(path: &Path) -> Result<DefaultDicomObject, Error> {
    parse_bytes(&read_bytes(path)?, path)
}

/// Parses a Part 10 file held in memory (preamble included), after checking
/// that no element claims more bytes than the file holds. Also the fuzz
/// target's entry; `path` only names the source in messages.
pub fn parse_bytes(bytes: &[u8], path: &Path) -> Result<DefaultDicomObject, Error> {
    check_structure(bytes, path)?;
    OpenFileOptions::new()
        .read_preamble(ReadPreamble::Never)
        .from_reader(&bytes[PREAMBLE_BYTES..])
        .map_err(|e| Error::file(path, format!("cannot parse DICOM file: {e}")))
}

fn text(obj: &InMemDicomObject, tag: dicom_core::Tag) -> String {
    obj.get(tag)
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches(['\0', ' ']).trim().to_string())
        .unwrap_or_default()
}

fn floats(
    obj: &InMemDicomObject,
    tag: dicom_core::Tag,
    name: &str,
    n: usize,
    problems: &mut Vec<String>,
) -> Option<Vec<f64>> {
    let e = obj.get(tag)?;
    if e.value().multiplicity() == 0 {
        return None;
    }
    match e.to_multi_float64() {
        Ok(v) if v.len() == n && v.iter().all(|x| x.is_finite()) => Some(v),
        Ok(v) => {
            problems.push(format!(
                "{name} has {} value(s), expected {n} finite numbers",
                v.len()
            ));
            None
        }
        Err(err) => {
            problems.push(format!("{name} is not numeric: {err}"));
            None
        }
    }
}

fn int(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<i64> {
    obj.get(tag)
        .filter(|e| e.value().multiplicity() > 0)
        .and_then(|e| e.to_int::<i64>().ok())
}

fn uint(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<u32> {
    int(obj, tag).and_then(|v| u32::try_from(v).ok())
}

/// Extracts an [`InstanceHeader`] from a parsed object.
///
/// `has_pixel_data` is true when Pixel Data was read or, for a header-only
/// read (which stops before it), when Rows and Columns are present.
pub fn extract(obj: &DefaultDicomObject, path: &Path) -> InstanceHeader {
    let mut problems = Vec::new();
    let o: &InMemDicomObject = obj;
    let ts = obj
        .meta()
        .transfer_syntax()
        .trim_end_matches(['\0', ' '])
        .to_string();
    let sop_class = {
        let s = text(o, tags::SOP_CLASS_UID);
        if s.is_empty() {
            obj.meta()
                .media_storage_sop_class_uid()
                .trim_end_matches(['\0', ' '])
                .to_string()
        } else {
            s
        }
    };
    let spacing = floats(o, tags::PIXEL_SPACING, "PixelSpacing", 2, &mut problems);
    let ipp = floats(
        o,
        tags::IMAGE_POSITION_PATIENT,
        "ImagePositionPatient",
        3,
        &mut problems,
    );
    let iop = floats(
        o,
        tags::IMAGE_ORIENTATION_PATIENT,
        "ImageOrientationPatient",
        6,
        &mut problems,
    );
    let slope = floats(o, tags::RESCALE_SLOPE, "RescaleSlope", 1, &mut problems).map(|v| v[0]);
    let intercept = floats(
        o,
        tags::RESCALE_INTERCEPT,
        "RescaleIntercept",
        1,
        &mut problems,
    )
    .map(|v| v[0]);
    let thickness = floats(
        o,
        tags::SLICE_THICKNESS,
        "SliceThickness",
        1,
        &mut Vec::new(),
    )
    .map(|v| v[0]);
    let (rows, columns) = (uint(o, tags::ROWS), uint(o, tags::COLUMNS));
    InstanceHeader {
        path: path.to_path_buf(),
        transfer_syntax_uid: ts,
        sop_class_uid: sop_class,
        sop_instance_uid: text(o, tags::SOP_INSTANCE_UID),
        series_instance_uid: text(o, tags::SERIES_INSTANCE_UID),
        frame_of_reference_uid: text(o, tags::FRAME_OF_REFERENCE_UID),
        modality: text(o, tags::MODALITY),
        series_description: text(o, tags::SERIES_DESCRIPTION),
        series_number: int(o, tags::SERIES_NUMBER),
        instance_number: int(o, tags::INSTANCE_NUMBER),
        manufacturer: text(o, tags::MANUFACTURER),
        patient: Patient {
            name: text(o, tags::PATIENT_NAME),
            id: text(o, tags::PATIENT_ID),
            birth_date: text(o, tags::PATIENT_BIRTH_DATE),
            sex: text(o, tags::PATIENT_SEX),
        },
        study: Study {
            instance_uid: text(o, tags::STUDY_INSTANCE_UID),
            id: text(o, tags::STUDY_ID),
            date: text(o, tags::STUDY_DATE),
            time: text(o, tags::STUDY_TIME),
            description: text(o, tags::STUDY_DESCRIPTION),
            accession_number: text(o, tags::ACCESSION_NUMBER),
            referring_physician_name: text(o, tags::REFERRING_PHYSICIAN_NAME),
        },
        rows,
        columns,
        pixel_spacing: spacing.map(|v| [v[0], v[1]]),
        image_position: ipp.map(|v| [v[0], v[1], v[2]]),
        image_orientation: iop.map(|v| [v[0], v[1], v[2], v[3], v[4], v[5]]),
        slice_thickness: thickness,
        samples_per_pixel: uint(o, tags::SAMPLES_PER_PIXEL),
        photometric_interpretation: text(o, tags::PHOTOMETRIC_INTERPRETATION),
        bits_allocated: uint(o, tags::BITS_ALLOCATED),
        pixel_representation: uint(o, tags::PIXEL_REPRESENTATION),
        number_of_frames: uint(o, tags::NUMBER_OF_FRAMES).unwrap_or(1).max(1),
        frame: None,
        rescale_slope: slope.unwrap_or(1.0),
        rescale_intercept: intercept.unwrap_or(0.0),
        has_pixel_data: o.get(tags::PIXEL_DATA).is_some() || (rows.is_some() && columns.is_some()),
        problems,
    }
}
