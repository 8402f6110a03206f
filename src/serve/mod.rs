//! `grit serve`: a long-running service that runs pipelines on request, with an authenticated
//! HTTP API (issue 12).
//!
//! Data flow: a request ([`api`]) is authenticated ([`auth`]) and, to trigger a run, written to
//! the pipeline's wait list in its own store ([`queue`]); the pipeline's worker thread
//! ([`worker`]) takes runs off that list one at a time and drives the engine, exactly as
//! `grit run` would ([`crate::launch`]). The server holds each store's lock while it runs, so the
//! store sees one run at a time and no `grit run` beside it.
//!
//! Lifecycle: start-up opens every store, queues again the runs a crash or a stop interrupted
//! (marked `resumed`), creates the token secret if missing and binds the socket ([`listen`]).
//! SIGTERM/SIGINT stop accepting requests, let the running runs finish for `shutdown_timeout`,
//! then cancel them cleanly (they resume at the next start); a run on Slurm is cancelled at once,
//! with its jobs, since they may wait in the cluster's queue longer than any timeout. SIGHUP
//! re-reads the config file; a bad one is logged with its location and the old config stays.

pub mod api;
pub mod auth;
pub mod client;
pub mod config;
pub mod events;
pub mod http;
pub mod listen;
pub mod metrics;
pub mod queue;
pub mod schedule;
pub mod ui;
pub mod watch;
pub mod worker;

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch as tokio_watch;

use crate::store;
use auth::Secret;
use config::ServerConfig;
use worker::Pipeline;

/// Threads of the HTTP runtime: requests are short, the runs have threads of their own.
const HTTP_THREADS: usize = 2;

/// Run the server until SIGTERM or SIGINT; returns once every run has ended or was cancelled.
pub fn serve(config: ServerConfig) -> anyhow::Result<()> {
    crate::memory::settle_server_allocator();
    let hub = Arc::new(worker::Hub::default());
    let mut pipelines = BTreeMap::new();
    for p in config.pipelines.values() {
        let group = p
            .group
            .as_deref()
            .map(|g| {
                store::access::Group::lookup(g).map_err(|e| {
                    crate::commands::exit::UsageError(format!(
                        "pipeline {}: group {g}: {e}",
                        p.name
                    ))
                })
            })
            .transpose()?;
        let (paths, lock, writer) = store::open_for_write_shared(&p.db, group.as_ref())
            .with_context(|| {
                format!("pipeline {}: opening its store {}", p.name, p.db.display())
            })?;
        let recovered = writer.call_blocking(queue::recover)?;
        for id in recovered {
            tracing::warn!(
                pipeline = %p.name,
                "run {} was interrupted (the server crashed or stopped during it); it resumes first",
                queue::public_id(&p.name, id)
            );
        }
        pipelines.insert(
            p.name.clone(),
            Arc::new(Pipeline::new(p.clone(), paths, lock, writer, hub.clone())),
        );
    }
    let secret = Secret::load_or_create(&config.token_secret_file)?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(HTTP_THREADS)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let (stop, stopped) = tokio_watch::channel(false);
    let stop = Arc::new(stop);
    let mut workers = Vec::new();
    for pipeline in pipelines.values() {
        workers.push(
            worker::spawn(pipeline.clone(), stopped.clone(), config.shutdown_timeout)
                .context("starting a worker thread")?,
        );
    }
    for pipeline in pipelines.values() {
        let pipeline = pipeline.clone();
        runtime.spawn_blocking(move || ui::pipelines::warm(&pipeline));
    }
    let mut watchers = Vec::new();
    for pipeline in pipelines.values() {
        let name = pipeline.config().name.clone();
        let watcher = watch::start(pipeline)
            .with_context(|| format!("pipeline {name}: watching its `watch` paths"))?;
        watchers.extend(watcher);
        runtime.spawn(schedule::run(pipeline.clone(), stopped.clone()));
    }
    let state = Arc::new(api::AppState {
        pipelines,
        secret,
        request_timeout: config.request_timeout,
        hub,
        stopping: stopped.clone(),
    });
    let served = runtime.block_on(async {
        let bound = listen::bind(&config.listen).await?;
        // On stderr as it is, so scripts and tests can find the address (port 0 picks one).
        eprintln!("grit serve: listening on {}", bound.describe());
        // The web UI (issue 14) shares the API's state and read models.
        let app = api::router(state.clone())
            .merge(ui::router(state.clone()))
            .layer(axum::middleware::map_response(http::secure_headers));
        let shutdown = wait_for_stop(config.clone(), state.clone(), stop.clone());
        let served = async {
            match bound {
                listen::Bound::Tcp(l) => {
                    let accept = || async { l.accept().await.map(|(stream, _)| stream) };
                    http::serve(accept, app, shutdown).await
                }
                listen::Bound::Unix(l) => {
                    let accept = || async { l.accept().await.map(|(stream, _)| stream) };
                    http::serve(accept, app, shutdown).await
                }
            }
        };
        // Streamed bodies end when the server stops, but a client that reads nothing more is
        // never polled: past this grace its connections are dropped.
        let mut stopping = stopped.clone();
        let grace = async move {
            let _ = stopping.wait_for(|stop| *stop).await;
            tokio::time::sleep(CONNECTION_GRACE).await;
            tracing::warn!(
                "stopping: connections still open after {}s are dropped",
                CONNECTION_GRACE.as_secs()
            );
        };
        tokio::select! {
            served = served => served.context("serving HTTP"),
            () = grace => Ok(()),
        }
    });
    // Whatever ended the HTTP side, the workers stop too (after their running run).
    let _ = stop.send(true);
    // Runs already cancelled (on Slurm, at once) only wait for their jobs to be cancelled.
    let running: Vec<String> = state
        .pipelines
        .values()
        .filter_map(|p| {
            p.current()
                .filter(|c| c.cancel.reason().is_none())
                .map(|c| queue::public_id(&p.config().name, c.id))
        })
        .collect();
    if !running.is_empty() {
        tracing::info!(
            "waiting up to {} for {} to finish",
            humantime::format_duration(config.shutdown_timeout),
            running.join(", ")
        );
    }
    drop(watchers);
    for worker in workers {
        let _ = worker.join();
    }
    drop(runtime);
    tracing::info!("grit serve stopped");
    served
}

