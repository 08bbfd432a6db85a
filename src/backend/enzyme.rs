//! The Enzyme backend: builds the crate that [`super::rust`] emits for a model with the pinned
//! nightly (`-Zautodiff=Enable`, fat LTO, only for that crate), caches the shared library, loads
//! it, and runs its kernels as a [`Backend`].
//!
//! Use: [`Settings::from_env`], then [`prepare`] (checks the toolchain and its `enzyme`
//! component, and finds the cache entry), then [`Prepared::load`] (builds on a cache miss —
//! tens of seconds — and loads). [`Prepared::is_cached`] tells beforehand whether a build is due.
//!
//! # The cache
//!
//! One folder per build under `$HMDP_CACHE` (default `$XDG_CACHE_HOME/hmdp`, else
//! `~/.cache/hmdp`), in `enzyme/`, named by the model and a hash of the emitted crate and the
//! exact compiler version, so a model's sizes, its source and the toolchain all pick the entry.
//! An entry holds the crate as built (`crate/`), the library (`kernels.so`) and the build log.
//! A build happens in a `tmp-*` folder that is renamed into place when complete: a killed build
//! never leaves a broken entry, and of two concurrent builds of the same crate the first rename
//! wins and the other discards its own. An entry is used only when its crate is byte for byte
//! the one emitted now. A failed build's folder is kept as `failed-<key>` for its log.
//!
//! This module writes files and runs processes (the only part of the library that does), but
//! prints nothing: errors come back as [`Error`], whose messages say how to fix the problem.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use libloading::Library;

use super::rust::{self, Crate, Origin};
use super::{Backend, Interp, Kernel, Pointers};
use crate::ir::Module;
use crate::sim::RunError;

/// Overrides the toolchain the kernels are built with (default: the pinned one).
pub const TOOLCHAIN_ENV: &str = "HMDP_TOOLCHAIN";
/// Overrides the cache folder.
pub const CACHE_ENV: &str = "HMDP_CACHE";

/// The toolchain of `rust-toolchain.toml`, which has the `enzyme` component.
pub fn pinned_toolchain() -> String {
    const FILE: &str = include_str!("../../rust-toolchain.toml");
    FILE.lines()
        .filter_map(|l| l.trim().strip_prefix("channel"))
        .filter_map(|rest| rest.trim().strip_prefix('='))
        .map(|v| v.trim().trim_matches('"').to_string())
        .next()
        .unwrap_or_else(|| "nightly".into())
}

/// `HMDP_TOOLCHAIN`, or the pinned toolchain.
pub fn toolchain_from_env() -> String {
    std::env::var(TOOLCHAIN_ENV).ok().filter(|v| !v.is_empty()).unwrap_or_else(pinned_toolchain)
}

/// Where and with what the kernels are built.
#[derive(Clone, Debug)]
pub struct Settings {
    pub toolchain: String,
    pub cache: PathBuf,
}

impl Settings {
    /// `HMDP_TOOLCHAIN` or the pinned toolchain; `HMDP_CACHE`, `$XDG_CACHE_HOME/hmdp` or
    /// `~/.cache/hmdp`.
    pub fn from_env() -> Result<Settings, Error> {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        let toolchain = toolchain_from_env();
        let cache = var(CACHE_ENV)
            .map(PathBuf::from)
            .or_else(|| var("XDG_CACHE_HOME").map(|x| PathBuf::from(x).join("hmdp")))
            .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".cache").join("hmdp")))
            .ok_or(Error::NoCache)?;
        Ok(Settings { toolchain, cache })
    }
}

