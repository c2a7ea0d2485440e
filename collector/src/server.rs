//! Running the collector: open the store, serve HTTP on a bound listener until the shutdown
//! future completes, then stop cleanly.
//!
//! On start, once the listener is bound and the store is open, the bound address is written to
//! `<data_dir>/collector.addr` (atomically: a temp file renamed into place) and logged as
//! `listening addr=<ip:port> tls=<true|false>`; scripts and end-to-end tests read either to
//! find a collector started with port 0. The file holds `ip:port` only: the scheme is `https`
//! when the configuration sets `tls_cert`, else `http`. The file is removed on a clean stop.
//!
//! With `tls_cert` and `tls_key` the collector serves HTTPS ([`crate::tls`]). Plain HTTP is
//! served only on a loopback address unless `allow_insecure_http` is set: agent tokens and
//! inventories must not cross a network in clear by accident. Either way handlers can take
//! `ConnectInfo<SocketAddr>`, the client's address, for per-address rate limits.
//!
//! Shutdown order: stop accepting connections and let in-flight requests finish (their writes
//! commit and their acks go out), stop the compaction, silence-check and webhook delivery tasks
//! (a delivery sent but not yet recorded is sent again after the restart), then let the writer
//! run what is still queued, commit, checkpoint the WAL and close.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use axum::Router;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::api::{self, AppState};
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::store::{Store, StoreOptions};
use crate::tls::{self, TlsListener};
use crate::{heartbeat, retention, webhooks};

/// Serves until `shutdown` completes, with the system clock.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve_with_clock(listener, config, Arc::new(SystemClock), shutdown).await
}

pub async fn serve_with_clock(
    listener: TcpListener,
    config: Config,
    clock: Arc<dyn Clock>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate()?;
    let addr = listener
        .local_addr()
        .context("could not read the bound address")?;
    let tls_config = match config.tls() {
        Some((cert, key)) => Some(tls::server_config(cert, key)?),
        None => {
            check_plain_http(addr, config.allow_insecure_http)?;
            None
        }
    };
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("could not create data dir {}", config.data_dir.display()))?;
    let db = config.database_path();
    let options = StoreOptions {
        read_connections: config.read_connections,
        max_batch: config.writer_batch,
        placeholders: config.placeholders(),
        engine: config.engine(),
        ..StoreOptions::default()
    };
    let store = {
        let path = db.clone();
        tokio::task::spawn_blocking(move || Store::open(&path, &options))
            .await
            .context("the task opening the database failed")?
            .with_context(|| format!("could not open the store at {}", db.display()))?
    };
    let store = Arc::new(store);

    let state = AppState::new(store.clone(), clock.clone(), &config);
    let addr_file = config.addr_file();
    if let Err(e) = write_addr_file(&addr_file, addr) {
        store.close().await;
        return Err(e);
    }
    let (stop_compaction, stop_rx) = watch::channel(false);
    // Without a client (no CA certificates on this system) the collector still serves;
    // webhook events wait in the outbox until a restart can build one.
    let delivery = match webhooks::client() {
        Ok(client) => Some(tokio::spawn(webhooks::run(
            store.clone(),
            clock.clone(),
            client,
            config.webhook_interval.0,
            stop_rx.clone(),
        ))),
        Err(e) => {
            let e = anyhow::Error::new(e);
            tracing::error!(
                error = format!("{e:#}"),
                "could not build the webhook HTTP client (are the system's CA certificates \
                 installed?); no webhook is sent until a restart builds it"
            );
            None
        }
    };
    let compaction = tokio::spawn(retention::run(
        store.clone(),
        clock.clone(),
        config.compaction_interval.0,
        config.health_retention.as_time(),
        config.stale_after.as_time(),
        stop_rx.clone(),
    ));
    let silence = tokio::spawn(heartbeat::run(
        store.clone(),
        clock,
        config.incident_check_interval.0,
        stop_rx,
    ));

    tracing::info!(addr = %addr, tls = tls_config.is_some(), data_dir = %config.data_dir.display(), "listening");

    let served = serve_app(listener, tls_config, api::router(state), shutdown).await;
    tracing::info!("stopping: in-flight requests done, closing the store");
    let _ = stop_compaction.send(true);
    if let Err(e) = compaction.await {
        tracing::warn!(error = %e, "the compaction task ended abnormally");
    }
    if let Err(e) = silence.await {
        tracing::warn!(error = %e, "the silence check task ended abnormally");
    }
    if let Some(task) = delivery
        && let Err(e) = task.await
    {
        tracing::warn!(error = %e, "the webhook delivery task ended abnormally");
    }
    store.close().await;
    if let Err(e) = std::fs::remove_file(&addr_file) {
        tracing::warn!(path = %addr_file.display(), error = %e, "could not remove the address file");
    }
    tracing::info!("stopped");
    served.context("the HTTP server failed")
}

