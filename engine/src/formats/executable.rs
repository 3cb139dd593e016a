//! What an executable (or unknown data) carries beyond its own code: one
//! signature pass ([`carve::signatures`]) decides which of the payload
//! readers run — NSIS installer files, compiled AutoIt scripts, UPX-packed
//! programs rebuilt — then every embedded container or executable is carved.

use super::carve::{self, Sig};
use super::{Container, autoit_script, nsis_installer, upx};
use crate::filetype::FileType;

pub(super) fn unpack(c: &mut Container<'_>, data: &[u8]) {
    let hits = carve::signatures(data);
    let has = |sig: Sig| hits.iter().any(|&(_, s)| s == sig);
    if c.ty == FileType::Pe {
        if has(Sig::Nsis) {
            nsis_installer::unpack(c, data);
        }
        if has(Sig::AutoIt) {
            autoit_script::unpack(c, data);
        }
    }
    if has(Sig::Upx) {
        upx::unpack(c, data);
    }
    carve::unpack(c, data, &hits);
}
