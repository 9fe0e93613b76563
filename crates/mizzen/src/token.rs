//! `mizzen token create`: a service-account token for local mode.
//!
//! Outside Kubernetes nobody projects service-account tokens, so this command mints
//! one with citadel's local issuer ([`citadel::local_issuer::LocalIssuer`]): the key
//! lives in `--key-dir` (created on first use, shared with citadel, which verifies
//! the tokens against `<key-dir>/jwks.json`). The token goes to stdout on one line,
//! ready for `authorization: Bearer <token>`.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::{EXIT_INVALID, EXIT_OK};

/// `mizzen token`.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// What to do with tokens.
    #[command(subcommand)]
    pub command: TokenCommand,
}

/// The `mizzen token` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum TokenCommand {
    /// Mint a service-account token citadel accepts in local mode (ES256, issuer
    /// `mizzen-local`), and print it.
    Create(CreateArgs),
}

/// `mizzen token create`.
#[derive(Debug, Clone, Args)]
pub struct CreateArgs {
    /// The service account's namespace.
    #[arg(short = 'n', long)]
    pub namespace: String,
    /// The service account.
    #[arg(short = 's', long)]
    pub service_account: String,
    /// The directory holding the issuer key (`issuer-key.pem`, created if missing)
    /// and the JWKS citadel reads (`jwks.json`); give citadel the same directory.
    #[arg(long, env = "CITADEL_KEY_DIR", default_value = ".mizzen/citadel")]
    pub key_dir: PathBuf,
    /// The token's audience (citadel expects `istio-ca`).
    #[arg(long, default_value = "istio-ca")]
    pub audience: String,
    /// How long the token is valid, in Go's syntax (`1h`, `30m`, `90s`).
    #[arg(long, default_value = "1h", value_parser = common::runtime::duration_flag)]
    pub ttl: Duration,
}

/// Runs `mizzen token ...`; returns the exit status (errors are written to `err`).
pub fn run(args: &TokenArgs, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    match &args.command {
        TokenCommand::Create(create_args) => match create(create_args) {
            Ok(token) => match writeln!(out, "{token}") {
                Ok(()) => EXIT_OK,
                Err(e) => {
                    let _ = writeln!(err, "Error: cannot write the token: {e}");
                    EXIT_INVALID
                }
            },
            Err(e) => {
                let _ = writeln!(err, "Error: {e}");
                EXIT_INVALID
            }
        },
    }
}

/// Mints the token `args` describe.
pub fn create(args: &CreateArgs) -> Result<String, citadel::local_issuer::LocalIssuerError> {
    // Check the names before touching the key directory.
    common::spiffe::Identity::new(
        common::spiffe::DEFAULT_TRUST_DOMAIN,
        &args.namespace,
        &args.service_account,
    )?;
    let issuer = citadel::local_issuer::LocalIssuer::load_or_create(&args.key_dir)?;
    issuer.mint(
        &args.namespace,
        &args.service_account,
        &args.audience,
        args.ttl,
    )
}
