//! The DICOM node under hostile and heavy load, in-process on loopback:
//! 100 concurrent connections against 8 associations, a peer that opens TCP
//! and says nothing, one that sends endless command fragments, one that
//! declares a 4 GiB element, one that sends more than an instance may
//! hold, and an AE title calling from an address it may not use. Each is
//! refused or dropped on time, memory stays bounded, and the node keeps
//! answering C-ECHO.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use delineate_service::dimse;
use delineate_service::{Config, Service};
use dicom_ul::association::ClientAssociationOptions;
use dicom_ul::pdu::{PDataValue, PDataValueType, Pdu};

/// The service's DICOM node on a free loopback port, with `extra` node
/// settings; returns the port.
fn node(dir: &std::path::Path, extra: &str) -> (Arc<Service>, u16) {
    let cfg = dir.join("d.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[node]
ae_title = "DELINEATE"
port = 1
allowed_aes = ["PACS", "REMOTE"]
max_associations = 8
timeout_s = 2
max_instance_mib = 1
max_association_mib = 4
{extra}
[http]
token = "0123456789abcdef0123456789"
[storage]
dir = "store"
"#
        ),
    )
    .unwrap();
    let config = Config::load(&cfg).unwrap();
    let svc = Service::new(config, "/nonexistent".into()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let s = svc.clone();
    std::thread::spawn(move || delineate_service::scp::accept_loop(s, listener, None));
    (svc, port)
}

fn echo(port: u16, calling: &str) -> Result<(), String> {
    let mut a = ClientAssociationOptions::new()
        .calling_ae_title(calling)
        .called_ae_title("DELINEATE")
        .with_presentation_context(dimse::VERIFICATION, vec!["1.2.840.10008.1.2"])
        .connection_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(10))
        .establish(("127.0.0.1", port))
        .map_err(|e| e.to_string())?;
    let pc = a.presentation_contexts()[0].id;
    a.send(&Pdu::PData {
        data: vec![PDataValue {
            presentation_context_id: pc,
            value_type: PDataValueType::Command,
            is_last: true,
            data: dimse::echo_rq(1),
        }],
    })
    .map_err(|e| e.to_string())?;
    match a.receive().map_err(|e| e.to_string())? {
        Pdu::PData { .. } => {
            let _ = a.release();
            Ok(())
        }
        other => Err(format!("{other:?}")),
    }
}

/// Peak resident memory of this process (the node runs in it), MiB.
fn vm_hwm_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
}

/// An association for C-STORE of MR images; its presentation context id.
fn store_assoc(
    port: u16,
) -> (
    dicom_ul::association::ClientAssociation<std::net::TcpStream>,
    u8,
) {
    let a = ClientAssociationOptions::new()
        .calling_ae_title("PACS")
        .called_ae_title("DELINEATE")
        .with_presentation_context(dimse::MR_IMAGE_STORAGE, vec!["1.2.840.10008.1.2"])
        .read_timeout(Duration::from_secs(10))
        .establish(("127.0.0.1", port))
        .unwrap();
    let pc = a.presentation_contexts()[0].id;
    (a, pc)
}

/// Waits for the peer to close the association; how long it took.
fn closed_within(
    a: &mut dicom_ul::association::ClientAssociation<std::net::TcpStream>,
) -> Result<Duration, String> {
    let t = Instant::now();
    loop {
        match a.receive() {
            Ok(Pdu::AbortRQ { .. }) => return Ok(t.elapsed()),
            Ok(Pdu::PData { .. }) => continue,
            Ok(other) => return Err(format!("unexpected {other:?}")),
            Err(_) => return Ok(t.elapsed()),
        }
    }
}

