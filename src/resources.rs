//! The memory a command will need, estimated from the model's sizes before anything large is
//! allocated, against the machine's memory: a problem that cannot fit is refused with a
//! diagnostic at the declaration that makes it large, instead of an abort half way.
//!
//! The estimates are lower bounds: they count only the arrays a command certainly holds at
//! once (one copy of every buffer, the scenarios it keeps, the networks and their optimiser),
//! so a refusal is never wrong; a command that passes may still need more.

use crate::backend::is_shared;
use crate::ir::{BufferKind, Module};

/// What a command will hold in memory at once, part by part.
#[derive(Clone, Debug, Default)]
pub struct Need {
    parts: Vec<Part>,
}

/// One part of a [`Need`]: what it is, how many bytes, and the model's buffer that makes it
/// largest (where a refusal points).
#[derive(Clone, Debug)]
struct Part {
    what: String,
    bytes: u128,
    buffer: Option<String>,
    /// What makes this part smaller.
    fix: &'static str,
}

/// Why a command is refused: its need, the machine's memory, and the buffer to point at.
#[derive(Clone, Debug, PartialEq)]
pub struct TooLarge {
    /// One line: how much, against how much.
    pub message: String,
    /// The largest parts, one line each, largest first.
    pub parts: Vec<String>,
    /// The buffer that makes the largest part large, by name.
    pub buffer: Option<String>,
    /// What makes the largest part smaller.
    pub fix: &'static str,
}

const SIZES: &str = "make the sizes smaller (`--set`)";

/// The declared name a buffer comes from: `x` for `x'`, `x.adj` or `q.piece_hi`.
fn declared(buffer: &str) -> String {
    buffer.split('.').next().unwrap_or(buffer).trim_end_matches('\'').to_string()
}

/// The elements of one copy of buffer `id`, without overflow.
fn elements(module: &Module, id: usize) -> u128 {
    module.buffers[id]
        .dims
        .iter()
        .map(|d| module.sets.get(*d).map_or(0, |s| s.len() as u128))
        .fold(1, u128::saturating_mul)
}

/// The largest buffer among those `pick` selects, by name, with the elements of all of them.
fn buffers(module: &Module, pick: impl Fn(&BufferKind) -> bool) -> (u128, Option<String>) {
    let mut total = 0u128;
    let mut largest: Option<(u128, &str)> = None;
    for (id, b) in module.buffers.iter().enumerate().filter(|(_, b)| pick(&b.kind)) {
        let n = elements(module, id);
        total = total.saturating_add(n);
        if largest.is_none_or(|(m, _)| n > m) {
            largest = Some((n, &b.name));
        }
    }
    // An adjoint or a next state is named after the buffer it belongs to.
    (total, largest.map(|(_, name)| declared(name)))
}

impl Need {
    pub fn new() -> Need {
        Need::default()
    }

    fn add(mut self, what: impl Into<String>, bytes: u128, buffer: Option<String>, fix: &'static str) -> Need {
        self.parts.push(Part { what: what.into(), bytes, buffer, fix });
        self
    }

    /// One copy of every buffer of the model, as the instance and the interpreter hold them.
    pub fn model(self, module: &Module) -> Need {
        let (n, buffer) = buffers(module, |_| true);
        self.add("one copy of the model's buffers", n.saturating_mul(8), buffer, SIZES)
    }

    /// `copies` scenarios' own buffers at once (a batch, or one per thread).
    pub fn scenarios_at_once(self, module: &Module, copies: usize) -> Need {
        let (n, buffer) = buffers(module, |k| !is_shared(*k));
        let bytes = n.saturating_mul(8).saturating_mul(copies as u128);
        self.add(
            format!("{copies} scenarios' buffers at once"),
            bytes,
            buffer,
            "make the sizes (`--set`) or the batch smaller",
        )
    }

    /// `count` stored scenarios: initial states and every step's noise, for `horizon` steps.
    pub fn stored_scenarios(self, module: &Module, what: &str, count: usize, horizon: u64) -> Need {
        let (states, state) = buffers(module, |k| *k == BufferKind::State);
        let (noise, noise_buffer) = buffers(module, |k| *k == BufferKind::Noise);
        let per_scenario = states.saturating_add(noise.saturating_mul(u128::from(horizon)));
        let buffer = if noise.saturating_mul(u128::from(horizon)) > states { noise_buffer } else { state };
        let bytes = per_scenario.saturating_mul(8).saturating_mul(count as u128);
        self.add(
            format!("{count} {what} scenarios"),
            bytes,
            buffer,
            "make the sizes, the horizon or the scenarios (`--scenarios`) fewer",
        )
    }

