//! [`AnyVolume`]: a volume in whichever voxel type a file stored, and the
//! [`DataType`] names used on the command line and in NIfTI headers.

use nifti::NiftiType;
use serde::Serialize;

use crate::{Error, Geometry, Volume};

/// Voxel data types we read and write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    Uint8,
    Int8,
    Uint16,
    Int16,
    Uint32,
    Int32,
    Uint64,
    Int64,
    Float32,
    Float64,
}

impl DataType {
    pub(crate) fn from_nifti(t: NiftiType) -> Option<Self> {
        Some(match t {
            NiftiType::Uint8 => Self::Uint8,
            NiftiType::Int8 => Self::Int8,
            NiftiType::Uint16 => Self::Uint16,
            NiftiType::Int16 => Self::Int16,
            NiftiType::Uint32 => Self::Uint32,
            NiftiType::Int32 => Self::Int32,
            NiftiType::Uint64 => Self::Uint64,
            NiftiType::Int64 => Self::Int64,
            NiftiType::Float32 => Self::Float32,
            NiftiType::Float64 => Self::Float64,
            _ => return None,
        })
    }

    /// Bytes per voxel.
    pub fn size_of(self) -> usize {
        match self {
            Self::Uint8 | Self::Int8 => 1,
            Self::Uint16 | Self::Int16 => 2,
            Self::Uint32 | Self::Int32 | Self::Float32 => 4,
            Self::Uint64 | Self::Int64 | Self::Float64 => 8,
        }
    }

    /// Parses `uint8`, `int16`, `float32`, ...
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "uint8" | "u8" => Self::Uint8,
            "int8" | "i8" => Self::Int8,
            "uint16" | "u16" => Self::Uint16,
            "int16" | "i16" => Self::Int16,
            "uint32" | "u32" => Self::Uint32,
            "int32" | "i32" => Self::Int32,
            "uint64" | "u64" => Self::Uint64,
            "int64" | "i64" => Self::Int64,
            "float32" | "f32" => Self::Float32,
            "float64" | "f64" => Self::Float64,
            _ => return None,
        })
    }
}

/// A volume in whatever type the file stored.
#[derive(Clone, Debug)]
pub enum AnyVolume {
    Uint8(Volume<u8>),
    Int8(Volume<i8>),
    Uint16(Volume<u16>),
    Int16(Volume<i16>),
    Uint32(Volume<u32>),
    Int32(Volume<i32>),
    Uint64(Volume<u64>),
    Int64(Volume<i64>),
    Float32(Volume<f32>),
    Float64(Volume<f64>),
}

/// Runs `$body` with `$v` bound to the typed volume inside an [`AnyVolume`].
#[macro_export]
macro_rules! with_any_volume {
    ($any:expr, $v:ident => $body:expr) => {
        match $any {
            $crate::AnyVolume::Uint8($v) => $body,
            $crate::AnyVolume::Int8($v) => $body,
            $crate::AnyVolume::Uint16($v) => $body,
            $crate::AnyVolume::Int16($v) => $body,
            $crate::AnyVolume::Uint32($v) => $body,
            $crate::AnyVolume::Int32($v) => $body,
            $crate::AnyVolume::Uint64($v) => $body,
            $crate::AnyVolume::Int64($v) => $body,
            $crate::AnyVolume::Float32($v) => $body,
            $crate::AnyVolume::Float64($v) => $body,
        }
    };
}

impl AnyVolume {
    /// The grid.
    pub fn geometry(&self) -> &Geometry {
        with_any_volume!(self, v => v.geometry())
    }

    /// The stored type.
    pub fn datatype(&self) -> DataType {
        match self {
            Self::Uint8(_) => DataType::Uint8,
            Self::Int8(_) => DataType::Int8,
            Self::Uint16(_) => DataType::Uint16,
            Self::Int16(_) => DataType::Int16,
            Self::Uint32(_) => DataType::Uint32,
            Self::Int32(_) => DataType::Int32,
            Self::Uint64(_) => DataType::Uint64,
            Self::Int64(_) => DataType::Int64,
            Self::Float32(_) => DataType::Float32,
            Self::Float64(_) => DataType::Float64,
        }
    }

    /// Values as float32 (exact for up to 24-bit integers).
    #[allow(clippy::unnecessary_cast)] // one arm of the macro is f32 -> f32
    pub fn to_f32(&self) -> Volume<f32> {
        with_any_volume!(self, v => v.map(|x| *x as f32))
    }

