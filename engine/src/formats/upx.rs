//! UPX-packed executables: rebuilt and scanned as `upx-unpacked` (to come).

use super::Container;

pub(super) fn unpack(_c: &mut Container<'_>, _data: &[u8]) {}
