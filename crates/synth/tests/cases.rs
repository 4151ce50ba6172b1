#![allow(clippy::unwrap_used, clippy::needless_range_loop)]
//! Synthetic cases: counts, sizes, lesion list vs mask, placement,
//! contrast, look-alikes, determinism, and the phantom fallback.

use std::path::Path;
use std::sync::OnceLock;

use delineate_imaging::{components::label_components, read_nifti, Connectivity, Volume};
use delineate_synth::{
    case_seed, generate_case, params::MetCount, template::COLIN_T1, Kind, SynthCase, SynthParams,
    Template, TemplateSource,
};

/// Colin27 (Debian mricron-data, which `.ci/run` and setup.sh install): a
/// missing one fails the test with what to install, never skips it.
fn colin() -> &'static Template {
    static T: OnceLock<Template> = OnceLock::new();
    T.get_or_init(|| {
        assert!(
            Path::new(COLIN_T1).exists(),
            "Colin27 is not installed: apt-get install mricron-data ({COLIN_T1})"
        );
        Template::load(&TemplateSource::Default).unwrap().0
    })
}

fn phantom() -> &'static Template {
    static T: OnceLock<Template> = OnceLock::new();
    T.get_or_init(|| Template::phantom().unwrap())
}

fn template() -> &'static Template {
    colin()
}

fn met_params(min: u32, max: u32, d: [f64; 2]) -> SynthParams {
    SynthParams {
        kinds: vec![Kind::Metastasis],
        met_count: MetCount::Range { min, max },
        met_diameter_mm: d,
        ..Default::default()
    }
}

fn label_voxels(case: &SynthCase, id: u32) -> usize {
    case.truth
        .as_slice()
        .iter()
        .filter(|&&v| v as u32 == id)
        .count()
}

#[test]
fn requested_counts_and_sizes_are_respected() {
    let t = template();
    let p = met_params(5, 5, [4.0, 12.0]);
    for i in 0..3 {
        let case = generate_case(t, &p, "c", case_seed(11, i));
        let r = &case.record;
        assert_eq!(r.kind, Some(Kind::Metastasis));
        assert_eq!(r.requested_lesions, 5);
        assert_eq!(r.lesions.len(), 5, "warnings: {:?}", r.warnings);
        for l in &r.lesions {
            assert!((4.0..=12.0).contains(&l.nominal_diameter_mm), "{l:?}");
            // Lobulation (±15 % radii, ±12 % lobes) and partial volume.
            assert!(
                l.equivalent_diameter_mm > 4.0 * 0.7 && l.equivalent_diameter_mm < 12.0 * 1.3,
                "{l:?}"
            );
        }
    }
}

#[test]
fn each_listed_lesion_is_one_component_of_its_mask() {
    let t = template();
    let p = met_params(6, 6, [2.0, 30.0]);
    for i in 0..3 {
        let case = generate_case(t, &p, "c", case_seed(5, i));
        let vv: f64 = case.image.geometry().spacing.iter().product();
        let cc = label_components(&case.truth, Connectivity::TwentySix, |&v| v > 0, true);
        assert_eq!(
            cc.stats.len(),
            case.record.lesions.len(),
            "one component per lesion"
        );
        for l in &case.record.lesions {
            let n = label_voxels(&case, l.id);
            assert_eq!(n, l.voxels);
            assert!((l.volume_mm3 - n as f64 * vv).abs() < 1e-2);
            // Mask volume (voxel centres inside) vs partial-volume sum: the
            // difference is a thin shell of surface voxels.
            let rel = (l.volume_mm3 - l.partial_volume_mm3).abs() / l.partial_volume_mm3;
            let tol = if l.equivalent_diameter_mm < 5.0 {
                0.5
            } else {
                0.12
            };
            assert!(
                rel < tol,
                "lesion {} mask {:.1} vs partial {:.1} mm³",
                l.id,
                l.volume_mm3,
                l.partial_volume_mm3
            );
            // The listed centre lies inside the lesion's box.
            let c = case.image.geometry().world_to_index(l.centre_mm);
            let st = cc
                .stats
                .iter()
                .find(|s| case.truth.as_slice()[s.first_voxel] as u32 == l.id)
                .unwrap();
            for a in 0..3 {
                assert!(c[a] >= st.bbox_min[a] as f64 - 0.5 && c[a] <= st.bbox_max[a] as f64 + 0.5);
            }
        }
    }
}

