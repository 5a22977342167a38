//! Async work from sync code, from inside a runtime or not: the state store's connections and
//! the checkpoint sinks run on one small runtime of their own, and a sync caller waits for the
//! answer (nesting `block_on` in a runtime would panic; a runtime may not be dropped in one).

use std::future::Future;
use std::sync::OnceLock;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ferry-io")
            .enable_all()
            .build()
            .expect("ferry's I/O runtime starts")
    })
}

/// Runs `fut` on that runtime and waits for its answer.
pub(crate) fn block<T: Send + 'static>(fut: impl Future<Output = T> + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime().spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv().expect("the task answers")
}