    /// The trajectories of a training batch: each step's states, actions and costs.
    pub fn trajectories(self, module: &Module, batch: usize, horizon: u64) -> Need {
        let (n, buffer) = buffers(module, |k| {
            matches!(k, BufferKind::State | BufferKind::Discrete | BufferKind::Continuous | BufferKind::Cost)
        });
        let bytes = n.saturating_mul(8).saturating_mul(batch as u128).saturating_mul(u128::from(horizon));
        self.add(
            format!("the trajectories of a batch of {batch}"),
            bytes,
            buffer,
            "make the sizes, the horizon or the batch (`--batch`) smaller",
        )
    }

    /// Networks with these layer widths (inputs, hidden layers, outputs), each with a gradient
    /// and Adam's two moments, all in `f32`; `heads` networks of the same shape.
    pub fn networks(self, widths: &[usize], heads: usize) -> Need {
        let params: u128 = widths.windows(2).map(|w| (w[0] as u128 + 1).saturating_mul(w[1] as u128)).sum();
        let bytes = params.saturating_mul(4 * 4).saturating_mul(heads as u128);
        let fix = "make the networks (`--hidden`) or the observed state (`observe`) smaller";
        self.add(format!("{heads} networks of widths {widths:?} with their optimiser"), bytes, None, fix)
    }

    /// The bytes of all parts.
    pub fn bytes(&self) -> u128 {
        self.parts.iter().fold(0, |sum, p| sum.saturating_add(p.bytes))
    }

    /// Refuses a need above `memory` bytes.
    pub fn fits(&self, memory: u64, command: &str) -> Result<(), TooLarge> {
        let bytes = self.bytes();
        if bytes <= u128::from(memory) {
            return Ok(());
        }
        let mut parts = self.parts.clone();
        parts.sort_by_key(|p| std::cmp::Reverse(p.bytes));
        Err(TooLarge {
            message: format!(
                "{command} needs at least {} of memory, more than this machine's {}",
                human(bytes),
                human(u128::from(memory))
            ),
            parts: parts
                .iter()
                .filter(|p| p.bytes > 0)
                .take(3)
                .map(|p| format!("{}: {}", p.what, human(p.bytes)))
                .collect(),
            buffer: parts[0].buffer.clone(),
            fix: parts[0].fix,
        })
    }
}

/// Bytes in the largest binary unit that keeps the number at least 1.
pub fn human(bytes: u128) -> String {
    const UNITS: [&str; 7] = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} bytes") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// The memory this process may use: the machine's, or its control group's limit when lower.
/// `HMDP_MEMORY` (bytes) sets it instead, for tests and for a share of a larger machine.
pub fn machine_memory() -> Option<u64> {
    if let Some(bytes) = std::env::var("HMDP_MEMORY").ok().and_then(|v| v.trim().parse().ok()) {
        return Some(bytes);
    }
    let total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|text| {
        let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        kib.checked_mul(1024)
    })?;
    let limit = ["/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok()?.trim().parse::<u64>().ok())
        .min();
    Some(limit.map_or(total, |l| l.min(total)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_in_binary_units() {
        assert_eq!(human(512), "512 bytes");
        assert_eq!(human(3 << 30), "3.0 GiB");
        assert_eq!(human(u128::MAX), format!("{:.1} EiB", u128::MAX as f64 / (1u128 << 60) as f64));
    }

    #[test]
    fn a_need_above_the_memory_is_refused_with_its_largest_parts() {
        let need = Need::new().networks(&[4, 65536, 65536, 1], 3);
        let refused = need.fits(1 << 34, "train").expect_err("about 200 GiB");
        assert!(refused.message.starts_with("train needs at least 19"), "{}", refused.message);
        assert!(refused.message.ends_with("more than this machine's 16.0 GiB"), "{}", refused.message);
        assert_eq!(refused.parts.len(), 1);
        assert!(Need::new().networks(&[4, 64, 64, 1], 3).fits(1 << 34, "train").is_ok());
    }
}
