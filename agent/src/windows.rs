//! The agent as a Windows service: what `census-agent service` does when the Service Control
//! Manager (SCM) starts it.
//!
//! **Untested.** This file is compiled for Windows by `.ci/windows-check.sh` but has never
//! run: no Windows machine was at hand. It follows the `windows-service` crate's own example.
//!
//! How the binary knows it runs under the SCM: the service is registered with the hidden
//! `service` command (see `packaging/windows/README.md`), not with `run`. So `run` means the
//! same thing on every OS (the loop in the foreground, stopped by Ctrl-C), nothing probes
//! whether an SCM is listening, and a mistake says so plainly: `census-agent service` typed in
//! a console fails at once with "not started by the Service Control Manager".
//!
//! The flow: [`run_service`] hands the SCM the entry point, and the SCM's dispatcher holds the
//! main thread until the service has stopped. The SCM calls the entry point on a thread of its
//! own, which registers a control handler, reports *running*, and runs the service loop
//! ([`service::run_until`]) until the handler is told to stop (`SERVICE_CONTROL_STOP`, or
//! `SERVICE_CONTROL_SHUTDOWN` when Windows shuts down). Then it reports *stopped*, with the
//! exit code `census-agent` would have exited with as the service-specific code when the loop
//! failed (shown by `sc query` and in the System event log).
//!
//! Logs go to standard error, which the SCM discards: a service's logs are not kept yet
//! (the Windows event log is the place; see the README).

use std::ffi::OsString;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;
use tracing::{error, info};
use windows_service::service::{
    ServiceControl, ServiceControlAccept, ServiceExitCode, ServiceState, ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
use windows_service::{define_windows_service, service_dispatcher};

use crate::config::Config;
use crate::service;

/// The service's name in the SCM (`sc.exe query CensusAgent`).
pub const SERVICE_NAME: &str = "CensusAgent";

/// How long the SCM should wait for the loop to stop: it stops at its next await, and leaves a
/// collection that is still running behind after two seconds.
const STOP_WAIT_HINT: Duration = Duration::from_secs(10);

/// The configuration `main` loaded, for the entry point, which the SCM calls without a way to
/// pass it.
static CONFIG: Mutex<Option<Config>> = Mutex::new(None);

/// Runs as the service `SERVICE_NAME`; returns once it has stopped.
pub fn run_service(config: Config) -> anyhow::Result<()> {
    *CONFIG.lock().unwrap_or_else(|p| p.into_inner()) = Some(config);
    service_dispatcher::start(SERVICE_NAME, ffi_service_main).context(
        "not started by the Service Control Manager (`census-agent service` is the command \
         the Windows service runs; in a console, use `census-agent run`)",
    )
}

define_windows_service!(ffi_service_main, service_main);

/// The entry point the SCM calls, on its own thread.
fn service_main(_arguments: Vec<OsString>) {
    if let Err(e) = run_until_stopped() {
        error!(error = format!("{e:#}"), "the service failed");
    }
}

fn run_until_stopped() -> anyhow::Result<()> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut stop = Some(stop);
    let handle = service_control_handler::register(SERVICE_NAME, move |control| match control {
        ServiceControl::Stop | ServiceControl::Shutdown => {
            if let Some(stop) = stop.take() {
                let _ = stop.send(());
            }
            ServiceControlHandlerResult::NoError
        }
        // The SCM asks for the current status; it was reported with every change.
        ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
        _ => ServiceControlHandlerResult::NotImplemented,
    })
    .context("could not register the service control handler")?;

    let report = move |state, accept, exit_code, wait_hint| {
        let status = ServiceStatus {
            service_type: ServiceType::OWN_PROCESS,
            current_state: state,
            controls_accepted: accept,
            exit_code,
            checkpoint: 0,
            wait_hint,
            process_id: None,
        };
        if let Err(e) = handle.set_service_status(status) {
            error!(error = %e, ?state, "could not report the service status");
        }
    };

    report(
        ServiceState::Running,
        ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN,
        ServiceExitCode::NO_ERROR,
        Duration::ZERO,
    );
    let result = match CONFIG.lock().unwrap_or_else(|p| p.into_inner()).take() {
        Some(config) => service::run_until(config, async move {
            // A dropped sender (the handler gone) stops the loop too.
            let _ = stopped.await;
            info!("stop requested by the Service Control Manager");
            report(
                ServiceState::StopPending,
                ServiceControlAccept::empty(),
                ServiceExitCode::NO_ERROR,
                STOP_WAIT_HINT,
            );
        }),
        None => Err(anyhow::anyhow!(
            "the service started without a configuration"
        )),
    };
    let exit_code = match &result {
        Ok(()) => ServiceExitCode::NO_ERROR,
        Err(e) => ServiceExitCode::ServiceSpecific(u32::from(crate::exit_code(e))),
    };
    report(
        ServiceState::Stopped,
        ServiceControlAccept::empty(),
        exit_code,
        Duration::ZERO,
    );
    result
}
