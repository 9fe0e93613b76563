//! The `mizzen` binary: parse flags, run the command, exit with its status.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = mizzen::cli::Cli::parse();
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let code = mizzen::run(cli, &mut stdout.lock(), &mut stderr.lock());
    std::process::ExitCode::from(code)
}
