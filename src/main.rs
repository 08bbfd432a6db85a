//! `hmdpc`, the command line: parses the arguments and runs one command of [`cli`]. Everything
//! else is the `hmdp` library; exit codes are in [`cli::exit`].

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    let (args, matches) = match cli::parse() {
        Ok(parsed) => parsed,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { cli::exit::USAGE } else { cli::exit::OK });
        }
    };
    // Output piped into a program that stopped reading panics in `println!`: that is a quiet
    // stop, not a bug, so its panic message is not printed.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !info.payload().downcast_ref::<String>().is_some_and(|m| cli::is_broken_pipe(m)) {
            default_hook(info);
        }
    }));
    ExitCode::from(guarded(move || cli::run(args, &matches)))
}

/// Runs a command on a thread with a large stack (the front end recurses over expressions,
/// bounded by the parser's depth limit) and turns a panic into its exit code: a broken pipe is
/// a quiet stop, anything else is our bug.
fn guarded(command: impl FnOnce() -> u8 + Send + 'static) -> u8 {
    let worker = std::thread::Builder::new().stack_size(256 << 20).spawn(command);
    match worker.map(|w| w.join()) {
        Ok(Ok(code)) => code,
        Ok(Err(payload)) if payload.downcast_ref::<String>().is_some_and(|m| cli::is_broken_pipe(m)) => {
            cli::exit::BROKEN_PIPE
        }
        _ => {
            eprintln!("error: hmdpc failed unexpectedly; please report this with the model that caused it");
            cli::exit::INTERNAL
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{cli, guarded};

    #[test]
    fn command_line_is_well_formed() {
        use clap::CommandFactory;
        cli::Cli::command().debug_assert();
    }

    /// Exit code 3 has no input that reaches it (that would be a bug to fix), so the mapping of
    /// a panic to it is tested here, with the broken pipe beside it.
    #[test]
    fn a_panic_exits_3_and_a_broken_pipe_141() {
        assert_eq!(guarded(|| cli::exit::FAILED), cli::exit::FAILED);
        assert_eq!(guarded(|| panic!("a bug")), cli::exit::INTERNAL);
        let pipe = || std::panic::panic_any("failed printing to stdout: Broken pipe (os error 32)".to_string());
        assert_eq!(guarded(pipe), cli::exit::BROKEN_PIPE);
    }
}
