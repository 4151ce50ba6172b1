#![allow(clippy::unwrap_used)]
//! The study on hand-made contours: references by the ≥ 0.5 rule (with a
//! tie for 3 raters), per-lesion Dice, sign tests, time tables, and the
//! errors a design file can have.

use std::path::Path;

use delineate_eval::study::run_study;
use delineate_imaging::{write_nifti, Geometry, NiftiWriteOptions, Volume};

const N: usize = 16;

/// A mask with the listed x-ranges filled on rows y, z in 2..4 (lesion A)
/// and, if `b`, a second lesion at z 10..12.
fn mask(x: std::ops::Range<usize>, b: bool) -> Volume<u8> {
    let g = Geometry::new([N, N, N], [1.0; 3], [0.0; 3], Geometry::IDENTITY).unwrap();
    let mut v = Volume::filled(g, 0u8);
    for k in 2..4 {
        for j in 2..4 {
            for i in x.clone() {
                v.as_mut_slice()[i + j * N + k * N * N] = 1;
            }
        }
    }
    if b {
        for k in 10..12 {
            for j in 10..12 {
                for i in 10..12 {
                    v.as_mut_slice()[i + j * N + k * N * N] = 1;
                }
            }
        }
    }
    v
}

fn write(dir: &Path, name: &str, v: &Volume<u8>) {
    write_nifti(&dir.join(name), v, &NiftiWriteOptions::default()).unwrap();
}

fn design(dir: &Path, raters: &[&str], times: &str) -> std::path::PathBuf {
    let list: Vec<String> = raters.iter().map(|r| format!("\"{r}\"")).collect();
    std::fs::write(
        dir.join("study.toml"),
        format!(
            "raters = [{}]\ncases = [\"c1\"]\nmanual = \"{{case}}/{{rater}}_m.nii.gz\"\ncnn = \"{{case}}/{{rater}}_c.nii.gz\"\ntimes = \"times.csv\"\n",
            list.join(", ")
        ),
    )
    .unwrap();
    std::fs::write(dir.join("times.csv"), times).unwrap();
    dir.join("study.toml")
}

#[test]
fn four_raters_by_hand() {
    let tmp = tempfile::tempdir().unwrap();
    let c = tmp.path().join("c1");
    std::fs::create_dir_all(&c).unwrap();
    // Lesion A along x (2×2 rows of voxels): manual extents per rater.
    // R1 2..6, R2 2..6, R3 2..8, R4 4..8; lesion B only drawn by R1, R2, R3.
    let manual = [(2..6, true), (2..6, true), (2..8, true), (4..8, false)];
    for (r, (x, b)) in manual.iter().enumerate() {
        write(&c, &format!("R{}_m.nii.gz", r + 1), &mask(x.clone(), *b));
        // CNN-initialised: everyone keeps the proposal 2..7, both lesions.
        write(&c, &format!("R{}_c.nii.gz", r + 1), &mask(2..7, true));
    }
    let times = "case,rater,mode,time\nc1,R1,manual,4:00\nc1,R1,cnn,2:00\nc1,R2,manual,300\nc1,R2,cnn,100\nc1,R3,manual,3:00\nc1,R3,cnn,1:30\nc1,R4,manual,6:00\nc1,R4,cnn,2:00\n";
    let d = design(tmp.path(), &["R1", "R2", "R3", "R4"], times);
    let r = run_study(&d).unwrap();
    // Reference for R1 (others R2, R3, R4: x-ranges 2..6, 2..8, 4..8):
    // voxel x is inside when at least 2 of 3 others cover it: x in 2..8?
    // x=2,3: R2,R3 → in; x=4,5: all → in; x=6,7: R3,R4 → in. So 2..8 (12 cells × 4 = 48... per row 6).
    // R1 manual 2..6 (4 per row) vs reference 2..8 (6 per row): Dice = 2·4/(4+6) = 0.8.
    let a_r1 = r
        .lesions
        .iter()
        .find(|l| l.rater == "R1" && l.lesion == 1)
        .unwrap();
    assert!((a_r1.dice[0] - 0.8).abs() < 1e-12, "{:?}", a_r1.dice);
    // R1 CNN 2..7 (5) vs the same reference 2..8 (6): 2·5/11.
    assert!((a_r1.dice[1] - 10.0 / 11.0).abs() < 1e-12);
    // Everyone's CNN contour is the same: 1' vs 3' = 1.
    assert!(r.lesions.iter().all(|l| (l.dice[2] - 1.0).abs() < 1e-12));
    // Lesion B for R4 (who did not draw it): reference of R1–R3 has it → Dice 0.
    let b_r4 = r
        .lesions
        .iter()
        .find(|l| l.rater == "R4" && l.lesion == 2)
        .unwrap();
    assert_eq!(b_r4.dice[0], 0.0);
    // R4 manual A 4..8 vs others (R1 2..6, R2 2..6, R3 2..8): ≥ 2 of 3 at x in 2..6 → 2·2/(4+4) = 0.5.
    let a_r4 = r
        .lesions
        .iter()
        .find(|l| l.rater == "R4" && l.lesion == 1)
        .unwrap();
    assert!((a_r4.dice[0] - 0.5).abs() < 1e-12);
    // Sign test over all 8 lesion pairs for case II: CNN is higher wherever
    // manual < 1; here every manual Dice is below 1 except lesion B of
    // R1–R3 (identical cubes → 1 vs 1: tie).
    let all = r.agreement.last().unwrap();
    assert_eq!(all.rater, "all");
    assert_eq!(all.lesions, 8);
    assert_eq!(all.case_ii.n, 5);
    assert_eq!(all.case_ii.improved, 5);
    assert!((all.case_ii.p - 2.0 / 32.0).abs() < 1e-12);
    // Times: manual 240, 300, 180, 360 → median 270; reductions 120, 200, 90, 240 → median 160.
    let t = r.time_all.last().unwrap();
    assert_eq!(t.median_manual_s, 270.0);
    assert_eq!(t.manual_range_s, (180.0, 360.0));
    assert_eq!(t.median_reduction_s, 160.0);
    // CNN times 120, 100, 90, 120 → median 110; speed-up 270/110.
    assert!((t.speedup - 270.0 / 110.0).abs() < 1e-12);
    // Two lesions in the union: the case counts as multi-lesion.
    assert_eq!(r.time_multi.last().unwrap().cases, 4);
}

