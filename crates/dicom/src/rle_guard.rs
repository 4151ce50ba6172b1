//! Structural checks of RLE Lossless pixel data before dicom-rs decodes it.
//!
//! dicom-transfer-syntax-registry 0.10.1 indexes the RLE header and the
//! decoded segments without bounds checks, so a fragment whose header or
//! PackBits segments do not match Rows × Columns makes it panic (found by our
//! `dicom_read` fuzz target). The RLE format (DICOM PS3.5 Annex G) is small
//! enough to check here: a 64-byte header of little-endian u32s (segment
//! count, then up to 15 offsets), one PackBits segment per byte plane.

use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;

/// RLE header size in bytes (PS3.5 G.5).
const RLE_HEADER_BYTES: usize = 64;
/// Most segments an RLE header can describe (PS3.5 G.5).
const RLE_MAX_SEGMENTS: usize = 15;
/// RLE Lossless transfer syntax UID.
pub const RLE_LOSSLESS: &str = "1.2.840.10008.1.2.5";

/// Bytes a PackBits segment decodes to (counting stops once `needed` are
/// reached: encoders pad segments to an even length), or `None` when a run
/// is cut short before that.
fn packbits_len(seg: &[u8], needed: usize) -> Option<usize> {
    let (mut i, mut n) = (0usize, 0usize);
    while i < seg.len() && n < needed {
        let h = seg[i] as i8;
        i += 1;
        if h >= 0 {
            let len = h as usize + 1;
            if i + len > seg.len() {
                return None;
            }
            i += len;
            n += len;
        } else if h != -128 {
            if i >= seg.len() {
                return None;
            }
            i += 1;
            n += (1 - h as isize) as usize;
        }
    }
    Some(n)
}

/// Checks frame 0 of an RLE-encoded object; other transfer syntaxes pass.
pub fn check(obj: &DefaultDicomObject, rows: usize, cols: usize, samples: usize, bits_allocated: usize) -> Result<(), String> {
    if obj.meta().transfer_syntax().trim_end_matches(['\0', ' ']) != RLE_LOSSLESS {
        return Ok(());
    }
    if bits_allocated != 8 && bits_allocated != 16 {
        return Err(format!("RLE with BitsAllocated {bits_allocated} is not supported (8 or 16)"));
    }
    let fragment = obj
        .get(tags::PIXEL_DATA)
        .and_then(|e| e.value().fragments())
        .and_then(|f| f.first())
        .ok_or("RLE pixel data has no fragments")?;
    if fragment.len() < RLE_HEADER_BYTES {
        return Err(format!("RLE fragment of {} bytes is shorter than its 64-byte header", fragment.len()));
    }
    let word = |k: usize| u32::from_le_bytes([fragment[4 * k], fragment[4 * k + 1], fragment[4 * k + 2], fragment[4 * k + 3]]) as usize;
    let expected = samples * bits_allocated / 8;
    let count = word(0);
    if count != expected || count > RLE_MAX_SEGMENTS {
        return Err(format!("RLE header lists {count} segments, expected {expected}"));
    }
    let mut offsets: Vec<usize> = (1..=count).map(word).collect();
    offsets.push(fragment.len());
    for (s, w) in offsets.windows(2).enumerate() {
        if w[0] < RLE_HEADER_BYTES || w[0] > w[1] || w[1] > fragment.len() {
            return Err(format!("RLE segment {s} has invalid offsets {}..{}", w[0], w[1]));
        }
        match packbits_len(&fragment[w[0]..w[1]], rows * cols) {
            Some(n) if n >= rows * cols => {}
            Some(n) => return Err(format!("RLE segment {s} decodes to {n} bytes, expected {}", rows * cols)),
            None => return Err(format!("RLE segment {s} ends inside a run")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::packbits_len;

    #[test]
    fn packbits_lengths() {
        assert_eq!(packbits_len(&[2, 1, 2, 3], 9), Some(3)); // literal of 3
        assert_eq!(packbits_len(&[0xfe, 9], 9), Some(3)); // run of 3
        assert_eq!(packbits_len(&[0x80, 0, 7], 9), Some(1)); // no-op, literal of 1
        assert_eq!(packbits_len(&[5, 1], 9), None);
        assert_eq!(packbits_len(&[0xfe], 9), None);
        // Padding after the last needed byte is ignored.
        assert_eq!(packbits_len(&[0xfe, 9, 0], 3), Some(3));
    }
}
