//! Wake-ups between replicas: PostgreSQL `LISTEN/NOTIFY` carrying ids (never payloads;
//! the rows carry the data), and the same signals inside one process. A lost
//! notification only delays: every waiter also polls.

use std::time::Duration;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::db::{Db, Kind};

/// What a notification is about; its payload is an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Channel {
    /// A run was queued (payload: run id).
    Runs,
    /// A run's log grew (payload: run id).
    Events,
    /// An approval was answered (payload: approval id).
    Approvals,
    /// A run's cancellation was asked for (payload: run id).
    Cancel,
}

impl Channel {
    const ALL: [Channel; 4] = [
        Channel::Runs,
        Channel::Events,
        Channel::Approvals,
        Channel::Cancel,
    ];

    fn name(self) -> &'static str {
        match self {
            Channel::Runs => "ccs_runs",
            Channel::Events => "ccs_events",
            Channel::Approvals => "ccs_approvals",
            Channel::Cancel => "ccs_cancel",
        }
    }

    fn from_name(name: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.name() == name)
    }
}

/// A notification.
#[derive(Debug, Clone)]
pub(crate) struct Note {
    pub(crate) channel: Channel,
    pub(crate) id: String,
}

/// Sends and receives notifications. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Notifier {
    db: Db,
    local: broadcast::Sender<Note>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Notifier")
    }
}

impl Notifier {
    /// A notifier over `db`; on PostgreSQL it listens until `stop`.
    pub(crate) fn start(db: Db, stop: CancellationToken) -> Notifier {
        let (local, _) = broadcast::channel(4096);
        let notifier = Notifier { db, local };
        if notifier.db.kind() == Kind::Postgres {
            tokio::spawn(listen(notifier.clone(), stop));
        }
        notifier
    }

    /// Tells every replica (this one at once).
    pub(crate) async fn publish(&self, channel: Channel, id: &str) {
        let _ = self.local.send(Note {
            channel,
            id: id.to_owned(),
        });
        if let Err(err) = self.db.notify(channel.name(), id).await {
            tracing::debug!(%err, "could not notify; the other replicas will poll");
        }
    }

    /// A receiver of every notification from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Note> {
        self.local.subscribe()
    }

    /// Waits until a notification on `channel` about `id` arrives, or `timeout` passes
    /// (the caller then polls). A lagging receiver counts as a wake-up.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub(crate) async fn wait(
        receiver: &mut broadcast::Receiver<Note>,
        channel: Channel,
        id: Option<&str>,
        timeout: Duration,
    ) {
        let wait = async {
            loop {
                match receiver.recv().await {
                    Ok(note) if note.channel == channel && id.is_none_or(|id| note.id == id) => {
                        return;
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => return,
                    Err(broadcast::error::RecvError::Closed) => {
                        std::future::pending::<()>().await;
                    }
                }
            }
        };
        let _ = tokio::time::timeout(timeout, wait).await;
    }
}

/// Forwards PostgreSQL notifications to this process's subscribers, reconnecting
/// after a failure (notifications lost meanwhile are covered by polling).
async fn listen(notifier: Notifier, stop: CancellationToken) {
    let names: Vec<&str> = Channel::ALL.iter().map(|c| c.name()).collect();
    loop {
        let connected = async {
            let mut listener = sqlx::postgres::PgListener::connect(notifier.db.url()).await?;
            listener.listen_all(names.iter().copied()).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = tokio::select! {
            () = stop.cancelled() => return,
            listener = connected => match listener {
                Ok(listener) => listener,
                Err(err) => {
                    tracing::warn!(%err, "cannot listen for notifications; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
        };
        loop {
            let next = tokio::select! {
                () = stop.cancelled() => return,
                next = listener.try_recv() => next,
            };
            match next {
                Ok(Some(note)) => {
                    if let Some(channel) = Channel::from_name(note.channel()) {
                        let _ = notifier.local.send(Note {
                            channel,
                            id: note.payload().to_owned(),
                        });
                    }
                }
                // The connection dropped: notifications may have been lost; wake
                // everyone to poll, then reconnect.
                Ok(None) | Err(_) => {
                    for channel in Channel::ALL {
                        let _ = notifier.local.send(Note {
                            channel,
                            id: String::new(),
                        });
                    }
                    break;
                }
            }
        }
    }
}
