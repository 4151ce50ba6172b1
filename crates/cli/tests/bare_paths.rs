//! Every command that writes a file or folder accepts a bare relative name
//! (`users.toml`, `out`), as the documentation's examples use them: the
//! parent of a bare name is the empty path, which no system call opens,
//! and every writer must take it as the current folder. Each command runs
//! from a temporary working folder.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::{assert_no_crash, bin, py, COLIN27};

/// Runs `delineate ARGS` in `cwd` and expects success.
fn ok_in(cwd: &Path, args: &[&str]) -> Output {
    let out = Command::new(bin())
        .current_dir(cwd)
        .args(args)
        .output()
        .unwrap();
    assert_no_crash(&out, args);
    assert!(
        out.status.success(),
        "delineate {args:?} in {} failed:\n{}",
        cwd.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn user_add_with_a_bare_file_name_prints_the_token() {
    let tmp = tempfile::tempdir().unwrap();
    let out = ok_in(
        tmp.path(),
        &[
            "user",
            "add",
            "Dr Bare",
            "--role",
            "reviewer",
            "--users",
            "users.toml",
        ],
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(token.len(), 64, "{token:?}");
    assert!(token.chars().all(|c| c.is_ascii_hexdigit()));
    let text = std::fs::read_to_string(tmp.path().join("users.toml")).unwrap();
    assert!(text.contains("Dr Bare"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(tmp.path().join("users.toml"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // No temporary file left beside it.
    let names: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(names, ["users.toml"]);
    // A second account into the same bare name.
    ok_in(
        tmp.path(),
        &[
            "user",
            "add",
            "Dr Two",
            "--role",
            "viewer",
            "--users",
            "users.toml",
        ],
    );
    let list = ok_in(tmp.path(), &["user", "list", "--users", "users.toml"]);
    let list = String::from_utf8_lossy(&list.stdout).to_string();
    assert!(
        list.contains("Dr Bare") && list.contains("Dr Two"),
        "{list}"
    );
}

#[test]
fn convert_synth_segment_and_train_write_to_bare_names() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    ok_in(cwd, &["convert", COLIN27, "colin.nii.gz"]);
    assert!(cwd.join("colin.nii.gz").is_file());

    ok_in(
        cwd,
        &[
            "synth",
            "--cases",
            "1",
            "--seed",
            "5",
            "--kinds",
            "met",
            "--met-count",
            "1-1",
            "--grid",
            "1mm",
            "--out",
            "synthout",
        ],
    );
    assert!(cwd.join("synthout/case_000/image.nii.gz").is_file());

    ok_in(
        cwd,
        &[
            "segment",
            "synthout/case_000/image.nii.gz",
            "--out",
            "segout",
        ],
    );
    assert!(cwd.join("segout/lesions.json").is_file());

    // A tiny dataset, two iterations: the run folder by a bare name.
    py(&format!(
        r#"
root = {root:?}
rng = np.random.default_rng(0)
for c in range(3):
    d = os.path.join(root, f"case_{{c}}")
    os.makedirs(d)
    img = 100 + 10 * rng.standard_normal((24, 24, 24))
    tgt = np.zeros((24, 24, 24), np.uint8)
    tgt[4 + c:10 + c, 5:11, 6:12] = 1
    img[tgt > 0] += 80
    aff = np.diag([-1.0, -1.0, 1.0, 1.0])
    nib.save(nib.Nifti1Image(img.astype(np.float32), aff), os.path.join(d, "image.nii.gz"))
    nib.save(nib.Nifti1Image(tgt, aff), os.path.join(d, "truth.nii.gz"))
print("null")
"#,
        root = cwd.join("tiny").to_string_lossy()
    ));
    ok_in(
        cwd,
        &[
            "train",
            "--data",
            "tiny",
            "--out",
            "run",
            "--widths",
            "4,8",
            "--patch",
            "16",
            "--batch",
            "2",
            "--iterations",
            "2",
            "--epochs",
            "1",
            "--folds",
            "3",
        ],
    );
    assert!(cwd.join("run/model.dlm").is_file());
    assert!(cwd.join("run/best.dlm").is_file());
}
