//! What an MR series is: contrast agent, pulse sequence, timing and image
//! type, as the headers say. Routing uses it to contour contrast-enhanced
//! T1 series only: the model was trained on nothing else, and a T2, FLAIR,
//! pre-contrast T1 or angiogram contoured by it is a wrong result that looks
//! like a right one.
//!
//! Classic MR images carry these attributes at the top level (PS3.3 C.8.3.1,
//! C.7.6.4 for Contrast/Bolus); Enhanced MR keeps timing and contrast in
//! functional groups (C.8.13.5: MR Timing and Related Parameters, MR Echo,
//! MR Modifier; Contrast/Bolus Usage), shared or in the first frame.

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use serde::{Deserialize, Serialize};

/// The acquisition attributes of one instance (empty where absent).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Acquisition {
    /// Contrast/Bolus Agent (0018,0010), or `"(agent sequence)"` when only
    /// the Enhanced coded sequence says an agent was given. None: no agent
    /// recorded (the attribute absent or empty).
    pub contrast_agent: Option<String>,
    /// Scanning Sequence (0018,0020): SE, IR, GR, EP, RM; Enhanced MR's Echo
    /// Pulse Sequence (SPIN, GRADIENT, BOTH) mapped to SE/GR.
    pub scanning_sequence: Vec<String>,
    /// Sequence Variant (0018,0021): SK, MTC, SS, TRSS, SP, MP, OSP, NONE.
    pub sequence_variant: Vec<String>,
    /// Sequence Name (0018,0024) or Pulse Sequence Name (0018,9005).
    pub sequence_name: String,
    /// MR Acquisition Type (0018,0023): 2D or 3D.
    pub acquisition_type: String,
    pub repetition_time_ms: Option<f64>,
    pub echo_time_ms: Option<f64>,
    pub inversion_time_ms: Option<f64>,
    pub flip_angle_deg: Option<f64>,
    /// Image Type (0008,0008): ORIGINAL/DERIVED, PRIMARY/SECONDARY, ...
    pub image_type: Vec<String>,
    /// Images in Acquisition (0020,1002), when the scanner wrote it.
    pub images_in_acquisition: Option<i64>,
}

