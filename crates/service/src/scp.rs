//! The DICOM node as SCP: Verification (C-ECHO) and Storage (C-STORE).
//!
//! At most `node.max_associations` threads serve associations at once (one
//! per association, ended with it); connections beyond that wait in a
//! queue of the same length, and beyond that are refused at once with an
//! A-ASSOCIATE-RJ (and logged): a flood of connections costs no thread and
//! no memory. One address holds at most `max_associations_per_address`
//! connections (open or waiting; [`crate::admission`]), so one host cannot
//! take every slot. Every peer is bounded: its whole A-ASSOCIATE-RQ must
//! arrive within `association_request_timeout_s` of connect (ARTIM), and
//! inside the association a peer silent for `timeout_s` is dropped; command sets over 64 KiB,
//! an instance over `max_instance_mib` or an association over
//! `max_association_mib` abort the association.
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

use crate::admission::{HostSlot, PerHost, Refusal, Refuser};
use crate::dimse::{self, Command};
use crate::queue::SeriesKey;
use crate::{Counters, Service};

/// Largest command set: the ones we serve are a few hundred bytes.
pub const MAX_COMMAND_BYTES: usize = 64 * 1024;

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
    /// Per AE title, the address ranges it may connect from.
    ranges: &'a std::collections::BTreeMap<String, Vec<String>>,
    peer: Option<std::net::IpAddr>,
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
        if let Some(nets) = self.ranges.get(calling) {
            let inside = self.peer.is_some_and(|ip| {
                nets.iter()
                    .filter_map(|n| crate::cidr::Cidr::parse(n).ok())
                    .any(|c| c.contains(ip))
            });
            if !inside {
                // The title is right but not from where it may call.
                return Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized);
            }
        }
        Ok(())
    }
}

/// Serves associations from `listener` (over TLS with `tls`).
pub fn accept_loop(
    svc: Arc<Service>,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    let n = svc.config.node.max_associations;
    let hosts = Arc::new(PerHost::default());
    let refuser = Refuser::start();
    // Connections waiting for a free slot: as many as there are slots.
    let (tx, rx) = std::sync::mpsc::sync_channel::<(TcpStream, String, HostSlot)>(n);
    {
        let s = svc.clone();
        // The dispatcher: at most `n` association threads at once, each
        // ending with its association (so the allocator gives its memory
        // back, which a long-lived pool thread would keep).
        std::thread::spawn(move || {
            let slots = Arc::new((Mutex::new(0usize), std::sync::Condvar::new()));
            for (stream, peer, host) in rx {
                {
                    let (m, cv) = &*slots;
                    let mut busy = m.lock().unwrap_or_else(|p| p.into_inner());
                    while *busy >= n {
                        busy = cv.wait(busy).unwrap_or_else(|p| p.into_inner());
                    }
                    *busy += 1;
                }
                let (s, slots, tls) = (s.clone(), slots.clone(), tls.clone());
                std::thread::spawn(move || {
                    s.counters
                        .active_associations
                        .fetch_add(1, Ordering::SeqCst);
                    handle(&s, stream, &peer, tls);
                    // The address's place is free as soon as the peer is.
                    drop(host);
                    s.counters
                        .active_associations
                        .fetch_sub(1, Ordering::SeqCst);
                    let (m, cv) = &*slots;
                    *m.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
                    cv.notify_one();
                });
            }
        });
    }
    for stream in listener.incoming() {
        if svc.stopping() {
            break;
        }
        let Ok(stream) = stream else { continue };
        let Ok(addr) = stream.peer_addr() else {
            continue;
        };
        let peer = addr.to_string();
        let limit = svc.config.node.limit_for(addr.ip());
        let host = match hosts.admit(addr.ip(), limit) {
            Ok(h) => h,
            Err(open) => {
                refuser.refuse(stream, Refusal::AddressLimit);
                refused(
                    &svc,
                    &peer,
                    format!(
                        "{open} associations already open from {} (node.max_associations_per_address \
                         or _per_range: {limit})",
                        addr.ip()
                    ),
                );
                continue;
            }
        };
        if let Err(std::sync::mpsc::TrySendError::Full((stream, peer, host))) =
            tx.try_send((stream, peer, host))
        {
            // Every thread busy and the queue full: refuse now.
            drop(host);
            refuser.refuse(stream, Refusal::Busy);
            refused(
                &svc,
                &peer,
                format!("busy: {n} associations open and {n} waiting (node.max_associations)"),
            );
        }
    }
}

