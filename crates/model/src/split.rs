//! The patient-wise split of a training run, as a type on disk.
//!
//! Cases are shuffled by the seed; the first `holdout` of that order are a
//! test set used by no fold, the rest are dealt into `folds` folds and fold
//! `fold` is held out for validation (`folds` 0: no validation). The split
//! is written into the run folder as `splits.json` (as nnU-Net writes
//! `splits_final.json`), and a resumed run must have the same one: a resume
//! with another fold, seed or case list would silently validate on cases it
//! trained on.

use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::Error;

/// File name of the split in a run folder.
pub const SPLITS_FILE: &str = "splits.json";

/// What a case is used for in a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Train,
    Validation,
    Test,
}

/// How a split is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitConfig {
    pub seed: u64,
    /// Patient-wise folds (0: no validation).
    pub folds: usize,
    /// The fold held out for validation.
    pub fold: usize,
    /// Cases kept out of training and validation (a test set).
    pub holdout: usize,
}

/// A run's split: every case name with its role.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Split {
    pub config: SplitConfig,
    pub train: Vec<String>,
    pub validation: Vec<String>,
    pub test: Vec<String>,
}

impl Split {
    /// Draws the split of `names` (the dataset's cases, in dataset order).
    pub fn draw(names: &[String], config: SplitConfig) -> Result<Self, Error> {
        let SplitConfig {
            seed,
            folds,
            fold,
            holdout,
        } = config;
        if folds == 1 || (folds > 0 && fold >= folds) {
            return Err(Error::Input(
                "--fold must lie in 0..--folds, and --folds is 0 (no validation) or at least 2"
                    .into(),
            ));
        }
        if holdout >= names.len() {
            return Err(Error::Input(format!(
                "--holdout {holdout}: only {} cases",
                names.len()
            )));
        }
        let mut order: Vec<usize> = (0..names.len()).collect();
        order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
        let mut position = vec![0usize; names.len()];
        for (pos, &i) in order.iter().enumerate() {
            position[i] = pos;
        }
        let mut split = Split {
            config,
            train: Vec::new(),
            validation: Vec::new(),
            test: Vec::new(),
        };
        // Dataset order within each role.
        for (i, name) in names.iter().enumerate() {
            let pos = position[i];
            let list = if pos < holdout {
                &mut split.test
            } else if folds > 0 && (pos - holdout) % folds == fold {
                &mut split.validation
            } else {
                &mut split.train
            };
            list.push(name.clone());
        }
        if split.train.is_empty() {
            return Err(Error::Input(format!(
                "no training cases left after holding out fold {fold} and {holdout} test cases"
            )));
        }
        Ok(split)
    }

    /// The role of case `name` (`None`: not in this split).
    pub fn role(&self, name: &str) -> Option<Role> {
        let has = |l: &[String]| l.iter().any(|n| n == name);
        if has(&self.train) {
            Some(Role::Train)
        } else if has(&self.validation) {
            Some(Role::Validation)
        } else if has(&self.test) {
            Some(Role::Test)
        } else {
            None
        }
    }

    /// `RUN/splits.json`.
    pub fn path(run: &Path) -> PathBuf {
        run.join(SPLITS_FILE)
    }

