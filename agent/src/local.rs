//! What the agent adds to a verdict from what only it knows: the file's
//! own name. The cluster's verdicts depend on content only (object paths
//! are relative to the submission, `""` for the file itself); here the
//! agent puts its file name in front of them, and checks the name itself
//! (a document extension before an executable one, `invoice.pdf.exe`),
//! which raises what it reports to at least `suspicious` with a detection
//! in the namespace `agent`. Nothing of this is sent or cached.

use qala_proto::v1::{self as pb, VerdictKind};
use std::path::Path;

const DOCUMENT: &[&str] = &["pdf", "doc", "docx", "xls", "xlsx", "ppt", "pptx", "rtf", "txt", "jpg", "jpeg", "png", "gif", "zip"];
const EXECUTABLE: &[&str] = &["exe", "scr", "com", "pif", "bat", "cmd", "js", "jse", "vbs", "vbe", "wsf", "hta", "lnk"];

/// Whether `name` hides an executable behind a document extension.
pub fn double_extension(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let parts: Vec<&str> = lower.split('.').collect();
    parts.len() >= 3
        && !parts[0].is_empty()
        && EXECUTABLE.contains(&parts[parts.len() - 1])
        && DOCUMENT.contains(&parts[parts.len() - 2])
}

fn prefixed(base: &str, object: &str) -> String {
    if object.is_empty() { base.to_string() } else { format!("{base}/{object}") }
}

/// The verdict as this endpoint reports it for the file at `path`.
pub fn localize(mut v: pb::Verdict, path: &Path) -> pb::Verdict {
    let base = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    for d in &mut v.detections {
        d.object = prefixed(&base, &d.object);
    }
    for l in &mut v.limits_hit {
        l.object = prefixed(&base, &l.object);
    }
    for e in &mut v.executables {
        e.object = prefixed(&base, &e.object);
    }
    for m in &mut v.object_meta {
        m.object = prefixed(&base, &m.object);
    }
    for e in &mut v.encrypted {
        *e = prefixed(&base, e);
    }
    for o in &mut v.objects {
        o.object = prefixed(&base, &o.object);
    }
    if let Some(i) = &mut v.ioc {
        i.object = prefixed(&base, &i.object);
    }
    if double_extension(&base) {
        v.detections.push(pb::Detection {
            rule: "Qala_Double_Extension_Executable".into(),
            namespace: "agent".into(),
            tags: vec!["suspicious".into()],
            meta: [(
                "description".to_string(),
                "a document extension followed by an executable one (checked by the agent on the local file name)".to_string(),
            )]
            .into(),
            object: base.clone(),
            severity: VerdictKind::Suspicious as i32,
            // Masquerading: Double File Extension.
            techniques: vec!["T1036.007".into()],
        });
        if matches!(VerdictKind::try_from(v.verdict), Ok(VerdictKind::Clean)) {
            v.verdict = VerdictKind::Suspicious as i32;
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths() {
        assert!(double_extension("invoice.pdf.exe") && double_extension("Scan.JPG.scr"));
        assert!(!double_extension("tool.exe") && !double_extension(".pdf.exe") && !double_extension("report.pdf"));
        let v = pb::Verdict {
            verdict: VerdictKind::Clean as i32,
            detections: vec![pb::Detection { object: "inner.zip/a.com".into(), ..Default::default() }],
            ..Default::default()
        };
        let local = localize(v.clone(), Path::new("/home/u/invoice.pdf.exe"));
        assert_eq!(local.detections[0].object, "invoice.pdf.exe/inner.zip/a.com");
        assert_eq!((local.verdict, local.detections[1].namespace.as_str()), (VerdictKind::Suspicious as i32, "agent"));
        let plain = localize(v, Path::new("x/tool.exe"));
        assert_eq!((plain.verdict, plain.detections.len()), (VerdictKind::Clean as i32, 1));
    }
}
