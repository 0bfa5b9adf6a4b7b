//! The `rgdiff` command line: parses arguments, calls the library, prints results.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use rgdiff::exact::{self, ExactOptions, Sector, SectorChoice};
use rgdiff::report;
use rgdiff::spec;

#[derive(Parser)]
#[command(
    name = "rgdiff",
    version,
    about = "Renormalizing diffusion models for lattice ground states and field sampling, with exact solvers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Exact ground state (and low levels) of a Hamiltonian file by Lanczos.
    Exact {
        /// Hamiltonian file (TOML), e.g. hamiltonians/heisenberg_chain_16.toml
        file: PathBuf,
        /// Symmetry sector: auto, full, or e.g. sz=0 | sz=1/2 | sz=0,k=8,p=+1 | kx=0,ky=0
        #[arg(long, default_value = "auto")]
        sector: String,
        /// Number of distinct lowest levels to converge (2 or more reports the gap).
        #[arg(long, default_value_t = 1)]
        levels: usize,
        /// Relative convergence tolerance of the energies.
        #[arg(long, default_value_t = 1e-10)]
        tol: f64,
        /// Seed of the Lanczos start vector.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Memory limit in GiB (default: the available memory).
        #[arg(long)]
        memory: Option<f64>,
        /// Print one JSON object on stdout instead of the table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    let _ = e.print();
                    return ExitCode::SUCCESS;
                }
                ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    let _ = e.print();
                    return ExitCode::from(2);
                }
                _ => {}
            }
            // One line, like every other error: clap's first line without its own prefix.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("rgdiff: error: {first} (see rgdiff --help)");
            return ExitCode::from(2);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rgdiff: error: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> rgdiff::Result<()> {
    match cli.command {
        Command::Exact {
            file,
            sector,
            levels,
            tol,
            seed,
            memory,
            json,
        } => {
            let problem = spec::load(&file)?;
            if levels == 0 {
                return Err(rgdiff::Error::Input("--levels must be at least 1".into()));
            }
            if !(tol > 0.0 && tol < 1e-2) {
                return Err(rgdiff::Error::Input("--tol must lie in (0, 0.01)".into()));
            }
            let sector = match sector.as_str() {
                "auto" => SectorChoice::Auto,
                s => SectorChoice::Fixed(Sector::parse(s, &problem.lattice)?),
            };
            let opts = ExactOptions {
                sector,
                levels,
                tol,
                seed,
                memory_limit: memory.map(|g| (g * (1u64 << 30) as f64) as u64),
                progress: !json,
            };
            let result = exact::solve(&problem.lattice, &problem.model, &opts)?;
            if json {
                println!("{}", report::exact_json(&problem, &result));
            } else {
                print!("{}", report::exact_text(&problem, &result));
            }
            Ok(())
        }
    }
}
