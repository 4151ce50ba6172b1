//! A structural pre-check of a DICOM Part 10 byte stream: no data element
//! (top level, inside sequence items, or in the file meta group) may declare
//! a value longer than the bytes that remain around it.
//!
//! Written here because dicom-parser 0.10.1 reserves *and zero-fills* a
//! buffer of the declared length before reading the value: a 3 kB file
//! whose OB element claims 3.7 GB made it touch 3.7 GB of memory and spend
//! seconds doing so (found by our `dicom_read` fuzz target). Walking the
//! element headers is cheap (no values are decoded) and turns such files
//! into a clear error instead.
//!
//! The walk follows dicom-parser's reading, not only the standard, since a
//! disagreement would let a later element escape the check: items of an
//! undefined-length SQ or UN are read in the data set's encoding, unknown
//! VR bytes count as UN, and in implicit VR the dictionary gives the VR. A
//! numeric value whose length is not a multiple of its element size (which
//! dicom-parser would read short, losing its place) is refused.

use std::io::Read;

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;

/// Deepest sequence nesting we follow (real files rarely exceed 5).
const MAX_DEPTH: usize = 64;
/// Largest inflated size of a deflated data set we inspect.
const MAX_INFLATED_BYTES: u64 = 1 << 30;
const UNDEFINED: u32 = 0xFFFF_FFFF;
const ITEM: (u16, u16) = (0xFFFE, 0xE000);
const ITEM_END: (u16, u16) = (0xFFFE, 0xE00D);
const SEQUENCE_END: (u16, u16) = (0xFFFE, 0xE0DD);
const PIXEL_DATA: (u16, u16) = (0x7FE0, 0x0010);

#[derive(Clone, Copy)]
struct Enc {
    explicit: bool,
    big_endian: bool,
}

/// An element header: tag, VR (explicit, or `None`), length, value offset.
type Header = ((u16, u16), Option<[u8; 2]>, u32, usize);

struct Walker<'a> {
    buf: &'a [u8],
    enc: Enc,
}

