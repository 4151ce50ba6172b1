//! DIMSE command sets for C-ECHO and C-STORE (PS3.7 §9.3, Annex E).
//!
//! Written here because dicom-ul negotiates associations but has no DIMSE
//! layer (../shared/notes/dicom-nifti-and-peers.md). Command sets are always
//! implicit VR little endian and start with their group length.

use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;

/// Command Field values (PS3.7 Table E.1-1).
pub const C_STORE_RQ: u16 = 0x0001;
pub const C_STORE_RSP: u16 = 0x8001;
pub const C_ECHO_RQ: u16 = 0x0030;
pub const C_ECHO_RSP: u16 = 0x8030;
/// Command Data Set Type: no data set follows.
pub const NO_DATASET: u16 = 0x0101;
/// A data set follows (any value but 0x0101; this is what dcmtk sends).
pub const DATASET_PRESENT: u16 = 0x0000;

/// Status codes (PS3.4 Annex B.2.3 and PS3.7 Annex C).
pub const SUCCESS: u16 = 0x0000;
/// Refused: SOP Class not supported.
pub const SOP_CLASS_NOT_SUPPORTED: u16 = 0x0122;
/// Refused: out of resources.
pub const OUT_OF_RESOURCES: u16 = 0xA700;
/// Error: data set does not match SOP Class.
pub const DATASET_MISMATCH: u16 = 0xA900;
/// Error: cannot understand.
pub const CANNOT_UNDERSTAND: u16 = 0xC000;
/// Unrecognised operation.
pub const UNRECOGNIZED_OPERATION: u16 = 0x0211;

/// An incoming command, as far as we use it.
#[derive(Debug, Clone)]
pub struct Command {
    pub field: u16,
    pub message_id: u16,
    pub sop_class: String,
    pub sop_instance: String,
    pub has_dataset: bool,
    pub status: Option<u16>,
}

fn text(obj: &InMemDicomObject, tag: Tag) -> String {
    obj.get(tag)
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
        .unwrap_or_default()
}

/// The command elements we read, with their fixed sizes (binary VRs).
/// Anything else in a command set (retired or unknown elements) is dropped
/// before dicom-rs parses it.
fn known_element(element: u16) -> Option<Option<usize>> {
    match element {
        0x0000 => Some(Some(4)),
        0x0100 | 0x0110 | 0x0120 | 0x0700 | 0x0800 | 0x0900 => Some(Some(2)),
        // Affected SOP Class/Instance UID, Error Comment.
        0x0002 | 0x1000 | 0x0902 => Some(None),
        _ => None,
    }
}

/// Checks that a command set is a flat run of whole elements, in tag
/// order, with binary elements of their fixed size, and keeps only the
/// elements we read. dicom-rs allocates what an element declares, so a
/// 70-byte command claiming gigabytes, or a UL element of 1 or 2 bytes,
/// made it allocate gigabytes (the `dicom_node` fuzz target's findings).
/// Command sets have no sequences and no undefined lengths (PS3.7 §6.3.1).
fn sanitize(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut p = 0usize;
    let mut last: Option<u16> = None;
    while p < bytes.len() {
        let Some(h) = bytes.get(p..p + 8) else {
            return Err(format!(
                "command set ends inside an element header at byte {p}"
            ));
        };
        let group = u16::from_le_bytes([h[0], h[1]]);
        let element = u16::from_le_bytes([h[2], h[3]]);
        let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]) as usize;
        let left = bytes.len() - p - 8;
        if group != 0x0000 {
            return Err(format!(
                "element ({group:04X},{element:04X}) in a command set"
            ));
        }
        if len > left {
            return Err(format!(
                "element (0000,{element:04X}) declares {len} bytes but only {left} remain"
            ));
        }
        if last.is_some_and(|l| element <= l) {
            return Err(format!(
                "element (0000,{element:04X}) out of order or repeated"
            ));
        }
        last = Some(element);
        match known_element(element) {
            Some(Some(size)) if size != len => {
                return Err(format!(
                    "element (0000,{element:04X}) has {len} bytes, expected {size}"
                ));
            }
            Some(_) => out.extend_from_slice(&bytes[p..p + 8 + len]),
            None => {}
        }
        p += 8 + len;
    }
    Ok(out)
}

