//! Rule compilation (coordinator side) and loading of shipped rules (worker
//! side).
//!
//! A rules path is a file or a directory walked recursively for `.yar` and
//! `.yara` files; each file gets its own namespace (its path relative to the
//! root, without extension) so rule names from different authors never
//! collide. The root may be a symbolic link; below it, links to files are
//! followed and links to directories are not, and names starting with `.`
//! are skipped: a Kubernetes ConfigMap volume (`..data -> ..2026_12_01_.../`
//! and a link per key) is read as the plain folder it stands for, each rule
//! once. A ruleset is all-or-nothing: if any file fails to compile, the
//! whole compilation fails with every error listed, and the caller keeps the
//! rules it had.

use crate::limits::Limits;
use crate::version::ENGINE_VERSION;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Globals every rule may use; set per object by the engine.
pub(crate) const GLOBAL_FILENAME: &str = "qala_filename";
pub(crate) const GLOBAL_DEPTH: &str = "qala_depth";
pub(crate) const GLOBAL_PARENT_TYPE: &str = "qala_parent_type";
pub(crate) const GLOBAL_FILE_TYPE: &str = "qala_file_type";
/// Comma-separated executable facts (`writable_executable_section:.text,...`).
pub(crate) const GLOBAL_EXE_FACTS: &str = "qala_exe_facts";
pub(crate) const GLOBAL_EXE_SIGNED: &str = "qala_exe_signed";
pub(crate) const GLOBAL_EXE_OVERLAY: &str = "qala_exe_overlay_size";

/// A compiled ruleset and its identity.
pub struct Ruleset {
    /// Stable id: a digest of every source file's path and content and of the
    /// engine version, so the same sources always give the same id.
    pub id: String,
    pub rules: yara_x::Rules,
    pub rule_count: usize,
    pub file_count: usize,
    /// Each source file compiled: its path relative to the rules path, and
    /// its size in bytes (empty for rules loaded from bytes).
    pub files: Vec<(String, u64)>,
    /// What the compiler warned of (slow patterns, always-true conditions,
    /// ...), file by file: the whole report, with its ` --> file:line:col`.
    pub warnings: Vec<RuleFileError>,
    /// The rules import `elf` but no rule source mentions its symbol tables
    /// (`symtab`, `dynsym`, `import_md5`, `telfhash`): the engine then hands
    /// yara-x the elf module's output without them, which saves converting
    /// thousands of symbols per ELF object. Shipped with the compiled rules.
    pub(crate) trim_elf_symbols: bool,
    /// The cluster's scan policy (limits and alert flags), set on the
    /// coordinator and shipped with the rules: part of the id, so every
    /// worker judges alike and a policy change is a new ruleset.
    pub limits: Limits,
}

/// What a serialized ruleset starts with: a version tag and the flags the
/// engine derives from the sources, which compiled rules no longer show.
const SHIPPED_MAGIC: &[u8; 8] = b"QALARS2\0";
/// Largest serialized policy accepted.
const MAX_POLICY_BYTES: usize = 64 * 1024;
const FLAG_TRIM_ELF_SYMBOLS: u8 = 1;

impl std::fmt::Debug for Ruleset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ruleset").field("id", &self.id).field("rule_count", &self.rule_count).finish()
    }
}

/// One rule file that did not compile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleFileError {
    pub path: PathBuf,
    pub message: String,
}

#[derive(Debug, Error)]
pub enum RulesError {
    #[error("cannot read rules at {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("no .yar or .yara files under {0}")]
    NoRuleFiles(PathBuf),
    #[error("{} rule file(s) failed to compile: {}", .0.len(), summarize(.0))]
    Compile(Vec<RuleFileError>),
    #[error("cannot serialize compiled rules: {0}")]
    Serialize(String),
    #[error("cannot load compiled rules: {0}")]
    Deserialize(String),
}

