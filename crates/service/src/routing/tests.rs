//! The example configuration's routes against series as Siemens, GE and
//! Philips consoles name and describe them.

use super::*;

#[derive(serde::Deserialize)]
struct Example {
    default_action: Action,
    #[serde(rename = "route")]
    routes: Vec<RouteRule>,
}

fn example() -> Example {
    let text = include_str!("../../../../docs/delineate.example.toml");
    let mut e: Example = toml::from_str(text).expect("the example config parses");
    for r in &mut e.routes {
        r.compile().expect("the example patterns compile");
    }
    e
}

/// (description, contrast agent, TR, TE, TI, image type)
type Series = (
    &'static str,
    Option<&'static str>,
    f64,
    f64,
    Option<f64>,
    &'static str,
);

fn decide(e: &Example, s: &Series) -> Decision {
    let a = Acquisition {
        contrast_agent: s.1.map(String::from),
        repetition_time_ms: Some(s.2),
        echo_time_ms: Some(s.3),
        inversion_time_ms: s.4,
        image_type: s.5.split('\\').map(String::from).collect(),
        ..Default::default()
    };
    route(
        &e.routes,
        e.default_action,
        &SeriesFacts {
            modality: "MR",
            description: s.0,
            calling_ae: "PACS",
            acquisition: &a,
        },
    )
}

const PRIMARY: &str = "ORIGINAL\\PRIMARY\\M\\ND";

/// Contrast-enhanced T1 series: processed.
const POST: [Series; 12] = [
    // Siemens
    (
        "t1_mprage_sag_p2_iso_post",
        None,
        2300.0,
        2.32,
        Some(900.0),
        PRIMARY,
    ),
    (
        "t1_mprage_sag_p2_iso",
        Some("Gadovist"),
        2300.0,
        2.32,
        Some(900.0),
        PRIMARY,
    ),
    ("T1 MPRAGE TRA +KM", None, 1900.0, 2.5, Some(900.0), PRIMARY),
    ("t1_fl3d_tra_ce", None, 9.0, 4.1, None, PRIMARY),
    (
        "t1_space_sag_dark-blood",
        Some("Dotarem"),
        700.0,
        12.0,
        None,
        PRIMARY,
    ),
    // GE
    (
        "Ax T1 BRAVO +C",
        Some("GADAVIST"),
        8.2,
        3.2,
        Some(450.0),
        PRIMARY,
    ),
    (
        "SAG 3D T1 FSPGR POST GAD",
        None,
        8.5,
        3.3,
        Some(450.0),
        PRIMARY,
    ),
    ("AX T1 SE +C", None, 550.0, 10.0, None, PRIMARY),
    // Philips
    ("T1W_3D_TFE +C", Some("gadobutrol"), 8.1, 3.7, None, PRIMARY),
    ("sT1W_3D_TFE_gd", None, 8.1, 3.7, None, PRIMARY),
    ("3D_Brain_VIEW_T1_gd", None, 350.0, 18.0, None, PRIMARY),
    ("T1W_SE_tra_post", None, 600.0, 10.0, None, PRIMARY),
];