/// Why the Enzyme kernels could not be built or loaded.
#[derive(Debug)]
pub enum Error {
    /// `rustup` is not on the `PATH`.
    NoRustup,
    /// The toolchain is not installed.
    NoToolchain {
        toolchain: String,
    },
    /// The toolchain has no `enzyme` component.
    NoEnzyme {
        toolchain: String,
    },
    /// `rustup` or `rustc` failed otherwise.
    Toolchain {
        toolchain: String,
        message: String,
    },
    /// No folder for the cache: neither `HMDP_CACHE`, `XDG_CACHE_HOME` nor `HOME` is set.
    NoCache,
    Io {
        what: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
    /// The compiler failed; the full output is in `log`.
    Build {
        log: PathBuf,
        first_error: Option<String>,
    },
    /// The library could not be loaded, or does not match the model.
    Load {
        path: PathBuf,
        message: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoRustup => write!(
                f,
                "the Enzyme backend needs rustup, which is not on the PATH; install it from https://rustup.rs, then \
                 run `rustup toolchain install` in the hmdp repository"
            ),
            Error::NoToolchain { toolchain } => write!(
                f,
                "the Enzyme backend builds with the toolchain `{toolchain}`, which is not installed; run `rustup \
                 toolchain install` in the hmdp repository (or `rustup toolchain install {toolchain} --component enzyme`)"
            ),
            Error::NoEnzyme { toolchain } => write!(
                f,
                "the toolchain `{toolchain}` has no `enzyme` component, which the Enzyme backend needs; run `rustup \
                 component add enzyme --toolchain {toolchain}`"
            ),
            Error::Toolchain { toolchain, message } => {
                write!(f, "cannot run the toolchain `{toolchain}` for the Enzyme backend: {message}")
            }
            Error::NoCache => write!(
                f,
                "no folder for the Enzyme kernel cache: set {CACHE_ENV} (or XDG_CACHE_HOME or HOME) to a writable folder"
            ),
            Error::Io { what, path, error } => {
                write!(f, "cannot {what} {}: {error}; set {CACHE_ENV} to a writable folder", path.display())
            }
            Error::Build { log, first_error } => {
                write!(f, "the Rust compiler failed to build the Enzyme kernels")?;
                if let Some(e) = first_error {
                    write!(f, " ({e})")?;
                }
                write!(f, "; the full log is {}", log.display())
            }
            Error::Load { path, message } => write!(f, "cannot load the Enzyme kernels {}: {message}", path.display()),
        }
    }
}

impl std::error::Error for Error {}

/// An installed toolchain with the `enzyme` component.
#[derive(Clone, Debug)]
pub struct Toolchain {
    pub name: String,
    pub sysroot: PathBuf,
    /// `rustc -vV`: the exact compiler, part of the cache key.
    pub version: String,
}

/// Finds the toolchain and checks that it has Enzyme, without installing anything.
pub fn probe(toolchain: &str) -> Result<Toolchain, Error> {
    // `rustup run` never installs a missing toolchain (unlike the proxies with auto-install on).
    let out = Command::new("rustup").args(["run", toolchain, "rustc", "--print", "sysroot"]).output();
    let out = match out {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Error::NoRustup),
        Err(e) => return Err(Error::Toolchain { toolchain: toolchain.into(), message: e.to_string() }),
    };
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("is not installed") || stderr.contains("not installed") {
            return Err(Error::NoToolchain { toolchain: toolchain.into() });
        }
        let message = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("no output").trim().to_string();
        return Err(Error::Toolchain { toolchain: toolchain.into(), message });
    }
    let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if !has_enzyme(&sysroot) {
        return Err(Error::NoEnzyme { toolchain: toolchain.into() });
    }
    let rustc = sysroot.join("bin").join(format!("rustc{}", std::env::consts::EXE_SUFFIX));
    let version = Command::new(&rustc)
        .arg("-vV")
        .output()
        .map_err(|e| Error::Toolchain { toolchain: toolchain.into(), message: format!("{}: {e}", rustc.display()) })?;
    Ok(Toolchain { name: toolchain.into(), sysroot, version: String::from_utf8_lossy(&version.stdout).into_owned() })
}

