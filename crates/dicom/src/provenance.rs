//! What a delivered structure set says about where it came from. A planning
//! system shows structure set labels, ROI names and descriptions, so an
//! unreviewed AI draft has to be recognisable there, by anyone, without
//! opening a log: this module is the one place that decides those strings,
//! for `delineate segment`, the service and the review export alike.

use crate::rtstruct_write::{FixedUids, RoiSpec, RtStructOptions, PALETTE};

/// The model that proposed the contours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelId {
    /// The model file's name (`unet-synth.dlm (built in)`).
    pub name: String,
    /// The first 12 hex digits of the model file's SHA-256: the exact
    /// weights, whatever the file is called.
    pub version: String,
    /// The built-in model is trained on synthetic data: research use only.
    pub research_only: bool,
}

impl ModelId {
    /// `name sha256:version`, with `(research use only)` where it applies.
    pub fn describe(&self) -> String {
        format!(
            "{} sha256:{}{}",
            self.name,
            self.version,
            if self.research_only {
                " (research use only)"
            } else {
                ""
            }
        )
    }
}

/// Who made a structure set, and whether a person has looked at it.
#[derive(Clone, Debug)]
pub enum Provenance {
    /// Straight from the model: nobody has reviewed it. `warnings` are the
    /// segmentation's (field of view, voxel size), carried to the planning
    /// system in every ROI description.
    AiDraft {
        model: ModelId,
        warnings: Vec<String>,
    },
    /// Lesions a named person accepted on the review page.
    Reviewed {
        model: ModelId,
        reviewer: String,
        /// RFC 3339 time of the decisions.
        time: String,
    },
}

/// One lesion as the structure set describes it.
#[derive(Clone, Debug)]
pub struct LesionSummary {
    pub id: u32,
    /// Maximum probability inside the lesion.
    pub confidence: f64,
    pub mean_probability: f64,
    pub volume_mm3: f64,
    pub equivalent_diameter_mm: f64,
}

/// Structure Set Label of an unreviewed AI result.
pub const DRAFT_LABEL: &str = "AI DRAFT";
/// Structure Set Label of a reviewed export.
pub const REVIEWED_LABEL: &str = "AI REVIEWED";
/// ST values are at most 1024 characters (PS3.5 Table 6.2-1).
const ST_MAX: usize = 1024;

impl Provenance {
    fn model(&self) -> &ModelId {
        match self {
            Provenance::AiDraft { model, .. } | Provenance::Reviewed { model, .. } => model,
        }
    }

    /// The ROI name of lesion `id`: `AI draft L3` for a draft (16
    /// characters at most for ids below 10⁵, which every planning system
    /// displays whole), `Lesion 3` once reviewed.
    pub fn roi_name(&self, id: u32) -> String {
        match self {
            Provenance::AiDraft { .. } => format!("AI draft L{id}"),
            Provenance::Reviewed { .. } => format!("Lesion {id}"),
        }
    }

    /// One ROI per lesion (colours by position), GTV, with the provenance,
    /// confidence and size in the description.
    pub fn lesion_rois(&self, lesions: &[LesionSummary]) -> Vec<RoiSpec> {
        lesions
            .iter()
            .enumerate()
            .map(|(n, l)| {
                let size = format!(
                    "confidence {:.3} (max probability; mean {:.3}); volume {:.1} mm3; equivalent diameter {:.1} mm",
                    l.confidence, l.mean_probability, l.volume_mm3, l.equivalent_diameter_mm
                );
                let text = match self {
                    Provenance::AiDraft { model, warnings } => {
                        let mut t = format!(
                            "UNREVIEWED AI DRAFT by delineate {}, model {}; {size}",
                            env!("CARGO_PKG_VERSION"),
                            model.describe()
                        );
                        for w in warnings {
                            t.push_str("; WARNING: ");
                            t.push_str(w);
                        }
                        t
                    }
                    Provenance::Reviewed {
                        model,
                        reviewer,
                        time,
                    } => format!(
                        "AI proposal accepted by {reviewer} at {time}; delineate {}, model {}; {size}",
                        env!("CARGO_PKG_VERSION"),
                        model.describe()
                    ),
                };
                RoiSpec {
                    label: l.id,
                    name: self.roi_name(l.id),
                    color: PALETTE[n % PALETTE.len()],
                    interpreted_type: "GTV".into(),
                    description: truncate(&text, ST_MAX),
                }
            })
            .collect()
    }

