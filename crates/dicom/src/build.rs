//! Small helpers for building DICOM objects: UIDs, DS strings that fit 16
//! bytes, element constructors, and atomic file writing.

use std::path::Path;

use dicom_core::value::{DataSetSequence, PrimitiveValue};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::mem::InMemElement;
use dicom_object::{FileDicomObject, FileMetaTableBuilder, InMemDicomObject};

use crate::header::{Patient, Study};
use crate::Error;

/// UID root: `2.25.` followed by a random UUID as a decimal integer
/// (ISO/IEC 9834-8 / ITU-T X.667, accepted by DICOM PS3.5 B.2 without a
/// registered organisational root).
pub const UID_ROOT: &str = "2.25.";
/// Implicit VR Little Endian: the transfer syntax every DICOM application
/// must accept, and one with 4-byte lengths (ContourData of a large lesion
/// can exceed the 64 KiB that explicit VR allows a DS element).
pub const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
/// Explicit VR Little Endian.
pub const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
/// Longest DS value (DICOM PS3.5 Table 6.2-1).
pub const DS_MAX_BYTES: usize = 16;
/// Our implementation UID and version name in the file meta group.
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.266515438196405373395187427353412398193";
pub const IMPLEMENTATION_VERSION: &str = "DELINEATE_0_1";

/// A new globally unique UID.
pub fn new_uid() -> String {
    let mut bytes = [0u8; 16];
    // getrandom failing means no OS entropy at all; fall back to time + pid
    // (still unique per run, as UIDs only need uniqueness).
    if getrandom::fill(&mut bytes).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        bytes = (t ^ (u128::from(std::process::id()) << 96)).to_le_bytes();
    }
    // UUID version 4, variant 1 bits.
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    format!("{UID_ROOT}{}", u128::from_be_bytes(bytes))
}

/// Formats a number as a DS string of at most 16 bytes, with as many
/// decimals (up to 6) as fit; `-0` becomes `0`.
pub fn ds(x: f64) -> String {
    for decimals in (0..=6).rev() {
        let mut s = format!("{x:.decimals$}");
        if s.contains('.') {
            s = s.trim_end_matches('0').trim_end_matches('.').to_string();
        }
        if s == "-0" {
            s = "0".into();
        }
        if s.len() <= DS_MAX_BYTES {
            return s;
        }
    }
    format!("{x:.3e}")
}

/// The civil date (year, month, day) of a count of days since 1970-01-01
/// (Howard Hinnant's algorithm; no calendar crate needed for UTC dates).
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Date and time now, local to this machine, as DICOM DA and TM strings,
/// with their Timezone Offset From UTC.
pub fn now_da_tm() -> (String, String, String) {
    local_da_tm(chrono::Local::now())
}

/// DICOM date, time and Timezone Offset From UTC (`+HHMM`) of a local time:
/// dates in DICOM objects are local to the institution, and the offset
/// (0008,0201) says which local time they are in (PS3.3 C.12.1.1.8).
pub fn local_da_tm<Tz: chrono::TimeZone>(t: chrono::DateTime<Tz>) -> (String, String, String)
where
    Tz::Offset: std::fmt::Display,
{
    (
        t.format("%Y%m%d").to_string(),
        t.format("%H%M%S").to_string(),
        t.format("%z").to_string(),
    )
}

/// A string element.
pub fn text(tag: Tag, vr: VR, value: impl Into<String>) -> InMemElement {
    let v: String = value.into();
    if v.is_empty() {
        DataElement::new(tag, vr, PrimitiveValue::Empty)
    } else {
        DataElement::new(tag, vr, PrimitiveValue::from(v))
    }
}

/// A multi-valued DS element.
pub fn ds_values(tag: Tag, values: &[f64]) -> InMemElement {
    let strs: Vec<String> = values.iter().map(|&x| ds(x)).collect();
    DataElement::new(tag, VR::DS, PrimitiveValue::Strs(strs.into()))
}

/// A US element.
pub fn us(tag: Tag, value: u16) -> InMemElement {
    DataElement::new(tag, VR::US, PrimitiveValue::from(value))
}

/// A sequence element.
pub fn seq(tag: Tag, items: Vec<InMemDicomObject>) -> InMemElement {
    DataElement::new(tag, VR::SQ, DataSetSequence::from(items))
}

/// An item built from elements.
pub fn item(elements: impl IntoIterator<Item = InMemElement>) -> InMemDicomObject {
    InMemDicomObject::from_element_iter(elements)
}