/// Whether `lib/rustlib/<target>/lib/libEnzyme-<llvm>.<ext>` exists in a sysroot.
fn has_enzyme(sysroot: &Path) -> bool {
    let Ok(targets) = std::fs::read_dir(sysroot.join("lib").join("rustlib")) else { return false };
    targets.filter_map(Result::ok).any(|target| {
        std::fs::read_dir(target.path().join("lib")).is_ok_and(|files| {
            files.filter_map(Result::ok).any(|f| f.file_name().to_string_lossy().starts_with("libEnzyme-"))
        })
    })
}

/// A model's kernels, emitted and matched to their cache entry, ready to load (and build first
/// when the entry is missing).
pub struct Prepared<'m> {
    module: &'m Module,
    krate: Crate,
    toolchain: Toolchain,
    /// `<cache>/enzyme`.
    root: PathBuf,
    /// The entry's folder name.
    key: String,
}

/// Emits the model's crate, checks the toolchain, and finds the cache entry.
pub fn prepare<'m>(module: &'m Module, file: &str, source: &str, settings: &Settings) -> Result<Prepared<'m>, Error> {
    let toolchain = probe(&settings.toolchain)?;
    let krate = rust::emit(module, &Origin { file, source, toolchain: &settings.toolchain });
    let mut hash = Hash::new();
    hash.add(toolchain.version.as_bytes());
    for (path, text) in &krate.files {
        hash.add(path.as_bytes());
        hash.add(text.as_bytes());
    }
    let model: String = krate.lib_name.trim_start_matches("hmdp_").chars().take(40).collect();
    let key = format!("{model}-{}", hash.hex());
    // Absolute, because cargo runs in the crate's folder and would read a relative path from there.
    let root = std::path::absolute(settings.cache.join("enzyme")).unwrap_or_else(|_| settings.cache.join("enzyme"));
    Ok(Prepared { module, krate, toolchain, root, key })
}

impl<'m> Prepared<'m> {
    /// The cache entry's folder.
    pub fn entry(&self) -> PathBuf {
        self.root.join(&self.key)
    }

    /// The emitted crate.
    pub fn krate(&self) -> &Crate {
        &self.krate
    }

    /// Whether the entry exists and holds exactly this crate, so that loading will not build.
    pub fn is_cached(&self) -> bool {
        let entry = self.entry();
        entry.join(library_file()).is_file()
            && self.krate.files.iter().all(|(path, text)| {
                std::fs::read(entry.join("crate").join(path)).is_ok_and(|bytes| bytes == text.as_bytes())
            })
    }

