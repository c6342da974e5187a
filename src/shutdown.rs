//! The appliance's one shutdown signal: [`Shutdown::begin`] is called once, and every
//! task holding a [`Stopping`] sees it, however late it started to wait.

use tokio::sync::watch;

/// Starts the shutdown; owned by whoever runs the appliance.
#[derive(Debug)]
pub struct Shutdown {
    begun: watch::Sender<bool>,
}

/// A task's view of the shutdown: cheap to clone, one per task that must stop.
#[derive(Debug, Clone)]
pub struct Stopping {
    begun: watch::Receiver<bool>,
}

impl Shutdown {
    pub fn new() -> Self {
        Self {
            begun: watch::Sender::new(false),
        }
    }

    /// A handle for a task that must stop when the shutdown begins.
    pub fn subscribe(&self) -> Stopping {
        Stopping {
            begun: self.begun.subscribe(),
        }
    }

    /// Begins the shutdown; every [`Stopping::wait`] returns.
    pub fn begin(&self) {
        self.begun.send_replace(true);
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Stopping {
    /// Resolves once the shutdown has begun (at once if it already has). Also resolves when
    /// the [`Shutdown`] is dropped without beginning: nothing could begin it any more.
    pub async fn wait(&self) {
        let mut begun = self.begun.clone();
        let _ = begun.wait_for(|begun| *begun).await;
    }

    /// Whether the shutdown has begun.
    pub fn has_begun(&self) -> bool {
        *self.begun.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_waiter_sees_the_shutdown_however_late_it_waits() {
        let shutdown = Shutdown::new();
        let early = shutdown.subscribe();
        let waiting = tokio::spawn(async move { early.wait().await });
        let late = shutdown.subscribe();
        assert!(!late.has_begun());
        shutdown.begin();
        waiting.await.expect("the early waiter returns");
        late.wait().await;
        assert!(late.has_begun());
    }
}
