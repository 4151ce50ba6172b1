//! Everything that shapes a synthetic dataset, recorded in its manifest.

use serde::{Deserialize, Serialize};

use crate::deform::DeformParams;

/// Lesion kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Kind {
    #[serde(rename = "met")]
    Metastasis,
    #[serde(rename = "men")]
    Meningioma,
    #[serde(rename = "schw")]
    Schwannoma,
}

impl Kind {
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "met" | "metastasis" | "metastases" => Some(Kind::Metastasis),
            "men" | "meningioma" => Some(Kind::Meningioma),
            "schw" | "schwannoma" => Some(Kind::Schwannoma),
            _ => None,
        }
    }

    pub fn short(self) -> &'static str {
        match self {
            Kind::Metastasis => "met",
            Kind::Meningioma => "men",
            Kind::Schwannoma => "schw",
        }
    }
}

/// How many metastases a metastasis case gets.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetCount {
    /// Negative binomial (gamma–Poisson) with this mean and shape `k`:
    /// heavy-tailed, 0 to 20+ (k = 1.2: P(0) ≈ 0.2, P(≥ 10) ≈ 0.07 at mean 3.5).
    NegBinomial { mean: f64, k: f64, max: u32 },
    /// Uniform in `min..=max`.
    Range { min: u32, max: u32 },
}

/// One acquisition grid.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GridSpec {
    pub name: String,
    /// In-plane (row, column) and slice spacing, mm.
    pub spacing: [f64; 3],
    /// Relative weight when drawing a grid.
    pub weight: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SynthParams {
    /// Lesion kinds to draw, each case gets one kind by `kind_weights`.
    pub kinds: Vec<Kind>,
    /// Weights of metastasis, meningioma and schwannoma cases.
    pub kind_weights: [f64; 3],
    pub met_count: MetCount,
    /// Diameter ranges (mm), drawn log-uniformly.
    pub met_diameter_mm: [f64; 2],
    pub men_diameter_mm: [f64; 2],
    pub schw_diameter_mm: [f64; 2],
    /// Metastasis regions: cerebrum, cerebellum, brainstem.
    pub met_region_weights: [f64; 3],
    pub grids: Vec<GridSpec>,
    /// Probability of a sagittal (instead of axial) acquisition.
    pub sagittal_fraction: f64,
    /// Signal-to-noise ratio of white matter, uniform in this range.
    pub snr: [f64; 2],
    /// Peak-to-peak bias field amplitude (fraction), uniform up to this.
    pub bias: f64,
    /// Scanner value of white matter, uniform in this range (stored as u16).
    pub scanner_scale: [f64; 2],
    pub deform: DeformParams,
    /// Domain randomisation (contrast, resolution, artefacts); `None`
    /// renders the template's own contrast on the named grids.
    #[serde(default)]
    pub randomisation: Option<crate::randomise::Randomisation>,
    /// Half-length range (mm) of the vessels that run through the slice in
    /// deep white matter ([`crate::lookalikes::random_vessels`]). Real
    /// medullary and perforating vessels run on for centimetres, so in 3-D
    /// they are tubes; datasets written before 2026-12-06 drew 3–8 mm,
    /// short capsules as wide as small metastases at the grey–white
    /// junction, which taught networks that small bright spots there are
    /// not lesions (docs/model-card.md, the small-lesion study).
    #[serde(default = "default_through_plane")]
    pub through_plane_half_mm: [f64; 2],
    /// Share of cases skull-stripped (everything 0–2 voxels beyond the
    /// cranial cavity set to air), as research datasets are: what the
    /// intracranial-mask network must also handle. No random draw is made
    /// when 0, so datasets without it are unchanged.
    #[serde(default)]
    pub skull_strip_p: f64,
    /// How many lesion-like nodules to place in scalp and orbital fat per
    /// case (a range; [`crate::lookalikes::extracranial_nodules`]), none
    /// in skull-stripped cases. Drawn from a stream of their own, so cases
    /// are otherwise the same with and without them.
    #[serde(default)]
    pub extracranial_lookalikes: [usize; 2],
}

/// Default of [`SynthParams::through_plane_half_mm`].
pub fn default_through_plane() -> [f64; 2] {
    [12.0, 32.0]
}

impl Default for SynthParams {
    fn default() -> Self {
        Self {
            kinds: vec![Kind::Metastasis, Kind::Meningioma, Kind::Schwannoma],
            kind_weights: [0.6, 0.2, 0.2],
            met_count: MetCount::NegBinomial {
                mean: 3.5,
                k: 1.2,
                max: 40,
            },
            met_diameter_mm: [2.0, 30.0],
            men_diameter_mm: [10.0, 50.0],
            schw_diameter_mm: [5.0, 30.0],
            met_region_weights: [0.8, 0.12, 0.08],
            grids: vec![
                GridSpec {
                    name: "1mm".into(),
                    spacing: [1.0, 1.0, 1.0],
                    weight: 0.4,
                },
                GridSpec {
                    name: "0.9x0.9x1".into(),
                    spacing: [0.9, 0.9, 1.0],
                    weight: 0.4,
                },
                GridSpec {
                    name: "0.5x0.5x2".into(),
                    spacing: [0.5, 0.5, 2.0],
                    weight: 0.2,
                },
            ],
            sagittal_fraction: 0.3,
            snr: [15.0, 40.0],
            bias: 0.3,
            scanner_scale: [300.0, 2000.0],
            deform: DeformParams::default(),
            randomisation: None,
            through_plane_half_mm: default_through_plane(),
            skull_strip_p: 0.0,
            extracranial_lookalikes: [0, 0],
        }
    }
}