    /// Loads the kernels, building them first when the cache has no entry for them.
    pub fn load(self) -> Result<Enzyme<'m>, Error> {
        let built = !self.is_cached();
        if built {
            self.build()?;
        }
        let path = self.entry().join(library_file());
        Enzyme::open(self.module, &path, built)
    }

    fn build(&self) -> Result<(), Error> {
        let io = |what: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |error| Error::Io { what, path, error }
        };
        std::fs::create_dir_all(&self.root).map_err(io("create the cache folder", &self.root))?;
        remove_stale(&self.root);
        let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let tmp = self.root.join(format!("tmp-{}-{}-{nanos}", self.key, std::process::id()));
        let source = tmp.join("crate");
        for (path, text) in &self.krate.files {
            let file = source.join(path);
            if let Some(folder) = file.parent() {
                std::fs::create_dir_all(folder).map_err(io("create", folder))?;
            }
            std::fs::write(&file, text).map_err(io("write", &file))?;
        }
        let log_path = tmp.join("build.log");
        let log = std::fs::File::create(&log_path).map_err(io("write", &log_path))?;
        let log_err = log.try_clone().map_err(io("write", &log_path))?;
        let target = tmp.join("target");
        let mut cargo = Command::new("rustup");
        cargo
            .args(["run", &self.toolchain.name, "cargo", "build", "--release", "--offline", "--manifest-path"])
            .arg(source.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&target)
            .current_dir(&source)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        // The build must not inherit flags or wrappers meant for another build (such as the cargo
        // that runs hmdp's tests): only this crate's settings apply.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            let cargo_setting = name.starts_with("CARGO_") && name != "CARGO_HOME";
            let rustc_setting = name.starts_with("RUSTC") || name.starts_with("RUSTDOC") || name == "RUSTFLAGS";
            if cargo_setting || rustc_setting || name == "RUSTUP_TOOLCHAIN" {
                cargo.env_remove(name.as_ref());
            }
        }
        cargo.env("CARGO_ENCODED_RUSTFLAGS", "-Zautodiff=Enable").env("CARGO_TERM_COLOR", "never");
        let status = cargo.status();
        let ok = match status {
            Ok(status) => status.success(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Error::NoRustup),
            Err(e) => return Err(Error::Toolchain { toolchain: self.toolchain.name.clone(), message: e.to_string() }),
        };
        if !ok {
            let first_error = std::fs::read_to_string(&log_path).ok().and_then(|log| first_error(&log));
            // Keep the log where the user can find it.
            let failed = self.root.join(format!("failed-{}", self.key));
            let _ = std::fs::remove_dir_all(&failed);
            let log = match std::fs::rename(&tmp, &failed) {
                Ok(()) => failed.join("build.log"),
                Err(_) => log_path,
            };
            return Err(Error::Build { log, first_error });
        }
        let built = target.join("release").join(format!(
            "{}{}{}",
            std::env::consts::DLL_PREFIX,
            self.krate.lib_name,
            std::env::consts::DLL_SUFFIX
        ));
        let library = tmp.join(library_file());
        std::fs::copy(&built, &library).map_err(io("copy the built library", &built))?;
        let _ = std::fs::remove_dir_all(&target);
        let entry = self.entry();
        if entry.exists() && !self.is_cached() {
            // An entry with this key but another crate (a hash collision, or a damaged entry).
            let _ = std::fs::remove_dir_all(&entry);
        }
        if let Err(e) = std::fs::rename(&tmp, &entry) {
            let _ = std::fs::remove_dir_all(&tmp);
            // Another build of the same crate finished first: use its entry.
            if !self.is_cached() {
                return Err(Error::Io { what: "store the build in", path: entry, error: e });
            }
        }
        Ok(())
    }
}

/// The library's file name inside an entry.
fn library_file() -> String {
    format!("kernels{}", std::env::consts::DLL_SUFFIX)
}

/// The first error line of a cargo log: the compiler's own message rather than cargo's summary.
fn first_error(log: &str) -> Option<String> {
    let errors: Vec<&str> = log.lines().map(str::trim).filter(|l| l.starts_with("error")).collect();
    let own = errors.iter().find(|l| !l.starts_with("error: could not compile")).or(errors.first())?;
    Some(own.chars().take(200).collect())
}