/// Counts, logs and audits a connection refused before its association.
fn refused(svc: &Service, peer: &str, reason: String) {
    Counters::inc(&svc.counters.associations_rejected);
    tracing::warn!(peer, "association refused: {reason}");
    svc.audit.event(
        crate::audit::AuditEvent::AssociationRejected,
        json!({"peer": peer, "calling_ae": "", "reason": reason}),
    );
}

fn handle(svc: &Service, stream: TcpStream, peer: &str, tls: Option<Arc<rustls::ServerConfig>>) {
    let n = &svc.config.node;
    let who = Mutex::new(None);
    let allow = AllowList {
        allowed: &n.allowed_aes,
        ranges: &n.allowed_ips,
        peer: stream.peer_addr().ok().map(|a| a.ip()),
        calling: &who,
    };
    let timeout = Duration::from_secs_f64(n.timeout_s);
    let artim = Duration::from_secs_f64(n.association_request_timeout_s);
    // A peer that connects and does not send its whole A-ASSOCIATE-RQ
    // within the ARTIM time is dropped; inside the association, one silent
    // for the timeout.
    let _ = stream.set_read_timeout(Some(artim));
    let _ = stream.set_write_timeout(Some(timeout));
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
    if let Err(why) = wait_for_start(&stream, artim, tls.is_some()) {
        Counters::inc(&svc.counters.associations_rejected);
        tracing::warn!(peer, "connection dropped: {why}");
        svc.audit.event(
            crate::audit::AuditEvent::AssociationRejected,
            json!({"peer": peer, "calling_ae": "", "reason": why}),
        );
        return;
    }
    let established = match tls {
        Some(cfg) => opts
            .tls_config(cfg)
            .establish_tls(stream)
            .map(|a| Established::Tls(Box::new(a))),
        None => opts.establish(stream).map(Established::Plain),
    };
    let assoc = match established {
        Ok(a) => a,
        Err(e) => {
            Counters::inc(&svc.counters.associations_rejected);
            let calling = who
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .unwrap_or_default();
            let reason = e.to_string();
            tracing::warn!(peer, calling_ae = calling, "association refused: {reason}");
            svc.audit.event(
                crate::audit::AuditEvent::AssociationRejected,
                json!({"peer": peer, "calling_ae": calling, "reason": reason}),
            );
            return;
        }
    };
    Counters::inc(&svc.counters.associations);
    let calling = match &assoc {
        Established::Plain(a) => a.peer_ae_title(),
        Established::Tls(a) => a.peer_ae_title(),
    }
    .trim()
    .to_string();
    let mut session = Session {
        svc,
        calling: calling.clone(),
        stored: 0,
        refused: 0,
        series: std::collections::BTreeSet::new(),
    };
    let (end, transport) = match assoc {
        Established::Plain(a) => (session.serve(a), "plain"),
        Established::Tls(a) => (session.serve(*a), "tls"),
    };
    svc.audit.event(
        crate::audit::AuditEvent::Association,
        json!({"peer": peer, "calling_ae": calling, "stored": session.stored,
               "refused": session.refused, "series": session.series, "end": end,
               "transport": transport}),
    );
}

/// Largest A-ASSOCIATE-RQ waited for whole before the association starts
/// (one with every presentation context a modality proposes is a few KiB);
/// a longer one is left to dicom-ul's own limits.
const MAX_ASSOCIATE_RQ: usize = 64 * 1024;