fn summarize(errors: &[RuleFileError]) -> String {
    errors.iter().map(|e| format!("{}: {}", e.path.display(), first_line(&e.message))).collect::<Vec<_>>().join("; ")
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// Rule files under `root` (itself if it is a file), sorted so the id and
/// namespaces do not depend on directory order. See the module
/// documentation for links and dot names.
fn rule_files(root: &Path) -> Result<Vec<PathBuf>, RulesError> {
    let io = |path: &Path, source| RulesError::Io { path: path.to_path_buf(), source };
    let meta = std::fs::metadata(root).map_err(|e| io(root, e))?;
    if meta.is_file() {
        return Ok(vec![root.to_path_buf()]);
    }
    let mut out = Vec::new();
    let walk = walkdir::WalkDir::new(root).follow_root_links(true).follow_links(false).sort_by_file_name();
    let hidden = |e: &walkdir::DirEntry| e.depth() > 0 && e.file_name().to_string_lossy().starts_with('.');
    for entry in walk.into_iter().filter_entry(|e| !hidden(e)) {
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(root).to_path_buf();
            RulesError::Io { path, source: e.into_io_error().unwrap_or_else(|| std::io::Error::other("walk error")) }
        })?;
        let path = entry.path();
        if !matches!(path.extension().and_then(|e| e.to_str()), Some("yar" | "yara")) {
            continue;
        }
        // A link is followed to a file, never to a directory (not walked).
        let is_file = if entry.path_is_symlink() {
            std::fs::metadata(path).is_ok_and(|m| m.is_file())
        } else {
            entry.file_type().is_file()
        };
        if is_file {
            out.push(path.to_path_buf());
        }
    }
    out.sort();
    if out.is_empty() {
        return Err(RulesError::NoRuleFiles(root.to_path_buf()));
    }
    Ok(out)
}

/// Cheap fingerprint of the rule files (paths, sizes, mtimes) used to notice
/// changes without reading every file.
pub fn rules_fingerprint(root: &Path) -> Result<String, RulesError> {
    let mut h = Sha256::new();
    for path in rule_files(root)? {
        let meta = std::fs::metadata(&path).map_err(|source| RulesError::Io { path: path.clone(), source })?;
        h.update(path.to_string_lossy().as_bytes());
        // Where a link points: swapping a ConfigMap's `..data` changes it.
        if let Ok(real) = std::fs::canonicalize(&path) {
            h.update(real.to_string_lossy().as_bytes());
        }
        h.update(meta.len().to_le_bytes());
        if let Ok(m) = meta.modified() {
            h.update(format!("{m:?}").as_bytes());
        }
    }
    Ok(hex::encode(h.finalize()))
}

