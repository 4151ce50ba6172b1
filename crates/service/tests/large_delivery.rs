//! A structure set whose ContourData exceeds 64 KiB (one contour with
//! thousands of points: a lesion with a ragged border on a fine grid) is
//! delivered by the C-STORE client to dcmtk's storescp intact: the
//! received file passes dciodvfy and pydicom reads the same points back.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use delineate_dicom::{write_mr_series, write_rtstruct, RoiSpec, RtStructOptions};
use delineate_imaging::{Geometry, Volume};
use delineate_service::config::{Destination, OnResult};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// A 720² slice whose square lesion has 1-voxel notches all around its
/// border: one contour of about 5 700 points.
fn ragged(g: &Geometry) -> Volume<u32> {
    let [nx, ny, nz] = g.size;
    let mut v = vec![0u32; nx * ny * nz];
    let (lo, hi) = (8usize, nx - 8);
    for y in lo..hi {
        for x in lo..hi {
            let notch_x = x % 2 == 1 && (y < lo + 4 || y >= hi - 4);
            let notch_y = y % 2 == 1 && (x < lo + 4 || x >= hi - 4);
            if !notch_x && !notch_y {
                v[x + nx * (y + ny)] = 1;
            }
        }
    }
    Volume::from_vec(g.clone(), v).unwrap()
}

fn python(code: &str) -> String {
    let o = Command::new("python3")
        .args(["-c", code])
        .output()
        .expect("python3 (./setup.sh installs pydicom)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

#[test]
fn a_structure_set_over_64_kib_reaches_storescp_intact() {
    let tmp = tempfile::tempdir().unwrap();
    let g = Geometry::new(
        [720, 720, 3],
        [0.5, 0.5, 1.0],
        [-180.0, -180.0, 0.0],
        [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
    )
    .unwrap();
    let image = Volume::from_vec(g.clone(), vec![100.0f32; 720 * 720 * 3]).unwrap();
    let meta = write_mr_series(&image, &tmp.path().join("series"), &Default::default()).unwrap();
    let rt = tmp.path().join("rt.dcm");
    let roi = RoiSpec {
        label: 1,
        name: "ragged".into(),
        color: [255, 0, 0],
        interpreted_type: "GTV".into(),
        description: String::new(),
    };
    write_rtstruct(
        &rt,
        &ragged(&g),
        &g,
        &meta,
        &[roi],
        &RtStructOptions::default(),
    )
    .unwrap();
    let bytes = python(&format!(
        "import pydicom; rt = pydicom.dcmread({:?}); \
         c = max(rt.ROIContourSequence[0].ContourSequence, key=lambda c: len(c.ContourData)); \
         print(len(c.ContourData), len('\\\\'.join(str(x) for x in c.ContourData)))",
        s(&rt)
    ));
    let (values, length): (usize, usize) = {
        let mut it = bytes
            .split_whitespace()
            .map(|x| x.parse::<usize>().unwrap());
        (it.next().unwrap(), it.next().unwrap())
    };
    assert!(
        length > 65_535,
        "the contour is {length} bytes ({values} values)"
    );

    // dcmtk's storescp as the planning system.
    let port = free_port();
    let dir = tmp.path().join("tps");
    std::fs::create_dir_all(&dir).unwrap();
    let mut scp = Command::new("storescp")
        .args(["-aet", "TPS", "-od", &s(&dir), &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("storescp (dcmtk: ./setup.sh installs it)");
    std::thread::sleep(Duration::from_millis(400));
    let dest = Destination {
        name: "tps".into(),
        ae_title: "TPS".into(),
        host: "127.0.0.1".into(),
        port,
        on_result: OnResult::AfterReview,
    };
    let r = delineate_service::scu::store(&dest, "DELINEATE", &rt);
    std::thread::sleep(Duration::from_millis(500));
    let _ = scp.kill();
    let _ = scp.wait();
    r.unwrap();
    let got: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(got.len(), 1, "{got:?}");
    let v = Command::new("dciodvfy")
        .arg(&got[0])
        .output()
        .expect("dciodvfy");
    let report =
        String::from_utf8_lossy(&v.stderr).to_string() + &String::from_utf8_lossy(&v.stdout);
    assert!(
        !report.lines().any(|l| l.starts_with("Error")),
        "dciodvfy:\n{report}"
    );
    let same = python(&format!(
        "import pydicom, numpy as np\n\
         a = [c.ContourData for c in pydicom.dcmread({a:?}).ROIContourSequence[0].ContourSequence]\n\
         b = [c.ContourData for c in pydicom.dcmread({b:?}).ROIContourSequence[0].ContourSequence]\n\
         print(len(a) == len(b) and all(np.array_equal(np.array(x, float), np.array(y, float)) for x, y in zip(a, b)))",
        a = s(&rt),
        b = s(&got[0])
    ));
    assert_eq!(same, "True");
}
