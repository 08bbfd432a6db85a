//! `hmdpc report`: summarises a sweep folder's finished runs (see [`hmdp::sweep::report`]):
//! prints the tables and writes them as Markdown, CSV and JSON with the plots.

use std::path::PathBuf;

use hmdp::sweep;

use super::exit;

#[derive(clap::Args)]
pub struct Args {
    /// A sweep folder written by `hmdpc sweep` (or by the Python package's Ray sweep).
    #[arg(value_name = "SWEEP_DIR")]
    sweep: PathBuf,
    /// Where to write the report's files [default: the sweep folder].
    #[arg(long, short = 'o', value_name = "DIR")]
    out: Option<PathBuf>,
}

pub fn run(args: Args) -> u8 {
    let sweep = match sweep::open(&args.sweep) {
        Ok(sweep) => sweep,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
    let report = match sweep::report::collect(&sweep, &|run| sweep::action_dimension(&sweep, run)) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::FAILED;
        }
    };
    print!("{}", sweep::report::markdown(&report));
    let out = args.out.unwrap_or_else(|| args.sweep.clone());
    match sweep::write_report(&report, &out) {
        Ok(files) => {
            let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
            println!("\nwritten: {}", names.join(", "));
            exit::OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::FAILED
        }
    }
}