/// Resolves on SIGTERM or SIGINT, after telling the workers and the streaming answers to stop;
/// SIGHUP reloads the config meanwhile.
async fn wait_for_stop(
    mut config: ServerConfig,
    state: api::Shared,
    stop: Arc<tokio_watch::Sender<bool>>,
) {
    let signals = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    );
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = signals else {
        tracing::error!("cannot install the signal handlers; stop the server with SIGKILL");
        return std::future::pending().await;
    };
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => config = reload(config, &state),
        }
    }
    tracing::info!("stopping: no new requests; running runs may finish");
    // Streams (events, followed logs) end now, so the HTTP side can close; the workers start
    // counting shutdown_timeout.
    let _ = stop.send(true);
}

/// How long a stopping server waits for open HTTP connections once their streams were told to
/// end (a download to a client that stopped reading would otherwise keep it alive for good).
const CONNECTION_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// SIGHUP: read the config file again. Settings of existing pipelines change at once (the running
/// run keeps its own); pipelines added, removed or moved to another store need a restart. A bad
/// file is logged, located, and the old config stays.
fn reload(old: ServerConfig, state: &api::AppState) -> ServerConfig {
    let Some(source) = old.source.clone() else {
        tracing::info!(
            "SIGHUP: no config file to reload (flag mode); manifests are read at each run"
        );
        return old;
    };
    let new = match ServerConfig::load(&source) {
        Ok(new) => new,
        Err(e) => {
            tracing::error!("SIGHUP: the config was not reloaded, the old one stays: {e:#}");
            return old;
        }
    };
    for (name, pipeline) in &state.pipelines {
        match new.pipelines.get(name) {
            Some(p) if p.db == pipeline.config().db => pipeline.set_config(p.clone()),
            Some(_) => tracing::warn!(
                "SIGHUP: pipeline {name} moved to another db: restart grit serve for that"
            ),
            None => {
                tracing::warn!("SIGHUP: pipeline {name} was removed: restart grit serve for that")
            }
        }
    }
    for name in new
        .pipelines
        .keys()
        .filter(|n| !state.pipelines.contains_key(*n))
    {
        tracing::warn!("SIGHUP: pipeline {name} is new: restart grit serve to serve it");
    }
    if new.listen != old.listen || new.token_secret_file != old.token_secret_file {
        tracing::warn!("SIGHUP: listen and token_secret_file change at the next restart");
    }
    tracing::info!("SIGHUP: reloaded {}", source.display());
    new
}