/// Waits (at most `artim`, the ARTIM time) until the peer has sent what the
/// port expects first: a whole A-ASSOCIATE-RQ PDU on the plain port, a whole
/// first TLS record of type handshake (0x16) on the TLS port. A peer that
/// connects and stays silent, or sends a little and stops, gives its slot
/// back after `artim`.
///
/// Why here and not in dicom-ul: its socket read timeout is one setting for
/// the handshake and the association, and with its `sync-tls` feature
/// dicom-ul 0.10.1 retries the TLS acceptor on the bytes already read when
/// the first read fails, and at end of input that retry never ends. A peer
/// that connects and closes, goes silent, or sends half a ClientHello would
/// keep a pool thread spinning for ever. Looking at the bytes first
/// (without consuming them) means dicom-ul only sees peers that got that far.
fn wait_for_start(stream: &TcpStream, artim: Duration, tls: bool) -> Result<(), String> {
    let deadline = std::time::Instant::now() + artim;
    let mut buf = vec![0u8; MAX_ASSOCIATE_RQ];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let _ = stream.set_read_timeout(Some(left.max(Duration::from_millis(1))));
        let silent = || {
            format!(
                "no whole association request within {:.0} s (node.association_request_timeout_s)",
                artim.as_secs_f64()
            )
        };
        let n = match stream.peek(&mut buf) {
            Ok(0) => return Err("closed before sending anything".into()),
            Ok(n) => n,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return Err(silent())
            }
            Err(e) => return Err(format!("cannot read: {e}")),
        };
        // The length of the first PDU or record once its header is here.
        let need = if !tls {
            if buf[0] != 0x01 {
                return Err(format!(
                    "the first byte 0x{:02x} is not an A-ASSOCIATE-RQ (TLS to the plain port?)",
                    buf[0]
                ));
            }
            (n >= 6).then(|| 6 + u32::from_be_bytes([buf[2], buf[3], buf[4], buf[5]]) as usize)
        } else {
            if buf[0] != 0x16 {
                return Err(format!(
                    "the first byte 0x{:02x} is not a TLS handshake (plain DICOM to the TLS port?)",
                    buf[0]
                ));
            }
            (n >= 5).then(|| 5 + usize::from(u16::from_be_bytes([buf[3], buf[4]])))
        };
        if need.is_some_and(|need| n >= need || need > buf.len()) {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(if tls {
                "an incomplete TLS ClientHello, then silence".into()
            } else {
                silent()
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An association over plain TCP or TLS.
enum Established {
    Plain(dicom_ul::association::ServerAssociation<TcpStream>),
    Tls(Box<dicom_ul::association::ServerAssociation<dicom_ul::association::server::TlsStream>>),
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
        let node = &self.svc.config.node;
        let max_instance = (node.max_instance_mib * 1024 * 1024) as usize;
        let max_total = node.max_association_mib * 1024 * 1024;
        let mut total: u64 = 0;
        loop {
            let pdu = match assoc.receive() {
                Ok(p) => p,
                Err(e) => return format!("error: {e}"),
            };
            if let Pdu::PData { data } = &pdu {
                total += data.iter().map(|v| v.data.len() as u64).sum::<u64>();
                if total > max_total {
                    return abort(
                        assoc,
                        &format!(
                            "more than {} MiB in one association (node.max_association_mib)",
                            node.max_association_mib
                        ),
                    );
                }
            }
            match pdu {
                Pdu::PData { data } => {
                    for pdv in data {
                        match pdv.value_type {
                            PDataValueType::Command => {
                                if cmd_buf.len() + pdv.data.len() > MAX_COMMAND_BYTES {
                                    return abort(assoc, "command set larger than 64 KiB");
                                }
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
                                if data_buf.len() + pdv.data.len() > max_instance {
                                    return abort(
                                        assoc,
                                        &format!(
                                            "instance larger than {} MiB (node.max_instance_mib)",
                                            node.max_instance_mib
                                        ),
                                    );
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
        let acquisition = delineate_dicom::acquisition::read(&obj);
        let geometry = crate::batches::InstanceGeometry {
            position: h.image_position,
            orientation: h.image_orientation,
            frames: h.number_of_frames,
            images_in_acquisition: acquisition.images_in_acquisition,
        };
        let key = SeriesKey {
            series_uid: h.series_instance_uid.clone(),
            study_uid: h.study.instance_uid.clone(),
            modality: h.modality.clone(),
            description: h.series_description.clone(),
            calling_ae: self.calling.clone(),
            acquisition,
        };
        let r = self.svc.queue.add_instance(
            &key,
            &h.sop_instance_uid,
            &sha,
            part10.len() as u64,
            &geometry,
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
