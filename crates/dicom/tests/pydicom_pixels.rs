//! Pixel decoding of real files from pydicom's test set (written by many
//! vendors and toolkits), compared value for value with pydicom (with its
//! pylibjpeg plugin for JPEG) after the modality rescale.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use delineate_dicom::check_transfer_syntax;
use delineate_dicom::header::{extract, open_full};
use delineate_dicom::{decode_object, Error};

fn pydicom_test_files() -> PathBuf {
    let out = Command::new("python3")
        .args(["-c", "import os, pydicom.data as d; print(os.path.join(os.path.dirname(d.__file__), 'test_files'))"])
        .output()
        .expect("python3 with pydicom (run ./setup.sh)");
    assert!(out.status.success(), "pydicom is needed: run ./setup.sh");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// pydicom's first frame, rescaled, as f64, written to `dst` (raw little endian).
fn pydicom_pixels(src: &Path, dst: &Path) -> Vec<f64> {
    let code = format!(
        "import pydicom, numpy as np\nfrom pydicom.pixels import apply_modality_lut\n\
         ds = pydicom.dcmread({:?}); a = ds.pixel_array\n\
         a = a[0] if int(ds.get('NumberOfFrames', 1) or 1) > 1 else a\n\
         np.asarray(apply_modality_lut(a, ds), dtype='<f8').tofile({:?})",
        src.to_string_lossy(),
        dst.to_string_lossy()
    );
    let out = Command::new("python3")
        .args(["-c", &code])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "pydicom failed on {}: {}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(dst)
        .expect("read pydicom output")
        .chunks(8)
        .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect()
}

#[test]
fn decoded_values_equal_pydicom() {
    let dir = pydicom_test_files();
    let tmp = tempfile::tempdir().unwrap();
    let names = [
        "CT_small.dcm",           // signed 16-bit, rescale intercept
        "MR_small.dcm",           // explicit VR LE
        "MR_small_implicit.dcm",  // implicit VR LE
        "MR_small_bigendian.dcm", // explicit VR BE
        "MR_small_expb.dcm",      // explicit VR BE
        "MR_small_RLE.dcm",       // RLE lossless
        "MR_small_padded.dcm",    // excess padding after the pixels
        "image_dfl.dcm",          // deflated explicit VR LE
        "examples_overlay.dcm",   // 16-bit unsigned with overlays
    ];
    for name in names {
        compare_with_pydicom(&dir.join(name), name, tmp.path(), 1e-4);
    }
}

/// Decodes `path` ourselves and with pydicom; `tol` is the largest allowed
/// absolute difference (lossy JPEG decoders may round differently by 1).
fn compare_with_pydicom(path: &Path, name: &str, tmp: &Path, tol: f64) {
    {
        let obj = open_full(path).unwrap_or_else(|e| panic!("{name}: {e}"));
        // The in-memory parser (the fuzz target's entry) reads the same object.
        let mem = delineate_dicom::header::parse_bytes(&std::fs::read(path).unwrap(), path)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            extract(&mem, path).sop_instance_uid,
            extract(&obj, path).sop_instance_uid,
            "{name}"
        );
        let h = extract(&obj, path);
        check_transfer_syntax(&h).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (nx, ny) = (h.columns.unwrap() as usize, h.rows.unwrap() as usize);
        let ours = decode_object(&obj, path, nx, ny).unwrap_or_else(|e| panic!("{name}: {e}"));
        let theirs = pydicom_pixels(path, &tmp.join(format!("{name}.f64")));
        assert_eq!(ours.len(), theirs.len(), "{name}");
        let max = ours
            .iter()
            .zip(&theirs)
            .map(|(a, b)| (*a as f64 - b).abs())
            .fold(0.0, f64::max);
        let differing = ours
            .iter()
            .zip(&theirs)
            .filter(|(a, b)| (**a as f64 - **b).abs() > 1e-4)
            .count();
        assert!(max <= tol, "{name}: largest difference {max}");
        assert!(
            differing * 20 <= ours.len(),
            "{name}: {differing} of {} values differ",
            ours.len()
        );
        assert!(
            theirs.iter().any(|&v| v != theirs[0]),
            "{name}: a constant image tests nothing"
        );
    }
}

