//! Which ROIs of a structure set are lesions. A planning system's structure
//! set holds BODY, organs at risk, PTVs and rings beside the GTVs; training
//! and evaluation must see the GTVs only, and say what they left out.

use std::path::Path;
use std::str::FromStr;

use delineate_imaging::{Geometry, Volume};
use regex::Regex;

use crate::rtstruct_read::{RoiInfo, RtStructMasks};
use crate::Error;

/// How the contours of one ROI on one slice combine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Combine {
    /// Even-odd (XOR): a contour inside another is a hole. What DICOM
    /// intends for nested contours and what most planning systems write.
    #[default]
    EvenOdd,
    /// Union: every contour adds its inside. For systems that draw
    /// overlapping parts of one structure as separate contours (a hole
    /// cannot be expressed).
    Union,
}

impl FromStr for Combine {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "even-odd" => Ok(Combine::EvenOdd),
            "union" => Ok(Combine::Union),
            _ => Err(format!("{s:?}: even-odd or union")),
        }
    }
}

/// The ROIs taken as lesions: those whose name matches `name` (when given)
/// and whose RT ROI Interpreted Type is one of `types` (when not empty).
#[derive(Clone, Debug)]
pub struct RoiSelection {
    pub name: Option<Regex>,
    /// Upper-case interpreted types (GTV, CTV, ...); empty: any type.
    pub types: Vec<String>,
    pub combine: Combine,
}

impl Default for RoiSelection {
    /// GTV-type ROIs, even-odd.
    fn default() -> Self {
        Self {
            name: None,
            types: vec!["GTV".into()],
            combine: Combine::EvenOdd,
        }
    }
}

impl RoiSelection {
    /// Every ROI (conversion tools).
    pub fn any() -> Self {
        Self {
            name: None,
            types: Vec::new(),
            combine: Combine::EvenOdd,
        }
    }

    /// From command-line values: `name` a regular expression searched in
    /// the ROI name (`(?i)` for case-insensitive); `types` a comma-separated
    /// list or `any`. Without `types`: GTV, unless a name pattern is given
    /// (then any type).
    pub fn parse(
        name: Option<&str>,
        types: Option<&str>,
        combine: Combine,
    ) -> Result<Self, String> {
        let name = name
            .map(|n| Regex::new(n).map_err(|e| format!("ROI name pattern {n:?}: {e}")))
            .transpose()?;
        let types = match types {
            Some(t) if t.trim().eq_ignore_ascii_case("any") => Vec::new(),
            Some(t) => {
                let v: Vec<String> = t
                    .split(',')
                    .map(|x| x.trim().to_ascii_uppercase())
                    .filter(|x| !x.is_empty())
                    .collect();
                if v.is_empty() {
                    return Err(format!("ROI types {t:?}: a list such as GTV,CTV, or any"));
                }
                v
            }
            None if name.is_some() => Vec::new(),
            None => vec!["GTV".into()],
        };
        Ok(Self {
            name,
            types,
            combine,
        })
    }

    pub fn matches(&self, r: &RoiInfo) -> bool {
        self.name.as_ref().is_none_or(|re| re.is_match(&r.name))
            && (self.types.is_empty()
                || self
                    .types
                    .iter()
                    .any(|t| t.eq_ignore_ascii_case(r.interpreted_type.trim())))
    }

    /// In words, for messages: `GTV-type ROIs named /met/`.
    pub fn describe(&self) -> String {
        let t = if self.types.is_empty() {
            "ROIs of any type".to_string()
        } else {
            format!("{}-type ROIs", self.types.join("/"))
        };
        match &self.name {
            Some(re) => format!("{t} named /{}/", re.as_str()),
            None => t,
        }
    }
}

/// The selected ROIs as a label map (label n = the n-th selected ROI; where
/// they overlap, the later wins) and what was left out.
pub struct Selected {
    pub labels: Volume<u32>,
    pub chosen: Vec<RoiInfo>,
    pub ignored: Vec<RoiInfo>,
}

impl RtStructMasks {
    /// The ROIs `sel` takes; an error naming every ROI when it takes none
    /// (a wrong selection must not become a case without lesions).
    pub fn select(
        &self,
        sel: &RoiSelection,
        geometry: &Geometry,
        path: &Path,
    ) -> Result<Selected, Error> {
        let mut labels = Volume::filled(geometry.clone(), 0u32);
        let (mut chosen, mut ignored) = (Vec::new(), Vec::new());
        for (r, m) in self.rois.iter().zip(&self.masks) {
            if !sel.matches(r) {
                ignored.push(r.clone());
                continue;
            }
            chosen.push(r.clone());
            let l = chosen.len() as u32;
            for (o, &b) in labels.as_mut_slice().iter_mut().zip(m.as_slice()) {
                if b {
                    *o = l;
                }
            }
        }
        if chosen.is_empty() {
            let all: Vec<String> = self
                .rois
                .iter()
                .map(|r| format!("{:?} ({})", r.name, or_none(&r.interpreted_type)))
                .collect();
            return Err(Error::file(
                path,
                format!(
                    "no ROI is one of the {} taken as lesions; the structure set has {}. \
                     Choose with --roi REGEX and/or --roi-type TYPES",
                    sel.describe(),
                    if all.is_empty() {
                        "no ROI".to_string()
                    } else {
                        all.join(", ")
                    }
                ),
            ));
        }
        Ok(Selected {
            labels,
            chosen,
            ignored,
        })
    }
}

fn or_none(t: &str) -> &str {
    if t.trim().is_empty() {
        "no type"
    } else {
        t
    }
}

impl Selected {
    /// `ignored 3 ROI(s): "BODY" (EXTERNAL), ...`, or None.
    pub fn ignored_note(&self) -> Option<String> {
        (!self.ignored.is_empty()).then(|| {
            format!(
                "ignored {} ROI(s) that are not lesions: {}",
                self.ignored.len(),
                self.ignored
                    .iter()
                    .map(|r| format!("{:?} ({})", r.name, or_none(&r.interpreted_type)))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roi(name: &str, t: &str) -> RoiInfo {
        RoiInfo {
            number: 1,
            name: name.into(),
            interpreted_type: t.into(),
            description: String::new(),
            contours: 1,
            voxels: 1,
        }
    }

    #[test]
    fn gtv_by_default_names_when_asked() {
        let d = RoiSelection::default();
        assert!(d.matches(&roi("GTV_met1", "GTV")));
        assert!(!d.matches(&roi("BODY", "EXTERNAL")));
        assert!(!d.matches(&roi("Brainstem", "ORGAN")));
        assert!(!d.matches(&roi("PTV", "PTV")));
        let n = RoiSelection::parse(Some("(?i)^gtv"), None, Combine::Union).unwrap();
        assert!(n.matches(&roi("gtv 2", "")));
        assert!(!n.matches(&roi("PTV gtv", "PTV")));
        let both = RoiSelection::parse(Some("met"), Some("gtv, ctv"), Combine::EvenOdd).unwrap();
        assert!(both.matches(&roi("met 1", "CTV")));
        assert!(!both.matches(&roi("met 1", "ORGAN")));
        assert!(RoiSelection::parse(None, Some("any"), Combine::EvenOdd)
            .unwrap()
            .matches(&roi("BODY", "EXTERNAL")));
        assert!(RoiSelection::parse(Some("("), None, Combine::EvenOdd).is_err());
        assert!(RoiSelection::parse(None, Some(" , "), Combine::EvenOdd).is_err());
        assert_eq!("union".parse::<Combine>(), Ok(Combine::Union));
        assert!("xor".parse::<Combine>().is_err());
    }
}
