//! Which series the service contours. The model reads contrast-enhanced T1;
//! a PACS sends whole studies (localisers, T2, FLAIR, pre-contrast T1,
//! angiography, diffusion, reformats), and each of those contoured by a T1
//! model is a wrong result that looks like a right one. Rules match what
//! the headers say (contrast agent, pulse sequence, timing, image type) and
//! what sites name their series; the first rule that matches decides, and
//! the audit log says, for a skipped series, why each rule did not take it.

use regex::Regex;
use serde::Deserialize;

use delineate_dicom::Acquisition;

/// What a rule does with the series it matches.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Process,
    Skip,
}

/// Whether an attribute must be recorded.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Presence {
    Present,
    Absent,
}

/// One routing rule: every field given must match.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRule {
    /// A name for the audit log ("post-contrast T1").
    pub name: Option<String>,
    pub action: Option<Action>,
    /// Modality, exactly (MR, CT, ...).
    pub modality: Option<String>,
    /// The sender's AE title, exactly.
    pub calling_ae: Option<String>,
    /// A regular expression that must be found in Series Description
    /// (`(?i)` for case-insensitive).
    pub series_description: Option<String>,
    /// A regular expression that must not be found in Series Description.
    pub not_series_description: Option<String>,
    /// Contrast/Bolus Agent recorded (`present`) or not (`absent`).
    pub contrast: Option<Presence>,
    /// Image Type holds at least one of these values (LOCALIZER, DERIVED, ...).
    pub image_type_any: Option<Vec<String>>,
    /// Image Type holds none of these values.
    pub image_type_none: Option<Vec<String>>,
    /// Scanning Sequence holds at least one of these (SE, IR, GR, EP, RM).
    pub scanning_sequence_any: Option<Vec<String>>,
    /// Repetition Time recorded and within [min, max] ms.
    pub repetition_time_ms: Option<[f64; 2]>,
    /// Echo Time recorded and within [min, max] ms.
    pub echo_time_ms: Option<[f64; 2]>,
    /// Inversion Time absent, or at most this (ms): MPRAGE (TI ~ 900 ms)
    /// passes, FLAIR (TI ~ 2500 ms) does not.
    pub max_inversion_time_ms: Option<f64>,
    #[serde(skip)]
    pub description_re: Option<Regex>,
    #[serde(skip)]
    pub not_description_re: Option<Regex>,
}

/// The attributes routing looks at.
pub struct SeriesFacts<'a> {
    pub modality: &'a str,
    pub description: &'a str,
    pub calling_ae: &'a str,
    pub acquisition: &'a Acquisition,
}

/// What routing decided, and why (for the audit log).
#[derive(Debug)]
pub struct Decision {
    pub action: Action,
    /// `route 3 (post-contrast T1)` or `default_action`.
    pub rule: String,
    /// For each rule before the deciding one: why it did not match.
    pub not_matched: Vec<String>,
}

fn upper(v: &[String]) -> Vec<String> {
    v.iter().map(|s| s.trim().to_ascii_uppercase()).collect()
}

fn in_range(what: &str, v: Option<f64>, r: [f64; 2]) -> Result<(), String> {
    match v {
        None => Err(format!(
            "{what} not recorded (the rule wants {}–{} ms)",
            r[0], r[1]
        )),
        Some(x) if x < r[0] || x > r[1] => {
            Err(format!("{what} {x} ms outside {}–{} ms", r[0], r[1]))
        }
        Some(_) => Ok(()),
    }
}

impl RouteRule {
    /// Compiles the patterns; the error names the field.
    pub fn compile(&mut self) -> Result<(), String> {
        if self.action.is_none() {
            return Err("action is missing (process or skip)".into());
        }
        let re = |p: &Option<String>, what: &str| {
            p.as_deref()
                .map(|p| Regex::new(p).map_err(|e| format!("{what}: {e}")))
                .transpose()
        };
        self.description_re = re(&self.series_description, "series_description")?;
        self.not_description_re = re(&self.not_series_description, "not_series_description")?;
        for (what, r) in [
            ("repetition_time_ms", self.repetition_time_ms),
            ("echo_time_ms", self.echo_time_ms),
        ] {
            if let Some([lo, hi]) = r {
                if !(lo.is_finite() && hi.is_finite() && lo <= hi) {
                    return Err(format!("{what}: [min, max] with min ≤ max"));
                }
            }
        }
        Ok(())
    }