impl Walker<'_> {
    fn u16(&self, p: usize) -> u16 {
        let b = [self.buf[p], self.buf[p + 1]];
        if self.enc.big_endian {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        }
    }

    fn u32(&self, p: usize) -> u32 {
        let b = [
            self.buf[p],
            self.buf[p + 1],
            self.buf[p + 2],
            self.buf[p + 3],
        ];
        if self.enc.big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    }

    /// Reads an element header at `p` (within `end`): tag, VR (if explicit),
    /// length and the offset of the value.
    fn header(&self, p: usize, end: usize) -> Result<Header, String> {
        if p + 8 > end {
            return Err(format!("truncated element header at byte {p}"));
        }
        let tag = (self.u16(p), self.u16(p + 2));
        // Items and delimiters never carry a VR.
        if tag.0 == 0xFFFE || !self.enc.explicit {
            return Ok((tag, None, self.u32(p + 4), p + 8));
        }
        // Exactly dicom-encoding's rule: VR bytes it does not know are UN,
        // and only these VRs have the short (2-byte) length form.
        let vr = VR::from_binary([self.buf[p + 4], self.buf[p + 5]]).unwrap_or(VR::UN);
        let short = matches!(
            vr,
            VR::AE
                | VR::AS
                | VR::AT
                | VR::CS
                | VR::DA
                | VR::DS
                | VR::DT
                | VR::FL
                | VR::FD
                | VR::IS
                | VR::LO
                | VR::LT
                | VR::PN
                | VR::SH
                | VR::SL
                | VR::SS
                | VR::ST
                | VR::TM
                | VR::UI
                | VR::UL
                | VR::US
        );
        let name = vr.to_string().as_bytes();
        let vr_bytes = [name[0], name[1]];
        if short {
            Ok((tag, Some(vr_bytes), u32::from(self.u16(p + 6)), p + 8))
        } else {
            if p + 12 > end {
                return Err(format!("truncated element header at byte {p}"));
            }
            Ok((tag, Some(vr_bytes), self.u32(p + 8), p + 12))
        }
    }

    /// Walks elements in `[p, end)`; returns where it stopped (at `end`, or
    /// just after an item delimiter when `in_item`).
    fn elements(
        &self,
        mut p: usize,
        end: usize,
        depth: usize,
        in_item: bool,
    ) -> Result<usize, String> {
        if depth > MAX_DEPTH {
            return Err("sequences nested too deeply".into());
        }
        while p < end {
            let (tag, vr, len, value) = self.header(p, end)?;
            if tag == ITEM_END && in_item {
                return Ok(value);
            }
            p = if len == UNDEFINED {
                // Like dicom-parser: only Pixel Data of undefined length holds
                // encapsulated fragments; any other undefined-length element
                // is read as a sequence of items, in the data set's encoding.
                if tag == PIXEL_DATA {
                    self.fragments(value, end, tag)?
                } else {
                    self.items(value, end, depth, true)?
                }
            } else {
                let len = len as usize;
                let size = element_size(&vr.unwrap_or_else(|| implicit_vr(tag)));
                if len % size != 0 {
                    return Err(format!(
                        "element ({:04X},{:04X}) has length {len}, not a multiple of its {size}-byte values",
                        tag.0, tag.1
                    ));
                }
                if len > end - value {
                    return Err(format!(
                        "element ({:04X},{:04X}) declares {len} bytes but only {} remain (truncated or corrupt file)",
                        tag.0,
                        tag.1,
                        end - value
                    ));
                }
                // Explicit SQ, or an implicit value that dicom-parser will
                // read as a sequence (its dictionary says SQ, or it starts
                // with an item): check the items too.
                let starts_with_item = len >= 8 && (self.u16(value), self.u16(value + 2)) == ITEM;
                let sequence = match vr {
                    Some(v) => &v == b"SQ",
                    None => tag != PIXEL_DATA && (starts_with_item || &implicit_vr(tag) == b"SQ"),
                };
                if sequence {
                    self.items(value, value + len, depth, false)?;
                }
                value + len
            };
        }
        Ok(p)
    }

    /// Items of a sequence in `[p, end)`; with `undefined`, up to the
    /// sequence delimiter.
    fn items(
        &self,
        mut p: usize,
        end: usize,
        depth: usize,
        undefined: bool,
    ) -> Result<usize, String> {
        while p < end {
            let (tag, _, len, value) = self.header(p, end)?;
            match tag {
                SEQUENCE_END => return Ok(value),
                ITEM if len == UNDEFINED => p = self.elements(value, end, depth + 1, true)?,
                ITEM => {
                    let len = len as usize;
                    if len > end - value {
                        return Err(format!(
                            "sequence item declares {len} bytes but only {} remain",
                            end - value
                        ));
                    }
                    self.elements(value, value + len, depth + 1, false)?;
                    p = value + len;
                }
                (g, e) => {
                    return Err(format!(
                        "expected a sequence item, found ({g:04X},{e:04X}) at byte {p}"
                    ))
                }
            }
        }
        if undefined {
            return Err("sequence of undefined length is not terminated".into());
        }
        Ok(p)
    }

    /// Encapsulated fragments up to the sequence delimiter.
    fn fragments(&self, mut p: usize, end: usize, owner: (u16, u16)) -> Result<usize, String> {
        while p < end {
            let (tag, _, len, value) = self.header(p, end)?;
            if tag == SEQUENCE_END {
                return Ok(value);
            }
            if tag != ITEM || len == UNDEFINED || len as usize > end - value {
                return Err(format!(
                    "bad fragment in ({:04X},{:04X}) at byte {p}",
                    owner.0, owner.1
                ));
            }
            p = value + len as usize;
        }
        Err(format!(
            "encapsulated ({:04X},{:04X}) is not terminated",
            owner.0, owner.1
        ))
    }
}

