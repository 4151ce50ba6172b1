#![allow(clippy::unwrap_used)]
//! Domain randomisation, several backgrounds and look-alike records:
//! determinism on each background, look-alikes never on lesions, and the
//! documented distributions over 200 draws.

use std::sync::OnceLock;

use delineate_synth::backgrounds::{self, installed_training, TRAINING};
use delineate_synth::deform::CaseMap;
use delineate_synth::lesions::plan_lesions;
use delineate_synth::randomise::{draw_grid, Artefacts, Contrast, Plane, Randomisation};
use delineate_synth::{case_seed, generate_case, GridSpec, Kind, SynthParams, Template};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Every training background; CI installs them all (setup.sh), and a
/// missing one fails the test rather than skipping it.
fn backgrounds() -> &'static Vec<Template> {
    static T: OnceLock<Vec<Template>> = OnceLock::new();
    T.get_or_init(|| {
        assert_eq!(
            installed_training(),
            TRAINING.to_vec(),
            "every training background must be installed (./setup.sh --deps-only)"
        );
        TRAINING
            .iter()
            .map(|n| {
                let (mut t, _) = Template::load(&backgrounds::source(n).unwrap()).unwrap();
                t.name = n.to_string();
                t
            })
            .collect()
    })
}

/// Randomised cases on a coarse grid (fast to render).
fn params() -> SynthParams {
    let r = Randomisation {
        random_grid_fraction: 0.0,
        ..Default::default()
    };
    SynthParams {
        grids: vec![GridSpec {
            name: "2mm".into(),
            spacing: [2.0, 2.0, 2.0],
            weight: 1.0,
        }],
        randomisation: Some(r),
        kinds: vec![Kind::Metastasis],
        ..Default::default()
    }
}

#[test]
fn the_same_seed_gives_the_same_case_on_each_background() {
    let p = params();
    for t in backgrounds() {
        let a = generate_case(t, &p, "c", case_seed(3, 1));
        let b = generate_case(t, &p, "c", case_seed(3, 1));
        assert_eq!(a.image.as_slice(), b.image.as_slice(), "{}", t.name);
        assert_eq!(a.truth.as_slice(), b.truth.as_slice(), "{}", t.name);
        assert_eq!(
            a.lookalikes.as_slice(),
            b.lookalikes.as_slice(),
            "{}",
            t.name
        );
        assert_eq!(a.record.template, t.name);
        let c = generate_case(t, &p, "c", case_seed(4, 1));
        assert_ne!(a.image.as_slice(), c.image.as_slice(), "{}", t.name);
    }
}

#[test]
fn lookalikes_are_recorded_where_drawn_and_never_on_a_lesion() {
    let p = params();
    for t in backgrounds() {
        for i in 0..2 {
            let case = generate_case(t, &p, "c", case_seed(21, i));
            let looks = case.lookalikes.as_slice();
            assert!(case
                .lookalikes
                .geometry()
                .same_grid(case.truth.geometry(), 1e-9));
            assert!(
                looks
                    .iter()
                    .zip(case.truth.as_slice())
                    .all(|(&l, &t)| l == 0 || t == 0),
                "{}: a look-alike on a lesion voxel",
                t.name
            );
            let counts = [1u8, 2].map(|c| looks.iter().filter(|&&v| v == c).count());
            assert_eq!(counts, case.record.lookalike_voxels, "{}", t.name);
            assert!(
                case.record.vessels > 0 && counts[0] > 0,
                "{}: vessels",
                t.name
            );
            assert!(counts[1] > 0, "{}: sinuses, plexus, dura", t.name);
            // Vessel voxels are bright: brighter than the brain on average.
            let img = case.image.as_slice();
            let mean = |code: u8| {
                let v: Vec<f64> = looks
                    .iter()
                    .zip(img)
                    .filter(|(&l, _)| l == code)
                    .map(|(_, &x)| x as f64)
                    .collect();
                v.iter().sum::<f64>() / v.len().max(1) as f64
            };
            let brain: Vec<f64> = case
                .brain
                .as_slice()
                .iter()
                .zip(img)
                .filter(|(&b, _)| b > 0)
                .map(|(_, &x)| x as f64)
                .collect();
            let brain_mean = brain.iter().sum::<f64>() / brain.len() as f64;
            assert!(
                mean(1) > brain_mean,
                "{}: vessels {} vs brain {brain_mean}",
                t.name,
                mean(1)
            );
        }
    }
}