/// A Referenced SOP Class/Instance item pointing at one image; a frame of
/// a multi-frame instance adds Referenced Frame Number (1-based).
pub fn image_ref(slice: &crate::SliceRef) -> InMemDicomObject {
    let mut it = item([
        text(
            tags::REFERENCED_SOP_CLASS_UID,
            VR::UI,
            slice.sop_class_uid.as_str(),
        ),
        text(
            tags::REFERENCED_SOP_INSTANCE_UID,
            VR::UI,
            slice.sop_instance_uid.as_str(),
        ),
    ]);
    if let Some(f) = slice.frame {
        it.put(text(
            tags::REFERENCED_FRAME_NUMBER,
            VR::IS,
            (f + 1).to_string(),
        ));
    }
    it
}

/// Patient and General Study module attributes, copied from the source.
pub fn patient_study_elements(p: &Patient, st: &Study) -> Vec<InMemElement> {
    vec![
        text(tags::PATIENT_NAME, VR::PN, p.name.clone()),
        text(tags::PATIENT_ID, VR::LO, p.id.clone()),
        text(tags::PATIENT_BIRTH_DATE, VR::DA, p.birth_date.clone()),
        text(tags::PATIENT_SEX, VR::CS, p.sex.clone()),
        text(tags::STUDY_INSTANCE_UID, VR::UI, st.instance_uid.clone()),
        text(tags::STUDY_DATE, VR::DA, st.date.clone()),
        text(tags::STUDY_TIME, VR::TM, st.time.clone()),
        text(tags::ACCESSION_NUMBER, VR::SH, st.accession_number.clone()),
        text(
            tags::REFERRING_PHYSICIAN_NAME,
            VR::PN,
            st.referring_physician_name.clone(),
        ),
        text(tags::STUDY_DESCRIPTION, VR::LO, st.description.clone()),
        text(tags::STUDY_ID, VR::SH, st.id.clone()),
    ]
}

/// Adds the file meta group (with our implementation UID) to `obj`.
pub fn with_meta(
    obj: InMemDicomObject,
    transfer_syntax: &str,
    path: &Path,
) -> Result<FileDicomObject<InMemDicomObject>, Error> {
    obj.with_meta(
        FileMetaTableBuilder::new()
            .transfer_syntax(transfer_syntax)
            .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
            .implementation_version_name(IMPLEMENTATION_VERSION),
    )
    .map_err(|e| Error::file(path, format!("cannot build the file meta group: {e}")))
}

/// Writes a DICOM file atomically: a temporary file next to `path`, synced,
/// then renamed. Nothing appears at `path` unless the write completed.
pub fn write_atomically(
    file: &FileDicomObject<InMemDicomObject>,
    path: &Path,
) -> Result<(), Error> {
    Ok(delineate_imaging::atomic::write_atomically(
        path,
        ".dcm",
        |_, f| {
            file.write_all(f)
                .map_err(|e| format!("cannot write DICOM: {e}"))
        },
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ds_fits_sixteen_bytes() {
        assert_eq!(ds(-123.5), "-123.5");
        assert_eq!(ds(-0.0000001), "0");
        assert_eq!(ds(12.0), "12");
        assert_eq!(ds(-1234.567890123), "-1234.56789");
        for x in [-98765.4321987, 1.0 / 3.0, 123456789.123456, -0.000123456789] {
            let s = ds(x);
            assert!(s.len() <= DS_MAX_BYTES, "{s}");
            assert!(
                (s.parse::<f64>().unwrap() - x).abs() < 1e-3 * x.abs().max(1.0),
                "{s} vs {x}"
            );
        }
    }

    #[test]
    fn uids_are_valid_and_unique() {
        let (a, b) = (new_uid(), new_uid());
        assert_ne!(a, b);
        for u in [&a, &b, &IMPLEMENTATION_CLASS_UID.to_string()] {
            assert!(u.len() <= 64 && u.starts_with(UID_ROOT), "{u}");
            assert!(
                u.split('.')
                    .all(|c| !c.is_empty() && (c == "0" || !c.starts_with('0'))),
                "{u}"
            );
        }
        let (d, t, z) = now_da_tm();
        assert_eq!((d.len(), t.len(), z.len()), (8, 6, 5));
        let at = chrono::DateTime::parse_from_rfc3339("2026-03-29T01:30:00+02:00").unwrap();
        assert_eq!(
            local_da_tm(at),
            ("20260329".into(), "013000".into(), "+0200".into())
        );
        let west = chrono::DateTime::parse_from_rfc3339("2026-12-01T23:59:59-05:00").unwrap();
        assert_eq!(local_da_tm(west).2, "-0500");
    }
}
