//! Kernel module resolution without depmod or modinfo: reads each module's `.modinfo`
//! ELF section (with the `object` crate's ELF reader), matches names and aliases, and orders
//! the dependency closure for loading.
//!
//! Debian's kernel package ships no modules.dep/modules.alias (depmod runs at install
//! time), so the metadata has to come from the modules themselves.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use object::elf::FileHeader64;
use object::read::StringTable;
use object::read::elf::{FileHeader, SectionHeader};
use object::{Endianness, ReadCache, ReadRef, SectionIndex};

/// One module file to put in the image, decompressed.
#[derive(Debug, Clone)]
pub struct Module {
    pub name: String,
    /// Relative to the modules directory, without the compression suffix,
    /// e.g. "kernel/net/netfilter/nf_tables.ko".
    pub rel_path: String,
    pub data: Vec<u8>,
    pub depends: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ModuleSet {
    pub kernel_release: String,
    /// Dependencies before dependents; deterministic for the same inputs.
    pub ordered: Vec<Module>,
    /// Requested entries (as given) that the kernel has built in.
    pub builtin: Vec<String>,
}

/// Resolves `wanted` (module names or aliases) in `modules_dir` (`<root>/lib/modules/<kver>`)
/// to the module files to load, in load order.
///
/// Lookup follows kmod: module name (`-` = `_`), built-in name, module aliases (glob patterns;
/// every matching module is taken), built-in aliases. The closure follows `depends=` and
/// `softdep=` `pre:` entries; soft dependencies that do not exist or are built in are skipped,
/// as modprobe does. Entries that resolve to nothing are one error listing all of them with
/// close matches; a cycle through `depends=` is an error.
pub fn resolve(modules_dir: &Path, wanted: &[String]) -> Result<ModuleSet> {
    let kernel_release = modules_dir
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{}: no kernel release in the path", modules_dir.display()))?
        .to_string();
    let mut r = Resolver {
        dir: modules_dir.to_path_buf(),
        files: scan(modules_dir)?,
        builtin: Builtin::read(modules_dir)?,
        infos: HashMap::new(),
        aliases: None,
    };

    let mut roots = Vec::new();
    let mut builtin = Vec::new();
    let mut missing = Vec::new();
    for w in wanted {
        match r.lookup(w)? {
            Target::Modules(names) => roots.extend(names),
            Target::Builtin => builtin.push(w.clone()),
            Target::Nothing => missing.push(w.clone()),
        }
    }
    if !missing.is_empty() {
        let lines: Vec<String> = missing.iter().map(|m| r.describe_missing(m)).collect();
        bail!(
            "kernel {kernel_release} has no module, alias or built-in for:\n  {}",
            lines.join("\n  ")
        );
    }

    let mut order = Vec::new();
    let mut state = HashMap::new();
    for root in &roots {
        r.visit(root, &mut state, &mut Vec::new(), &mut order)?;
    }
    let ordered = order
        .into_iter()
        .map(|name| {
            let info = r
                .infos
                .remove(&name)
                .context("internal: module info not loaded")?;
            Ok(Module {
                name,
                rel_path: info.rel_path,
                data: info.data,
                depends: info.depends,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(ModuleSet {
        kernel_release,
        ordered,
        builtin,
    })
}

/// The release of the one kernel whose modules an unpacked package tree holds:
/// the single directory under `<root>/lib/modules`.
pub fn kernel_release(root: &Path) -> Result<String> {
    let dir = root.join("lib/modules");
    let mut releases = Vec::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        if entry.file_type()?.is_dir() {
            releases.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    releases.sort();
    match releases.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!("{} holds no kernel", dir.display()),
        many => bail!(
            "{} holds several kernels: {}",
            dir.display(),
            many.join(", ")
        ),
    }
}

/// Module name normalisation: `-` and `_` are the same in module names.
pub fn normalize_name(name: &str) -> String {
    name.replace('-', "_")
}

/// Alias normalisation as kmod does it: `-` becomes `_` outside `[...]` brackets.
fn normalize_alias(alias: &str) -> String {
    let mut out = String::with_capacity(alias.len());
    let mut in_bracket = false;
    for c in alias.chars() {
        match c {
            '[' => in_bracket = true,
            ']' => in_bracket = false,
            '-' if !in_bracket => {
                out.push('_');
                continue;
            }
            _ => {}
        }
        out.push(c);
    }
    out
}

/// fnmatch-style matching of `text` against `pattern` with `*`, `?` and `[...]` (`!`/`^`
/// negation, ranges), the matching kmod applies to aliases. Written here: it is short, and a
/// glob crate would be a dependency for this one use.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    // Position after the last `*` and the text position it currently absorbs up to.
    let mut backtrack: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() {
            match p[pi] {
                '*' => {
                    backtrack = Some((pi + 1, ti));
                    pi += 1;
                    continue;
                }
                '?' => {
                    pi += 1;
                    ti += 1;
                    continue;
                }
                '[' => {
                    if let Some((matched, next)) = match_class(&p, pi, t[ti]) {
                        if matched {
                            pi = next;
                            ti += 1;
                            continue;
                        }
                    } else if t[ti] == '[' {
                        // Unterminated class: a literal '['.
                        pi += 1;
                        ti += 1;
                        continue;
                    }
                }
                c if c == t[ti] => {
                    pi += 1;
                    ti += 1;
                    continue;
                }
                _ => {}
            }
        }
        match backtrack {
            Some((bp, bt)) => {
                pi = bp;
                ti = bt + 1;
                backtrack = Some((bp, bt + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Matches `c` against the class starting at `p[start] == '['`; returns (matched, index after `]`),
/// or None when the class is not terminated.
fn match_class(p: &[char], start: usize, c: char) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = matches!(p.get(i), Some('!') | Some('^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while i < p.len() {
        if p[i] == ']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
            if p[i] <= c && c <= p[i + 2] {
                matched = true;
            }
            i += 3;
        } else {
            if p[i] == c {
                matched = true;
            }
            i += 1;
        }
    }
    None
}

/// The fields of `.modinfo` the resolver uses.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ModInfo {
    pub aliases: Vec<String>,
    pub depends: Vec<String>,
    pub softdep_pre: Vec<String>,
    /// `vermagic=`: the kernel release and build options the module was built for.
    pub vermagic: Option<String>,
}

/// Parses a `.modinfo` section: NUL-separated `key=value` strings.
pub fn parse_modinfo(section: &[u8]) -> ModInfo {
    let mut info = ModInfo::default();
    for entry in section.split(|&b| b == 0) {
        let Ok(entry) = std::str::from_utf8(entry) else {
            continue;
        };
        let Some((key, value)) = entry.split_once('=') else {
            continue;
        };
        match key {
            "alias" => info.aliases.push(value.to_string()),
            "depends" => info.depends.extend(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|d| !d.is_empty())
                    .map(normalize_name),
            ),
            "softdep" => info.softdep_pre.extend(parse_softdep_pre(value)),
            "vermagic" => info.vermagic = Some(value.to_string()),
            _ => {}
        }
    }
    info
}

/// The `.modinfo` of a module file's bytes (decompressed).
pub fn modinfo_of(elf: &[u8]) -> Result<ModInfo> {
    let section = elf_section(elf, ".modinfo")?.context("no .modinfo section")?;
    Ok(parse_modinfo(&section))
}

/// `softdep=pre: a b post: c` → [a, b].
fn parse_softdep_pre(value: &str) -> Vec<String> {
    let mut pre = Vec::new();
    let mut in_pre = false;
    for token in value.split_whitespace() {
        if let Some(kind) = token.strip_suffix(':') {
            in_pre = kind == "pre";
        } else if in_pre {
            pre.push(token.to_string());
        }
    }
    pre
}

/// Returns the bytes of the named section of an ELF64 file (either byte order). Given a file
/// behind a `ReadCache`, only the headers, the section name table and that section are read,
/// each in one piece.
fn elf_section<'data, R: ReadRef<'data>>(data: R, wanted: &str) -> Result<Option<Vec<u8>>> {
    let header = FileHeader64::<Endianness>::parse(data).context("not a 64-bit ELF file")?;
    let endian = header.endian().context("reading the ELF byte order")?;
    let sections = header
        .sections(endian, data)
        .context("reading ELF section headers")?;
    // The name table in one read: looking names up through the table `sections` keeps would
    // read each name from the file separately.
    let names_index = header
        .shstrndx(endian, data)
        .context("reading the ELF section name table index")?;
    let names = sections
        .section(SectionIndex(names_index as usize))
        .and_then(|s| s.data(endian, data))
        .context("reading ELF section names")?;
    let names = StringTable::new(names, 0, names.len() as u64);
    let Some(section) = sections
        .iter()
        .find(|s| s.name(endian, names) == Ok(wanted.as_bytes()))
    else {
        return Ok(None);
    };
    let bytes = section
        .data(endian, data)
        .with_context(|| format!("reading ELF section {wanted}"))?;
    Ok(Some(bytes.to_vec()))
}

/// A module file found in the modules directory.
#[derive(Debug, Clone)]
struct ModFile {
    path: PathBuf,
    /// Relative path without compression suffix.
    rel_path: String,
}

/// `x.ko[.xz|.zst|.gz]` → `x.ko`; None for other files.
fn module_file_name(file_name: &str) -> Option<&str> {
    let ko = file_name.rfind(".ko")?;
    matches!(&file_name[ko..], ".ko" | ".ko.xz" | ".ko.zst" | ".ko.gz")
        .then(|| &file_name[..ko + 3])
}

/// Indexes every module file by normalised name.
fn scan(modules_dir: &Path) -> Result<BTreeMap<String, ModFile>> {
    if !modules_dir.is_dir() {
        bail!("{} is not a directory", modules_dir.display());
    }
    let mut files: BTreeMap<String, ModFile> = BTreeMap::new();
    for entry in walkdir::WalkDir::new(modules_dir).sort_by_file_name() {
        let entry = entry.with_context(|| format!("walking {}", modules_dir.display()))?;
        if !entry.file_type().is_file() {
            continue;
        }
        let Some(file_name) = entry.file_name().to_str() else {
            continue;
        };
        let Some(ko_name) = module_file_name(file_name) else {
            continue;
        };
        let rel = entry
            .path()
            .strip_prefix(modules_dir)
            .context("internal: walked outside the modules directory")?;
        let rel_dir = rel.parent().and_then(|p| p.to_str()).unwrap_or("");
        let rel_path = if rel_dir.is_empty() {
            ko_name.to_string()
        } else {
            format!("{rel_dir}/{ko_name}")
        };
        let name = normalize_name(&ko_name[..ko_name.len() - 3]);
        let file = ModFile {
            path: entry.path().to_path_buf(),
            rel_path,
        };
        if let Some(prev) = files.get(&name) {
            // depmod's default search order puts updates/ first.
            let prev_updates = prev.rel_path.starts_with("updates/");
            let this_updates = file.rel_path.starts_with("updates/");
            if prev_updates == this_updates {
                bail!(
                    "module {name} exists twice: {} and {}",
                    prev.rel_path,
                    file.rel_path
                );
            }
            if prev_updates {
                continue;
            }
        }
        files.insert(name, file);
    }
    Ok(files)
}

/// Reads a module file and decompresses it.
fn read_module(path: &Path) -> Result<Vec<u8>> {
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let name = path.to_string_lossy();
    crate::deb::decompress(&name, bytes)
        .with_context(|| format!("decompressing {}", path.display()))
}

/// Reads only the `.modinfo` of a module: plain files by offset, compressed ones whole.
fn read_modinfo(path: &Path) -> Result<ModInfo> {
    let section = if path.extension().is_some_and(|e| e == "ko") {
        let file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        elf_section(&ReadCache::new(file), ".modinfo")
    } else {
        elf_section(read_module(path)?.as_slice(), ".modinfo")
    }
    .with_context(|| format!("{}", path.display()))?;
    Ok(parse_modinfo(&section.unwrap_or_default()))
}

/// What the kernel has built in: module names and their aliases.
#[derive(Debug, Default)]
struct Builtin {
    names: BTreeSet<String>,
    /// (normalised alias pattern, module name)
    aliases: Vec<(String, String)>,
}

impl Builtin {
    fn read(modules_dir: &Path) -> Result<Builtin> {
        let mut b = Builtin::default();
        let list = modules_dir.join("modules.builtin");
        match fs::read_to_string(&list) {
            Ok(text) => {
                for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
                    let file = line.rsplit('/').next().unwrap_or(line);
                    let stem = file.strip_suffix(".ko").unwrap_or(file);
                    b.names.insert(normalize_name(stem));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("reading {}", list.display())),
        }
        let modinfo = modules_dir.join("modules.builtin.modinfo");
        match fs::read(&modinfo) {
            Ok(bytes) => {
                for entry in bytes.split(|&b| b == 0) {
                    let Ok(entry) = std::str::from_utf8(entry) else {
                        continue;
                    };
                    let Some((module, rest)) = entry.split_once('.') else {
                        continue;
                    };
                    if let Some(alias) = rest.strip_prefix("alias=") {
                        b.aliases
                            .push((normalize_alias(alias), normalize_name(module)));
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("reading {}", modinfo.display())),
        }
        Ok(b)
    }
}

struct Info {
    rel_path: String,
    data: Vec<u8>,
    depends: Vec<String>,
    softdep_pre: Vec<String>,
}

enum Target {
    Modules(Vec<String>),
    Builtin,
    Nothing,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Visit {
    InProgress,
    Done,
}

struct Resolver {
    dir: PathBuf,
    files: BTreeMap<String, ModFile>,
    builtin: Builtin,
    infos: HashMap<String, Info>,
    /// (normalised alias pattern, module name) of every module file, read on first need.
    aliases: Option<Vec<(String, String)>>,
}

impl Resolver {
    /// kmod's order: module name, built-in name, module alias, built-in alias.
    fn lookup(&mut self, wanted: &str) -> Result<Target> {
        let name = normalize_name(wanted);
        if self.files.contains_key(&name) {
            return Ok(Target::Modules(vec![name]));
        }
        if self.builtin.names.contains(&name) {
            return Ok(Target::Builtin);
        }
        let alias = normalize_alias(wanted);
        let matches: BTreeSet<String> = self
            .module_aliases()?
            .iter()
            .filter(|(pattern, _)| glob_match(pattern, &alias))
            .map(|(_, module)| module.clone())
            .collect();
        if !matches.is_empty() {
            return Ok(Target::Modules(matches.into_iter().collect()));
        }
        if self
            .builtin
            .aliases
            .iter()
            .any(|(pattern, _)| glob_match(pattern, &alias))
        {
            return Ok(Target::Builtin);
        }
        Ok(Target::Nothing)
    }

    /// Reads every module's aliases. Plain modules cost only a few small reads each (the ~1000
    /// of Debian 12's cloud kernel take ~20 ms); compressed ones must be decompressed whole
    /// (1.5-2 s for the same set as .ko.xz), so that work is spread over the CPUs.
    fn module_aliases(&mut self) -> Result<&[(String, String)]> {
        if self.aliases.is_none() {
            let files: Vec<(&String, &ModFile)> = self.files.iter().collect();
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            let chunk = files.len().div_ceil(threads).max(1);
            let parts: Vec<Result<Vec<(String, String)>>> = std::thread::scope(|scope| {
                let handles: Vec<_> = files
                    .chunks(chunk)
                    .map(|part| {
                        scope.spawn(move || {
                            let mut out = Vec::new();
                            for (name, file) in part {
                                let info = read_modinfo(&file.path)?;
                                out.extend(
                                    info.aliases
                                        .iter()
                                        .map(|a| (normalize_alias(a), (*name).clone())),
                                );
                            }
                            Ok(out)
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            Err(anyhow::anyhow!("module index thread panicked"))
                        })
                    })
                    .collect()
            });
            let mut all = Vec::new();
            for part in parts {
                all.extend(part?);
            }
            self.aliases = Some(all);
        }
        Ok(self.aliases.as_deref().unwrap_or_default())
    }

    fn load(&mut self, name: &str) -> Result<()> {
        if self.infos.contains_key(name) {
            return Ok(());
        }
        let file = self
            .files
            .get(name)
            .with_context(|| format!("no module file for {name}"))?;
        let data = read_module(&file.path)?;
        let section = elf_section(data.as_slice(), ".modinfo")
            .with_context(|| format!("{}", file.path.display()))?
            .unwrap_or_default();
        let info = parse_modinfo(&section);
        self.infos.insert(
            name.to_string(),
            Info {
                rel_path: file.rel_path.clone(),
                data,
                depends: info.depends,
                softdep_pre: info.softdep_pre,
            },
        );
        Ok(())
    }

    /// Depth-first post-order: soft pre-dependencies, then hard dependencies, then the module.
    fn visit(
        &mut self,
        name: &str,
        state: &mut HashMap<String, Visit>,
        stack: &mut Vec<String>,
        order: &mut Vec<String>,
    ) -> Result<()> {
        match state.get(name) {
            Some(Visit::Done) => return Ok(()),
            Some(Visit::InProgress) => {
                let start = stack.iter().position(|s| s == name).unwrap_or(0);
                let mut cycle = stack[start..].to_vec();
                cycle.push(name.to_string());
                bail!("module dependency cycle: {}", cycle.join(" -> "));
            }
            None => {}
        }
        self.load(name).with_context(|| match stack.last() {
            Some(parent) => format!("{parent} depends on {name}"),
            None => format!("loading {name}"),
        })?;
        state.insert(name.to_string(), Visit::InProgress);
        stack.push(name.to_string());
        let (softdeps, depends) = match self.infos.get(name) {
            Some(info) => (info.softdep_pre.clone(), info.depends.clone()),
            None => bail!("internal: {name} not loaded"),
        };
        for soft in softdeps {
            // Like modprobe: a soft dependency that does not exist is skipped, and one that
            // leads back into the current chain is not a loading constraint.
            if let Target::Modules(names) = self.lookup(&soft)? {
                for n in names {
                    if state.get(&n) != Some(&Visit::InProgress) {
                        self.visit(&n, state, stack, order)?;
                    }
                }
            }
        }
        for dep in depends {
            if self.builtin.names.contains(&dep) && !self.files.contains_key(&dep) {
                continue;
            }
            self.visit(&dep, state, stack, order)?;
        }
        stack.pop();
        state.insert(name.to_string(), Visit::Done);
        order.push(name.to_string());
        Ok(())
    }

    /// "name (did you mean: a, b?)" with close module names and aliases.
    fn describe_missing(&self, wanted: &str) -> String {
        let w = normalize_name(wanted);
        let literal_aliases = self
            .aliases
            .iter()
            .flatten()
            .chain(&self.builtin.aliases)
            .map(|(a, _)| a)
            .filter(|a| !a.contains(['*', '?', '[']));
        let mut close: Vec<(usize, &String)> = self
            .files
            .keys()
            .chain(&self.builtin.names)
            .chain(literal_aliases)
            .filter_map(|c| {
                let d = edit_distance(&w, c);
                let near = d <= 2.max(w.len() / 4);
                let contains = w.len() >= 3
                    && (c.contains(w.as_str()) || (w.contains(c.as_str()) && c.len() >= 3));
                (near || contains).then_some((d, c))
            })
            .collect();
        close.sort();
        close.dedup_by(|a, b| a.1 == b.1);
        let names: Vec<&str> = close.iter().take(5).map(|(_, c)| c.as_str()).collect();
        if names.is_empty() {
            format!("{wanted} (in {})", self.dir.display())
        } else {
            format!("{wanted} (close matches: {})", names.join(", "))
        }
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::deb::tests::tempdir;

    /// A minimal ELF64 relocatable file with `.modinfo` built from `entries` (plus a `.text`
    /// section so `.modinfo` is not the first one).
    pub(crate) fn elf(entries: &[&str], little_endian: bool) -> Vec<u8> {
        let mut modinfo = Vec::new();
        for e in entries {
            modinfo.extend_from_slice(e.as_bytes());
            modinfo.push(0);
        }
        let shstrtab = b"\0.text\0.modinfo\0.shstrtab\0".to_vec();
        let text = vec![0xd5, 0x03, 0x20, 0x1f];
        let u16b = |v: u16| {
            if little_endian {
                v.to_le_bytes()
            } else {
                v.to_be_bytes()
            }
        };
        let u32b = |v: u32| {
            if little_endian {
                v.to_le_bytes()
            } else {
                v.to_be_bytes()
            }
        };
        let u64b = |v: u64| {
            if little_endian {
                v.to_le_bytes()
            } else {
                v.to_be_bytes()
            }
        };
        let mut out = vec![0u8; 64];
        // (name offset, type, offset, size); types: SHT_NULL, SHT_PROGBITS, SHT_STRTAB.
        let mut sections = vec![(0u32, 0u32, 0u64, 0u64)];
        for (name_off, kind, data) in [(1u32, 1u32, &text), (7, 1, &modinfo), (16, 3, &shstrtab)] {
            let off = out.len() as u64;
            out.extend_from_slice(data);
            sections.push((name_off, kind, off, data.len() as u64));
        }
        while !out.len().is_multiple_of(8) {
            out.push(0);
        }
        let shoff = out.len() as u64;
        for (name, kind, off, size) in &sections {
            let mut sh = vec![0u8; 64];
            sh[0..4].copy_from_slice(&u32b(*name));
            sh[4..8].copy_from_slice(&u32b(*kind));
            sh[24..32].copy_from_slice(&u64b(*off));
            sh[32..40].copy_from_slice(&u64b(*size));
            out.extend_from_slice(&sh);
        }
        out[..4].copy_from_slice(b"\x7fELF");
        out[4] = 2;
        out[5] = if little_endian { 1 } else { 2 };
        out[6] = 1;
        out[16..18].copy_from_slice(&u16b(1)); // ET_REL
        out[18..20].copy_from_slice(&u16b(183)); // EM_AARCH64
        out[0x28..0x30].copy_from_slice(&u64b(shoff));
        out[0x34..0x36].copy_from_slice(&u16b(64));
        out[0x3a..0x3c].copy_from_slice(&u16b(64));
        out[0x3c..0x3e].copy_from_slice(&u16b(sections.len() as u16));
        out[0x3e..0x40].copy_from_slice(&u16b(3));
        out
    }

    /// Writes `<dir>/kernel/<sub>/<name>.ko[.<comp>]` with the given modinfo entries.
    fn module(dir: &Path, sub: &str, name: &str, comp: &str, entries: &[&str]) {
        let raw = elf(entries, true);
        let (suffix, bytes) = match comp {
            "xz" => {
                let mut out = Vec::new();
                lzma_rs::xz_compress(&mut raw.as_slice(), &mut out).unwrap();
                (".xz", out)
            }
            "zst" => (
                ".zst",
                ruzstd::encoding::compress_to_vec(
                    raw.as_slice(),
                    ruzstd::encoding::CompressionLevel::Fastest,
                ),
            ),
            _ => ("", raw),
        };
        let d = dir.join("kernel").join(sub);
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join(format!("{name}.ko{suffix}")), bytes).unwrap();
    }

    /// A small tree shaped like the real netfilter/virtio one.
    fn fixture() -> PathBuf {
        let root = tempdir("modules");
        let dir = root.join("6.1.0-test-arm64");
        module(
            &dir,
            "net/netfilter",
            "nfnetlink",
            "",
            &["license=GPL", "depends=", "name=nfnetlink"],
        );
        module(
            &dir,
            "lib",
            "libcrc32c",
            "xz",
            &["softdep=pre: crc32c", "depends=", "name=libcrc32c"],
        );
        module(
            &dir,
            "crypto",
            "crc32c_generic",
            "",
            &["alias=crc32c", "alias=crypto-crc32c", "depends="],
        );
        module(
            &dir,
            "net/netfilter",
            "nf_tables",
            "zst",
            &[
                "alias=nfnetlink-subsys-10",
                "depends=nfnetlink,libcrc32c",
                "name=nf_tables",
            ],
        );
        module(
            &dir,
            "net/netfilter",
            "nf_conntrack",
            "",
            &["depends=nf_defrag_ipv4,libcrc32c"],
        );
        module(
            &dir,
            "net/ipv4/netfilter",
            "nf_defrag_ipv4",
            "",
            &["depends="],
        );
        module(
            &dir,
            "net/netfilter",
            "nf_nat",
            "xz",
            &["depends=nf_conntrack,libcrc32c"],
        );
        module(
            &dir,
            "net/netfilter",
            "nft_chain_nat",
            "",
            &[
                "alias=nft-chain-1-nat",
                "alias=nft-chain-10-nat",
                "alias=nft-chain-2-nat",
                "depends=nf_tables,nf_nat",
            ],
        );
        module(
            &dir,
            "net/netfilter",
            "nft_masq",
            "",
            &[
                "alias=nft-expr-masq",
                "depends=nf_tables,nf_nat,nf_conntrack",
            ],
        );
        module(&dir, "drivers/virtio", "virtio_ring", "", &["depends="]);
        module(&dir, "drivers/virtio", "virtio", "", &["depends="]);
        module(
            &dir,
            "drivers/net",
            "virtio_net",
            "",
            &["alias=virtio:d00000001v*", "depends=virtio_ring,virtio"],
        );
        module(
            &dir,
            "drivers/net/ethernet",
            "ena",
            "",
            &["alias=pci:v00001D0Fd0000EC20sv*sd*bc*sc*i*", "depends="],
        );
        module(&dir, "drivers/input", "evdev", "", &["depends="]);
        fs::write(
            dir.join("modules.builtin"),
            "kernel/drivers/nvme/host/nvme.ko\nkernel/fs/ext4/ext4.ko\n",
        )
        .unwrap();
        fs::write(
            dir.join("modules.builtin.modinfo"),
            b"nvme.alias=pci:v*d*sv*sd*bc01sc08i02*\0ext4.alias=fs-ext4\0ext4.license=GPL\0",
        )
        .unwrap();
        dir
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn names(set: &ModuleSet) -> Vec<&str> {
        set.ordered.iter().map(|m| m.name.as_str()).collect()
    }

    fn before(set: &ModuleSet, a: &str, b: &str) -> bool {
        let n = names(set);
        let pa = n
            .iter()
            .position(|x| *x == a)
            .unwrap_or_else(|| panic!("{a} not in {n:?}"));
        let pb = n
            .iter()
            .position(|x| *x == b)
            .unwrap_or_else(|| panic!("{b} not in {n:?}"));
        pa < pb
    }

    #[test]
    fn elf_section_both_byte_orders() {
        for le in [true, false] {
            let f = elf(&["alias=a", "depends=b,c"], le);
            let s = elf_section(f.as_slice(), ".modinfo").unwrap().unwrap();
            assert_eq!(s, b"alias=a\0depends=b,c\0");
            assert_eq!(
                elf_section(f.as_slice(), ".text").unwrap().unwrap(),
                [0xd5, 0x03, 0x20, 0x1f]
            );
            assert!(elf_section(f.as_slice(), ".nothing").unwrap().is_none());
        }
        assert!(elf_section(&b"\x7fELF\x01"[..], ".modinfo").is_err());
        let mut truncated = elf(&["a=b"], true);
        truncated.truncate(100);
        assert!(elf_section(truncated.as_slice(), ".modinfo").is_err());
    }

    #[test]
    fn modinfo_parsing() {
        let info = parse_modinfo(
            b"license=GPL\0alias=nft-expr-masq\0depends=nf_tables,nf-nat\0softdep=pre: crc32c sha256 post: x\0\0garbage\0",
        );
        assert_eq!(info.aliases, ["nft-expr-masq"]);
        assert_eq!(info.depends, ["nf_tables", "nf_nat"]);
        assert_eq!(info.softdep_pre, ["crc32c", "sha256"]);
        assert_eq!(info.vermagic, None);
        assert!(parse_modinfo(b"depends=\0").depends.is_empty());
        let vm = "vermagic=6.1.0-56-cloud-arm64 SMP mod_unload modversions aarch64";
        let info = modinfo_of(&elf(&["name=x", vm], true)).unwrap();
        assert_eq!(
            info.vermagic.as_deref(),
            Some("6.1.0-56-cloud-arm64 SMP mod_unload modversions aarch64")
        );
        assert!(modinfo_of(b"not an ELF file").is_err());
    }

    #[test]
    fn glob_matching() {
        assert!(glob_match("nft_chain_2_nat", "nft_chain_2_nat"));
        assert!(!glob_match("nft_chain_2_nat", "nft_chain_2_na"));
        assert!(glob_match(
            "virtio:d00000001v*",
            "virtio:d00000001v00001AF4"
        ));
        assert!(glob_match(
            "pci:v00001D0Fd0000EC20sv*sd*bc*sc*i*",
            "pci:v00001D0Fd0000EC20sv1sd2bc02sc00i00"
        ));
        assert!(!glob_match(
            "pci:v00001D0Fd0000EC20sv*sd*bc*sc*i*",
            "pci:v00001D0Fd0000EC21sv1sd2bc02sc00i00"
        ));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "ac"));
        assert!(glob_match("fs_[ex]t4", "fs_et4"));
        assert!(glob_match("x[0-9]y", "x7y"));
        assert!(!glob_match("x[!0-9]y", "x7y"));
        assert!(glob_match("x[!0-9]y", "xay"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "aXbYbc"));
        assert!(!glob_match("a*b*c", "aXbY"));
        assert_eq!(normalize_alias("nft-chain-2-nat"), "nft_chain_2_nat");
        assert_eq!(normalize_alias("x[a-c]-y"), "x[a-c]_y");
    }

    #[test]
    fn resolves_closure_in_load_order() {
        let dir = fixture();
        let wanted = strings(&[
            "ena",
            "virtio-net",
            "evdev",
            "nf_tables",
            "nft-chain-2-nat",
            "nft-expr-masq",
            "nvme",
        ]);
        let set = resolve(&dir, &wanted).unwrap();
        assert_eq!(set.kernel_release, "6.1.0-test-arm64");
        assert_eq!(set.builtin, ["nvme"]);
        assert_eq!(
            names(&set),
            [
                "ena",
                "virtio_ring",
                "virtio",
                "virtio_net",
                "evdev",
                "nfnetlink",
                "crc32c_generic",
                "libcrc32c",
                "nf_tables",
                "nf_defrag_ipv4",
                "nf_conntrack",
                "nf_nat",
                "nft_chain_nat",
                "nft_masq",
            ]
        );
        assert!(before(&set, "virtio_ring", "virtio_net"));
        assert!(before(&set, "nfnetlink", "nf_tables"));
        assert!(before(&set, "nf_conntrack", "nf_nat"));
        let tables = set.ordered.iter().find(|m| m.name == "nf_tables").unwrap();
        assert_eq!(tables.rel_path, "kernel/net/netfilter/nf_tables.ko");
        assert_eq!(&tables.data[..4], b"\x7fELF", "zst module is decompressed");
        assert_eq!(tables.depends, ["nfnetlink", "libcrc32c"]);
        let nat = set.ordered.iter().find(|m| m.name == "nf_nat").unwrap();
        assert_eq!(nat.rel_path, "kernel/net/netfilter/nf_nat.ko");
        assert_eq!(&nat.data[..4], b"\x7fELF", "xz module is decompressed");
        // Same inputs, same result.
        assert_eq!(names(&resolve(&dir, &wanted).unwrap()), names(&set));
        fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }

    #[test]
    fn builtin_by_name_and_alias() {
        let dir = fixture();
        let set = resolve(
            &dir,
            &strings(&["ext4", "fs-ext4", "pci:v1d2sv3sd4bc01sc08i02"]),
        )
        .unwrap();
        assert!(set.ordered.is_empty());
        assert_eq!(
            set.builtin,
            ["ext4", "fs-ext4", "pci:v1d2sv3sd4bc01sc08i02"]
        );
        fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }

    #[test]
    fn missing_module_names_it_with_close_matches() {
        let dir = fixture();
        let err = format!(
            "{:#}",
            resolve(&dir, &strings(&["virtio_nett", "evdev", "zzzzzzzzzz"])).unwrap_err()
        );
        assert!(
            err.contains("virtio_nett (close matches: virtio_net"),
            "{err}"
        );
        assert!(err.contains("zzzzzzzzzz"), "{err}");
        assert!(!err.contains("evdev"), "{err}");
        fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }

    #[test]
    fn missing_dependency_is_an_error() {
        let dir = fixture();
        module(&dir, "x", "needy", "", &["depends=ghost"]);
        let err = format!("{:#}", resolve(&dir, &strings(&["needy"])).unwrap_err());
        assert!(err.contains("needy depends on ghost"), "{err}");
        fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }

    #[test]
    fn cycles_are_errors() {
        let dir = fixture();
        module(&dir, "x", "a", "", &["depends=b"]);
        module(&dir, "x", "b", "", &["depends=c"]);
        module(&dir, "x", "c", "", &["depends=a"]);
        let err = format!("{:#}", resolve(&dir, &strings(&["a"])).unwrap_err());
        assert!(err.contains("cycle: a -> b -> c -> a"), "{err}");
        fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }

    #[test]
    fn softdep_cycle_is_not_an_error() {
        let dir = fixture();
        module(&dir, "x", "p", "", &["softdep=pre: q", "depends="]);
        module(
            &dir,
            "x",
            "q",
            "",
            &["softdep=pre: p missing_one", "depends="],
        );
        let set = resolve(&dir, &strings(&["p"])).unwrap();
        assert_eq!(names(&set), ["q", "p"]);
        fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }

    #[test]
    fn duplicate_module_is_an_error() {
        let dir = fixture();
        module(&dir, "other", "evdev", "xz", &["depends="]);
        let err = format!("{:#}", resolve(&dir, &strings(&["evdev"])).unwrap_err());
        assert!(err.contains("exists twice"), "{err}");
        fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }

    #[test]
    fn kernel_release_is_the_single_modules_dir() {
        let dir = fixture();
        let root = dir.parent().unwrap().join("root");
        fs::create_dir_all(root.join("lib/modules")).unwrap();
        assert!(kernel_release(&root).is_err());
        fs::rename(&dir, root.join("lib/modules/6.1.0-test-arm64")).unwrap();
        assert_eq!(kernel_release(&root).unwrap(), "6.1.0-test-arm64");
        fs::create_dir_all(root.join("lib/modules/6.2.0-other")).unwrap();
        assert!(format!("{:#}", kernel_release(&root).unwrap_err()).contains("several"));
        fs::remove_dir_all(root.parent().unwrap()).unwrap();
    }
}
