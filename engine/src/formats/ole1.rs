//! Embedded objects of the OLE1 era that Office still writes: an
//! `\x01Ole10Native` stream (MS-OLEDS 2.3.6: a 32-bit size, then the
//! object's native data) and the Packager's `Package` native data, which
//! carries a whole file (its label, source path, temporary path and bytes):
//! the way a document smuggles an executable. Own parser, no crate parses
//! these; every length is checked against what is present.

/// A file carried by a Packager object.
#[derive(Debug, PartialEq)]
pub(crate) struct Packaged<'a> {
    /// The file name shown under the icon (the label).
    pub label: String,
    /// Where the file was packaged from.
    pub source_path: String,
    pub data: &'a [u8],
}

/// The native data of an `\x01Ole10Native` stream.
pub(crate) fn ole10native(stream: &[u8]) -> Option<&[u8]> {
    let size = u32::from_le_bytes(stream.get(..4)?.try_into().ok()?) as usize;
    let rest = &stream[4..];
    Some(&rest[..size.min(rest.len())])
}

/// The file inside Packager native data (`Package` class), if it is one.
pub(crate) fn package(native: &[u8]) -> Option<Packaged<'_>> {
    let mut r = Reader { data: native, at: 0 };
    if r.u16()? != 2 {
        return None;
    }
    let label = r.zstr()?;
    let source_path = r.zstr()?;
    let _reserved = r.u16()?;
    // 3 = an embedded file; 1 = a link to one (no bytes here).
    if r.u16()? != 3 {
        return None;
    }
    let temp_len = r.u32()? as usize;
    r.take(temp_len)?;
    let size = r.u32()? as usize;
    let rest = native.get(r.at..)?;
    Some(Packaged { label, source_path, data: &rest[..size.min(rest.len())] })
}

/// The last component of a packaged file's name, safe as an object name.
pub(crate) fn file_name(p: &Packaged<'_>) -> String {
    let pick = if p.label.is_empty() { &p.source_path } else { &p.label };
    let base = pick.rsplit(['\\', '/']).next().unwrap_or("");
    if base.is_empty() { "package.bin".to_string() } else { base.chars().filter(|c| !c.is_control()).collect() }
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.data.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A NUL-terminated ANSI string of at most 4 KiB.
    fn zstr(&mut self) -> Option<String> {
        let rest = self.data.get(self.at..)?;
        let len = rest.iter().take(4096).position(|&b| b == 0)?;
        let s = String::from_utf8_lossy(&rest[..len]).into_owned();
        self.at += len + 1;
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_round_trip_and_lies() {
        // label, source path, reserved, type 3, temp path (len 10), data (len 9)
        let native =
            b"\x02\0invoice.exe\0C:\\Users\\a\\invoice.exe\0\0\0\x03\0\x0a\0\0\0C:\\T\\i.ex\0\x09\0\0\0MZpayload".to_vec();
        let p = package(&native).unwrap();
        assert_eq!(p.data, b"MZpayload");
        assert_eq!(file_name(&p), "invoice.exe");
        let mut stream = (native.len() as u32).to_le_bytes().to_vec();
        stream.extend_from_slice(&native);
        assert_eq!(ole10native(&stream), Some(&native[..]));
        // A size larger than the data gives what is there; cut headers give nothing.
        let mut lying = native.clone();
        let n = lying.len();
        lying[n - 13..n - 9].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(package(&lying).unwrap().data, b"MZpayload");
        assert_eq!(package(&native[..10]), None);
        assert_eq!(package(b"\x01\x00junk"), None);
    }
}
