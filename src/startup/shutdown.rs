//! The stages of a graceful stop. At the first signal health turns NOT_SERVING while the
//! server goes on accepting for the drain time, so load balancers see it and stop sending
//! before the port closes; then it stops accepting and lets in-flight calls finish for a
//! short grace; a second signal skips whatever is left. Whatever the database does, the
//! whole stop takes the drain time plus a second or two (`docker stop` waits 10 s).

use std::time::Duration;

use tokio::sync::watch;
use tokio_stream::{Stream, StreamExt as _};

/// How long in-flight calls may go on once the server stops accepting.
pub(super) const FINISH_GRACE: Duration = Duration::from_secs(1);

/// How long background tasks and the pool get to stop once the calls are done.
pub(super) const CLEANUP_GRACE: Duration = Duration::from_millis(500);

/// Where a server is in its stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Stage {
    Serving,
    /// NOT_SERVING, still accepting.
    Draining,
    /// No new connections; in-flight calls finishing.
    Finishing,
    /// Everything left is dropped.
    Stopping,
}

/// Moves `stage` along as the signals and the clock say.
pub(super) async fn run_stages(
    mut signals: impl Stream<Item = ()> + Unpin,
    drain: Duration,
    stage: watch::Sender<Stage>,
) {
    // A stream that ends sends no more signals: it does not stop the server.
    let mut next_signal = async move || {
        if signals.next().await.is_none() {
            std::future::pending::<()>().await;
        }
    };
    next_signal().await;
    tracing::info!(
        drain = %humantime::format_duration(drain),
        "stopping: health NOT_SERVING, still accepting while load balancers catch up"
    );
    stage.send_replace(Stage::Draining);
    let interrupted = tokio::select! {
        () = tokio::time::sleep(drain) => false,
        () = next_signal() => true,
    };
    if !interrupted {
        tracing::info!("stopping: no new connections, finishing in-flight calls");
        stage.send_replace(Stage::Finishing);
        tokio::select! {
            () = tokio::time::sleep(FINISH_GRACE) => {
                tracing::warn!("stopping: calls still in flight after the grace are dropped");
            }
            () = next_signal() => {}
        }
    }
    stage.send_replace(Stage::Stopping);
}

/// Resolves once `stage` reaches `at_least`.
pub(super) async fn reached(mut stage: watch::Receiver<Stage>, at_least: Stage) {
    // A dropped sender ends the stop: nothing else can move it.
    let _ = stage.wait_for(|now| *now >= at_least).await;
}
