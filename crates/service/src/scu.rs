//! The DICOM node as SCU: C-STORE of a result to a destination.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use dicom_dictionary_std::tags;
use dicom_transfer_syntax_registry::entries::{
    EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN,
};
use dicom_ul::association::ClientAssociationOptions;
use dicom_ul::pdu::{PDataValue, PDataValueType, Pdu, PresentationContextResultReason};

use crate::config::Destination;
use crate::dimse;

/// How long we wait for a destination to connect and to answer.
pub const NETWORK_TIMEOUT: Duration = Duration::from_secs(30);

/// Status classes that mean "stored" (PS3.4 B.2.3: success and warnings
/// such as coercion of data elements).
fn stored(status: u16) -> bool {
    status == dimse::SUCCESS || status == 0x0001 || (status & 0xF000) == 0xB000
}

/// Sends the Part 10 file at `path` to `dest`, calling as `our_ae`.
/// The error names the destination and what went wrong.
pub fn store(dest: &Destination, our_ae: &str, path: &Path) -> Result<(), String> {
    let at = format!(
        "{} ({}@{}:{})",
        dest.name, dest.ae_title, dest.host, dest.port
    );
    let obj = dicom_object::open_file(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let class = obj
        .meta()
        .media_storage_sop_class_uid()
        .trim_end_matches('\0')
        .to_string();
    let instance = obj
        .meta()
        .media_storage_sop_instance_uid()
        .trim_end_matches('\0')
        .to_string();
    let mut assoc = ClientAssociationOptions::new()
        .calling_ae_title(our_ae)
        .called_ae_title(dest.ae_title.as_str())
        // Implicit VR Little Endian first, in a context of its own: every
        // element length is 32 bits there, so a structure set of any size
        // goes through intact (every SCP must accept it, PS3.5 10.1).
        // Explicit VR in a second context, for receivers that break the
        // rule, used only when no element needs more than 64 KiB.
        .with_presentation_context(class.as_str(), vec![IMPLICIT_VR_LITTLE_ENDIAN.uid()])
        .with_presentation_context(class.as_str(), vec![EXPLICIT_VR_LITTLE_ENDIAN.uid()])
        .connection_timeout(NETWORK_TIMEOUT)
        .read_timeout(NETWORK_TIMEOUT)
        .write_timeout(NETWORK_TIMEOUT)
        .establish((dest.host.as_str(), dest.port))
        .map_err(|e| format!("{at}: cannot associate: {e}"))?;
    let accepted: Vec<_> = assoc
        .presentation_contexts()
        .iter()
        .filter(|p| p.reason == PresentationContextResultReason::Acceptance)
        .cloned()
        .collect();
    let is_implicit = |p: &dicom_ul::pdu::PresentationContextNegotiated| {
        p.transfer_syntax.trim_end_matches('\0') == IMPLICIT_VR_LITTLE_ENDIAN.uid()
    };
    let pc = accepted
        .iter()
        .find(|p| is_implicit(p))
        .or_else(|| accepted.first())
        .cloned()
        .ok_or_else(|| format!("{at}: does not accept {class}"))?;
    let ts = if is_implicit(&pc) {
        IMPLICIT_VR_LITTLE_ENDIAN.erased()
    } else {
        if let Err(e) = fits_explicit_vr(&obj) {
            let _ = assoc.abort();
            return Err(format!(
                "{at}: accepts only Explicit VR Little Endian, which cannot hold this structure set ({e}); \
                 nothing was sent (configure the receiver to accept Implicit VR Little Endian)"
            ));
        }
        EXPLICIT_VR_LITTLE_ENDIAN.erased()
    };
    let mut data = Vec::new();
    obj.write_dataset_with_ts(&mut data, &ts)
        .map_err(|e| format!("{}: cannot encode: {e}", path.display()))?;
    let cmd = dimse::store_rq(1, &class, &instance);
    let send = |assoc: &mut dicom_ul::association::ClientAssociation<_>| -> Result<(), String> {
        assoc
            .send(&Pdu::PData {
                data: vec![PDataValue {
                    presentation_context_id: pc.id,
                    value_type: PDataValueType::Command,
                    is_last: true,
                    data: cmd.clone(),
                }],
            })
            .map_err(|e| format!("{at}: cannot send the C-STORE request: {e}"))?;
        let mut w = assoc.send_pdata(pc.id);
        w.write_all(&data)
            .map_err(|e| format!("{at}: cannot send the data set: {e}"))?;
        w.finish()
            .map_err(|e| format!("{at}: cannot send the data set: {e}"))
    };
    send(&mut assoc)?;
    let status = loop {
        match assoc
            .receive()
            .map_err(|e| format!("{at}: no C-STORE response: {e}"))?
        {
            Pdu::PData { data } => {
                let bytes: Vec<u8> = data
                    .iter()
                    .filter(|v| v.value_type == PDataValueType::Command)
                    .flat_map(|v| v.data.iter().copied())
                    .collect();
                let rsp = dimse::parse(&bytes).map_err(|e| format!("{at}: {e}"))?;
                break rsp.status.unwrap_or(0xFFFF);
            }
            Pdu::AbortRQ { .. } => return Err(format!("{at}: aborted the association")),
            _ => continue,
        }
    };
    let _ = assoc.release();
    if stored(status) {
        Ok(())
    } else {
        Err(format!("{at}: C-STORE status 0x{status:04X}"))
    }
}

/// The SOP Instance UID of a Part 10 file (for the audit log).
pub fn instance_uid(path: &Path) -> Option<String> {
    let obj = dicom_object::OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(path)
        .ok()?;
    Some(
        obj.meta()
            .media_storage_sop_instance_uid()
            .trim_end_matches('\0')
            .to_string(),
    )
}

/// Longest value of an element whose Explicit VR encoding has a 16-bit
/// length (PS3.5 7.1.2).
const SHORT_LENGTH_MAX: usize = 0xFFFE;

/// Ok when every element can be written in Explicit VR Little Endian: no
/// value of a VR with a 16-bit length field (DS, IS, LO, ...) exceeds 64 KiB.
/// dicom-rs would write such a length modulo 2¹⁶, corrupting the stream, so
/// the check comes before any byte is sent.
pub fn fits_explicit_vr(obj: &dicom_object::InMemDicomObject) -> Result<(), String> {
    use dicom_core::header::Header;
    use dicom_core::value::Value;
    use dicom_core::VR;
    for e in obj {
        match e.value() {
            Value::Sequence(seq) => {
                for item in seq.items() {
                    fits_explicit_vr(item)?;
                }
            }
            Value::Primitive(p) => {
                let long = matches!(
                    e.vr(),
                    VR::OB
                        | VR::OD
                        | VR::OF
                        | VR::OL
                        | VR::OV
                        | VR::OW
                        | VR::SQ
                        | VR::SV
                        | VR::UC
                        | VR::UN
                        | VR::UR
                        | VR::UT
                        | VR::UV
                );
                let n = p.calculate_byte_len();
                if !long && n > SHORT_LENGTH_MAX {
                    return Err(format!(
                        "{} ({:?}) holds {n} bytes, more than the 65 534 its 16-bit length allows",
                        e.tag(),
                        e.vr()
                    ));
                }
            }
            Value::PixelSequence(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::{DataElement, PrimitiveValue, VR};

    #[test]
    fn long_contour_data_does_not_fit_explicit_vr() {
        let mut o = dicom_object::InMemDicomObject::new_empty();
        let small: Vec<String> = (0..300).map(|i| format!("{i}.5")).collect();
        o.put(DataElement::new(
            tags::CONTOUR_DATA,
            VR::DS,
            PrimitiveValue::Strs(small.into()),
        ));
        assert!(fits_explicit_vr(&o).is_ok());
        let big: Vec<String> = (0..12_000).map(|i| format!("-{i}.25")).collect();
        let mut item = dicom_object::InMemDicomObject::new_empty();
        item.put(DataElement::new(
            tags::CONTOUR_DATA,
            VR::DS,
            PrimitiveValue::Strs(big.into()),
        ));
        o.put(DataElement::new(
            tags::CONTOUR_SEQUENCE,
            VR::SQ,
            dicom_core::value::DataSetSequence::from(vec![item]),
        ));
        let e = fits_explicit_vr(&o).unwrap_err();
        assert!(e.contains("(3006,0050)") && e.contains("65 534"), "{e}");
    }
}
