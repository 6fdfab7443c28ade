//! SIGTERM and SIGINT for the long-running commands (`route run`, `logs ship`, `logs devlog`,
//! `metrics serve`): each one stops cleanly on either, also while it is still connecting to the
//! engine or waiting for its first inventory.

use std::future::Future;

use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::{Engine, Result};

/// The two stop signals, installed once at a command's start.
#[derive(Debug)]
pub struct Stop {
    term: Signal,
    int: Signal,
}

impl Stop {
    pub fn install() -> std::io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits for SIGTERM or SIGINT and names it (cancel-safe: a `select!` branch).
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }

    /// [`Engine::connect_negotiated`], or `Ok(None)` when a stop signal comes first.
    pub async fn connect(&mut self, host: Option<&str>) -> Result<Option<Engine>> {
        self.or_stop(Engine::connect_negotiated(host))
            .await
            .transpose()
    }

    /// `fut`'s output, or `None` when a stop signal comes first.
    pub async fn or_stop<F: Future>(&mut self, fut: F) -> Option<F::Output> {
        tokio::select! {
            v = fut => Some(v),
            _ = self.recv() => None,
        }
    }
}
