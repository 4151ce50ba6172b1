//! The DICOM node as SCP: Verification (C-ECHO) and Storage (C-STORE).
//!
//! One thread per association, at most `node.max_associations` at once.
//! Only calling AE titles on the allow-list associate; storage accepts MR,
//! Enhanced MR and CT (so a whole study pushed by a PACS does not fail;
//! routing skips what is not processed) in the transfer syntaxes our series
//! reader decodes. An instance is answered with success only after it is
//! parsed, fsynced and recorded in the queue.

use std::net::{TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dicom_object::FileMetaTableBuilder;
use dicom_ul::association::server::AccessControl;
use dicom_ul::association::{Association, ServerAssociationOptions};
use dicom_ul::pdu::{
    AbortRQServiceProviderReason, AbortRQSource, AssociationRJServiceUserReason, PDataValue,
    PDataValueType, Pdu, PresentationContextResultReason, UserIdentity,
};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::dimse::{self, Command};
use crate::queue::SeriesKey;
use crate::{Counters, Service};

/// Largest single instance we take (an Enhanced MR of a whole study fits).
pub const MAX_INSTANCE_BYTES: usize = 1 << 30;

/// Storage SOP classes accepted.
pub const STORAGE_CLASSES: &[&str] = &[
    dimse::MR_IMAGE_STORAGE,
    dimse::ENHANCED_MR_IMAGE_STORAGE,
    dimse::LEGACY_CONVERTED_ENHANCED_MR_IMAGE_STORAGE,
    dimse::CT_IMAGE_STORAGE,
];

/// The allow-list, remembering who asked (for the audit log).
struct AllowList<'a> {
    allowed: &'a [String],
    busy: bool,
    calling: &'a Mutex<Option<String>>,
}

impl AccessControl for AllowList<'_> {
    fn check_access(
        &self,
        this_ae_title: &str,
        calling_ae_title: &str,
        called_ae_title: &str,
        _user_identity: Option<&UserIdentity>,
    ) -> Result<(), AssociationRJServiceUserReason> {
        let calling = calling_ae_title.trim();
        *self.calling.lock().unwrap_or_else(|p| p.into_inner()) = Some(calling.to_string());
        if called_ae_title.trim() != this_ae_title {
            return Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized);
        }
        if !self.allowed.iter().any(|a| a == calling) {
            return Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized);
        }
        if self.busy {
            return Err(AssociationRJServiceUserReason::NoReasonGiven);
        }
        Ok(())
    }
}

pub fn accept_loop(svc: Arc<Service>, listener: TcpListener) {
    for stream in listener.incoming() {
        if svc.stopping() {
            break;
        }
        let Ok(stream) = stream else { continue };
        let s = svc.clone();
        let active = s
            .counters
            .active_associations
            .fetch_add(1, Ordering::SeqCst)
            + 1;
        let busy = active as usize > s.config.node.max_associations;
        std::thread::spawn(move || {
            let peer = stream
                .peer_addr()
                .map(|a| a.to_string())
                .unwrap_or_default();
            handle(&s, stream, &peer, busy);
            s.counters
                .active_associations
                .fetch_sub(1, Ordering::SeqCst);
        });
    }
}

fn handle(svc: &Service, stream: TcpStream, peer: &str, busy: bool) {
    let n = &svc.config.node;
    let who = Mutex::new(None);
    let allow = AllowList {
        allowed: &n.allowed_aes,
        busy,
        calling: &who,
    };
    let timeout = Duration::from_secs_f64(n.timeout_s);
    let mut opts = ServerAssociationOptions::new()
        .ae_access_control(allow)
        .ae_title(n.ae_title.as_str())
        .max_pdu_length(n.max_pdu)
        .read_timeout(timeout)
        .write_timeout(timeout)
        .with_abstract_syntax(dimse::VERIFICATION);
    for c in STORAGE_CLASSES {
        opts = opts.with_abstract_syntax(*c);
    }
    for ts in dimse::TRANSFER_SYNTAXES {
        opts = opts.with_transfer_syntax(*ts);
    }
    let assoc = match opts.establish(stream) {
        Ok(a) => a,
        Err(e) => {
            Counters::inc(&svc.counters.associations_rejected);
            let calling = who
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .unwrap_or_default();
            let reason = if busy {
                format!("busy: {} associations already open", n.max_associations)
            } else {
                e.to_string()
            };
            tracing::warn!(peer, calling_ae = calling, "association refused: {reason}");
            svc.audit.event(
                "association_rejected",
                json!({"peer": peer, "calling_ae": calling, "reason": reason}),
            );
            return;
        }
    };
    Counters::inc(&svc.counters.associations);
    let calling = assoc.peer_ae_title().trim().to_string();
    let mut session = Session {
        svc,
        calling: calling.clone(),
        stored: 0,
        refused: 0,
        series: std::collections::BTreeSet::new(),
    };
    let end = session.serve(assoc);
    svc.audit.event(
        "association",
        json!({"peer": peer, "calling_ae": calling, "stored": session.stored,
               "refused": session.refused, "series": session.series, "end": end}),
    );
}