    /// Exact reorientation (see [`Volume::reorient`]), keeping the type.
    pub fn reorient(&self, code: &str) -> Result<AnyVolume, Error> {
        Ok(match self {
            Self::Uint8(v) => Self::Uint8(v.reorient(code)?),
            Self::Int8(v) => Self::Int8(v.reorient(code)?),
            Self::Uint16(v) => Self::Uint16(v.reorient(code)?),
            Self::Int16(v) => Self::Int16(v.reorient(code)?),
            Self::Uint32(v) => Self::Uint32(v.reorient(code)?),
            Self::Int32(v) => Self::Int32(v.reorient(code)?),
            Self::Uint64(v) => Self::Uint64(v.reorient(code)?),
            Self::Int64(v) => Self::Int64(v.reorient(code)?),
            Self::Float32(v) => Self::Float32(v.reorient(code)?),
            Self::Float64(v) => Self::Float64(v.reorient(code)?),
        })
    }

    /// Values as a label map (non-negative integers up to u32::MAX); the
    /// first value that is not a label is returned as the error.
    pub fn to_labels(&self) -> Result<Volume<u32>, f64> {
        macro_rules! ints {
            ($v:expr) => {{
                if let Some(bad) = $v
                    .as_slice()
                    .iter()
                    .find(|&&x| x < 0 as _ || (x as f64) > u32::MAX as f64)
                {
                    return Err(*bad as f64);
                }
                Ok($v.map(|&x| x as u32))
            }};
        }
        macro_rules! floats {
            ($v:expr) => {{
                if let Some(bad) = $v
                    .as_slice()
                    .iter()
                    .find(|&&x| !(x >= 0.0 && x.fract() == 0.0 && (x as f64) <= u32::MAX as f64))
                {
                    return Err(*bad as f64);
                }
                Ok($v.map(|&x| x as u32))
            }};
        }
        match self {
            Self::Uint8(v) => Ok(v.map(|&x| u32::from(x))),
            Self::Uint16(v) => Ok(v.map(|&x| u32::from(x))),
            Self::Uint32(v) => Ok(v.clone()),
            Self::Int8(v) => ints!(v),
            Self::Int16(v) => ints!(v),
            Self::Int32(v) => ints!(v),
            Self::Uint64(v) => ints!(v),
            Self::Int64(v) => ints!(v),
            Self::Float32(v) => floats!(v),
            Self::Float64(v) => floats!(v),
        }
    }

    /// Values as float32, without a copy when they already are.
    pub fn into_f32(self) -> Volume<f32> {
        match self {
            Self::Float32(v) => v,
            other => other.to_f32(),
        }
    }

    /// Converts float32 voxels to `datatype` (float32 is returned as is).
    /// Integer targets require every value to be an integer within the
    /// type's range (no silent rounding or clipping).
    pub fn from_f32(vol: Volume<f32>, datatype: DataType) -> Result<AnyVolume, Error> {
        macro_rules! int {
            ($t:ty, $variant:ident) => {{
                let (lo, hi) = (<$t>::MIN as f64, <$t>::MAX as f64);
                if let Some(bad) = vol.as_slice().iter().find(|&&x| {
                    let x = x as f64;
                    !(x >= lo && x <= hi && x.fract() == 0.0)
                }) {
                    return Err(Error::Geometry(format!(
                        "value {bad} cannot be stored as {:?} without loss; use float32",
                        datatype
                    )));
                }
                AnyVolume::$variant(vol.map(|&x| x as $t))
            }};
        }
        Ok(match datatype {
            DataType::Uint8 => int!(u8, Uint8),
            DataType::Int8 => int!(i8, Int8),
            DataType::Uint16 => int!(u16, Uint16),
            DataType::Int16 => int!(i16, Int16),
            DataType::Uint32 => int!(u32, Uint32),
            DataType::Int32 => int!(i32, Int32),
            DataType::Uint64 => int!(u64, Uint64),
            DataType::Int64 => int!(i64, Int64),
            DataType::Float32 => AnyVolume::Float32(vol),
            DataType::Float64 => AnyVolume::Float64(vol.map(|&x| x as f64)),
        })
    }

    /// The smallest of int16, uint16 and float32 that holds `vol` exactly.
    pub fn smallest_exact(vol: Volume<f32>) -> AnyVolume {
        let integral = vol.as_slice().iter().all(|x| x.fract() == 0.0);
        let (lo, hi) = vol
            .as_slice()
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &x| {
                (a.min(x), b.max(x))
            });
        if integral && lo >= i16::MIN as f32 && hi <= i16::MAX as f32 {
            AnyVolume::Int16(vol.map(|&x| x as i16))
        } else if integral && lo >= 0.0 && hi <= u16::MAX as f32 {
            AnyVolume::Uint16(vol.map(|&x| x as u16))
        } else {
            AnyVolume::Float32(vol)
        }
    }
}
