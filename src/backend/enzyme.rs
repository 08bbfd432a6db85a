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
//! An entry holds the crate as built (`crate/`), the library (`kernels.so`), the build log and
//! an integrity record (`integrity`): the SHA-256 of the model source, of the emitted crate and
//! of the library, written once the build succeeded.
//!
//! Loading a library runs its code, so the cache trusts only what this user's hmdpc wrote:
//!
//! - The cache folder and its `enzyme/` are created private (0700), and refused when another user
//!   owns them or may write to them, or may replace them through a folder above.
//! - An entry is loaded only when its record names the model and the crate emitted now and the
//!   library's bytes hash to the recorded value; anything else (a damaged or truncated library,
//!   another model's library or entry, an entry without a record) is rebuilt, and
//!   [`Prepared::status`] says why.
//!
//! A build happens in a `tmp-<key>-<pid>-*` folder that is renamed into place when complete: a
//! killed build never leaves a broken entry, and of two concurrent builds of the same crate the
//! first rename wins and the other discards its own. A `tmp-*` folder whose process is gone is
//! removed on the next use of the cache. The compiler runs in a process group of its own, which
//! is ended when hmdpc is stopped by SIGINT, SIGTERM or SIGHUP, so no `cargo` or `rustc` outlives
//! it. A failed build's folder is kept as `failed-<key>` for its log.
//!
//! This module writes files and runs processes (the only part of the library that does), but
//! prints nothing: errors come back as [`Error`], whose messages say how to fix the problem.

use std::fmt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, SystemTime};

use libloading::Library;
use sha2::{Digest, Sha256};

use super::rust::{self, Crate, Origin};
use super::{Backend, Interp, Kernel, Pointers, RunError};
use crate::ir::ValidModule;

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
    /// A cache folder that someone other than this user could write to.
    UnsafeCache {
        path: PathBuf,
        reason: String,
    },
    /// The build was stopped by a signal.
    Interrupted,
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
            Error::UnsafeCache { path, reason } => write!(
                f,
                "the Enzyme kernel cache {} is not private: {reason}. hmdpc loads and runs the libraries in it, so \
                 only you may write there: set {CACHE_ENV} to a folder of your own, or make this one yours and \
                 `chmod 700` it",
                path.display()
            ),
            Error::Interrupted => write!(f, "the build of the Enzyme kernels was interrupted"),
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
    module: &'m ValidModule,
    krate: Crate,
    toolchain: Toolchain,
    /// `<cache>/enzyme`.
    root: PathBuf,
    /// The entry's folder name.
    key: String,
    /// The SHA-256 of the toolchain's version and the emitted crate, and of the model source.
    crate_hash: String,
    model_hash: String,
}

/// Emits the model's crate, checks the toolchain, and finds the cache entry.
pub fn prepare<'m>(
    module: &'m ValidModule,
    file: &str,
    source: &str,
    settings: &Settings,
) -> Result<Prepared<'m>, Error> {
    let toolchain = probe(&settings.toolchain)?;
    // Absolute, because cargo runs in the crate's folder and would read a relative path from there.
    let cache = std::path::absolute(&settings.cache).unwrap_or_else(|_| settings.cache.clone());
    let root = open_cache(&cache)?;
    let krate = rust::emit(module, &Origin { file, source, toolchain: &settings.toolchain });
    let mut hash = Sha256::new();
    add(&mut hash, toolchain.version.as_bytes());
    for (path, text) in &krate.files {
        add(&mut hash, path.as_bytes());
        add(&mut hash, text.as_bytes());
    }
    let crate_hash = hex(&hash.finalize());
    let model_hash = hex(&Sha256::digest(source.as_bytes()));
    let model: String = krate.lib_name.trim_start_matches("hmdp_").chars().take(40).collect();
    let key = format!("{model}-{}", crate_hash.get(..32).unwrap_or(&crate_hash));
    Ok(Prepared { module, krate, toolchain, root, key, crate_hash, model_hash })
}

/// What the cache holds for a model's kernels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// An entry whose integrity record matches the model, its crate and its library.
    Verified,
    /// No entry: loading builds one.
    Missing,
    /// An entry that will not be loaded, and why; loading builds it again.
    Rejected(String),
}

/// The integrity record of an entry: what it was built from and what the build produced.
struct Record {
    model: String,
    krate: String,
    library: String,
}

const RECORD_FILE: &str = "integrity";
const RECORD_HEADER: &str = "hmdp enzyme cache entry 1";

impl Record {
    fn text(&self) -> String {
        format!("{RECORD_HEADER}\nmodel {}\ncrate {}\nlibrary {}\n", self.model, self.krate, self.library)
    }

    fn parse(text: &str) -> Option<Record> {
        let mut lines = text.lines();
        if lines.next() != Some(RECORD_HEADER) {
            return None;
        }
        let mut field = |name: &str| lines.next()?.strip_prefix(name)?.strip_prefix(' ').map(str::to_string);
        Some(Record { model: field("model")?, krate: field("crate")?, library: field("library")? })
    }
}