fn strings(obj: &InMemDicomObject, tag: Tag) -> Vec<String> {
    obj.get(tag)
        .and_then(|e| e.to_multi_str().ok())
        .map(|v| {
            v.iter()
                .flat_map(|s| s.split('\\'))
                .map(|s| s.trim_matches(['\0', ' ']).to_ascii_uppercase())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

fn text(obj: &InMemDicomObject, tag: Tag) -> String {
    obj.get(tag)
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_matches(['\0', ' ']).to_string())
        .unwrap_or_default()
}

fn number(obj: &InMemDicomObject, tag: Tag) -> Option<f64> {
    obj.get(tag)
        .filter(|e| e.value().multiplicity() > 0)
        .and_then(|e| e.to_multi_float64().ok())
        .and_then(|v| v.first().copied())
        .filter(|x| x.is_finite())
}

fn first_item(obj: &InMemDicomObject, tag: Tag) -> Option<&InMemDicomObject> {
    obj.get(tag)?.items()?.first()
}

/// The Enhanced MR functional group `seq`: shared, else the first frame's.
fn group(obj: &InMemDicomObject, seq: Tag) -> Option<&InMemDicomObject> {
    first_item(obj, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE)
        .and_then(|s| first_item(s, seq))
        .or_else(|| {
            first_item(obj, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
                .and_then(|f| first_item(f, seq))
        })
}

/// Reads the acquisition attributes of a parsed instance.
pub fn read(obj: &InMemDicomObject) -> Acquisition {
    let agent = text(obj, tags::CONTRAST_BOLUS_AGENT);
    let enhanced_agent = obj
        .get(tags::CONTRAST_BOLUS_AGENT_SEQUENCE)
        .and_then(|e| e.items())
        .is_some_and(|i| !i.is_empty());
    let contrast_agent = if !agent.is_empty() {
        Some(agent)
    } else if enhanced_agent {
        Some("(agent sequence)".to_string())
    } else {
        None
    };
    let mut scanning_sequence = strings(obj, tags::SCANNING_SEQUENCE);
    if scanning_sequence.is_empty() {
        scanning_sequence = match text(obj, tags::ECHO_PULSE_SEQUENCE).as_str() {
            "SPIN" => vec!["SE".into()],
            "GRADIENT" => vec!["GR".into()],
            "BOTH" => vec!["SE".into(), "GR".into()],
            _ => Vec::new(),
        };
    }
    let mut sequence_name = text(obj, tags::SEQUENCE_NAME);
    if sequence_name.is_empty() {
        sequence_name = text(obj, tags::PULSE_SEQUENCE_NAME);
    }
    let timing = group(obj, tags::MR_TIMING_AND_RELATED_PARAMETERS_SEQUENCE);
    let echo = group(obj, tags::MR_ECHO_SEQUENCE);
    let modifier = group(obj, tags::MR_MODIFIER_SEQUENCE);
    Acquisition {
        contrast_agent,
        scanning_sequence,
        sequence_variant: strings(obj, tags::SEQUENCE_VARIANT),
        sequence_name,
        acquisition_type: text(obj, tags::MR_ACQUISITION_TYPE).to_ascii_uppercase(),
        repetition_time_ms: number(obj, tags::REPETITION_TIME)
            .or_else(|| timing.and_then(|g| number(g, tags::REPETITION_TIME))),
        echo_time_ms: number(obj, tags::ECHO_TIME)
            .or_else(|| echo.and_then(|g| number(g, tags::EFFECTIVE_ECHO_TIME))),
        inversion_time_ms: number(obj, tags::INVERSION_TIME)
            .or_else(|| modifier.and_then(|g| number(g, tags::INVERSION_TIMES))),
        flip_angle_deg: number(obj, tags::FLIP_ANGLE)
            .or_else(|| timing.and_then(|g| number(g, tags::FLIP_ANGLE))),
        image_type: strings(obj, tags::IMAGE_TYPE),
        images_in_acquisition: obj
            .get(tags::IMAGES_IN_ACQUISITION)
            .filter(|e| e.value().multiplicity() > 0)
            .and_then(|e| e.to_int::<i64>().ok()),
    }
}

impl Acquisition {
    /// One line for the audit log: `agent Gadovist; GR/SP,MP; TR 2300 TE 2.3 TI 900 ms; ORIGINAL\PRIMARY`.
    pub fn summary(&self) -> String {
        let ms = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x}"));
        format!(
            "agent {}; sequence {}/{}; TR {} TE {} TI {} ms; image type {}",
            self.contrast_agent.as_deref().unwrap_or("none"),
            or_dash(&self.scanning_sequence.join(",")),
            or_dash(&self.sequence_variant.join(",")),
            ms(self.repetition_time_ms),
            ms(self.echo_time_ms),
            ms(self.inversion_time_ms),
            or_dash(&self.image_type.join("\\")),
        )
    }
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::{DataElement, PrimitiveValue, VR};

    fn put(o: &mut InMemDicomObject, tag: Tag, vr: VR, v: &str) {
        o.put(DataElement::new(tag, vr, PrimitiveValue::from(v)));
    }

    #[test]
    fn classic_and_enhanced_attributes() {
        let mut o = InMemDicomObject::new_empty();
        put(&mut o, tags::CONTRAST_BOLUS_AGENT, VR::LO, "Gadovist ");
        put(&mut o, tags::SCANNING_SEQUENCE, VR::CS, "GR\\IR");
        put(&mut o, tags::SEQUENCE_VARIANT, VR::CS, "SK\\SP\\MP");
        put(&mut o, tags::REPETITION_TIME, VR::DS, "2300");
        put(&mut o, tags::ECHO_TIME, VR::DS, "2.32");
        put(&mut o, tags::INVERSION_TIME, VR::DS, "900");
        put(&mut o, tags::IMAGE_TYPE, VR::CS, "ORIGINAL\\PRIMARY\\M\\ND");
        let a = read(&o);
        assert_eq!(a.contrast_agent.as_deref(), Some("Gadovist"));
        assert_eq!(a.scanning_sequence, ["GR", "IR"]);
        assert_eq!(a.sequence_variant, ["SK", "SP", "MP"]);
        assert_eq!(
            (a.repetition_time_ms, a.echo_time_ms, a.inversion_time_ms),
            (Some(2300.0), Some(2.32), Some(900.0))
        );
        assert_eq!(a.image_type[1], "PRIMARY");
        assert!(a.summary().contains("agent Gadovist"));

        // Enhanced MR: timing in shared functional groups.
        let mut echo = InMemDicomObject::new_empty();
        echo.put(DataElement::new(
            tags::EFFECTIVE_ECHO_TIME,
            VR::FD,
            PrimitiveValue::F64(vec![3.7].into()),
        ));
        let mut shared = InMemDicomObject::new_empty();
        shared.put(DataElement::new(
            tags::MR_ECHO_SEQUENCE,
            VR::SQ,
            dicom_core::value::DataSetSequence::from(vec![echo]),
        ));
        let mut e = InMemDicomObject::new_empty();
        e.put(DataElement::new(
            tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE,
            VR::SQ,
            dicom_core::value::DataSetSequence::from(vec![shared]),
        ));
        put(&mut e, tags::ECHO_PULSE_SEQUENCE, VR::CS, "GRADIENT");
        let a = read(&e);
        assert_eq!(a.echo_time_ms, Some(3.7));
        assert_eq!(a.scanning_sequence, ["GR"]);
        assert_eq!(a.contrast_agent, None);
    }
}