    /// `route 3 (name)`.
    pub fn label(&self, n: usize) -> String {
        match &self.name {
            Some(name) => format!("route {} ({name})", n + 1),
            None => format!("route {}", n + 1),
        }
    }

    /// Ok when every given field matches; else the first that does not.
    pub fn check(&self, s: &SeriesFacts) -> Result<(), String> {
        let a = s.acquisition;
        if let Some(m) = &self.modality {
            if m != s.modality {
                return Err(format!("modality {} is not {m}", s.modality));
            }
        }
        if let Some(ae) = &self.calling_ae {
            if ae != s.calling_ae {
                return Err(format!("sent by {}, not {ae}", s.calling_ae));
            }
        }
        if let Some(re) = &self.description_re {
            if !re.is_match(s.description) {
                return Err(format!(
                    "description {:?} does not match /{}/",
                    s.description,
                    re.as_str()
                ));
            }
        }
        if let Some(re) = &self.not_description_re {
            if let Some(m) = re.find(s.description) {
                return Err(format!(
                    "description {:?} contains {:?} (/{}/)",
                    s.description,
                    m.as_str(),
                    re.as_str()
                ));
            }
        }
        match (self.contrast, &a.contrast_agent) {
            (Some(Presence::Present), None) => {
                return Err("no contrast agent recorded (ContrastBolusAgent)".into())
            }
            (Some(Presence::Absent), Some(agent)) => {
                return Err(format!("contrast agent recorded ({agent})"))
            }
            _ => {}
        }
        let types = upper(&a.image_type);
        if let Some(any) = &self.image_type_any {
            if !upper(any).iter().any(|t| types.contains(t)) {
                return Err(format!(
                    "image type {} has none of {}",
                    types.join("\\"),
                    any.join(", ")
                ));
            }
        }
        if let Some(none) = &self.image_type_none {
            if let Some(t) = upper(none).iter().find(|t| types.contains(t)) {
                return Err(format!("image type {} includes {t}", types.join("\\")));
            }
        }
        if let Some(any) = &self.scanning_sequence_any {
            let seq = upper(&a.scanning_sequence);
            if !upper(any).iter().any(|t| seq.contains(t)) {
                return Err(format!(
                    "scanning sequence {} has none of {}",
                    if seq.is_empty() {
                        "(not recorded)".into()
                    } else {
                        seq.join("\\")
                    },
                    any.join(", ")
                ));
            }
        }
        if let Some(r) = self.repetition_time_ms {
            in_range("repetition time", a.repetition_time_ms, r)?;
        }
        if let Some(r) = self.echo_time_ms {
            in_range("echo time", a.echo_time_ms, r)?;
        }
        if let (Some(max), Some(ti)) = (self.max_inversion_time_ms, a.inversion_time_ms) {
            if ti > max {
                return Err(format!("inversion time {ti} ms above {max} ms"));
            }
        }
        Ok(())
    }
}

/// First matching rule decides; else `default`.
pub fn route(rules: &[RouteRule], default: Action, s: &SeriesFacts) -> Decision {
    let mut not_matched = Vec::new();
    for (n, r) in rules.iter().enumerate() {
        match r.check(s) {
            Ok(()) => {
                return Decision {
                    action: r.action.unwrap_or(Action::Skip),
                    rule: r.label(n),
                    not_matched,
                }
            }
            Err(why) => not_matched.push(format!("{}: {why}", r.label(n))),
        }
    }
    Decision {
        action: default,
        rule: "default_action".into(),
        not_matched,
    }
}

#[cfg(test)]
mod tests;