struct Session<'a> {
    svc: &'a Service,
    calling: String,
    stored: u64,
    refused: u64,
    series: std::collections::BTreeSet<String>,
}

impl Session<'_> {
    /// Serves one association until release, abort or error; returns how
    /// it ended.
    fn serve<S>(&mut self, mut assoc: dicom_ul::association::ServerAssociation<S>) -> String
    where
        S: std::io::Read + std::io::Write + dicom_ul::association::CloseSocket,
    {
        let mut cmd_buf: Vec<u8> = Vec::new();
        let mut data_buf: Vec<u8> = Vec::new();
        let mut pending: Option<(Command, u8)> = None;
        loop {
            let pdu = match assoc.receive() {
                Ok(p) => p,
                Err(e) => return format!("error: {e}"),
            };
            match pdu {
                Pdu::PData { data } => {
                    for pdv in data {
                        match pdv.value_type {
                            PDataValueType::Command => {
                                cmd_buf.extend_from_slice(&pdv.data);
                                if !pdv.is_last {
                                    continue;
                                }
                                let cmd = match dimse::parse(&cmd_buf) {
                                    Ok(c) => c,
                                    Err(e) => return abort(assoc, &e),
                                };
                                cmd_buf.clear();
                                match cmd.field {
                                    dimse::C_ECHO_RQ => {
                                        Counters::inc(&self.svc.counters.echoes);
                                        let rsp = dimse::echo_rsp(&cmd);
                                        if let Err(e) = send_command(
                                            &mut assoc,
                                            pdv.presentation_context_id,
                                            rsp,
                                        ) {
                                            return format!("error: {e}");
                                        }
                                    }
                                    dimse::C_STORE_RQ if cmd.has_dataset => {
                                        data_buf.clear();
                                        pending = Some((cmd, pdv.presentation_context_id));
                                    }
                                    f => {
                                        return abort(
                                            assoc,
                                            &format!("unsupported DIMSE command 0x{f:04x}"),
                                        );
                                    }
                                }
                            }
                            PDataValueType::Data => {
                                let Some((cmd, pc_id)) = &pending else {
                                    return abort(assoc, "data set without a C-STORE request");
                                };
                                if *pc_id != pdv.presentation_context_id {
                                    return abort(
                                        assoc,
                                        "data set on another presentation context than its command",
                                    );
                                }
                                if data_buf.len() + pdv.data.len() > MAX_INSTANCE_BYTES {
                                    return abort(assoc, "instance larger than 1 GiB");
                                }
                                data_buf.extend_from_slice(&pdv.data);
                                if !pdv.is_last {
                                    continue;
                                }
                                let pc = assoc
                                    .presentation_contexts()
                                    .iter()
                                    .find(|p| p.id == *pc_id)
                                    .cloned();
                                let status = self.store(cmd, pc, &data_buf);
                                let rsp = dimse::store_rsp(cmd, status);
                                let id = *pc_id;
                                pending = None;
                                data_buf = Vec::new();
                                if let Err(e) = send_command(&mut assoc, id, rsp) {
                                    return format!("error: {e}");
                                }
                            }
                        }
                    }
                }
                Pdu::ReleaseRQ => {
                    let _ = assoc.send(&Pdu::ReleaseRP);
                    return "released".into();
                }
                Pdu::AbortRQ { .. } => return "aborted by peer".into(),
                other => return abort(assoc, &format!("unexpected {}", other.short_description())),
            }
        }
    }

    /// Stores one instance; returns the C-STORE status.
    fn store(
        &mut self,
        cmd: &Command,
        pc: Option<dicom_ul::pdu::PresentationContextNegotiated>,
        dataset: &[u8],
    ) -> u16 {
        let status = match self.try_store(cmd, pc, dataset) {
            Ok(()) => {
                self.stored += 1;
                Counters::inc(&self.svc.counters.instances_stored);
                return dimse::SUCCESS;
            }
            Err((status, why)) => {
                tracing::warn!(calling_ae = %self.calling, sop_instance = %cmd.sop_instance, "C-STORE refused: {why}");
                status
            }
        };
        self.refused += 1;
        Counters::inc(&self.svc.counters.instances_refused);
        status
    }

    fn try_store(
        &mut self,
        cmd: &Command,
        pc: Option<dicom_ul::pdu::PresentationContextNegotiated>,
        dataset: &[u8],
    ) -> Result<(), (u16, String)> {
        let pc = pc
            .filter(|p| p.reason == PresentationContextResultReason::Acceptance)
            .ok_or((
                dimse::CANNOT_UNDERSTAND,
                "no accepted presentation context".to_string(),
            ))?;
        if pc.abstract_syntax != cmd.sop_class || !STORAGE_CLASSES.contains(&cmd.sop_class.as_str())
        {
            return Err((
                dimse::SOP_CLASS_NOT_SUPPORTED,
                format!("SOP class {} not accepted here", cmd.sop_class),
            ));
        }
        let part10 =
            part10(cmd, &pc.transfer_syntax, dataset).map_err(|e| (dimse::CANNOT_UNDERSTAND, e))?;
        let label = std::path::PathBuf::from(format!("C-STORE from {}", self.calling));
        let obj = delineate_dicom::header::parse_bytes(&part10, &label)
            .map_err(|e| (dimse::CANNOT_UNDERSTAND, e.to_string()))?;
        let h = delineate_dicom::header::extract(&obj, &label);
        if h.sop_class_uid != cmd.sop_class || h.sop_instance_uid != cmd.sop_instance {
            return Err((
                dimse::DATASET_MISMATCH,
                "SOP Class/Instance UID of the data set differ from the request".into(),
            ));
        }
        if h.series_instance_uid.is_empty() || h.study.instance_uid.is_empty() {
            return Err((
                dimse::DATASET_MISMATCH,
                "no Series or Study Instance UID".into(),
            ));
        }
        let sha = crate::queue::hex(&Sha256::digest(dataset));
        let spooled = crate::durable::spool(&self.svc.dirs.spool, &part10)
            .map_err(|e| (dimse::OUT_OF_RESOURCES, e.to_string()))?;
        let key = SeriesKey {
            series_uid: h.series_instance_uid.clone(),
            study_uid: h.study.instance_uid.clone(),
            modality: h.modality.clone(),
            description: h.series_description.clone(),
            calling_ae: self.calling.clone(),
        };
        let r = self.svc.queue.add_instance(
            &key,
            &h.sop_instance_uid,
            &sha,
            part10.len() as u64,
            &spooled,
            &self.svc.dirs.batches,
        );
        if let Err(e) = r {
            let _ = std::fs::remove_file(&spooled);
            return Err((dimse::OUT_OF_RESOURCES, e.to_string()));
        }
        self.series.insert(h.series_instance_uid);
        Ok(())
    }
}

