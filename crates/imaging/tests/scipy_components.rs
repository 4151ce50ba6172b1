//! Connected components against scipy.ndimage.label (a tool we did not
//! write): identical label images, for 6- and 26-connectivity, on a random
//! mask with blobs, thin diagonal chains and border-touching voxels.

#![allow(clippy::unwrap_used)]

use std::process::Command;

use delineate_imaging::{connected_components, Connectivity, Geometry, Volume};

fn lcg(state: &mut u64) -> u64 {
    *state = state
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *state >> 33
}

#[test]
fn labels_equal_scipy_ndimage() {
    let size = [37, 29, 23];
    let g = Geometry::new(size, [1.0; 3], [0.0; 3], Geometry::IDENTITY).unwrap();
    let mut mask = Volume::filled(g, 0u8);
    let mut s = 7u64;
    for v in mask.as_mut_slice() {
        *v = u8::from(lcg(&mut s) % 100 < 18); // dense enough for diagonal-only joins
    }
    let tmp = tempfile::tempdir().unwrap();
    let raw = tmp.path().join("mask.raw");
    std::fs::write(&raw, mask.as_slice()).unwrap();
    for (conn, structure) in [
        (Connectivity::Six, "None"),
        (Connectivity::TwentySix, "np.ones((3, 3, 3))"),
    ] {
        let ours = connected_components(&mask, conn);
        let out = tmp.path().join("labels.raw");
        // scipy scans in C order; giving it the (k, j, i) view makes its
        // raster order ours (i fastest), so labels must match exactly.
        let code = format!(
            "import numpy as np, scipy.ndimage as nd\n\
             m = np.fromfile({raw:?}, dtype=np.uint8).reshape(({z}, {y}, {x}))\n\
             lab, n = nd.label(m, structure={structure})\n\
             lab.astype('<u4').tofile({out:?})",
            raw = raw.to_string_lossy(),
            out = out.to_string_lossy(),
            x = size[0],
            y = size[1],
            z = size[2]
        );
        let st = Command::new("python3")
            .args(["-c", &code])
            .output()
            .expect("python3 with scipy (./setup.sh)");
        assert!(
            st.status.success(),
            "scipy failed: {}",
            String::from_utf8_lossy(&st.stderr)
        );
        let theirs: Vec<u32> = std::fs::read(&out)
            .unwrap()
            .chunks(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(ours.labels.as_slice(), theirs.as_slice(), "{conn:?}");
        assert!(
            ours.stats.len() > 50,
            "{conn:?}: {} components",
            ours.stats.len()
        );
        let total: usize = ours.stats.iter().map(|c| c.voxels).sum();
        assert_eq!(total, mask.as_slice().iter().filter(|&&v| v == 1).count());
    }
}
