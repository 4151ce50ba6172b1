#![allow(clippy::unwrap_used)]
//! Look-alike nodules beyond the skull (`--extracranial-lookalikes`): they
//! lie in scalp and orbital fat, outside the intracranial target and away
//! from it, as bright as lesions, listed and labelled; and they change
//! nothing else in the case.

use std::path::Path;

use delineate_imaging::{morphology::dilate, Connectivity};
use delineate_synth::{
    acquire::LOOKALIKE_EXTRACRANIAL, case_seed, generate_case, params::MetCount,
    template::COLIN_T1, GridSpec, Kind, SynthParams, Template, TemplateSource,
};

fn params(nodules: [usize; 2]) -> SynthParams {
    SynthParams {
        kinds: vec![Kind::Metastasis],
        met_count: MetCount::Range { min: 3, max: 3 },
        extracranial_lookalikes: nodules,
        grids: vec![GridSpec {
            name: "1mm".into(),
            spacing: [1.0; 3],
            weight: 1.0,
        }],
        ..Default::default()
    }
}

#[test]
fn nodules_lie_in_fat_beyond_the_skull_and_change_nothing_else() {
    assert!(
        Path::new(COLIN_T1).exists(),
        "Colin27 is not installed: apt-get install mricron-data ({COLIN_T1})"
    );
    let t = Template::load(&TemplateSource::Default).unwrap().0;
    assert!(
        t.extracranial.scalp.len() > 1000 && t.extracranial.orbit.len() > 100,
        "sites: {} scalp, {} orbit",
        t.extracranial.scalp.len(),
        t.extracranial.orbit.len()
    );
    let (mut scalp, mut orbit) = (0, 0);
    for i in 0..4 {
        let seed = case_seed(31, i);
        let with = generate_case(&t, &params([3, 5]), "c", seed);
        let without = generate_case(&t, &params([0, 0]), "c", seed);
        let r = &with.record;
        assert!((3..=5).contains(&r.extracranial_lookalikes.len()), "{i}");
        // Their own random stream: lesions, cavity and vessels unchanged.
        assert_eq!(with.truth.as_slice(), without.truth.as_slice(), "case {i}");
        assert_eq!(
            with.intracranial.as_slice(),
            without.intracranial.as_slice(),
            "case {i}"
        );
        assert_eq!(r.vessels, without.record.vessels);
        assert!(without.record.extracranial_lookalikes.is_empty());

        // Labelled 3, never within 3 mm of the cavity (a 1 mm grid), and
        // brighter than white matter.
        let g = with.image.geometry().clone();
        let near = dilate(&with.intracranial.map(|&v| v > 0), Connectivity::Six, 3);
        let nodule = with.lookalikes.map(|&v| v == LOOKALIKE_EXTRACRANIAL);
        let n = nodule.as_slice().iter().filter(|&&v| v).count();
        assert!(n > 20, "case {i}: {n} nodule voxels");
        let touching = nodule
            .as_slice()
            .iter()
            .zip(near.as_slice())
            .filter(|(&a, &b)| a && b)
            .count();
        assert_eq!(
            touching, 0,
            "case {i}: nodule voxels within 3 mm of the cavity"
        );
        let scale = r.acquisition.scanner_scale;
        let mean = with
            .image
            .as_slice()
            .iter()
            .zip(nodule.as_slice())
            .filter(|(_, &m)| m)
            .map(|(&v, _)| v as f64 / scale)
            .sum::<f64>()
            / n as f64;
        assert!(
            mean > 1.2 * r.white_matter,
            "case {i}: nodules at {mean:.2}"
        );
        // Each listed centre lies outside the cavity.
        for x in &r.extracranial_lookalikes {
            let ijk = g.world_to_index(x.centre_mm).map(|v| v.round());
            if ijk
                .iter()
                .zip(g.size)
                .all(|(&v, s)| v >= 0.0 && v < s as f64)
            {
                let lin = ijk[0] as usize
                    + ijk[1] as usize * g.size[0]
                    + ijk[2] as usize * g.size[0] * g.size[1];
                assert_eq!(with.intracranial.as_slice()[lin], 0, "case {i}: {x:?}");
            }
            match x.site {
                "scalp-fat" => scalp += 1,
                "orbit-fat" => orbit += 1,
                other => panic!("site {other}"),
            }
        }
    }
    assert!(scalp > 0 && orbit > 0, "scalp {scalp}, orbit {orbit}");
}