/// A Part 10 file: preamble, file meta group, then the data set exactly as
/// received (no re-encoding: what the sender sent is what we keep).
fn part10(cmd: &Command, ts: &str, dataset: &[u8]) -> Result<Vec<u8>, String> {
    let meta = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(cmd.sop_class.as_str())
        .media_storage_sop_instance_uid(cmd.sop_instance.as_str())
        .transfer_syntax(ts)
        .implementation_class_uid(delineate_dicom::build::IMPLEMENTATION_CLASS_UID)
        .implementation_version_name(delineate_dicom::build::IMPLEMENTATION_VERSION)
        .build()
        .map_err(|e| format!("cannot build the file meta group: {e}"))?;
    let mut out = vec![0u8; delineate_dicom::header::PREAMBLE_BYTES];
    out.extend_from_slice(b"DICM");
    meta.write(&mut out)
        .map_err(|e| format!("cannot write the file meta group: {e}"))?;
    out.extend_from_slice(dataset);
    Ok(out)
}

fn send_command<S>(
    assoc: &mut dicom_ul::association::ServerAssociation<S>,
    pc_id: u8,
    data: Vec<u8>,
) -> Result<(), dicom_ul::association::Error>
where
    S: std::io::Read + std::io::Write + dicom_ul::association::CloseSocket,
{
    assoc.send(&Pdu::PData {
        data: vec![PDataValue {
            presentation_context_id: pc_id,
            value_type: PDataValueType::Command,
            is_last: true,
            data,
        }],
    })
}

fn abort<S>(mut assoc: dicom_ul::association::ServerAssociation<S>, why: &str) -> String
where
    S: std::io::Read + std::io::Write + dicom_ul::association::CloseSocket,
{
    tracing::warn!("aborting association: {why}");
    let _ = assoc.send(&Pdu::AbortRQ {
        source: AbortRQSource::ServiceProvider(AbortRQServiceProviderReason::UnexpectedPdu),
    });
    format!("aborted: {why}")
}