/// Parses a command set; an error says what is wrong with it.
pub fn parse(bytes: &[u8]) -> Result<Command, String> {
    let clean = sanitize(bytes)?;
    let obj = InMemDicomObject::read_dataset_with_ts(
        clean.as_slice(),
        &IMPLICIT_VR_LITTLE_ENDIAN.erased(),
    )
    .map_err(|e| format!("unreadable command set: {e}"))?;
    let u16_of = |tag: Tag| -> Option<u16> { obj.get(tag).and_then(|e| e.to_int::<u16>().ok()) };
    let field = u16_of(tags::COMMAND_FIELD).ok_or("command set without Command Field")?;
    Ok(Command {
        field,
        message_id: u16_of(tags::MESSAGE_ID)
            .or_else(|| u16_of(tags::MESSAGE_ID_BEING_RESPONDED_TO))
            .unwrap_or(0),
        sop_class: text(&obj, tags::AFFECTED_SOP_CLASS_UID),
        sop_instance: text(&obj, tags::AFFECTED_SOP_INSTANCE_UID),
        has_dataset: u16_of(tags::COMMAND_DATA_SET_TYPE).is_some_and(|t| t != NO_DATASET),
        status: u16_of(tags::STATUS),
    })
}

fn encode(elements: Vec<DataElement<InMemDicomObject>>) -> Vec<u8> {
    let obj = InMemDicomObject::from_element_iter(elements);
    let mut body = Vec::new();
    // Writing a handful of known elements into memory cannot fail.
    let _ = obj.write_dataset_with_ts(&mut body, &IMPLICIT_VR_LITTLE_ENDIAN.erased());
    let mut out = Vec::with_capacity(body.len() + 12);
    out.extend_from_slice(&[0, 0, 0, 0, 4, 0, 0, 0]);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

fn ui(tag: Tag, v: &str) -> DataElement<InMemDicomObject> {
    // UIDs are padded to even length with NUL (PS3.5 §9.1).
    let mut s = v.to_string();
    if s.len() % 2 == 1 {
        s.push('\0');
    }
    DataElement::new(tag, VR::UI, PrimitiveValue::from(s))
}

fn us(tag: Tag, v: u16) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::US, PrimitiveValue::from(v))
}

/// C-ECHO-RSP, with the Affected SOP Class UID (Verification) and the
/// request's message id.
pub fn echo_rsp(rq: &Command) -> Vec<u8> {
    let class = if rq.sop_class.is_empty() {
        VERIFICATION
    } else {
        &rq.sop_class
    };
    encode(vec![
        ui(tags::AFFECTED_SOP_CLASS_UID, class),
        us(tags::COMMAND_FIELD, C_ECHO_RSP),
        us(tags::MESSAGE_ID_BEING_RESPONDED_TO, rq.message_id),
        us(tags::COMMAND_DATA_SET_TYPE, NO_DATASET),
        us(tags::STATUS, SUCCESS),
    ])
}

pub fn store_rsp(rq: &Command, status: u16) -> Vec<u8> {
    encode(vec![
        ui(tags::AFFECTED_SOP_CLASS_UID, &rq.sop_class),
        us(tags::COMMAND_FIELD, C_STORE_RSP),
        us(tags::MESSAGE_ID_BEING_RESPONDED_TO, rq.message_id),
        us(tags::COMMAND_DATA_SET_TYPE, NO_DATASET),
        us(tags::STATUS, status),
        ui(tags::AFFECTED_SOP_INSTANCE_UID, &rq.sop_instance),
    ])
}