fn fraction_in_brain(case: &SynthCase, id: u32) -> f64 {
    let (mut inside, mut n) = (0usize, 0usize);
    for (&l, &b) in case.truth.as_slice().iter().zip(case.brain.as_slice()) {
        if l as u32 == id {
            n += 1;
            inside += usize::from(b > 0);
        }
    }
    inside as f64 / n.max(1) as f64
}

#[test]
fn metastases_lie_in_the_brain_and_meningiomas_on_the_dura() {
    let t = template();
    let case = generate_case(t, &met_params(8, 8, [3.0, 20.0]), "c", case_seed(3, 0));
    for l in &case.record.lesions {
        let f = fraction_in_brain(&case, l.id);
        assert!(
            f > 0.97,
            "metastasis {} only {:.2} inside the brain",
            l.id,
            f
        );
    }
    let p = SynthParams {
        kinds: vec![Kind::Meningioma],
        ..Default::default()
    };
    for i in 0..3 {
        let case = generate_case(t, &p, "m", case_seed(4, i));
        let l = &case.record.lesions[0];
        assert_eq!(l.kind, Kind::Meningioma);
        assert!(l.dural_tail);
        // Extra-axial: the brain was pushed away, so most of it is outside
        // the brain mask, but it touches the brain.
        let f = fraction_in_brain(&case, 1);
        assert!(f < 0.5, "meningioma {:.2} inside the brain", f);
        let mask = case.truth.map(|&v| v == 1);
        let grown = delineate_imaging::morphology::dilate(&mask, Connectivity::Six, 3);
        let touches = grown
            .as_slice()
            .iter()
            .zip(case.brain.as_slice())
            .any(|(&g, &b)| g && b > 0);
        assert!(touches, "meningioma does not touch the brain");
    }
}

#[test]
fn schwannomas_sit_low_and_lateral() {
    let t = template();
    let p = SynthParams {
        kinds: vec![Kind::Schwannoma],
        ..Default::default()
    };
    for i in 0..3 {
        let case = generate_case(t, &p, "s", case_seed(9, i));
        let l = &case.record.lesions[0];
        let c = l.centre_mm;
        // Relative to the brain's centre in case space (≈ template centre).
        let lateral = (c[0] - t.center[0]).abs();
        let below = t.center[2] - c[2];
        assert!(
            (12.0..55.0).contains(&lateral),
            "lateral {lateral:.1} mm: {l:?}"
        );
        assert!(below > 20.0, "only {below:.1} mm below the centre");
        assert!(!l.dural_tail);
    }
}

#[test]
fn lesions_enhance_and_lookalikes_are_as_bright() {
    let t = template();
    let case = generate_case(t, &met_params(6, 6, [3.0, 9.0]), "c", case_seed(21, 0));
    let r = &case.record;
    assert!(
        (r.white_matter - 1.0).abs() < 0.1,
        "white matter {}",
        r.white_matter
    );
    let solid: Vec<f64> = r
        .lesions
        .iter()
        .filter(|l| l.appearance == "solid")
        .map(|l| l.enhancement)
        .collect();
    assert!(!solid.is_empty());
    for e in &solid {
        assert!(
            *e > 1.2 * r.white_matter,
            "solid lesion enhancement {e} vs WM {}",
            r.white_matter
        );
    }
    let median = {
        let mut s = solid.clone();
        s.sort_by(f64::total_cmp);
        s[s.len() / 2]
    };
    assert!(
        r.vessel_enhancement > 0.85 * median,
        "vessels {} vs lesions {median}",
        r.vessel_enhancement
    );

    // A detector that only finds bright blobs: components of the image above
    // 85 % of the median lesion intensity, inside the head. Look-alikes must
    // give it many false positives.
    let scale = r.acquisition.scanner_scale;
    let thr = (0.85 * median * scale) as u16;
    let bright = case.image.map(|&v| v >= thr);
    let cc = delineate_imaging::connected_components(&bright, Connectivity::TwentySix);
    let false_blobs = cc
        .stats
        .iter()
        .filter(|c| c.voxels >= 5)
        .filter(|c| {
            let lab = cc.labels.as_slice();
            !lab.iter()
                .zip(case.truth.as_slice())
                .any(|(&l, &t)| l == c.label && t > 0)
        })
        .count();
    assert!(
        false_blobs >= 10,
        "only {false_blobs} bright look-alike blobs"
    );
}

