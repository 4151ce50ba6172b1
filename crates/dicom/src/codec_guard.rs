//! Structural checks of compressed pixel data before dicom-rs decodes it.
//!
//! dicom-transfer-syntax-registry 0.10.1 trusts the compressed stream to
//! match Rows × Columns: an RLE fragment whose header or PackBits segments
//! are short, or a JPEG stream whose frame is larger than the attributes say,
//! makes it index out of bounds and panic (both found by our `dicom_read`
//! fuzz target). The headers are small enough to check here:
//! * RLE (PS3.5 Annex G): a 64-byte header of little-endian u32s (segment
//!   count, then up to 15 offsets), one PackBits segment per byte plane;
//! * JPEG (ITU T.81 B.2.2): the SOF segment's precision, height, width and
//!   component count must fit the buffer Rows × Columns × samples × bytes.

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

/// JPEG transfer syntaxes decoded by dicom-rs with `jpeg-decoder`.
const JPEG_FAMILY: [&str; 4] = [
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.51",
    "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.70",
];

/// Checks frame 0 of an RLE- or JPEG-encoded object; other transfer
/// syntaxes pass.
pub fn check(
    obj: &DefaultDicomObject,
    rows: usize,
    cols: usize,
    samples: usize,
    bits_allocated: usize,
) -> Result<(), String> {
    let ts = obj.meta().transfer_syntax().trim_end_matches(['\0', ' ']);
    if JPEG_FAMILY.contains(&ts) {
        return check_jpeg(obj, rows, cols, samples, bits_allocated);
    }
    if ts != RLE_LOSSLESS {
        return Ok(());
    }
    if bits_allocated != 8 && bits_allocated != 16 {
        return Err(format!(
            "RLE with BitsAllocated {bits_allocated} is not supported (8 or 16)"
        ));
    }
    let fragment = obj
        .get(tags::PIXEL_DATA)
        .and_then(|e| e.value().fragments())
        .and_then(|f| f.first())
        .ok_or("RLE pixel data has no fragments")?;
    if fragment.len() < RLE_HEADER_BYTES {
        return Err(format!(
            "RLE fragment of {} bytes is shorter than its 64-byte header",
            fragment.len()
        ));
    }
    let word = |k: usize| {
        u32::from_le_bytes([
            fragment[4 * k],
            fragment[4 * k + 1],
            fragment[4 * k + 2],
            fragment[4 * k + 3],
        ]) as usize
    };
    let expected = samples * bits_allocated / 8;
    let count = word(0);
    if count != expected || count > RLE_MAX_SEGMENTS {
        return Err(format!(
            "RLE header lists {count} segments, expected {expected}"
        ));
    }
    let mut offsets: Vec<usize> = (1..=count).map(word).collect();
    offsets.push(fragment.len());
    for (s, w) in offsets.windows(2).enumerate() {
        if w[0] < RLE_HEADER_BYTES || w[0] > w[1] || w[1] > fragment.len() {
            return Err(format!(
                "RLE segment {s} has invalid offsets {}..{}",
                w[0], w[1]
            ));
        }
        match packbits_len(&fragment[w[0]..w[1]], rows * cols) {
            Some(n) if n >= rows * cols => {}
            Some(n) => {
                return Err(format!(
                    "RLE segment {s} decodes to {n} bytes, expected {}",
                    rows * cols
                ))
            }
            None => return Err(format!("RLE segment {s} ends inside a run")),
        }
    }
    Ok(())
}

/// The SOF frame header of a JPEG stream: (precision, height, width, components).
fn jpeg_frame_header(data: &[u8]) -> Option<(u8, u16, u16, u8)> {
    if data.len() < 4 || data[0] != 0xFF || data[1] != 0xD8 {
        return None;
    }
    let mut p = 2;
    while p + 4 <= data.len() {
        if data[p] != 0xFF {
            return None;
        }
        let marker = data[p + 1];
        if marker == 0xFF {
            p += 1; // fill byte
            continue;
        }
        let len = u16::from_be_bytes([data[p + 2], data[p + 3]]) as usize;
        let is_sof = matches!(marker, 0xC0..=0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF);
        if is_sof {
            if p + 10 > data.len() {
                return None;
            }
            let h = u16::from_be_bytes([data[p + 5], data[p + 6]]);
            let w = u16::from_be_bytes([data[p + 7], data[p + 8]]);
            return Some((data[p + 4], h, w, data[p + 9]));
        }
        if marker == 0xDA || len < 2 {
            return None; // scan before any frame header
        }
        p += 2 + len;
    }
    None
}

fn check_jpeg(
    obj: &DefaultDicomObject,
    rows: usize,
    cols: usize,
    samples: usize,
    bits_allocated: usize,
) -> Result<(), String> {
    let fragment = obj
        .get(tags::PIXEL_DATA)
        .and_then(|e| e.value().fragments())
        .and_then(|f| f.first())
        .ok_or("JPEG pixel data has no fragments")?;
    let (precision, h, w, comps) =
        jpeg_frame_header(fragment).ok_or("no JPEG frame header in the first fragment")?;
    let bytes = if precision > 8 { 2 } else { 1 };
    if h as usize != rows
        || w as usize != cols
        || comps as usize != samples
        || bytes * 8 > bits_allocated.max(8)
    {
        return Err(format!(
            "JPEG frame is {w}x{h}, {comps} component(s) of {precision} bits, but the attributes say \
             {cols}x{rows}, {samples} sample(s), {bits_allocated} bits allocated"
        ));
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
