//! Running `iptables-save` and `iptables-restore` (or their `ip6tables`
//! twins): found on `PATH` or in the sbin directories, fed on stdin, bounded in
//! time, and their failures turned into [`Error`]s that say what to do.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::rules::Family;
use super::{Error, Result};

/// How long one iptables program may run.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Where iptables lives when `PATH` (of a non-login or non-root shell) misses it.
const SBIN: [&str; 3] = ["/usr/sbin", "/sbin", "/usr/local/sbin"];

/// The path of `program`, from `PATH` or the sbin directories.
pub(super) fn find(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(SBIN.iter().map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// `iptables-save -t nat` (or `ip6tables-save`): the current `nat` rules.
pub(super) fn save(family: Family) -> Result<String> {
    run(family.save_program(), &["-t", "nat"], None)
}

/// `iptables-restore --noflush` (or `ip6tables-restore`) with `script` on stdin.
pub(super) fn restore(family: Family, script: &str) -> Result<()> {
    run(family.restore_program(), &["--noflush"], Some(script)).map(drop)
}

/// Runs `program args` with `stdin`, waits at most [`TIMEOUT`], and returns its
/// stdout when it succeeds.
fn run(program: &'static str, args: &[&str], stdin: Option<&str>) -> Result<String> {
    let path = find(program).ok_or(Error::ProgramNotFound { program })?;
    let shown = format!("{program} {}", args.join(" "));
    let spawn_error = |source| Error::Spawn {
        program: shown.clone(),
        source,
    };
    let mut child = Command::new(&path)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_error)?;
    // Feed and drain on threads so a full pipe never blocks the wait below. A
    // write error (the program exited early) shows in its status instead.
    let writer = child.stdin.take().map(|mut pipe| {
        let input = stdin.unwrap_or_default().to_owned();
        thread::spawn(move || {
            let _ = pipe.write_all(input.as_bytes());
        })
    });
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        match child.try_wait().map_err(spawn_error)? {
            Some(status) => break status,
            None if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::Timeout {
                    program: shown,
                    seconds: TIMEOUT.as_secs(),
                });
            }
        }
    };
    if let Some(writer) = writer {
        let _ = writer.join();
    }
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    if status.success() {
        return Ok(stdout);
    }
    let stderr = stderr.trim().to_owned();
    let hint = hint(program, &stderr);
    Err(Error::Failed {
        program: shown,
        status,
        stderr,
        hint,
    })
}

/// Reads a pipe to the end on a thread.
fn drain(pipe: Option<impl Read + Send + 'static>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_string(&mut text);
        }
        text
    })
}

/// What to do about a failure, from what the program said.
fn hint(program: &str, stderr: &str) -> String {
    let lower = stderr.to_ascii_lowercase();
    if lower.contains("permission denied") || lower.contains("must be root") {
        "; run proxy init as root, or with CAP_NET_ADMIN and CAP_NET_RAW as istio-init is"
            .to_owned()
    } else if lower.contains("table does not exist") || lower.contains("can't initialize") {
        "; the kernel lacks this nat table (load the iptable_nat/ip6table_nat module), or pass \
         --ipv6 never to leave IPv6 alone"
            .to_owned()
    } else if program.ends_with("-restore") {
        "; `proxy init --dry-run` prints the input it was given".to_owned()
    } else {
        String::new()
    }
}