    /// Series-level options: label, name, description, generation
    /// algorithm and the model, with `uids` fixed when given.
    pub fn options(&self, uids: Option<FixedUids>) -> RtStructOptions {
        let model = self.model();
        let version = env!("CARGO_PKG_VERSION");
        let (label, name, description, series, algorithm) = match self {
            Provenance::AiDraft { warnings, .. } => (
                DRAFT_LABEL,
                "AI draft, unreviewed",
                format!(
                    "Unreviewed AI draft contours by delineate {version}, model {}. \
                     Not reviewed by a clinician: check every contour before use.{}",
                    model.describe(),
                    if warnings.is_empty() {
                        String::new()
                    } else {
                        format!(" Warnings: {}", warnings.join("; "))
                    }
                ),
                "AI DRAFT delineate contours (unreviewed)".to_string(),
                "AUTOMATIC",
            ),
            Provenance::Reviewed { reviewer, time, .. } => (
                REVIEWED_LABEL,
                "AI contours, reviewed",
                format!(
                    "AI proposals by delineate {version}, model {}, accepted lesion by lesion by {reviewer} at {time}.",
                    model.describe()
                ),
                format!("delineate contours reviewed by {reviewer}"),
                "SEMIAUTOMATIC",
            ),
        };
        RtStructOptions {
            label: label.into(),
            name: name.into(),
            description: truncate(&description, ST_MAX),
            series_description: truncate(&series, 64),
            generation_algorithm: algorithm.into(),
            generation_description: truncate(
                &format!("delineate {version} {} {}", model.name, model.version),
                64,
            ),
            model_name: truncate(&format!("delineate {}", model.name), 64),
            uids,
            ..Default::default()
        }
    }
}

/// At most `max` characters (whole characters: the character set is UTF-8).
fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> ModelId {
        ModelId {
            name: "unet-synth.dlm (built in)".into(),
            version: "0123456789ab".into(),
            research_only: true,
        }
    }

    fn lesion(id: u32) -> LesionSummary {
        LesionSummary {
            id,
            confidence: 0.91,
            mean_probability: 0.7,
            volume_mm3: 120.0,
            equivalent_diameter_mm: 6.1,
        }
    }

    #[test]
    fn drafts_say_so_everywhere_a_planner_looks() {
        let p = Provenance::AiDraft {
            model: model(),
            warnings: vec!["the field of view is not a whole head".into()],
        };
        let rois = p.lesion_rois(&[lesion(1), lesion(12)]);
        assert_eq!(rois[1].name, "AI draft L12");
        assert!(rois.iter().all(|r| r.name.len() <= 16));
        let d = &rois[0].description;
        assert!(d.starts_with("UNREVIEWED AI DRAFT"), "{d}");
        assert!(d.contains("sha256:0123456789ab (research use only)"), "{d}");
        assert!(d.contains("confidence 0.910"), "{d}");
        assert!(d.contains("WARNING: the field of view"), "{d}");
        let o = p.options(None);
        assert_eq!(o.label, DRAFT_LABEL);
        assert!(o.label.len() <= 16);
        assert!(o.series_description.starts_with("AI DRAFT"));
        assert_eq!(o.generation_algorithm, "AUTOMATIC");
        assert!(o.description.contains("Not reviewed"));
    }

    #[test]
    fn reviewed_exports_name_the_reviewer() {
        let p = Provenance::Reviewed {
            model: model(),
            reviewer: "Dr A. Example".into(),
            time: "2026-12-01T10:00:00+01:00".into(),
        };
        let rois = p.lesion_rois(&[lesion(3)]);
        assert_eq!(rois[0].name, "Lesion 3");
        assert!(rois[0].description.contains("accepted by Dr A. Example"));
        let o = p.options(Some(FixedUids::reviewed("1.2.3", 2)));
        assert_eq!(o.label, REVIEWED_LABEL);
        assert_eq!(o.generation_algorithm, "SEMIAUTOMATIC");
        assert_eq!(o.uids.unwrap().instance, "1.2.3.4.2");
        assert!(o.series_description.chars().count() <= 64);
    }

    #[test]
    fn long_texts_are_cut_to_the_vr_limit() {
        let p = Provenance::AiDraft {
            model: model(),
            warnings: vec!["x".repeat(5000)],
        };
        let d = &p.lesion_rois(&[lesion(1)])[0].description;
        assert_eq!(d.chars().count(), 1024);
        assert!(d.ends_with('…'));
    }
}
