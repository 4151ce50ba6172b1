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
        .with_presentation_context(
            class.as_str(),
            vec![
                EXPLICIT_VR_LITTLE_ENDIAN.uid(),
                IMPLICIT_VR_LITTLE_ENDIAN.uid(),
            ],
        )
        .connection_timeout(NETWORK_TIMEOUT)
        .read_timeout(NETWORK_TIMEOUT)
        .write_timeout(NETWORK_TIMEOUT)
        .establish((dest.host.as_str(), dest.port))
        .map_err(|e| format!("{at}: cannot associate: {e}"))?;
    let pc = assoc
        .presentation_contexts()
        .iter()
        .find(|p| p.reason == PresentationContextResultReason::Acceptance)
        .cloned()
        .ok_or_else(|| format!("{at}: does not accept {class}"))?;
    let ts = if pc.transfer_syntax.trim_end_matches('\0') == IMPLICIT_VR_LITTLE_ENDIAN.uid() {
        IMPLICIT_VR_LITTLE_ENDIAN.erased()
    } else {
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
