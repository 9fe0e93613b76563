//! `mizzen up`'s default mode: each component is its own process, the binary
//! of the same name started with the command line of the [`Plan`].
//!
//! Every binary is found before any starts (`--bin-dir`, else beside this
//! `mizzen`, else PATH). Each child's stdout and stderr are relayed line by
//! line to the console behind its name (`pilot   | …`). A child that exits
//! before the stop stops the others. On stop every running child gets SIGTERM
//! (each finishes its in-flight work, as under Kubernetes), and one still
//! running after [`STOP_TIMEOUT`] gets SIGKILL. Children are killed if this
//! process dies before it can stop them itself (`kill_on_drop`).

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use rustix::process::{Pid, Signal};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{Component, Console, Plan, STOP_TIMEOUT, UpArgs, UpError, ready_banner, wait_ready};

/// Where a component's binary is: `bin_dir`, else beside this executable, else
/// on PATH.
pub fn find_binary(name: &'static str, bin_dir: Option<&Path>) -> Result<PathBuf, UpError> {
    let dirs: Vec<PathBuf> = match bin_dir {
        Some(dir) => vec![dir.to_path_buf()],
        None => std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(Path::to_path_buf))
            .into_iter()
            .chain(
                std::env::var_os("PATH")
                    .iter()
                    .flat_map(std::env::split_paths),
            )
            .collect(),
    };
    dirs.iter()
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .ok_or_else(|| UpError::MissingBinary {
            name,
            searched: match bin_dir {
                Some(dir) => dir.display().to_string(),
                None => "the directory of mizzen and PATH".to_string(),
            },
        })
}

/// A started component: its pid, until it is seen to exit.
struct Children {
    running: BTreeMap<&'static str, Pid>,
    exits: mpsc::UnboundedReceiver<(&'static str, String)>,
    relays: Vec<JoinHandle<()>>,
}

impl Children {
    /// Sends `signal` to every child still running.
    fn signal(&self, signal: Signal) {
        for pid in self.running.values() {
            let _ = rustix::process::kill_process(*pid, signal);
        }
    }

    /// The next child to exit, as (name, how).
    async fn next_exit(&mut self) -> (&'static str, String) {
        match self.exits.recv().await {
            Some((name, status)) => {
                self.running.remove(name);
                (name, status)
            }
            // Every waiter is gone: nothing will exit any more.
            None => std::future::pending().await,
        }
    }

    /// SIGTERM to every running child, SIGKILL to those still running after
    /// [`STOP_TIMEOUT`]; then the last relayed lines.
    async fn stop(mut self, console: &Console) {
        self.signal(Signal::TERM);
        let deadline = tokio::time::Instant::now() + STOP_TIMEOUT;
        while !self.running.is_empty() {
            match tokio::time::timeout_at(deadline, self.next_exit()).await {
                Ok((name, status)) => {
                    console.print(&format!("mizzen up: {name} stopped ({status})"))
                }
                Err(_) => {
                    let names: Vec<&str> = self.running.keys().copied().collect();
                    console.print(&format!(
                        "mizzen up: {} did not stop within {}s of SIGTERM; killing",
                        names.join(", "),
                        STOP_TIMEOUT.as_secs()
                    ));
                    self.signal(Signal::KILL);
                    while !self.running.is_empty() {
                        self.next_exit().await;
                    }
                }
            }
        }
        for relay in self.relays {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), relay).await;
        }
    }
}

/// Starts every component as a process and supervises them until `shutdown`.
pub async fn run(
    args: &UpArgs,
    plan: &Plan,
    console: Console,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), UpError> {
    let programs = plan
        .commands
        .iter()
        .map(|(component, argv)| {
            find_binary(component.name(), args.bin_dir.as_deref())
                .map(|program| (*component, program, argv.clone()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (exited, exits) = mpsc::unbounded_channel();
    let mut children = Children {
        running: BTreeMap::new(),
        exits,
        relays: Vec::new(),
    };
    let width = Component::ALL
        .iter()
        .map(|c| c.name().len())
        .max()
        .unwrap_or(0);
    for (component, program, argv) in programs {
        let name = component.name();
        let mut command = tokio::process::Command::new(&program);
        command
            .args(&argv)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if !std::io::stdout().is_terminal() {
            command.env("NO_COLOR", "1");
        }
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(source) => {
                children.stop(&console).await;
                return Err(UpError::Spawn {
                    name,
                    program: program.display().to_string(),
                    source,
                });
            }
        };
        let prefix = format!("{name:<width$} | ");
        if let Some(out) = child.stdout.take() {
            children
                .relays
                .push(relay(out, prefix.clone(), console.clone()));
        }
        if let Some(err) = child.stderr.take() {
            children.relays.push(relay(err, prefix, console.clone()));
        }
        let pid = child.id().and_then(|id| Pid::from_raw(id as i32));
        console.print(&format!(
            "mizzen up: started {name} ({}, pid {})",
            program.display(),
            child
                .id()
                .map_or_else(|| "?".to_string(), |id| id.to_string())
        ));
        if let Some(pid) = pid {
            children.running.insert(name, pid);
        }
        let exited = exited.clone();
        tokio::spawn(async move {
            let status = match child.wait().await {
                Ok(status) => status.to_string(),
                Err(e) => format!("cannot wait for it: {e}"),
            };
            let _ = exited.send((name, status));
        });
    }
    drop(exited);

    tokio::pin!(shutdown);
    let started = tokio::select! {
        ready = wait_ready(plan, &console) => ready.map(|()| true),
        (name, status) = children.next_exit() => Err(UpError::Exited { name, status }),
        () = &mut shutdown => Ok(false),
    };
    let outcome = match started {
        Ok(true) => {
            console.print(&ready_banner(plan, "processes", &args.config));
            tokio::select! {
                (name, status) = children.next_exit() => Err(UpError::Exited { name, status }),
                () = &mut shutdown => Ok(()),
            }
        }
        other => other.map(|_| ()),
    };
    if outcome.is_ok() {
        console.print("mizzen up: stopping (SIGTERM to every component)");
    }
    children.stop(&console).await;
    outcome
}

/// Relays `reader`'s lines to the console behind `prefix`.
pub(crate) fn relay(
    reader: impl AsyncRead + Unpin + Send + 'static,
    prefix: String,
    console: Console,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(reader).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            console.print(&format!("{prefix}{line}"));
        }
    })
}
