//! Accepting connections (mini-redis's `Listener`): the caller binds the
//! socket (tests bind port 0, `zodbrs serve` binds what `-a` says), a
//! `Semaphore` caps the connections served at once, each connection gets a
//! task, and shutdown is a signal every task selects on.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::Shared;

/// Why the server could not start or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// An I/O failure of the server itself (not of one connection).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// The blob directory cannot be used.
    #[error("blob directory {}: {source}", path.display())]
    Blob {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        source: io::Error,
    },
}

/// A bound socket the server accepts connections from.
pub trait Listener: Send + 'static {
    /// A connection.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// The next connection and a label for logs (the peer's address).
    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Stream, String)>> + Send;
}

impl Listener for TcpListener {
    type Stream = TcpStream;

    async fn accept(&mut self) -> io::Result<(TcpStream, String)> {
        let (s, addr) = TcpListener::accept(self).await?;
        // Requests and replies are small and latency-bound.
        s.set_nodelay(true)?;
        Ok((s, addr.to_string()))
    }
}

impl Listener for UnixListener {
    type Stream = UnixStream;

    async fn accept(&mut self) -> io::Result<(UnixStream, String)> {
        let (s, addr) = UnixListener::accept(self).await?;
        let label = addr
            .as_pathname()
            .map_or_else(|| "unix".to_owned(), |p| p.display().to_string());
        Ok((s, label))
    }
}

/// The accept loop; see [`Server::serve`](super::Server::serve).
pub(crate) async fn run<L: Listener, F: Future>(
    shared: Arc<Shared>,
    mut listener: L,
    shutdown: F,
) -> Result<(), ServeError> {
    let limit = Arc::new(Semaphore::new(shared.config.max_connections.max(1)));
    let stopper = super::shutdown::Stopper::new();
    let mut tasks = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // Reap finished connections so the set does not grow.
        while tasks.try_join_next().is_some() {}
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = &mut shutdown => break,
        };
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors, a connection reset before
                // accept...: not the server's end. Back off a little.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let stop = stopper.signal();
        let shared = shared.clone();
        tasks.spawn(async move {
            super::conn::serve(shared, stream, peer, stop).await;
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!(
        connections = tasks.len(),
        "shutting down: no longer accepting"
    );
    stopper.stop();
    while let Some(r) = tasks.join_next().await {
        if let Err(e) = r
            && e.is_panic()
        {
            tracing::error!(error = %e, "a connection task panicked");
        }
    }
    // Work started by connections that outlives them (a pack, say).
    shared.work.close();
    shared.work.wait().await;
    let storages: Vec<_> = shared.storages.values().cloned().collect();
    tokio::task::spawn_blocking(move || {
        for s in storages {
            s.close();
        }
    })
    .await
    .map_err(|e| ServeError::Io {
        what: "closing storages",
        source: io::Error::other(e.to_string()),
    })?;
    tracing::info!("all connections closed");
    Ok(())
}