#[test]
fn three_raters_tie_counts_as_inside() {
    let tmp = tempfile::tempdir().unwrap();
    let c = tmp.path().join("c1");
    std::fs::create_dir_all(&c).unwrap();
    // Others of R1 are R2 (2..6) and R3 (4..8): mean 0.5 on 2..4 and 6..8 → inside; reference 2..8.
    for (r, x) in [(1, 2..6), (2, 2..6), (3, 4..8)] {
        write(&c, &format!("R{r}_m.nii.gz"), &mask(x, false));
        write(&c, &format!("R{r}_c.nii.gz"), &mask(2..8, false));
    }
    let times = "c1,R1,manual,60\nc1,R1,cnn,30\nc1,R2,manual,60\nc1,R2,cnn,30\nc1,R3,manual,60\nc1,R3,cnn,30\n";
    let d = design(tmp.path(), &["R1", "R2", "R3"], times);
    let r = run_study(&d).unwrap();
    let r1 = r.lesions.iter().find(|l| l.rater == "R1").unwrap();
    assert!((r1.dice[0] - 0.8).abs() < 1e-12, "{:?}", r1.dice);
}

#[test]
fn design_errors_name_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let c = tmp.path().join("c1");
    std::fs::create_dir_all(&c).unwrap();
    for r in 1..=3 {
        write(&c, &format!("R{r}_m.nii.gz"), &mask(2..6, false));
        write(&c, &format!("R{r}_c.nii.gz"), &mask(2..6, false));
    }
    let d = design(tmp.path(), &["R1", "R2"], "");
    let e = run_study(&d).unwrap_err().to_string();
    assert!(e.contains("at least 3 raters"), "{e}");
    let d = design(
        tmp.path(),
        &["R1", "R2", "R3"],
        "c1,R1,manual,60\nc1,R1,cnn,30\n",
    );
    let e = run_study(&d).unwrap_err().to_string();
    assert!(e.contains("no manual time for case c1, rater R2"), "{e}");
    let d = design(tmp.path(), &["R1", "R2", "R3"], "c1,R1,manual,1:99\n");
    let e = run_study(&d).unwrap_err().to_string();
    assert!(e.contains("times.csv:1") && e.contains("1:99"), "{e}");
    std::fs::remove_file(c.join("R3_c.nii.gz")).unwrap();
    let d = design(tmp.path(), &["R1", "R2", "R3"], "");
    let e = run_study(&d).unwrap_err().to_string();
    assert!(e.contains("R3_c.nii.gz"), "{e}");
}
