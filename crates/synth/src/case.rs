//! One synthetic case, from seed to volumes and lesion list.

use delineate_imaging::{
    components::label_components, measure::equivalent_diameter_mm, measure::voxel_volume_mm3,
    Connectivity, Geometry, Volume,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::acquire::{render, scanner_grid, Acquisition, LOOKALIKE_STRUCTURE, LOOKALIKE_VESSEL};
use crate::deform::{CaseMap, DeformSummary};
use crate::lesions::{plan_lesions, Texture};
use crate::lookalikes::{extracranial_nodules, random_vessels};
use crate::params::{Kind, SynthParams};
use crate::randomise::{draw_grid, Artefacts, Contrast, Plane};
use crate::sample::{add, sub, WorldToIndex, V3};
use crate::template::{Region, Template};

/// One lesion as listed in `lesions.json`.
#[derive(Clone, Debug, Serialize)]
pub struct LesionRecord {
    /// Label in `truth.nii.gz`.
    pub id: u32,
    pub kind: Kind,
    pub region: Region,
    pub appearance: &'static str,
    /// Diameter drawn for the lesion (mm).
    pub nominal_diameter_mm: f64,
    /// Centroid of its truth voxels (LPS mm).
    pub centre_mm: V3,
    pub voxels: usize,
    /// Truth voxels × voxel volume.
    pub volume_mm3: f64,
    /// Partial-volume volume: the sum of voxel occupancies × voxel volume.
    pub partial_volume_mm3: f64,
    /// Diameter of the sphere with `volume_mm3`.
    pub equivalent_diameter_mm: f64,
    /// Mean noiseless intensity of its voxels relative to white matter.
    pub enhancement: f64,
    pub oedema: bool,
    pub dural_tail: bool,
}

/// Seed offset of the stream that places nodules beyond the skull.
const EXTRACRANIAL_STREAM: u64 = 0x5CA1_F00D_0E1B_17A7;

/// A look-alike nodule beyond the skull, as listed in `lesions.json`.
#[derive(Clone, Debug, Serialize)]
pub struct ExtracranialRecord {
    /// "scalp-fat" or "orbit-fat".
    pub site: &'static str,
    /// Centre (LPS mm).
    pub centre_mm: V3,
    pub radius_mm: f64,
}

/// What a case contains besides its lesions.
#[derive(Clone, Debug, Serialize)]
pub struct CaseRecord {
    pub name: String,
    pub seed: u64,
    pub template: String,
    pub kind: Option<Kind>,
    pub requested_lesions: usize,
    pub lesions: Vec<LesionRecord>,
    pub acquisition: Acquisition,
    pub deformation: DeformSummary,
    /// Enhancing look-alikes drawn for this case (besides sinuses, choroid
    /// plexus and dura, which every case has).
    pub vessels: usize,
    /// Nodules placed beyond the skull (`--extracranial-lookalikes`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extracranial_lookalikes: Vec<ExtracranialRecord>,
    /// Mean noiseless intensity of vessel voxels and of white matter.
    pub vessel_enhancement: f64,
    pub white_matter: f64,
    /// Voxels of `lookalikes.nii.gz`: vessels, and sinuses/plexus/dura.
    pub lookalike_voxels: [usize; 2],
    pub warnings: Vec<String>,
}

pub struct SynthCase {
    pub image: Volume<u16>,
    pub truth: Volume<u16>,
    pub brain: Volume<u8>,
    /// Where the look-alikes are (codes in [`crate::acquire`]).
    pub lookalikes: Volume<u8>,
    /// The intracranial cavity ([`crate::acquire::intracranial_at`]).
    pub intracranial: Volume<u8>,
    pub record: CaseRecord,
}

/// The seed of case `index` in a dataset with `seed` (SplitMix64, so that
/// neighbouring cases get unrelated streams).
pub fn case_seed(seed: u64, index: usize) -> u64 {
    let mut z = seed.wrapping_add((index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Generates one case. Everything random comes from `seed`.
pub fn generate_case(t: &Template, p: &SynthParams, name: &str, seed: u64) -> SynthCase {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut map = CaseMap::random(&mut rng, &p.deform, t.center, t.head_min, t.head_max);
    let mut plan = plan_lesions(&mut rng, p, t, &mut map);

    // Look-alike vessels start on the case's brain surface.
    let w2t = WorldToIndex::new(t.brain_soft.geometry());
    let brain_at = |x: V3| w2t.linear(&t.brain_soft, map.to_template(x), 0.0) as f64;
    let surface: Vec<V3> = (0..400)
        .map(|_| map.to_case(t.dura[rng.random_range(0..t.dura.len())]))
        .collect();
    let deep: Vec<V3> = (0..400)
        .map(|_| map.to_case(t.junction[0][rng.random_range(0..t.junction[0].len())]))
        .collect();
    let vessels = random_vessels(
        &mut rng,
        &brain_at,
        &surface,
        &deep,
        p.through_plane_half_mm,
    );

    // Scanner grid over the case's head.
    let total: f64 = p.grids.iter().map(|g| g.weight.max(0.0)).sum();
    let mut x = rng.random_range(0.0..total.max(1e-9));
    let mut grid = &p.grids[0];
    for gs in &p.grids {
        if x < gs.weight.max(0.0) {
            grid = gs;
            break;
        }
        x -= gs.weight.max(0.0);
    }
    let sagittal = rng.random_bool(p.sagittal_fraction.clamp(0.0, 1.0));
    let (mut lo, mut hi) = case_head_box(t, &map);
    let bias_amp = rng.random_range(0.0..=p.bias.max(0.0)) / 2.0;
    let snr = rng.random_range(p.snr[0]..=p.snr[1].max(p.snr[0]));
    let bias = [0; 9].map(|_| rng.random_range(-1.0..=1.0) * bias_amp / 3.0);
    let scanner_scale =
        rng.random_range(p.scanner_scale[0]..=p.scanner_scale[1].max(p.scanner_scale[0]));
    let enhancement_gain = rng.random_range(0.7..=1.1);
    let mut plane = if sagittal {
        Plane::Sagittal
    } else {
        Plane::Axial
    };
    let (mut spacing, mut grid_name) = (grid.spacing, grid.name.clone());
    let (contrast, artefacts) = match &p.randomisation {
        None => (Contrast::identity(t.class_means), Artefacts::default()),
        Some(r) => {
            if rng.random_bool(r.random_grid_fraction.clamp(0.0, 1.0)) {
                let (sp, pl) = draw_grid(&mut rng, r);
                spacing = sp;
                plane = pl;
                grid_name = format!("{:.2}x{:.2}x{:.2}", sp[0], sp[1], sp[2]);
            }
            let c = Contrast::draw(&mut rng, r);
            let a = Artefacts::draw(&mut rng, r);
            for l in &mut plan.lesions {
                l.texture = Some(Texture::draw(&mut rng, r.lesion_texture));
            }
            if let Some((top, mm)) = a.fov_cut {
                // z is superior in LPS.
                if top {
                    hi[2] -= mm;
                } else {
                    lo[2] += mm;
                }
            }
            (c, a)
        }
    };
    let geom: Geometry = scanner_grid(lo, hi, spacing, plane);
    let skull_stripped_voxels = (p.skull_strip_p > 0.0
        && rng.random_bool(p.skull_strip_p.clamp(0.0, 1.0)))
    .then(|| rng.random_range(0..=2usize));
    let acq = Acquisition {
        grid: grid_name,
        orientation: plane.name(),
        spacing_mm: spacing,
        snr,
        bias,
        scanner_scale,
        enhancement_gain,
        contrast,
        artefacts,
        skull_stripped_voxels,
    };
    let noise_seed: u64 = rng.random();
    let mut vessels = vessels;
    let [lo_n, hi_n] = p.extracranial_lookalikes;
    if hi_n > 0 && acq.skull_stripped_voxels.is_none() {
        let mut own = ChaCha8Rng::seed_from_u64(seed ^ EXTRACRANIAL_STREAM);
        let n = own.random_range(lo_n.min(hi_n)..=hi_n);
        let to_case = |x: V3| map.to_case(x);
        vessels.extend(extracranial_nodules(&mut own, &t.extracranial, &to_case, n));
    }
    let r = render(t, &map, &plan.lesions, &vessels, &geom, &acq, noise_seed);
    // Wrap-around may have cropped the grid.
    let geom = r.image.geometry().clone();

    // The list comes from the truth mask itself.
    let vv = voxel_volume_mm3(&geom);
    let cc = label_components(&r.truth, Connectivity::TwentySix, |&v| v > 0, true);
    let mut records = Vec::new();
    let mut warnings = plan.warnings.clone();
    for (n, l) in plan.lesions.iter().enumerate() {
        let id = (n + 1) as u32;
        let parts: Vec<_> = cc
            .stats
            .iter()
            .filter(|c| r.truth.as_slice()[c.first_voxel] as u32 == id)
            .collect();
        let voxels: usize = parts.iter().map(|c| c.voxels).sum();
        if parts.len() > 1 {
            warnings.push(format!(
                "lesion {id} is split into {} pieces on this grid",
                parts.len()
            ));
        }
        let centroid_idx = if voxels > 0 {
            let mut c = [0.0; 3];
            for p in &parts {
                for (v, pc) in c.iter_mut().zip(p.centroid) {
                    *v += pc * p.voxels as f64;
                }
            }
            c.map(|v| v / voxels as f64)
        } else {
            [0.0; 3]
        };
        let volume = voxels as f64 * vv;
        records.push(LesionRecord {
            id,
            kind: l.kind,
            region: l.region,
            appearance: l.appearance,
            nominal_diameter_mm: round3(l.nominal_diameter_mm),
            centre_mm: geom.index_to_world(centroid_idx).map(round3),
            voxels,
            volume_mm3: round3(volume),
            partial_volume_mm3: round3(r.occupancy[n] * vv),
            equivalent_diameter_mm: round3(equivalent_diameter_mm(volume)),
            enhancement: round3(r.lesion_mean[n]),
            oedema: l.oedema.is_some(),
            dural_tail: l.tail.is_some(),
        });
    }
    let record = CaseRecord {
        name: name.to_string(),
        seed,
        template: t.name.clone(),
        kind: plan.kind,
        requested_lesions: plan.requested,
        lesions: records,
        acquisition: acq,
        deformation: map.summary.clone(),
        vessels: vessels.iter().filter(|v| !v.outside_skull).count(),
        extracranial_lookalikes: vessels
            .iter()
            .filter(|v| v.outside_skull)
            .map(|v| ExtracranialRecord {
                site: v.kind,
                centre_mm: {
                    let (lo, hi) = v.shape.bounds();
                    [0, 1, 2].map(|a| round3((lo[a] + hi[a]) / 2.0))
                },
                radius_mm: round3(v.radius_mm),
            })
            .collect(),
        vessel_enhancement: round3(r.vessel_mean),
        white_matter: round3(r.wm_mean),
        lookalike_voxels: [LOOKALIKE_VESSEL, LOOKALIKE_STRUCTURE]
            .map(|c| r.lookalikes.as_slice().iter().filter(|&&v| v == c).count()),
        warnings,
    };
    SynthCase {
        image: r.image,
        truth: r.truth,
        brain: r.brain,
        lookalikes: r.lookalikes,
        intracranial: r.intracranial,
        record,
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// The head's box in case space, with a 6 mm margin.
fn case_head_box(t: &Template, map: &CaseMap) -> (V3, V3) {
    let mut lo = [f64::INFINITY; 3];
    let mut hi = [f64::NEG_INFINITY; 3];
    for c in 0..8 {
        let p = [
            if c & 1 == 0 {
                t.head_min[0]
            } else {
                t.head_max[0]
            },
            if c & 2 == 0 {
                t.head_min[1]
            } else {
                t.head_max[1]
            },
            if c & 4 == 0 {
                t.head_min[2]
            } else {
                t.head_max[2]
            },
        ];
        let q = map.to_case(p);
        for a in 0..3 {
            lo[a] = lo[a].min(q[a]);
            hi[a] = hi[a].max(q[a]);
        }
    }
    // The rotated corners overshoot; shrink towards the centre by the
    // rotation's excess, then add the margin.
    let c = [0, 1, 2].map(|a| (lo[a] + hi[a]) / 2.0);
    let half = [0, 1, 2].map(|a| (t.head_max[a] - t.head_min[a]) / 2.0 * 1.08 + 6.0);
    (sub(c, half), add(c, half))
}
