//! The `mizzen` binary: parse flags, run the command, exit with its status.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = mizzen::cli::Cli::parse();
    // Not locked for the whole run: `mizzen up` writes from several tasks.
    let code = mizzen::run(cli, &mut std::io::stdout(), &mut std::io::stderr());
    std::process::ExitCode::from(code)
}