#[test]
fn floods_and_hostile_peers_are_bounded_and_the_node_keeps_serving() {
    let tmp = tempfile::tempdir().unwrap();
    // One address may hold all the slots here (the per-address limit has a
    // test of its own, crates/cli/tests/serve_security.rs); a silent peer
    // is dropped after the ARTIM time of 2 s.
    let (svc, port) = node(
        tmp.path(),
        "max_associations_per_address = 100\nassociation_request_timeout_s = 2\n\
         [node.allowed_ips]\nREMOTE = [\"10.0.0.0/8\"]",
    );
    echo(port, "PACS").unwrap();

    // 100 connections at once against 8 threads and a queue of 8: the
    // excess is closed, nothing hangs, and the node still answers.
    let t = Instant::now();
    let handles: Vec<_> = (0..100)
        .map(|_| std::thread::spawn(move || echo(port, "PACS").is_ok()))
        .collect();
    let ok = handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .filter(|&b| b)
        .count();
    eprintln!(
        "100 concurrent associations: {ok} served in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    assert!(ok >= 8, "{ok}");
    assert!(t.elapsed() < Duration::from_secs(60));
    echo(port, "PACS").unwrap();

    // A peer that connects and says nothing is dropped after the ARTIM
    // time (2 s).
    let t = Instant::now();
    let mut silent = TcpStream::connect(("127.0.0.1", port)).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut buf = [0u8; 64];
    let n = silent.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the node answered a silent peer");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "{:?}\n{}",
        t.elapsed(),
        std::fs::read_to_string(tmp.path().join("store/audit.jsonl")).unwrap_or_default()
    );

    // Endless command fragments: aborted at 64 KiB.
    let (mut a, pc) = store_assoc(port);
    let chunk = vec![0u8; 16 * 1024];
    for _ in 0..8 {
        let r = a.send(&Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: pc,
                value_type: PDataValueType::Command,
                is_last: false,
                data: chunk.clone(),
            }],
        });
        if r.is_err() {
            break;
        }
    }
    closed_within(&mut a).unwrap();

    // A data set that declares a 4 GiB element: refused as corrupt,
    // nothing that size allocated.
    let (mut a, pc) = store_assoc(port);
    let uid = "1.2.3.4.5.6.7.8";
    let mut ds = Vec::new();
    // (0008,0016) SOP Class UID, then (7FE0,0010) Pixel Data claiming 4 GiB.
    ds.extend_from_slice(&[0x08, 0x00, 0x16, 0x00]);
    let class = dimse::MR_IMAGE_STORAGE.as_bytes();
    let padded = class.len() + class.len() % 2;
    ds.extend_from_slice(&(padded as u32).to_le_bytes());
    ds.extend_from_slice(class);
    if class.len() % 2 == 1 {
        ds.push(0);
    }
    ds.extend_from_slice(&[0xE0, 0x7F, 0x10, 0x00, 0xF0, 0xFF, 0xFF, 0xFF]);
    ds.extend_from_slice(&[0u8; 64]);
    for (t, data) in [
        (
            PDataValueType::Command,
            dimse::store_rq(1, dimse::MR_IMAGE_STORAGE, uid),
        ),
        (PDataValueType::Data, ds),
    ] {
        a.send(&Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: pc,
                value_type: t,
                is_last: true,
                data,
            }],
        })
        .unwrap();
    }
    match a.receive().unwrap() {
        Pdu::PData { data } => {
            let rsp = dimse::parse(&data[0].data).unwrap();
            assert_ne!(rsp.status, Some(dimse::SUCCESS));
        }
        other => panic!("{other:?}"),
    }
    let _ = a.release();

    // More than max_instance_mib (1 MiB) in one instance: aborted.
    let (mut a, pc) = store_assoc(port);
    a.send(&Pdu::PData {
        data: vec![PDataValue {
            presentation_context_id: pc,
            value_type: PDataValueType::Command,
            is_last: true,
            data: dimse::store_rq(2, dimse::MR_IMAGE_STORAGE, uid),
        }],
    })
    .unwrap();
    let piece = vec![0u8; 60 * 1024];
    for _ in 0..40 {
        let r = a.send(&Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: pc,
                value_type: PDataValueType::Data,
                is_last: false,
                data: piece.clone(),
            }],
        });
        if r.is_err() {
            break;
        }
    }
    closed_within(&mut a).unwrap();

    // REMOTE may call only from 10.0.0.0/8: from 127.0.0.1 it is refused.
    let e = echo(port, "REMOTE").unwrap_err();
    assert!(e.to_lowercase().contains("reject"), "{e}");
    echo(port, "PACS").unwrap();

    let peak = vm_hwm_mib();
    eprintln!("peak RSS of the test process with the node: {peak} MiB");
    assert!(peak < 512, "{peak} MiB");
    // The node writes an association's audit line when it has closed it.
    let read = || std::fs::read_to_string(tmp.path().join("store/audit.jsonl")).unwrap();
    let t = Instant::now();
    while !(read().contains("node.max_instance_mib")
        && read().contains("node.association_request_timeout_s"))
        && t.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let audit = read();
    assert!(audit.contains("command set larger than 64 KiB"), "{audit}");
    assert!(audit.contains("node.max_instance_mib"), "{audit}");
    assert!(
        audit.contains("no whole association request within 2 s"),
        "{audit}"
    );
    assert!(delineate_service::audit::verify(&tmp.path().join("store/audit.jsonl")).is_ok());
    svc.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = TcpStream::connect(("127.0.0.1", port)).map(|mut s| s.write_all(b""));
}
