//! Kernel modules: parse the ordered load list and load each module with finit_module(2).
//!
//! The image has no modprobe and no modules.dep; xtask resolves dependencies at build
//! time and writes the list in load order.

use std::ffi::CString;
use std::fs::File;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::kmod::{ModuleInitFlags, finit_module};

/// One line of the list: `/lib/modules/.../x.ko [params...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// 1-based line number, for messages.
    pub line: usize,
    pub path: PathBuf,
    /// Everything after the first space, passed verbatim to the kernel.
    pub params: String,
}

/// A list line that could not be understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListError {
    pub line: usize,
    pub message: String,
}

/// Parses the list; bad lines are returned separately so that the rest still loads.
pub fn parse_list(text: &str) -> (Vec<Module>, Vec<ListError>) {
    let mut modules = Vec::new();
    let mut errors = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let (path, params) = match l.split_once(char::is_whitespace) {
            Some((p, rest)) => (p, rest.trim()),
            None => (l, ""),
        };
        if !path.starts_with('/') {
            errors.push(ListError {
                line,
                message: format!("module path {path:?} is not absolute"),
            });
            continue;
        }
        if params.contains('\0') {
            errors.push(ListError {
                line,
                message: "parameters contain NUL".to_string(),
            });
            continue;
        }
        modules.push(Module {
            line,
            path: PathBuf::from(path),
            params: params.to_string(),
        });
    }
    (modules, errors)
}

/// Counts for the summary line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    /// Loaded now or already present (EEXIST).
    pub loaded: usize,
    pub failed: usize,
}

/// Loads modules in order through `load`; failures are logged through `log` and skipped.
pub fn load_all(
    modules: &[Module],
    mut load: impl FnMut(&Module) -> Result<(), LoadError>,
    mut log: impl FnMut(String),
) -> Summary {
    let mut summary = Summary::default();
    for m in modules {
        match load(m) {
            Ok(()) | Err(LoadError::Kernel(Errno::EEXIST)) => summary.loaded += 1,
            Err(e) => {
                summary.failed += 1;
                log(format!("module {} failed: {e}", m.path.display()));
            }
        }
    }
    summary
}

/// Why one module did not load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadError {
    Open(String),
    Kernel(Errno),
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Open(e) => write!(f, "open: {e}"),
            LoadError::Kernel(e) => write!(f, "finit_module: {} ({})", e.desc(), *e as i32),
        }
    }
}

/// Lets the kernel decompress `.ko.xz`/`.ko.zst`/`.ko.gz` (CONFIG_MODULE_DECOMPRESS).
const MODULE_INIT_COMPRESSED_FILE: u32 = 4;

fn flags_for(path: &Path) -> ModuleInitFlags {
    match path.extension().and_then(|e| e.to_str()) {
        Some("xz" | "zst" | "gz") => ModuleInitFlags::from_bits_retain(MODULE_INIT_COMPRESSED_FILE),
        _ => ModuleInitFlags::empty(),
    }
}

/// The real loader: finit_module(2) on the opened file.
pub fn load_one(m: &Module) -> Result<(), LoadError> {
    let file = File::open(&m.path).map_err(|e| LoadError::Open(e.to_string()))?;
    let params = CString::new(m.params.as_str()).map_err(|e| LoadError::Open(e.to_string()))?;
    finit_module(&file, &params, flags_for(&m.path)).map_err(LoadError::Kernel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_paths_params_comments_and_blanks() {
        let text = "# virtio first\n\n/lib/modules/virtio_ring.ko\n  /lib/modules/ena.ko  rx_queue_size=1024 debug=1 \n# end\n";
        let (mods, errs) = parse_list(text);
        assert!(errs.is_empty());
        assert_eq!(
            mods,
            vec![
                Module {
                    line: 3,
                    path: "/lib/modules/virtio_ring.ko".into(),
                    params: String::new()
                },
                Module {
                    line: 4,
                    path: "/lib/modules/ena.ko".into(),
                    params: "rx_queue_size=1024 debug=1".into()
                },
            ]
        );
    }

    #[test]
    fn relative_path_is_an_error_but_others_still_load() {
        let (mods, errs) = parse_list("evdev.ko\n/a.ko\n");
        assert_eq!(mods.len(), 1);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].line, 1);
    }

    #[test]
    fn load_all_counts_eexist_as_loaded_and_continues_after_failure() {
        let (mods, _) = parse_list("/a.ko\n/b.ko\n/c.ko\n/d.ko\n");
        let mut order = Vec::new();
        let mut logs = Vec::new();
        let s = load_all(
            &mods,
            |m| {
                order.push(m.path.clone());
                match m.path.to_str() {
                    Some("/b.ko") => Err(LoadError::Kernel(Errno::EEXIST)),
                    Some("/c.ko") => Err(LoadError::Kernel(Errno::ENOEXEC)),
                    _ => Ok(()),
                }
            },
            |l| logs.push(l),
        );
        assert_eq!(
            s,
            Summary {
                loaded: 3,
                failed: 1
            }
        );
        assert_eq!(order.len(), 4);
        assert_eq!(logs.len(), 1);
        assert!(
            logs[0].starts_with("module /c.ko failed: finit_module:"),
            "{}",
            logs[0]
        );
        assert!(logs[0].contains("(8)"), "errno number shown: {}", logs[0]);
    }

    #[test]
    fn compressed_modules_get_the_decompress_flag() {
        assert_eq!(flags_for(Path::new("/a.ko")), ModuleInitFlags::empty());
        assert_eq!(flags_for(Path::new("/a.ko.xz")).bits(), 4);
        assert_eq!(flags_for(Path::new("/a.ko.zst")).bits(), 4);
    }

    #[test]
    fn missing_file_is_an_open_error() {
        let m = Module {
            line: 1,
            path: "/nonexistent/x.ko".into(),
            params: String::new(),
        };
        assert!(matches!(load_one(&m), Err(LoadError::Open(_))));
    }
}