/// The same images compressed by dcmtk (JPEG lossless, JPEG baseline, RLE),
/// decoded by us and by pydicom (pylibjpeg).
#[test]
fn dcmtk_compressed_images_equal_pydicom() {
    let dir = pydicom_test_files();
    let tmp = tempfile::tempdir().unwrap();
    let variants: [(&str, &str, &[&str], f64); 5] = [
        ("MR_small.dcm", "dcmcjpeg", &["+e1"], 0.0), // lossless SV1, 16-bit signed
        ("MR_small.dcm", "dcmcjpeg", &["+el"], 0.0), // lossless, other predictors
        ("CT_small.dcm", "dcmcjpeg", &["+e1"], 0.0), // lossless with rescale
        ("image_dfl.dcm", "dcmcjpeg", &["+eb"], 1.0), // baseline 8-bit (lossy: IDCTs may differ by 1)
        ("CT_small.dcm", "dcmcrle", &[], 0.0),        // RLE written by dcmtk
    ];
    for (n, (src, tool, args, tol)) in variants.iter().enumerate() {
        let out = tmp.path().join(format!("v{n}_{src}"));
        let mut cmd = Command::new(tool);
        cmd.args(*args).arg(dir.join(src)).arg(&out);
        let st = cmd
            .output()
            .unwrap_or_else(|e| panic!("{tool} (dcmtk) is needed: run ./setup.sh: {e}"));
        assert!(
            st.status.success(),
            "{tool} {args:?}: {}",
            String::from_utf8_lossy(&st.stderr)
        );
        compare_with_pydicom(&out, &format!("{tool} {args:?} {src}"), tmp.path(), *tol);
    }
}

/// 12 bits stored in 16 allocated, signed and unsigned, with garbage in
/// the unused high bits: masking and sign extension must match pydicom.
#[test]
fn bits_stored_below_bits_allocated_match_pydicom() {
    let dir = pydicom_test_files();
    let tmp = tempfile::tempdir().unwrap();
    for (name, signed) in [("signed12.dcm", 1), ("unsigned12.dcm", 0)] {
        let out = tmp.path().join(name);
        let code = format!(
            "import pydicom, numpy as np\n\
             ds = pydicom.dcmread({src:?})\n\
             a = (np.arange(64 * 64, dtype=np.uint16) * 37) % 4096\n\
             a |= np.uint16(0xA000)  # garbage above bit 11\n\
             ds.BitsStored = 12; ds.HighBit = 11; ds.PixelRepresentation = {signed}\n\
             ds.PixelData = a.astype('<u2').tobytes()\n\
             ds.save_as({out:?})",
            src = dir.join("MR_small.dcm").to_string_lossy(),
            out = out.to_string_lossy()
        );
        let st = Command::new("python3")
            .args(["-c", &code])
            .output()
            .expect("python3");
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
        compare_with_pydicom(&out, name, tmp.path(), 0.0);
    }
}

#[test]
fn undecodable_transfer_syntaxes_and_truncation_are_named() {
    let dir = pydicom_test_files();
    for (name, expect) in [
        ("MR_small_jpeg_ls_lossless.dcm", "JPEG-LS Lossless"),
        ("MR_small_jp2klossless.dcm", "JPEG 2000"),
        ("JPEG2000.dcm", "JPEG 2000"),
    ] {
        let path = dir.join(name);
        let obj = open_full(&path).unwrap();
        let err = check_transfer_syntax(&extract(&obj, &path))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(name) && err.contains(expect) && err.contains("decompress"),
            "{err}"
        );
    }
    // 12-bit JPEG Extended: the transfer syntax is known, but jpeg-decoder
    // does not decode 12-bit samples; the error must say so and name the file.
    let path = dir.join("JPGExtended.dcm");
    let obj = open_full(&path).unwrap();
    let err = decode_object(&obj, &path, 256, 1024)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("JPGExtended.dcm") && err.contains("JPEG Extended"),
        "{err}"
    );
    // 32-bit samples (RT Dose) and 1-bit SEG frames are not MR images.
    for (name, rows, cols) in [
        ("rtdose_1frame.dcm", 10, 10),
        ("liver_1frame.dcm", 512, 512),
    ] {
        let path = dir.join(name);
        let obj = open_full(&path).unwrap();
        let err = decode_object(&obj, &path, cols, rows)
            .unwrap_err()
            .to_string();
        assert!(err.contains(name) && err.contains("BitsAllocated"), "{err}");
    }
    let path = dir.join("MR_truncated.dcm");
    let err = match open_full(&path) {
        Err(e) => e,
        Ok(obj) => decode_object(&obj, &path, 64, 64).unwrap_err(),
    };
    assert!(
        matches!(err, Error::File { .. }) && err.to_string().contains("MR_truncated.dcm"),
        "{err}"
    );
}