pub fn echo_rq(message_id: u16) -> Vec<u8> {
    encode(vec![
        ui(tags::AFFECTED_SOP_CLASS_UID, VERIFICATION),
        us(tags::COMMAND_FIELD, C_ECHO_RQ),
        us(tags::MESSAGE_ID, message_id),
        us(tags::COMMAND_DATA_SET_TYPE, NO_DATASET),
    ])
}

pub fn store_rq(message_id: u16, sop_class: &str, sop_instance: &str) -> Vec<u8> {
    encode(vec![
        ui(tags::AFFECTED_SOP_CLASS_UID, sop_class),
        us(tags::COMMAND_FIELD, C_STORE_RQ),
        us(tags::MESSAGE_ID, message_id),
        // Priority: medium.
        us(tags::PRIORITY, 0),
        us(tags::COMMAND_DATA_SET_TYPE, DATASET_PRESENT),
        ui(tags::AFFECTED_SOP_INSTANCE_UID, sop_instance),
    ])
}

pub const VERIFICATION: &str = "1.2.840.10008.1.1";
pub const MR_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.4";
pub const ENHANCED_MR_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.4.1";
pub const LEGACY_CONVERTED_ENHANCED_MR_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.4.4";
/// Accepted so that a PACS pushing a whole study does not fail on its CT;
/// routing then skips it.
pub const CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";
pub const RT_STRUCTURE_SET_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.481.3";

/// Transfer syntaxes we accept: those our series reader decodes in pure
/// Rust (dicom-pixeldata's native codecs). JPEG 2000 and JPEG-LS are
/// refused at negotiation, so a sender converts or fails visibly.
pub const TRANSFER_SYNTAXES: &[&str] = &[
    "1.2.840.10008.1.2.1",    // explicit VR little endian
    "1.2.840.10008.1.2",      // implicit VR little endian
    "1.2.840.10008.1.2.1.99", // deflated explicit VR little endian
    "1.2.840.10008.1.2.4.70", // JPEG lossless, first-order prediction
    "1.2.840.10008.1.2.4.57", // JPEG lossless
    "1.2.840.10008.1.2.4.50", // JPEG baseline
    "1.2.840.10008.1.2.4.51", // JPEG extended
    "1.2.840.10008.1.2.5",    // RLE lossless
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_with_group_length() {
        let rq = store_rq(7, MR_IMAGE_STORAGE, "1.2.3.4");
        let len = u32::from_le_bytes([rq[8], rq[9], rq[10], rq[11]]) as usize;
        assert_eq!(len, rq.len() - 12);
        let c = parse(&rq).unwrap();
        assert_eq!(
            (c.field, c.message_id, c.has_dataset),
            (C_STORE_RQ, 7, true)
        );
        assert_eq!(
            (c.sop_class.as_str(), c.sop_instance.as_str()),
            (MR_IMAGE_STORAGE, "1.2.3.4")
        );
        let rsp = parse(&store_rsp(&c, OUT_OF_RESOURCES)).unwrap();
        assert_eq!(
            (rsp.field, rsp.message_id, rsp.status),
            (C_STORE_RSP, 7, Some(OUT_OF_RESOURCES))
        );
        assert!(!rsp.has_dataset);
        let e = parse(&echo_rsp(&parse(&echo_rq(3)).unwrap())).unwrap();
        assert_eq!(
            (e.field, e.message_id, e.sop_class.as_str()),
            (C_ECHO_RSP, 3, VERIFICATION)
        );
        assert!(parse(b"\x00\x00garbage").is_err());
        // A declared length past the end (the fuzzer's out-of-memory input)
        // and a non-command group are refused before parsing.
        let oom = [0u8, 0, 0, 1, 0xff, 0xff, 0xff, 0x7f, 1, 2];
        assert!(parse(&oom).unwrap_err().contains("declares"));
        assert!(parse(&[8, 0, 0x16, 0, 0, 0, 0, 0])
            .unwrap_err()
            .contains("command set"));
        let odd_ul = [0u8, 0, 0, 0, 1, 0, 0, 0, 7];
        assert!(parse(&odd_ul).unwrap_err().contains("expected 4"));
    }
}
