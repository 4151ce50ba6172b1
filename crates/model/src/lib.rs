//! # delineate-model
//!
//! The learning part of the paper: networks, losses and patch sampling,
//! generic over burn backends (`Flex` on CPU, `Cuda` on GPU). The only crate
//! that depends on burn.

pub mod losses;
pub mod sampling;
pub mod train;
pub mod unet;
