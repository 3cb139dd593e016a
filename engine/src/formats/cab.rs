//! Microsoft cabinets, with the `cab` crate. Folders compress many files
//! together, so a member's footprint for the ratio cap is the whole cabinet.

use super::Container;
use super::Flow;
use super::bytes::read_capped;
use crate::filetype::FileType;

register!(CAB: "cab", rank 120, unpacks [Cab]);

fn sniff(data: &[u8]) -> Option<FileType> {
    data.starts_with(b"MSCF").then_some(FileType::Cab)
}

pub(super) fn unpack(c: &mut Container<'_>, data: &[u8]) {
    let mut cab = match cab::Cabinet::new(std::io::Cursor::new(data)) {
        Ok(cab) => cab,
        Err(e) => return c.error(format!("cab: {e}")),
    };
    let names: Vec<(String, u64)> = cab
        .folder_entries()
        .flat_map(|f| f.file_entries().map(|e| (e.name().to_string(), e.uncompressed_size() as u64)).collect::<Vec<_>>())
        .collect();
    for (name, size) in names {
        let deadline = c.deadline();
        let flow = c.member(&name.replace('\\', "/"), data.len() as u64, |cap| {
            cab.read_file(&name).map(|r| read_capped(r, cap, size, &deadline)).map_err(|e| format!("cab: {e}"))
        });
        if flow == Flow::Stop {
            return;
        }
    }
}