    /// Reads a run's split (`None`: the run has none, as runs before
    /// 2026-12-07).
    pub fn read(run: &Path) -> Result<Option<Self>, Error> {
        let path = Self::path(run);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(Error::Io(delineate_imaging::IoFailure {
                    what: "read the run's split",
                    path,
                    source,
                }))
            }
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|source| Error::Json {
                what: "split (splits.json)",
                path,
                source,
            })
    }

    /// Writes `RUN/splits.json` whole (or not at all).
    pub fn write(&self, run: &Path) -> Result<(), Error> {
        std::fs::create_dir_all(run).map_err(delineate_imaging::IoFailure::on(
            "create the run folder",
            run,
        ))?;
        let text = serde_json::to_string_pretty(self).map_err(|source| Error::Json {
            what: "split",
            path: Self::path(run),
            source,
        })? + "\n";
        delineate_imaging::atomic::write_atomically(&Self::path(run), ".json", |p, _| {
            std::fs::write(p, text.as_bytes()).map_err(|e| e.to_string())
        })?;
        Ok(())
    }

    /// Binds this split to the run in `run`: a new run writes it; a resumed
    /// run must have it already (a run without `splits.json` gets it now),
    /// and another split is refused, naming the file and what differs.
    pub fn bind(&self, run: &Path, resume: bool) -> Result<(), Error> {
        if resume {
            if let Some(saved) = Self::read(run)? {
                if saved != *self {
                    return Err(Error::Input(format!(
                        "{}: this run was made with another split ({}); resume with the \
                         run's own --seed, --folds, --fold, --holdout and cases",
                        Self::path(run).display(),
                        saved.difference(self)
                    )));
                }
                return Ok(());
            }
        }
        self.write(run)
    }

    /// What differs between two splits, in words.
    fn difference(&self, other: &Split) -> String {
        let (a, b) = (self.config, other.config);
        if a != b {
            return format!(
                "seed {} folds {} fold {} holdout {} there, seed {} folds {} fold {} holdout {} now",
                a.seed, a.folds, a.fold, a.holdout, b.seed, b.folds, b.fold, b.holdout
            );
        }
        let moved: Vec<&String> = other
            .validation
            .iter()
            .chain(&other.train)
            .chain(&other.test)
            .filter(|n| self.role(n) != other.role(n))
            .collect();
        format!(
            "{} case(s) changed role or are new, e.g. {}",
            moved.len(),
            moved.first().map(|s| s.as_str()).unwrap_or("?")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("case_{i:03}")).collect()
    }

    fn cfg(fold: usize) -> SplitConfig {
        SplitConfig {
            seed: 3,
            folds: 5,
            fold,
            holdout: 4,
        }
    }

    #[test]
    fn every_case_has_one_role_and_the_folds_partition_the_rest() {
        let all = names(29);
        let mut seen_val = Vec::new();
        for fold in 0..5 {
            let s = Split::draw(&all, cfg(fold)).unwrap();
            assert_eq!(s.train.len() + s.validation.len() + s.test.len(), 29);
            assert_eq!(s.test.len(), 4);
            for n in &all {
                assert!(s.role(n).is_some());
            }
            // The test set is the same whatever the fold.
            assert_eq!(s.test, Split::draw(&all, cfg(0)).unwrap().test);
            seen_val.extend(s.validation.clone());
        }
        seen_val.sort();
        let mut rest: Vec<String> = Split::draw(&all, cfg(0)).unwrap().train;
        rest.extend(Split::draw(&all, cfg(0)).unwrap().validation);
        rest.sort();
        assert_eq!(
            seen_val, rest,
            "each non-test case validates in exactly one fold"
        );
    }

    #[test]
    fn a_resume_with_another_split_is_refused_naming_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path().join("run");
        let all = names(12);
        let s0 = Split::draw(&all, cfg(0)).unwrap();
        s0.bind(&run, false).unwrap();
        assert_eq!(Split::read(&run).unwrap().unwrap(), s0);
        // Same split: fine.
        s0.bind(&run, true).unwrap();
        // Another fold.
        let e = Split::draw(&all, cfg(2))
            .unwrap()
            .bind(&run, true)
            .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("splits.json") && msg.contains("fold 0"),
            "{msg}"
        );
        // Another case list, same options.
        let mut more = all.clone();
        more.push("case_999".into());
        let e = Split::draw(&more, cfg(0))
            .unwrap()
            .bind(&run, true)
            .unwrap_err();
        assert!(e.to_string().contains("changed role or are new"), "{e}");
        // The saved split is untouched by the refusals.
        assert_eq!(Split::read(&run).unwrap().unwrap(), s0);
        // A damaged file is an error naming it.
        std::fs::write(Split::path(&run), "{").unwrap();
        let e = Split::read(&run).unwrap_err();
        assert!(e.to_string().contains("splits.json"), "{e}");
    }

    #[test]
    fn bad_options_are_refused() {
        let all = names(5);
        for c in [
            SplitConfig { folds: 1, ..cfg(0) },
            SplitConfig { fold: 5, ..cfg(0) },
            SplitConfig {
                holdout: 5,
                ..cfg(0)
            },
        ] {
            assert!(Split::draw(&all, c).is_err(), "{c:?}");
        }
    }
}