/// Compile every rule file under `root` into one ruleset judged under the
/// scan policy `limits`.
pub fn compile_rules(root: &Path, limits: &Limits) -> Result<Ruleset, RulesError> {
    let files = rule_files(root)?;
    let base = if root.is_dir() { root } else { root.parent().unwrap_or(Path::new("")) };

    let mut compiler = yara_x::Compiler::new();
    // Rules from outside must not read arbitrary files through `include`.
    compiler.enable_includes(false);
    define_globals(&mut compiler);

    let mut id = Sha256::new();
    id.update(ENGINE_VERSION.as_bytes());
    let policy = serde_json::to_vec(limits).map_err(|e| RulesError::Serialize(e.to_string()))?;
    id.update((policy.len() as u64).to_le_bytes());
    id.update(&policy);
    let mut errors = Vec::new();
    let mut warnings: Vec<RuleFileError> = Vec::new();
    let mut mentions_elf_symbols = false;
    let mut listed = Vec::with_capacity(files.len());
    for path in &files {
        let rel = path.strip_prefix(base).unwrap_or(path);
        let source = std::fs::read(path).map_err(|source| RulesError::Io { path: path.clone(), source })?;
        listed.push((rel.to_string_lossy().replace('\\', "/"), source.len() as u64));
        id.update((rel.as_os_str().len() as u64).to_le_bytes());
        id.update(rel.to_string_lossy().as_bytes());
        id.update((source.len() as u64).to_le_bytes());
        id.update(&source);
        mentions_elf_symbols |= ["symtab", "dynsym", "import_md5", "telfhash"]
            .iter()
            .any(|word| source.windows(word.len()).any(|w| w == word.as_bytes()));

        let namespace = rel.with_extension("").to_string_lossy().replace('\\', "/");
        compiler.new_namespace(&namespace);
        let origin = path.to_string_lossy().to_string();
        if let Err(e) = compiler.add_source(yara_x::SourceCode::from(&source[..]).with_origin(origin)) {
            errors.push(RuleFileError { path: path.clone(), message: e.to_string() });
        }
        for w in &compiler.warnings()[warnings.len()..] {
            warnings.push(RuleFileError { path: path.clone(), message: w.to_string() });
        }
    }
    if !errors.is_empty() {
        return Err(RulesError::Compile(errors));
    }
    let rules = compiler.build();
    let rule_count = rules.iter().len();
    let trim_elf_symbols = imports_elf(&rules) && !mentions_elf_symbols;
    Ok(Ruleset {
        id: hex::encode(&id.finalize()[..16]),
        rules,
        rule_count,
        file_count: files.len(),
        files: listed,
        warnings,
        trim_elf_symbols,
        limits: limits.clone(),
    })
}

fn imports_elf(rules: &yara_x::Rules) -> bool {
    rules.imports().any(|m| m == "elf")
}

/// Globals with the types the engine sets them to at scan time.
fn define_globals(compiler: &mut yara_x::Compiler) {
    // These names are valid and unique, so definition cannot fail.
    let _ = compiler.define_global(GLOBAL_FILENAME, "");
    let _ = compiler.define_global(GLOBAL_DEPTH, 0i64);
    let _ = compiler.define_global(GLOBAL_PARENT_TYPE, "");
    let _ = compiler.define_global(GLOBAL_FILE_TYPE, "");
    let _ = compiler.define_global(GLOBAL_EXE_FACTS, "");
    let _ = compiler.define_global(GLOBAL_EXE_SIGNED, false);
    let _ = compiler.define_global(GLOBAL_EXE_OVERLAY, 0i64);
}

impl Ruleset {
    /// Serialized compiled rules, to ship to workers.
    pub fn to_bytes(&self) -> Result<Vec<u8>, RulesError> {
        let rules = self.rules.serialize().map_err(|e| RulesError::Serialize(e.to_string()))?;
        let flags = if self.trim_elf_symbols { FLAG_TRIM_ELF_SYMBOLS } else { 0 };
        let policy = serde_json::to_vec(&self.limits).map_err(|e| RulesError::Serialize(e.to_string()))?;
        Ok([&SHIPPED_MAGIC[..], &[flags], &(policy.len() as u32).to_le_bytes(), &policy, &rules].concat())
    }

