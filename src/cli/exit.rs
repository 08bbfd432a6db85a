//! Every exit code of `hmdpc`, in one place (documented in `docs/language.md`, each exercised by
//! `tests/cli.rs`).

/// Success: every model is clean (warnings allowed), the command did what it was asked.
pub const OK: u8 = 0;
/// A model has errors, a run failed (a NaN cost, a gradient check above its tolerance), or a
/// run folder is damaged.
pub const FAILED: u8 = 1;
/// A usage error: a bad flag, a missing file, a `--set` of an unknown name, a run folder that
/// exists or does not. clap uses it for its own errors too.
pub const USAGE: u8 = 2;
/// A bug in hmdp: a panic, or a compiled model its own validator refuses.
pub const INTERNAL: u8 = 3;
/// A second Ctrl-C during training: stopped at once (the first stops after the current update
/// and exits normally).
pub const INTERRUPTED: u8 = 130;
/// The reader of our output went away (`hmdpc ... | head`): stopped quietly, as Unix tools do.
pub const BROKEN_PIPE: u8 = 141;