/// Bytes per element of a numeric VR (dicom-parser reads `len / size` of
/// them), 1 for everything else.
fn element_size(vr: &[u8; 2]) -> usize {
    match vr {
        b"US" | b"SS" | b"OW" => 2,
        b"UL" | b"SL" | b"FL" | b"OF" | b"OL" | b"AT" => 4,
        b"FD" | b"OD" | b"SV" | b"UV" | b"OV" => 8,
        _ => 1,
    }
}

/// The VR dicom-parser uses for an implicit VR element (dictionary; UN
/// when unknown).
fn implicit_vr(tag: (u16, u16)) -> [u8; 2] {
    let vr = match StandardDataDictionary
        .by_tag(Tag(tag.0, tag.1))
        .map(|e| e.vr())
    {
        Some(VirtualVr::Exact(vr)) => vr,
        Some(VirtualVr::Xs) => VR::US,
        // Pixel data of unknown depth: dicom-parser reads words (OW).
        Some(VirtualVr::Px | VirtualVr::Ox) => VR::OW,
        _ => VR::UN,
    };
    let s = vr.to_string().as_bytes();
    [s[0], s[1]]
}

/// Checks a whole Part 10 stream (preamble included).
pub fn check(bytes: &[u8]) -> Result<(), String> {
    let start = crate::header::PREAMBLE_BYTES + 4;
    if bytes.len() < start {
        return Err("shorter than the preamble".into());
    }
    // File meta group: explicit VR little endian. Like dicom-object, trust
    // (0002,0000) File Meta Information Group Length when it comes first:
    // whole elements are read until that many bytes are consumed, whatever
    // their group; otherwise read while the group is 0002.
    let meta = Walker {
        buf: bytes,
        enc: Enc {
            explicit: true,
            big_endian: false,
        },
    };
    let mut p = start;
    let mut ts = String::new();
    let mut group_end = None;
    if p + 12 <= bytes.len()
        && (meta.u16(p), meta.u16(p + 2)) == (0x0002, 0x0000)
        && &bytes[p + 4..p + 6] == b"UL"
    {
        group_end = Some(p + 12 + meta.u32(p + 8) as usize);
        p += 12;
    }
    while p + 8 <= bytes.len() && group_end.map_or(meta.u16(p) == 0x0002, |e| p < e) {
        let (tag, _, len, value) = meta.header(p, bytes.len())?;
        if len == UNDEFINED || len as usize > bytes.len() - value {
            return Err(format!(
                "file meta element ({:04X},{:04X}) declares {len} bytes beyond the end",
                tag.0, tag.1
            ));
        }
        if tag == (0x0002, 0x0010) {
            ts = String::from_utf8_lossy(&bytes[value..value + len as usize])
                .trim_end_matches(['\0', ' '])
                .to_string();
        }
        p = value + len as usize;
    }
    let enc = match ts.as_str() {
        "1.2.840.10008.1.2" => Enc {
            explicit: false,
            big_endian: false,
        },
        "1.2.840.10008.1.2.2" => Enc {
            explicit: true,
            big_endian: true,
        },
        _ => Enc {
            explicit: true,
            big_endian: false,
        },
    };
    if ts == "1.2.840.10008.1.2.1.99" {
        let mut inflated = Vec::new();
        flate2::read::DeflateDecoder::new(&bytes[p..])
            .take(MAX_INFLATED_BYTES)
            .read_to_end(&mut inflated)
            .map_err(|e| format!("deflated data set cannot be inflated: {e}"))?;
        let w = Walker {
            buf: &inflated,
            enc,
        };
        return w.elements(0, inflated.len(), 0, false).map(|_| ());
    }
    Walker { buf: bytes, enc }
        .elements(p, bytes.len(), 0, false)
        .map(|_| ())
}