    /// Load rules serialized by [`Ruleset::to_bytes`] on a node running the
    /// same engine build. Only load bytes from your own coordinator: compiled
    /// rules are code.
    pub fn from_bytes(id: String, bytes: &[u8]) -> Result<Ruleset, RulesError> {
        let (flags, rest) = match bytes.strip_prefix(&SHIPPED_MAGIC[..]) {
            Some([flags, rest @ ..]) => (*flags, rest),
            _ => return Err(RulesError::Deserialize("not a ruleset serialized by this engine".into())),
        };
        let bad = |why: &str| RulesError::Deserialize(format!("scan policy: {why}"));
        let len = rest.get(..4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize).ok_or_else(|| bad("missing"))?;
        if len > MAX_POLICY_BYTES {
            return Err(bad("too large"));
        }
        let policy = rest.get(4..4 + len).ok_or_else(|| bad("truncated"))?;
        let limits: Limits = serde_json::from_slice(policy).map_err(|e| bad(&e.to_string()))?;
        let compiled = &rest[4 + len..];
        let rules = yara_x::Rules::deserialize(compiled).map_err(|e| RulesError::Deserialize(e.to_string()))?;
        let rule_count = rules.iter().len();
        let trim_elf_symbols = flags & FLAG_TRIM_ELF_SYMBOLS != 0 && imports_elf(&rules);
        Ok(Ruleset { id, rules, rule_count, file_count: 0, files: Vec::new(), warnings: Vec::new(), trim_elf_symbols, limits })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, text: &str) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn warnings_are_kept_with_their_file_and_line() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "a.yar", "rule fine { condition: filesize > 10 }");
        write(
            d.path(),
            "b.yar",
            "rule other { condition: filesize > 10 }\n\nrule slow {\n  strings:\n    $a = \"x\"\n  condition:\n    $a\n}\n",
        );
        let r = compile_rules(d.path(), &Limits::default()).unwrap();
        assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
        let w = &r.warnings[0];
        assert!(w.path.ends_with("b.yar"), "{w:?}");
        assert!(w.message.contains("b.yar:5:"), "the line of the pattern: {}", w.message);
    }

    #[test]
    fn directory_compiles_with_namespaces_and_stable_id() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "a.yar", "rule same { condition: true }");
        write(d.path(), "sub/b.yara", "rule same { condition: qala_depth == 0 }");
        write(d.path(), "notes.txt", "not a rule");
        let r1 = compile_rules(d.path(), &Limits::default()).unwrap();
        assert_eq!((r1.rule_count, r1.file_count), (2, 2));
        let r2 = compile_rules(d.path(), &Limits::default()).unwrap();
        assert_eq!(r1.id, r2.id);

        write(d.path(), "a.yar", "rule same { condition: false }");
        assert_ne!(compile_rules(d.path(), &Limits::default()).unwrap().id, r1.id);

        let loaded = Ruleset::from_bytes(r1.id.clone(), &r1.to_bytes().unwrap()).unwrap();
        assert_eq!(loaded.rule_count, 2);
        assert!(Ruleset::from_bytes(r1.id.clone(), b"garbage").is_err());
    }

    #[test]
    fn the_scan_policy_is_part_of_the_id_and_ships_with_the_rules() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "a.yar", "rule a { condition: true }");
        let plain = compile_rules(d.path(), &Limits::default()).unwrap();
        let strict = Limits { max_depth: 3, alert_encrypted: true, ..Limits::default() };
        let policed = compile_rules(d.path(), &strict).unwrap();
        assert_ne!(plain.id, policed.id, "a policy change is a new ruleset");
        let shipped = Ruleset::from_bytes(policed.id.clone(), &policed.to_bytes().unwrap()).unwrap();
        assert_eq!((shipped.limits.max_depth, shipped.limits.alert_encrypted), (3, true));
        // A cut or oversized policy is refused, not guessed at.
        let bytes = policed.to_bytes().unwrap();
        assert!(Ruleset::from_bytes(String::new(), &bytes[..12]).is_err());
        let mut huge = bytes[..9].to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(Ruleset::from_bytes(String::new(), &huge).is_err());
    }

    #[test]
    fn elf_symbol_trimming_only_when_no_rule_can_see_the_symbols() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "a.yar", "import \"elf\"\nrule ep { condition: elf.entry_point == 0 }");
        let r = compile_rules(d.path(), &Limits::default()).unwrap();
        assert!(r.trim_elf_symbols);
        let shipped = Ruleset::from_bytes(r.id.clone(), &r.to_bytes().unwrap()).unwrap();
        assert!(shipped.trim_elf_symbols, "the flag travels with the compiled rules");

        write(d.path(), "b.yar", "import \"elf\"\nrule s { condition: for any s in elf.symtab: (s.name == \"x\") }");
        assert!(!compile_rules(d.path(), &Limits::default()).unwrap().trim_elf_symbols);

        let plain = tempfile::tempdir().unwrap();
        write(plain.path(), "a.yar", "rule t { condition: true }");
        assert!(!compile_rules(plain.path(), &Limits::default()).unwrap().trim_elf_symbols, "no elf import, nothing to trim");
    }

    #[test]
    fn broken_file_fails_whole_set_naming_the_file() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "good.yar", "rule ok { condition: true }");
        write(d.path(), "bad.yar", "rule broken { condition: nope_undefined }");
        match compile_rules(d.path(), &Limits::default()) {
            Err(RulesError::Compile(errs)) => {
                assert_eq!(errs.len(), 1);
                assert!(errs[0].path.ends_with("bad.yar"));
                assert!(errs[0].message.contains("nope_undefined"), "{}", errs[0].message);
            }
            other => panic!("expected compile error, got {other:?}"),
        }
    }

    #[test]
    fn empty_dir_and_missing_path_are_errors() {
        let d = tempfile::tempdir().unwrap();
        assert!(matches!(compile_rules(d.path(), &Limits::default()), Err(RulesError::NoRuleFiles(_))));
        assert!(matches!(compile_rules(&d.path().join("missing"), &Limits::default()), Err(RulesError::Io { .. })));
    }

    /// A Kubernetes ConfigMap volume: `..data` links to a timestamped
    /// directory holding the files, and each key is a link through
    /// `..data`. Read as the plain folder: each rule once, the same id.
    #[test]
    fn a_configmap_folder_compiles_as_the_plain_folder_it_stands_for() {
        use std::os::unix::fs::symlink;
        let plain = tempfile::tempdir().unwrap();
        write(plain.path(), "eicar.yar", "rule eicar { condition: true }");
        write(plain.path(), "extra.yara", "rule extra { condition: false }");
        let want = compile_rules(plain.path(), &Limits::default()).unwrap();

        let d = tempfile::tempdir().unwrap();
        let mounted = d.path().join("rules");
        write(&mounted, "..2026_12_01_10_00_00.123/eicar.yar", "rule eicar { condition: true }");
        write(&mounted, "..2026_12_01_10_00_00.123/extra.yara", "rule extra { condition: false }");
        symlink("..2026_12_01_10_00_00.123", mounted.join("..data")).unwrap();
        symlink("..data/eicar.yar", mounted.join("eicar.yar")).unwrap();
        symlink("..data/extra.yara", mounted.join("extra.yara")).unwrap();
        // A link to a directory beside them is not walked either.
        symlink("..2026_12_01_10_00_00.123", mounted.join("again")).unwrap();
        let got = compile_rules(&mounted, &Limits::default()).unwrap();
        assert_eq!((got.rule_count, got.file_count), (2, 2), "each rule once");
        assert_eq!(got.id, want.id, "the plain folder's ruleset id");
        assert_eq!(got.files, [("eicar.yar".to_string(), 30), ("extra.yara".to_string(), 31)]);

        // The rules path itself may be a link.
        let link = d.path().join("current");
        symlink(&mounted, &link).unwrap();
        assert_eq!(compile_rules(&link, &Limits::default()).unwrap().id, want.id);

        // An update swaps `..data` to a new directory: the fingerprint moves.
        let before = rules_fingerprint(&mounted).unwrap();
        write(&mounted, "..2026_12_02_10_00_00.456/eicar.yar", "rule eicar2 { condition: true }");
        write(&mounted, "..2026_12_02_10_00_00.456/extra.yara", "rule extra { condition: false }");
        symlink("..2026_12_02_10_00_00.456", mounted.join("..data_tmp")).unwrap();
        std::fs::rename(mounted.join("..data_tmp"), mounted.join("..data")).unwrap();
        assert_ne!(rules_fingerprint(&mounted).unwrap(), before);
        let updated = compile_rules(&mounted, &Limits::default()).unwrap();
        assert_eq!(updated.rule_count, 2);
        assert!(updated.rules.iter().any(|r| r.identifier() == "eicar2"));
    }
}