/// Adds a length-prefixed piece, so that ("ab", "c") and ("a", "bc") hash differently.
fn add(hash: &mut Sha256, bytes: &[u8]) {
    hash.update((bytes.len() as u64).to_le_bytes());
    hash.update(bytes);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-256 of a file's bytes.
fn file_hash(path: &Path) -> std::io::Result<String> {
    Ok(hex(&Sha256::digest(std::fs::read(path)?)))
}

/// Creates `<cache>/enzyme` private, checks that no other user can write to it or replace it,
/// and removes what killed builds left in it. Returns its path.
fn open_cache(cache: &Path) -> Result<PathBuf, Error> {
    let root = cache.join("enzyme");
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    // The cache folder is checked before anything is written in it.
    for folder in [cache, root.as_path()] {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(folder).map_err(|error| Error::Io {
            what: "create the cache folder",
            path: folder.to_path_buf(),
            error,
        })?;
        let meta =
            std::fs::metadata(folder).map_err(|error| Error::Io { what: "read", path: folder.to_path_buf(), error })?;
        let unsafe_cache = |reason: String| Error::UnsafeCache { path: folder.to_path_buf(), reason };
        if meta.uid() != me {
            return Err(unsafe_cache(format!("it belongs to the user with id {}, not to you (id {me})", meta.uid())));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(unsafe_cache(format!(
                "other users may write to it (mode {:o}); `chmod go-w {}` would fix that",
                meta.mode() & 0o7777,
                folder.display()
            )));
        }
    }
    // A folder above that others may write to would let them swap the cache for one of theirs;
    // a sticky one (such as /tmp) lets them remove only their own files.
    let canonical = std::fs::canonicalize(cache).unwrap_or_else(|_| cache.to_path_buf());
    for folder in canonical.ancestors().skip(1) {
        let Ok(meta) = std::fs::metadata(folder) else { continue };
        let writable_by_others = meta.mode() & 0o002 != 0 && meta.mode() & 0o1000 == 0;
        if (meta.uid() != me && meta.uid() != 0) || writable_by_others {
            return Err(Error::UnsafeCache {
                path: cache.to_path_buf(),
                reason: format!(
                    "the folder {} above it belongs to the user with id {} or may be written by anyone (mode {:o})",
                    folder.display(),
                    meta.uid(),
                    meta.mode() & 0o7777
                ),
            });
        }
    }
    remove_stale(&root);
    Ok(root)
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

    /// Whether the entry exists and is verified, so that loading will not build.
    pub fn is_cached(&self) -> bool {
        self.status() == Status::Verified
    }

    /// Whether the cache entry may be loaded: it must have been built from this model and this
    /// crate, and its library must be the one that build produced, byte for byte.
    pub fn status(&self) -> Status {
        let entry = self.entry();
        let text = match std::fs::read_to_string(entry.join(RECORD_FILE)) {
            Ok(text) => text,
            Err(_) if !entry.exists() => return Status::Missing,
            Err(_) => return Status::Rejected("it has no integrity record".into()),
        };
        let Some(record) = Record::parse(&text) else {
            return Status::Rejected("its integrity record is damaged".into());
        };
        if record.krate != self.crate_hash || record.model != self.model_hash {
            return Status::Rejected("it was built from another model or crate".into());
        }
        match file_hash(&entry.join(library_file())) {
            Ok(hash) if hash == record.library => Status::Verified,
            Ok(_) => Status::Rejected("its library is not the one built for it (damaged or replaced)".into()),
            Err(e) => Status::Rejected(format!("its library cannot be read: {e}")),
        }
    }

    /// Loads the kernels, building them first when the cache has no verified entry for them.
    pub fn load(self) -> Result<Enzyme<'m>, Error> {
        let built = !self.is_cached();
        if built {
            self.build()?;
        }
        let path = self.entry().join(library_file());
        // What is loaded is exactly what was built or verified: checked again right before.
        if let Status::Rejected(reason) = self.status() {
            return Err(Error::Load { path, message: format!("the cache entry changed while in use: {reason}") });
        }
        Enzyme::open(self.module, &path, built)
    }

    fn build(&self) -> Result<(), Error> {
        let io = |what: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |error| Error::Io { what, path, error }
        };
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
            .stderr(log_err)
            // A group of its own, which `end_builds` can end with everything cargo started.
            .process_group(0);
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
        let status = run_build(&mut cargo);
        let ok = match status {
            Ok(status) if status.signal().is_some() => {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(Error::Interrupted);
            }
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
        let record = Record {
            model: self.model_hash.clone(),
            krate: self.crate_hash.clone(),
            library: file_hash(&library).map_err(io("read the built library", &library))?,
        };
        let record_path = tmp.join(RECORD_FILE);
        std::fs::write(&record_path, record.text()).map_err(io("write", &record_path))?;
        let entry = self.entry();
        if entry.exists() && !self.is_cached() {
            // An entry that failed verification: damaged, replaced, or from an older hmdpc.
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

/// Removes build folders left by killed builds: those whose process is gone, and any older
/// than an hour (no build takes that long; this also covers a process id used again).
fn remove_stale(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else { return };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("tmp-") {
            continue;
        }
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(3600));
        // `tmp-<key>-<pid>-<nanos>`.
        let builder = name.rsplit('-').nth(1).and_then(|pid| pid.parse::<i32>().ok());
        if old || builder.is_some_and(|pid| !is_running(pid)) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Whether a process exists and has not ended (a zombie has ended).
fn is_running(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let exists =
        unsafe { libc::kill(pid, 0) } == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')));
    exists && !zombie
}

/// The process groups of the builds running now, ended by [`end_builds`] when hmdpc is
/// stopped. A slot holds a group id, or 0.
static BUILD_GROUPS: [AtomicI32; 16] = [const { AtomicI32::new(0) }; 16];

/// The signals that stop hmdpc, and what they did before [`end_builds`] was installed.
const STOP_SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];
static PREVIOUS_ACTIONS: std::sync::OnceLock<[libc::sigaction; 3]> = std::sync::OnceLock::new();

/// Runs a build command in its own process group, which is ended if hmdpc is stopped by a
/// signal while it runs.
fn run_build(command: &mut Command) -> std::io::Result<std::process::ExitStatus> {
    PREVIOUS_ACTIONS.get_or_init(install_end_builds);
    let mut child = command.spawn()?;
    let group = i32::try_from(child.id()).unwrap_or(0);
    let slot = BUILD_GROUPS.iter().find(|s| s.compare_exchange(0, group, Ordering::SeqCst, Ordering::SeqCst).is_ok());
    let status = child.wait();
    if let Some(slot) = slot {
        slot.store(0, Ordering::SeqCst);
    }
    status
}

/// Installs [`end_builds`] for the stop signals, keeping the actions it replaces.
fn install_end_builds() -> [libc::sigaction; 3] {
    STOP_SIGNALS.map(|signal| {
        // SAFETY: sigaction is given valid structures; `end_builds` only makes async-signal-safe calls.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = end_builds as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            let mut previous: libc::sigaction = std::mem::zeroed();
            libc::sigaction(signal, &action, &mut previous);
            previous
        }
    })
}

/// On a stop signal: kills the running builds' process groups, then does what the signal did
/// before (by default, ends hmdpc), which stays in place from then on. Only async-signal-safe
/// calls.
extern "C" fn end_builds(signal: libc::c_int) {
    let Some(previous) = PREVIOUS_ACTIONS.get() else { return };
    let Some(k) = STOP_SIGNALS.iter().position(|&s| s == signal) else { return };
    let Some(previous) = previous.get(k) else { return };
    // A signal hmdpc was told to ignore (`nohup`) stops nothing.
    if previous.sa_sigaction == libc::SIG_IGN {
        return;
    }
    for slot in &BUILD_GROUPS {
        let group = slot.load(Ordering::SeqCst);
        if group > 0 {
            // SAFETY: kill is async-signal-safe; the group is one this process started.
            unsafe { libc::kill(-group, libc::SIGKILL) };
        }
    }
    // The signal is blocked while this runs: raised again, it reaches the restored action (the
    // default, which ends hmdpc, or the handler that was there) as soon as this returns.
    // SAFETY: sigaction and raise are async-signal-safe; `previous` is what sigaction gave.
    unsafe {
        libc::sigaction(signal, previous, std::ptr::null_mut());
        libc::raise(signal);
    }
}

type KernelFn = unsafe extern "C" fn(*const *mut f64, i64, i64) -> i64;

/// A model's kernels, loaded from the shared library the emitted crate builds.
pub struct Enzyme<'m> {
    module: &'m ValidModule,
    /// Kept alive as long as the kernel pointers are used.
    _library: Library,
    kernels: [KernelFn; 5],
    built: bool,
    path: PathBuf,
}

impl<'m> Enzyme<'m> {
    fn open(module: &'m ValidModule, path: &Path, built: bool) -> Result<Enzyme<'m>, Error> {
        let fail = |message: String| Error::Load { path: path.to_path_buf(), message };
        // SAFETY: the library is one hmdp built from the emitted crate, whose initialisers do
        // nothing; its symbols have the types the emitter gives them.
        let library = unsafe { Library::new(path) }.map_err(|e| fail(e.to_string()))?;
        let kernel = |kernel: Kernel| -> Result<KernelFn, Error> {
            let name = rust::symbol(kernel);
            // SAFETY: the emitter defines every kernel symbol with exactly this signature.
            unsafe { library.get::<KernelFn>(name) }.map(|s| *s).map_err(|e| fail(e.to_string()))
        };
        let kernels = [
            kernel(Kernel::Bounds)?,
            kernel(Kernel::Regimes)?,
            kernel(Kernel::Step)?,
            kernel(Kernel::Vjp)?,
            kernel(Kernel::BoundsVjp)?,
        ];
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
            Kernel::BoundsVjp => 4,
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
        let interp = Interp::new(self.module);
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
