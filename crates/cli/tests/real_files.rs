//! Every file in pydicom's test set and dicom3tools' examples (scanner and
//! toolkit output we did not write) goes through `delineate info`: it is
//! described, or refused with a message naming the file. Never a crash.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::PathBuf;

use support::*;

fn pydicom_dir() -> PathBuf {
    let v = py("import pydicom.data as d\nprint(json.dumps(os.path.join(os.path.dirname(d.__file__), 'test_files')))");
    PathBuf::from(v.as_str().unwrap())
}

#[test]
fn every_real_file_is_described_or_refused_by_name() {
    let mut paths = files(&pydicom_dir());
    paths.extend(files(std::path::Path::new(
        "/usr/share/doc/dicom3tools/examples",
    )));
    let (mut described, mut refused) = (0, 0);
    for p in paths.iter().filter(|p| p.is_file()) {
        let ps = p.to_string_lossy();
        let out = delineate(&["info", &ps, "--json"]);
        match out.status.code() {
            Some(0) => {
                let v: serde_json::Value = serde_json::from_slice(&out.stdout)
                    .unwrap_or_else(|e| panic!("{ps}: bad JSON: {e}"));
                assert!(v["format"].is_string(), "{ps}");
                described += 1;
            }
            Some(1) => {
                let err = String::from_utf8_lossy(&out.stderr);
                let name = p.file_name().unwrap().to_string_lossy();
                assert!(
                    err.contains(name.as_ref()),
                    "{ps}: the error does not name the file: {err}"
                );
                refused += 1;
            }
            other => panic!("{ps}: unexpected exit {other:?}"),
        }
    }
    // Most are single DICOM instances (described as one series each); the
    // Part 10 files without a preamble, the zip and the text files are refused.
    assert!(described >= 60, "described {described}, refused {refused}");
    assert!(refused >= 5, "described {described}, refused {refused}");
}

#[test]
fn dicom3tools_scanner_file_is_listed_as_a_single_slice() {
    let dir = "/usr/share/doc/dicom3tools/examples";
    let v = info_json(std::path::Path::new(dir), &[]);
    assert_eq!(v["series"][0]["modality"], "MR");
    assert_eq!(v["series"][0]["is_volume"], false);
    assert!(v["note"].as_str().unwrap().contains("no 3-D image series"));
    let err = fails(&["convert", dir, "/tmp/never-written.nii.gz"]);
    assert!(
        err.contains("not a volume: a single slice") || err.contains("no 3-D image series"),
        "{err}"
    );
}

/// Every input the fuzzer once crashed on or blew up memory with goes
/// through `info` with a peak resident size under 256 MB (a 3 kB file once
/// made dicom-rs touch 4 GB): described,
/// or refused by name, never a crash. (Pixel decoding of the same files:
/// crates/dicom/tests/fuzz_regressions.rs.)
#[test]
fn fuzz_findings_are_refused_in_bounded_memory() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut n = 0;
    for dir in [
        "dicom/tests/fuzz_regressions",
        "imaging/tests/fuzz_regressions",
    ] {
        for f in files(&root.join(dir)) {
            let cmd = format!(
                "exec /usr/bin/time -f 'peak_kb=%M' {:?} info {:?}",
                bin(),
                f
            );
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(&cmd)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            let peak: u64 = err
                .lines()
                .find_map(|l| l.strip_prefix("peak_kb="))
                .expect("GNU time (./setup.sh)")
                .trim()
                .parse()
                .unwrap();
            assert!(peak < 256_000, "{}: peak {peak} kB", f.display());
            match out.status.code() {
                Some(0) => {}
                Some(1) => assert!(
                    err.contains(f.file_name().unwrap().to_str().unwrap()),
                    "{err}"
                ),
                other => panic!(
                    "{}: exit {other:?} (crash or allocation failure): {err}",
                    f.display()
                ),
            }
            n += 1;
        }
    }
    assert!(n >= 9, "{n}");
}
