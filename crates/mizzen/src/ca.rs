//! `mizzen ca`: look at what citadel, the mesh CA, has done.
//!
//! `mizzen ca list` opens citadel's issuance ledger read-side
//! ([`citadel::ledger::Ledger::open_existing`], which never creates a database) and
//! prints the certificates it issued, newest first, as a table or JSON. Exits 0 when
//! it printed, 1 when the ledger is missing or unreadable.

use std::io::Write;
use std::path::PathBuf;

use citadel::ledger::{Ledger, ListQuery, Record};
use clap::{Args, Subcommand, ValueEnum};

use crate::EXIT_OK;

/// Exit status of a `mizzen ca` command that failed (no ledger, unreadable).
pub const EXIT_CA_ERROR: u8 = 1;

/// `mizzen ca`.
#[derive(Debug, Clone, Args)]
pub struct CaArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: CaCommand,
}

/// The `mizzen ca` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum CaCommand {
    /// List the certificates citadel issued, newest first, from its ledger.
    List(ListArgs),
}

/// `mizzen ca list`.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Citadel's key directory; the ledger is DIR/ledger.db.
    #[arg(long, env = "CITADEL_KEY_DIR", default_value = ".mizzen/citadel")]
    pub key_dir: PathBuf,
    /// The ledger's URL (sqlite://PATH or postgres://…); overrides --key-dir.
    #[arg(long, env = "CITADEL_DB_URL")]
    pub db_url: Option<String>,
    /// Show at most this many certificates.
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// Show only certificates for this SPIFFE ID.
    #[arg(long)]
    pub spiffe_id: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = ListOutput::Table)]
    pub output: ListOutput,
}

/// Output formats of `mizzen ca list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum ListOutput {
    /// Aligned columns with a header.
    #[default]
    Table,
    /// A JSON array of records.
    Json,
}

/// Why `mizzen ca` failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The ledger could not be opened or read.
    #[error(transparent)]
    Ledger(#[from] citadel::ledger::LedgerError),
    /// The async runtime could not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// Writing the output failed.
    #[error("cannot write output: {0}")]
    Io(#[from] std::io::Error),
    /// Encoding the output failed.
    #[error("cannot encode output: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Runs a `mizzen ca` command; returns the exit status (errors are printed to `err`).
pub fn run(args: &CaArgs, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let result = match &args.command {
        CaCommand::List(list_args) => list(list_args, out),
    };
    match result {
        Ok(()) => EXIT_OK,
        Err(e) => {
            let _ = writeln!(err, "Error: {e}");
            EXIT_CA_ERROR
        }
    }
}

/// `mizzen ca list`.
pub fn list(args: &ListArgs, out: &mut dyn Write) -> Result<(), Error> {
    let url = args
        .db_url
        .clone()
        .unwrap_or_else(|| Ledger::default_url(&args.key_dir));
    let query = ListQuery {
        limit: Some(args.limit),
        spiffe_id: args.spiffe_id.clone(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    let records = runtime.block_on(async {
        let ledger = Ledger::open_existing(&url).await?;
        let records = ledger.list(&query).await;
        ledger.close().await;
        records
    })?;
    match args.output {
        ListOutput::Json => {
            serde_json::to_writer_pretty(&mut *out, &records)?;
            writeln!(out)?;
        }
        ListOutput::Table => print_table(&records, out)?,
    }
    Ok(())
}

fn print_table(records: &[Record], out: &mut dyn Write) -> std::io::Result<()> {
    let header = [
        "SERIAL",
        "SPIFFE ID",
        "NOT BEFORE",
        "NOT AFTER",
        "REQUESTER",
        "KEY",
        "AUTHENTICATOR",
    ];
    let rows: Vec<[String; 7]> = records
        .iter()
        .map(|r| {
            let i = &r.issuance;
            [
                i.serial.clone(),
                i.spiffe_id.clone(),
                rfc3339(i.not_before),
                rfc3339(i.not_after),
                i.requester.clone(),
                i.key_algorithm.clone(),
                i.authenticator.clone(),
            ]
        })
        .collect();
    let rows: Vec<Vec<String>> = rows.into_iter().map(Vec::from).collect();
    out.write_all(crate::table::render(&header, &rows, 3).as_bytes())
}

use common::time::rfc3339_secs as rfc3339;

#[cfg(test)]
mod tests {
    use super::rfc3339;

    #[test]
    fn formats_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_868_799), "2000-02-29T23:59:59Z");
        assert_eq!(rfc3339(1_709_251_200), "2024-03-01T00:00:00Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
    }
}