#[test]
fn same_seed_same_case_other_seed_other_brain() {
    let t = template();
    let p = SynthParams::default();
    let a = generate_case(t, &p, "a", 77);
    let b = generate_case(t, &p, "a", 77);
    assert_eq!(a.image.as_slice(), b.image.as_slice());
    assert_eq!(a.truth.as_slice(), b.truth.as_slice());
    assert_eq!(
        serde_json::to_string(&a.record).unwrap(),
        serde_json::to_string(&b.record).unwrap()
    );
    let c = generate_case(t, &p, "a", 78);
    assert_ne!(
        a.record.deformation.rotation_deg,
        c.record.deformation.rotation_deg
    );
}

#[test]
fn the_phantom_works_without_colin27() {
    let t = phantom();
    assert!(t.procedural);
    let case = generate_case(t, &met_params(3, 3, [5.0, 10.0]), "p", case_seed(1, 0));
    assert_eq!(case.record.lesions.len(), 3, "{:?}", case.record.warnings);
    for l in &case.record.lesions {
        assert!(fraction_in_brain(&case, l.id) > 0.97);
        assert!(l.enhancement > 1.2);
    }
    assert!(case.brain.as_slice().iter().filter(|&&b| b > 0).count() > 500_000);
}

/// The region rule (tentorium line in MNI mm) against an atlas we did not
/// write: AAL's cerebellar labels (91–116) on Colin27, from mricron-data.
#[test]
fn cerebellar_seeds_agree_with_the_aal_atlas() {
    let t = colin();
    let aal_path = Path::new("/usr/share/mricron/templates/aal.nii.gz");
    assert!(
        aal_path.exists(),
        "the AAL atlas is not installed: apt-get install mricron-data ({})",
        aal_path.display()
    );
    let (aal, _) = read_nifti::<u8>(aal_path)
        .or_else(|_| {
            delineate_imaging::read_nifti_f32(aal_path).map(|(v, i)| (v.map(|&x| x as u8), i))
        })
        .unwrap();
    let aal: Volume<u8> = aal;
    let label = |p: [f64; 3]| {
        let ijk = aal.geometry().world_to_index(p).map(|v| v.round() as usize);
        aal.data()[[ijk[0], ijk[1], ijk[2]]]
    };
    let frac = |pts: &[[f64; 3]], f: &dyn Fn(u8) -> bool| {
        let step = (pts.len() / 2000).max(1);
        let sel: Vec<_> = pts.iter().step_by(step).collect();
        sel.iter().filter(|p| f(label(***p))).count() as f64 / sel.len() as f64
    };
    // AAL labels grey matter; white-matter seeds are often unlabelled (0),
    // so the test counts seeds that land in the other structure's labels.
    let cerebellar = |l: u8| (91..=116).contains(&l);
    let cerebral = |l: u8| (1..=90).contains(&l);
    let cb_in_cerebrum = frac(&t.junction[1], &cerebral);
    let cerebrum_in_cb = frac(&t.junction[0], &cerebellar);
    eprintln!("cerebellar seeds in AAL cerebrum {cb_in_cerebrum:.3}; cerebral seeds in AAL cerebellum {cerebrum_in_cb:.3}");
    assert!(
        cb_in_cerebrum < 0.05,
        "{cb_in_cerebrum:.3} of cerebellar seeds in AAL cerebrum"
    );
    assert!(
        cerebrum_in_cb < 0.03,
        "{cerebrum_in_cb:.3} of cerebral seeds in AAL cerebellum"
    );
}

/// The mask derived from the skull-on Colin27 against the BET mask shipped
/// with it (another tool's answer).
#[test]
fn derived_brain_mask_matches_bet() {
    colin();
    let (t1, _) = delineate_imaging::read_nifti_f32(Path::new(COLIN_T1)).unwrap();
    let (bet, _) =
        delineate_imaging::read_nifti_f32(Path::new(delineate_synth::template::COLIN_BRAIN))
            .unwrap();
    let derived = delineate_synth::template::derive_brain_mask(&t1);
    let (mut both, mut a, mut b) = (0usize, 0usize, 0usize);
    for (&d, &m) in derived.as_slice().iter().zip(bet.as_slice()) {
        let m = m > 0.0;
        both += usize::from(d && m);
        a += usize::from(d);
        b += usize::from(m);
    }
    let dice = 2.0 * both as f64 / (a + b) as f64;
    eprintln!("derived brain mask vs ch2bet: Dice {dice:.3} ({a} vs {b} voxels)");
    assert!(dice > 0.9, "Dice {dice:.3}");
}