#[test]
fn randomisation_draws_follow_the_documented_distributions() {
    let r = Randomisation::default();
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let n = 200;
    let (mut beyond, mut slices, mut planes) = (0, Vec::new(), [0usize; 3]);
    let (mut ghost, mut wrap, mut cut) = (0, 0, 0);
    for _ in 0..n {
        let c = Contrast::draw(&mut rng, &r);
        beyond += usize::from(c.beyond);
        let (gm, csf) = if c.beyond {
            (r.beyond_gm, r.beyond_csf)
        } else {
            (r.gm, r.csf)
        };
        assert!((gm[0]..=gm[1]).contains(&c.gm) && (csf[0]..=csf[1]).contains(&c.csf));
        assert!((r.head_gain[0]..=r.head_gain[1]).contains(&c.head_gain));
        let (sp, plane) = draw_grid(&mut rng, &r);
        assert!((r.in_plane_mm[0]..=r.in_plane_mm[1]).contains(&sp[0]) && sp[0] == sp[1]);
        assert!((r.slice_mm[0]..=r.slice_mm[1]).contains(&sp[2]));
        slices.push(sp[2]);
        planes[plane as usize] += 1;
        let a = Artefacts::draw(&mut rng, &r);
        ghost += usize::from(a.ghost.is_some());
        wrap += usize::from(a.wrap.is_some());
        cut += usize::from(a.fov_cut.is_some());
    }
    let f = |k: usize| k as f64 / n as f64;
    // Binomial 200: ±3 standard deviations.
    let near = |k: usize, p: f64| (f(k) - p).abs() < 3.0 * (p * (1.0 - p) / n as f64).sqrt() + 1e-9;
    assert!(near(beyond, r.beyond_fraction), "{beyond}");
    assert!(
        near(ghost, r.ghost_probability) && near(wrap, r.wrap_probability),
        "{ghost} {wrap}"
    );
    assert!(near(cut, r.fov_cut_probability), "{cut}");
    assert!(
        near(planes[Plane::Sagittal as usize], r.sagittal_fraction),
        "{planes:?}"
    );
    assert!(
        near(planes[Plane::Coronal as usize], r.coronal_fraction),
        "{planes:?}"
    );
    // Log-uniform slice thickness: the median is the geometric mean, and a
    // third of draws lie above ~2.9 mm.
    slices.sort_by(f64::total_cmp);
    let median = slices[n / 2];
    assert!(
        (median / (0.5f64 * 6.5).sqrt() - 1.0).abs() < 0.25,
        "{median}"
    );
    assert!(slices.iter().any(|&s| s > 5.0) && slices.iter().any(|&s| s < 0.7));
}

#[test]
fn lesion_sizes_per_kind_follow_the_documented_ranges() {
    let t = &backgrounds()[0];
    let p = SynthParams::default();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut by_kind: [Vec<f64>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    let mut cases = 0;
    while cases < 200 {
        let mut map = CaseMap::random(&mut rng, &p.deform, t.center, t.head_min, t.head_max);
        let plan = plan_lesions(&mut rng, &p, t, &mut map);
        for l in &plan.lesions {
            let k = match l.kind {
                Kind::Metastasis => 0,
                Kind::Meningioma => 1,
                Kind::Schwannoma => 2,
            };
            by_kind[k].push(l.nominal_diameter_mm);
        }
        cases += 1;
    }
    let ranges = [p.met_diameter_mm, p.men_diameter_mm, p.schw_diameter_mm];
    for (k, d) in by_kind.iter().enumerate() {
        assert!(d.len() > 20, "kind {k}: {} lesions", d.len());
        assert!(
            d.iter().all(|&v| v >= ranges[k][0] && v <= ranges[k][1]),
            "kind {k}"
        );
    }
    // Log-uniform metastases 2–30 mm: most (ln 5 / ln 15 = 59 %) under 10 mm.
    let small = by_kind[0].iter().filter(|&&v| v < 10.0).count() as f64 / by_kind[0].len() as f64;
    assert!((small - 0.594).abs() < 0.08, "{small}");
}

#[test]
fn the_intracranial_target_holds_every_lesion_and_stripping_keeps_only_it() {
    // One kind per background (three cases; six with their stripped twins).
    let kinds = [Kind::Metastasis, Kind::Meningioma, Kind::Schwannoma];
    for (i, t) in backgrounds().iter().enumerate() {
        {
            let kind = &kinds[i % 3];
            let p = SynthParams {
                kinds: vec![*kind],
                ..params()
            };
            let case = generate_case(t, &p, "c", case_seed(31, i));
            let ic = case.intracranial.as_slice();
            assert!(case
                .intracranial
                .geometry()
                .same_grid(case.truth.geometry(), 1e-9));
            // Every lesion voxel, of every kind, is inside the cavity.
            assert!(
                ic.iter()
                    .zip(case.truth.as_slice())
                    .all(|(&c, &l)| l == 0 || c == 1),
                "{} {kind:?}: a lesion voxel outside the cavity",
                t.name
            );
            // A plausible adult intracranial volume (the templates are adult
            // heads under ±8 % scaling), and no holes.
            let g = case.intracranial.geometry();
            let ml = ic.iter().filter(|&&c| c > 0).count() as f64
                * g.spacing.iter().product::<f64>()
                / 1000.0;
            assert!(
                (1000.0..2200.0).contains(&ml),
                "{} {kind:?}: {ml:.0} ml",
                t.name
            );
            let filled = delineate_imaging::morphology::fill_holes(&case.intracranial);
            assert_eq!(filled.as_slice(), ic, "{}: holes in the cavity", t.name);
            // The head reaches beyond the cavity (scalp, skull) unless stripped.
            let img = case.image.as_slice();
            let beyond = |ic: &[u8]| {
                let max = img.iter().copied().max().unwrap_or(0) as f64;
                img.iter()
                    .zip(ic)
                    .filter(|(&v, &c)| c == 0 && v as f64 > 0.2 * max)
                    .count()
            };
            assert!(beyond(ic) > 1000, "{}: no head outside the cavity", t.name);
            let stripped = SynthParams {
                skull_strip_p: 1.0,
                ..p.clone()
            };
            let s = generate_case(t, &stripped, "c", case_seed(31, i));
            assert!(s.record.acquisition.skull_stripped_voxels.is_some());
            let grown = delineate_imaging::morphology::dilate(
                &s.intracranial.map(|&c| c > 0),
                delineate_imaging::Connectivity::TwentySix,
                3,
            );
            let max = s.image.as_slice().iter().copied().max().unwrap_or(0) as f64;
            let outside_bright = s
                .image
                .as_slice()
                .iter()
                .zip(grown.as_slice())
                .filter(|(&v, &k)| !k && v as f64 > 0.2 * max)
                .count();
            assert_eq!(
                outside_bright, 0,
                "{}: signal beyond a stripped cavity",
                t.name
            );
            assert_eq!(s.truth.as_slice(), case.truth.as_slice());
        }
    }
}
