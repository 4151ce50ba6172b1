//! From a label map to the ROIs of a structure set: the mask brought onto
//! the reference series' grid, and one ROI per label or per lesion with
//! its name, colour and size.

use std::collections::BTreeMap;
use std::path::Path;

use delineate_imaging::measure::{equivalent_diameter_mm, voxel_volume_mm3};
use delineate_imaging::{connected_components, read_nifti_any, Connectivity, Geometry, Volume};

use crate::rtstruct_write::{RoiSpec, GRID_TOLERANCE_MM, PALETTE};
use crate::Error;

/// How a label map becomes ROIs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoiPer {
    /// One ROI per non-zero label value.
    Label,
    /// One ROI per 26-connected lesion, largest first.
    Lesion,
}

/// Reads a label map (NIfTI) and brings it onto `grid` (exact
/// reorientation only; another grid is an error naming the file).
pub fn labels_on_grid(path: &Path, grid: &Geometry) -> Result<Volume<u32>, Error> {
    let (any, _) = read_nifti_any(path)?;
    let mut labels = any.to_labels().map_err(|bad| {
        Error::file(
            path,
            format!("value {bad} is not a label (labels are non-negative integers)"),
        )
    })?;
    if !labels.geometry().same_grid(grid, GRID_TOLERANCE_MM) {
        labels = labels.reorient(&grid.orientation_code())?;
    }
    if !labels.geometry().same_grid(grid, GRID_TOLERANCE_MM) {
        return Err(Error::file(
            path,
            format!(
                "the mask grid ({:?} voxels, {:?} mm) differs from the reference series ({:?} voxels, {:?} mm); resample it onto the series first",
                labels.geometry().size,
                labels.geometry().spacing,
                grid.size,
                grid.spacing
            ),
        ));
    }
    // Same grid: take the reference geometry exactly.
    labels.set_geometry(grid.clone())?;
    Ok(labels)
}

/// The ROIs of `labels` (renumbered 1.. by size for [`RoiPer::Lesion`]),
/// named from `names` in order, else "Lesion N" / "Label L", each with its
/// volume and equivalent diameter in the description.
pub fn roi_specs(
    labels: &Volume<u32>,
    per: RoiPer,
    names: &[String],
    interpreted_type: &str,
) -> (Volume<u32>, Vec<RoiSpec>) {
    let voxel_mm3 = voxel_volume_mm3(labels.geometry());
    let spec = |n: usize, label: u32, name: String, voxels: usize| {
        let v = voxels as f64 * voxel_mm3;
        RoiSpec {
            label,
            name: names.get(n).cloned().unwrap_or(name),
            color: PALETTE[n % PALETTE.len()],
            interpreted_type: interpreted_type.to_string(),
            description: format!(
                "volume {v:.1} mm3; equivalent diameter {:.1} mm",
                equivalent_diameter_mm(v)
            ),
        }
    };
    match per {
        RoiPer::Lesion => {
            let cc = connected_components(labels, Connectivity::TwentySix);
            let mut order: Vec<usize> = (0..cc.stats.len()).collect();
            order.sort_by(|&x, &y| cc.stats[y].voxels.cmp(&cc.stats[x].voxels).then(x.cmp(&y)));
            let mut rank = vec![0u32; cc.stats.len() + 1];
            let mut rois = Vec::new();
            for (r, &c) in order.iter().enumerate() {
                rank[c + 1] = r as u32 + 1;
                rois.push(spec(
                    r,
                    r as u32 + 1,
                    format!("Lesion {}", r + 1),
                    cc.stats[c].voxels,
                ));
            }
            (cc.labels.map(|&l| rank[l as usize]), rois)
        }
        RoiPer::Label => {
            let mut counts: BTreeMap<u32, usize> = BTreeMap::new();
            for &l in labels.as_slice().iter().filter(|&&l| l != 0) {
                *counts.entry(l).or_default() += 1;
            }
            let rois = counts
                .iter()
                .enumerate()
                .map(|(n, (&l, &count))| spec(n, l, format!("Label {l}"), count))
                .collect();
            (labels.clone(), rois)
        }
    }
}