/// Everything else a brain MRI study holds: skipped.
const OTHER: [Series; 22] = [
    // Siemens
    (
        "localizer",
        None,
        8.6,
        4.0,
        None,
        "ORIGINAL\\PRIMARY\\LOCALIZER",
    ),
    (
        "t1_mprage_sag_p2_iso",
        None,
        2300.0,
        2.32,
        Some(900.0),
        PRIMARY,
    ),
    ("t2_tse_tra", Some("Gadovist"), 6000.0, 96.0, None, PRIMARY),
    (
        "t2_tirm_tra_dark-fluid",
        Some("Gadovist"),
        9000.0,
        81.0,
        Some(2500.0),
        PRIMARY,
    ),
    (
        "ep2d_diff_3scan_trace_p2",
        None,
        5000.0,
        89.0,
        None,
        PRIMARY,
    ),
    (
        "ep2d_diff_3scan_trace_p2_ADC",
        None,
        5000.0,
        89.0,
        None,
        "DERIVED\\PRIMARY\\DIFFUSION\\ADC",
    ),
    ("tof_3d_multi-slab", None, 22.0, 3.6, None, PRIMARY),
    (
        "t1_mprage_sag_p2_iso_post_MPR_tra",
        Some("Gadovist"),
        2300.0,
        2.32,
        Some(900.0),
        "DERIVED\\SECONDARY\\MPR",
    ),
    (
        "gre_t2star_tra",
        Some("Gadovist"),
        650.0,
        20.0,
        None,
        PRIMARY,
    ),
    ("ep2d_perf", Some("Gadovist"), 1500.0, 30.0, None, PRIMARY),
    // GE
    ("Ax T1 BRAVO PRE", None, 8.2, 3.2, Some(450.0), PRIMARY),
    ("Ax T2 FRFSE", None, 4000.0, 100.0, None, PRIMARY),
    (
        "Ax T2 FLAIR",
        Some("GADAVIST"),
        9000.0,
        120.0,
        Some(2400.0),
        PRIMARY,
    ),
    ("Ax DWI 1000b", None, 6000.0, 80.0, None, PRIMARY),
    ("AX SWAN", Some("GADAVIST"), 40.0, 25.0, None, PRIMARY),
    (
        "3-Plane Loc",
        None,
        5.0,
        1.5,
        None,
        "ORIGINAL\\PRIMARY\\LOCALIZER",
    ),
    // Philips
    ("T1W_3D_TFE", None, 8.1, 3.7, None, PRIMARY),
    ("T2W_TSE", Some("gadobutrol"), 3000.0, 80.0, None, PRIMARY),
    (
        "T2W_FLAIR",
        Some("gadobutrol"),
        11000.0,
        125.0,
        Some(2800.0),
        PRIMARY,
    ),
    ("DWI_SENSE", None, 3000.0, 70.0, None, PRIMARY),
    ("Survey_MST", None, 11.0, 4.6, None, PRIMARY),
    // A post-contrast proton-density series named plainly: its TR gives it away.
    ("Ax 2mm", Some("gadobutrol"), 3200.0, 12.0, None, PRIMARY),
];

#[test]
fn the_example_config_contours_contrast_t1_only() {
    let e = example();
    for s in &POST {
        let d = decide(&e, s);
        assert_eq!(d.action, Action::Process, "{s:?}: {d:?}");
        assert!(d.rule.contains("post-contrast T1"), "{d:?}");
    }
    for s in &OTHER {
        let d = decide(&e, s);
        assert_eq!(d.action, Action::Skip, "{s:?}: {d:?}");
    }
}

#[test]
fn a_skipped_series_says_why_each_rule_did_not_take_it() {
    let e = example();
    let d = decide(
        &e,
        &("Ax 2mm", Some("gadobutrol"), 3200.0, 12.0, None, PRIMARY),
    );
    assert_eq!(d.rule, "default_action");
    assert_eq!(d.not_matched.len(), e.routes.len());
    let all = d.not_matched.join("\n");
    assert!(
        all.contains("repetition time 3200 ms outside 0–2600 ms"),
        "{all}"
    );
    assert!(all.contains("does not match"), "{all}");
    let d = decide(&e, &OTHER[2]);
    assert!(
        d.rule.starts_with("route 2 (named as another kind"),
        "{d:?}"
    );
    let d = decide(&e, &OTHER[1]);
    assert!(
        d.not_matched[2].contains("no contrast agent recorded"),
        "{d:?}"
    );
}

#[test]
fn rules_refuse_bad_fields() {
    let mut r = RouteRule {
        action: Some(Action::Process),
        echo_time_ms: Some([30.0, 10.0]),
        ..Default::default()
    };
    assert!(r.compile().unwrap_err().contains("echo_time_ms"));
    let mut r = RouteRule {
        action: Some(Action::Skip),
        not_series_description: Some("(".into()),
        ..Default::default()
    };
    assert!(r.compile().unwrap_err().contains("not_series_description"));
    assert!(RouteRule::default().compile().is_err());
}