/// Removes build folders left by killed builds (older than an hour; no build takes that long).
fn remove_stale(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else { return };
    for entry in entries.filter_map(Result::ok) {
        let stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(3600));
        if stale && entry.file_name().to_string_lossy().starts_with("tmp-") {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// FNV-1a, twice with different offsets: a 128-bit key. A collision would only cost a rebuild,
/// since an entry is used only when its crate matches byte for byte.
struct Hash(u64, u64);

impl Hash {
    fn new() -> Hash {
        Hash(0xcbf2_9ce4_8422_2325, 0x6c62_272e_07bb_0142)
    }

    fn add(&mut self, bytes: &[u8]) {
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        // The length first, so that ("ab", "c") and ("a", "bc") differ.
        for &b in (bytes.len() as u64).to_le_bytes().iter().chain(bytes) {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(PRIME);
            self.1 = (self.1 ^ u64::from(b.rotate_left(3))).wrapping_mul(PRIME);
        }
    }

    fn hex(&self) -> String {
        format!("{:016x}{:016x}", self.0, self.1)
    }
}

type KernelFn = unsafe extern "C" fn(*const *mut f64, i64, i64) -> i64;

/// A model's kernels, loaded from the shared library the emitted crate builds.
pub struct Enzyme<'m> {
    module: &'m Module,
    /// Kept alive as long as the kernel pointers are used.
    _library: Library,
    kernels: [KernelFn; 4],
    built: bool,
    path: PathBuf,
}

impl<'m> Enzyme<'m> {
    fn open(module: &'m Module, path: &Path, built: bool) -> Result<Enzyme<'m>, Error> {
        let fail = |message: String| Error::Load { path: path.to_path_buf(), message };
        // SAFETY: the library is one hmdp built from the emitted crate, whose initialisers do
        // nothing; its symbols have the types the emitter gives them.
        let library = unsafe { Library::new(path) }.map_err(|e| fail(e.to_string()))?;
        let kernel = |kernel: Kernel| -> Result<KernelFn, Error> {
            let name = rust::symbol(kernel);
            // SAFETY: the emitter defines every kernel symbol with exactly this signature.
            unsafe { library.get::<KernelFn>(name) }.map(|s| *s).map_err(|e| fail(e.to_string()))
        };
        let kernels = [kernel(Kernel::Bounds)?, kernel(Kernel::Regimes)?, kernel(Kernel::Step)?, kernel(Kernel::Vjp)?];
        // SAFETY: as above; both functions only read a constant table.
        let count = unsafe { library.get::<extern "C" fn() -> u64>(rust::BUFFER_COUNT_SYMBOL) }
            .map(|s| *s)
            .map_err(|e| fail(e.to_string()))?;
        let len = unsafe { library.get::<extern "C" fn(u64) -> u64>(rust::BUFFER_LEN_SYMBOL) }
            .map(|s| *s)
            .map_err(|e| fail(e.to_string()))?;
        let matches = count() == module.buffers.len() as u64
            && (0..module.buffers.len()).all(|id| len(id as u64) == module.len(id) as u64);
        if !matches {
            return Err(fail("its buffers are not those of the model; delete it to rebuild".into()));
        }
        Ok(Enzyme { module, _library: library, kernels, built, path: path.to_path_buf() })
    }

    /// Whether loading built the library (a cache miss).
    pub fn built(&self) -> bool {
        self.built
    }

    /// The shared library's path in the cache.
    pub fn library(&self) -> &Path {
        &self.path
    }
}

impl Backend for Enzyme<'_> {
    fn name(&self) -> &'static str {
        "enzyme"
    }

    unsafe fn run_range(
        &self,
        kernel: Kernel,
        pointers: Pointers<'_>,
        start: usize,
        end: usize,
    ) -> Result<(), RunError> {
        let index = match kernel {
            Kernel::Bounds => 0,
            Kernel::Regimes => 1,
            Kernel::Step => 2,
            Kernel::Vjp => 3,
        };
        let run = self.kernels[index];
        // SAFETY: the caller guarantees `pointers` is a batch of this module with `end`
        // scenarios; the library was checked to have this module's buffers.
        let code = unsafe { run(pointers.bases.as_ptr().cast(), start as i64, end as i64) };
        if code == 0 {
            return Ok(());
        }
        // Scenario `code - 1` read outside a set. Its inputs are untouched, so the interpreter
        // finds the same index and says where in the model it is.
        let b = (code - 1) as usize;
        let interp = Interp { module: self.module };
        // SAFETY: as above, scenario `b` is within `start..end`.
        match unsafe { interp.run_range(kernel, pointers, b, b + 1) } {
            Err(e) => Err(e),
            Ok(()) => Err(RunError {
                span: Default::default(),
                message: format!(
                    "internal error: the Enzyme kernel `{}` found an index outside its set in scenario {b}, but the \
                     interpreter does not; please report this with the model",
                    kernel.name()
                ),
            }),
        }
    }
}