/// Serves `app` on `listener`, over TLS when `tls` is set, until `shutdown` completes and the
/// requests in flight are answered. Handlers can take `ConnectInfo<SocketAddr>`.
pub async fn serve_app(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    match tls {
        // axum gives `ConnectInfo<SocketAddr>` to any listener wrapped by `tap_io` whose
        // address type is `SocketAddr`; the tap itself does nothing.
        Some(tls) => {
            axum::serve(TlsListener::new(listener, tls).tap_io(|_| ()), app)
                .with_graceful_shutdown(shutdown)
                .await
        }
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
    }
}

/// Refuses plain HTTP on an address other than loopback unless `allow_insecure_http` is set,
/// and then warns.
pub fn check_plain_http(addr: SocketAddr, allow_insecure_http: bool) -> anyhow::Result<()> {
    if addr.ip().is_loopback() {
        return Ok(());
    }
    if !allow_insecure_http {
        bail!(
            "refusing to serve plain HTTP on {addr}, which is not a loopback address: agent \
             tokens and reports would cross the network unencrypted. Set tls_cert and tls_key \
             to serve HTTPS, or set allow_insecure_http = true (for example behind a \
             TLS-terminating proxy on the same host)"
        );
    }
    tracing::warn!(
        addr = %addr,
        "serving plain HTTP on a non-loopback address (allow_insecure_http = true): agent tokens \
         and reports cross the network unencrypted"
    );
    Ok(())
}

/// Writes `addr` and a newline to `path` through a temp file and a rename, so a reader sees
/// either the old file or the whole new one.
fn write_addr_file(path: &Path, addr: SocketAddr) -> anyhow::Result<()> {
    let tmp = path.with_extension("addr.tmp");
    std::fs::write(&tmp, format!("{addr}\n"))
        .and_then(|()| std::fs::rename(&tmp, path))
        .with_context(|| format!("could not write the address file {}", path.display()))
}

/// Completes on SIGINT or SIGTERM (Ctrl-C elsewhere). The handlers are installed when this is
/// called, not when the future is first polled: a signal that arrives while the store opens
/// still stops the collector cleanly instead of killing it. Call it inside the runtime.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let (interrupt, terminate) = {
        use tokio::signal::unix::{SignalKind, signal};
        let listen = |kind: SignalKind, name: &'static str| {
            let installed = signal(kind);
            async move {
                match installed {
                    Ok(mut signal) => {
                        signal.recv().await;
                    }
                    Err(e) => {
                        tracing::warn!(signal = name, error = %e, "could not listen for the signal");
                        std::future::pending::<()>().await;
                    }
                }
            }
        };
        (
            listen(SignalKind::interrupt(), "SIGINT"),
            listen(SignalKind::terminate(), "SIGTERM"),
        )
    };
    #[cfg(not(unix))]
    let (interrupt, terminate) = (
        async {
            if let Err(e) = tokio::signal::ctrl_c().await {
                tracing::warn!(error = %e, "could not listen for Ctrl-C");
                std::future::pending::<()>().await;
            }
        },
        std::future::pending::<()>(),
    );
    async move {
        tokio::select! {
            () = interrupt => tracing::info!(signal = "SIGINT", "shutdown requested"),
            () = terminate => tracing::info!(signal = "SIGTERM", "shutdown requested"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_off_loopback_needs_allow_insecure_http() {
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        for ok in ["127.0.0.1:8080", "127.9.9.9:1", "[::1]:8080"] {
            check_plain_http(addr(ok), false).unwrap();
        }
        for refused in ["0.0.0.0:8080", "[::]:8080", "192.0.2.10:8080"] {
            let err = check_plain_http(addr(refused), false)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("Set tls_cert and tls_key")
                    && err.contains("allow_insecure_http = true"),
                "{err}"
            );
            check_plain_http(addr(refused), true).unwrap();
        }
    }
}
