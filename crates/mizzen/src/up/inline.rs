//! `mizzen up --in-process`: galley, citadel and pilot as libraries in this
//! process, composed as each binary's `main` composes its own.
//!
//! Each component's `Config` is parsed from the same command line the process
//! mode would give its binary, so both modes run the same configuration. Log
//! lines come from one subscriber; their targets (`pilot::…`, `citadel::…`)
//! name the component. One [`Stop`] ends all three: Ctrl-C or SIGTERM, or the
//! first component to fail.

use clap::Parser;
use common::runtime::Stop;
use tokio::task::JoinSet;

use super::{Component, Console, Plan, UpError, ready_banner, wait_ready};

/// How a component's task ended, as the [`JoinSet`] reports it.
type Joined = Option<Result<(Component, Result<(), String>), tokio::task::JoinError>>;

/// Parses `component`'s command line into its `Config`.
fn config<C: Parser>(plan: &Plan, component: Component) -> Result<C, UpError> {
    let argv = plan
        .commands
        .iter()
        .find(|(c, _)| *c == component)
        .map(|(_, argv)| argv.as_slice())
        .unwrap_or_default();
    C::try_parse_from(std::iter::once(component.name()).chain(argv.iter().map(String::as_str)))
        .map_err(|e| UpError::Start {
            name: component.name(),
            reason: e.to_string(),
        })
}

fn start_error(component: Component) -> impl Fn(String) -> UpError {
    move |reason| UpError::Start {
        name: component.name(),
        reason,
    }
}

/// Builds the three apps, then serves until `shutdown` or a failure.
pub async fn run(
    plan: &Plan,
    console: Console,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), UpError> {
    let galley = galley::app::App::build(config(plan, Component::Galley)?)
        .await
        .map_err(|e| start_error(Component::Galley)(e.to_string()))?;
    let citadel = citadel::app::App::build(config(plan, Component::Citadel)?)
        .await
        .map_err(|e| start_error(Component::Citadel)(e.to_string()))?;
    let pilot_config: pilot::app::Config = config(plan, Component::Pilot)?;
    let config_dir = pilot_config.config_dir.first().cloned().unwrap_or_default();
    let pilot = pilot::app::App::build(pilot_config)
        .await
        .map_err(|e| start_error(Component::Pilot)(e.to_string()))?;

    let stop = Stop::new();
    let mut apps: JoinSet<(Component, Result<(), String>)> = JoinSet::new();
    let until = stop.stopped();
    apps.spawn(async move {
        let r = galley.run_until(until).await.map_err(|e| e.to_string());
        (Component::Galley, r)
    });
    let until = stop.stopped();
    apps.spawn(async move {
        let r = citadel.run_until(until).await.map_err(|e| e.to_string());
        (Component::Citadel, r)
    });
    let until = stop.stopped();
    apps.spawn(async move {
        let r = pilot.run_until(until).await.map_err(|e| e.to_string());
        (Component::Pilot, r)
    });

    tokio::pin!(shutdown);
    let ended = |joined: Joined| {
        let (name, status) = match joined {
            Some(Ok((component, Ok(())))) => (component.name(), "stopped on its own".to_string()),
            Some(Ok((component, Err(e)))) => (component.name(), format!("failed: {e}")),
            Some(Err(e)) => ("a component", format!("panicked: {e}")),
            None => ("every component", "gone".to_string()),
        };
        UpError::Exited { name, status }
    };
    let outcome = tokio::select! {
        ready = wait_ready(plan, &console) => match ready {
            Ok(()) => {
                console.print(&ready_banner(plan, "in-process", &config_dir));
                tokio::select! {
                    joined = apps.join_next() => Err(ended(joined)),
                    () = &mut shutdown => Ok(()),
                }
            }
            Err(e) => Err(e),
        },
        joined = apps.join_next() => Err(ended(joined)),
        () = &mut shutdown => Ok(()),
    };
    if outcome.is_ok() {
        console.print("mizzen up: stopping every component");
    }
    stop.trigger();
    while let Some(joined) = apps.join_next().await {
        match joined {
            Ok((component, Ok(()))) => {
                console.print(&format!("mizzen up: {} stopped", component.name()))
            }
            Ok((component, Err(e))) => console.print(&format!(
                "mizzen up: {} stopped with an error: {e}",
                component.name()
            )),
            Err(e) => console.print(&format!("mizzen up: a component panicked: {e}")),
        }
    }
    outcome
}
