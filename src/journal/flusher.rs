//! The journal's flusher: the MapWriter only copies records into a queue;
//! one thread writes each run of them where it belongs and syncs the file,
//! then says how far the journal is durable. Whatever was queued while a
//! sync ran goes in the next one (group commit), and the MapWriter, the
//! one writer of the rules, makes no system call for it.

use std::collections::VecDeque;
use std::fs::File;
use std::future::Future;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use tokio::sync::watch;

/// How far the journal is durable: every byte appended up to a count, or
/// nothing more since a failure.
#[derive(Debug, Clone)]
enum Synced {
    Upto(u64),
    Failed(String),
}

/// Records to write at `offset` of `file`; with them, the journal holds
/// `upto` bytes appended.
struct Batch {
    file: Arc<File>,
    offset: u64,
    bytes: Vec<u8>,
    upto: u64,
}

#[derive(Default)]
struct State {
    batches: VecDeque<Batch>,
    appended: u64,
    /// The thread waits for work: a new batch wakes it.
    idle: bool,
    stop: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

pub(super) struct Flusher {
    shared: Arc<Shared>,
    synced: watch::Receiver<Synced>,
    /// The thread starts with the first batch, once couic has given up its
    /// capabilities (a thread keeps those it starts with).
    to_start: Option<watch::Sender<Synced>>,
    thread: Option<JoinHandle<()>>,
}

impl Flusher {
    pub fn new() -> Flusher {
        let (tx, rx) = watch::channel(Synced::Upto(0));
        Flusher {
            shared: Arc::default(),
            synced: rx,
            to_start: Some(tx),
            thread: None,
        }
    }

    /// Queues `bytes` for `offset` of `file`; returns the count to wait
    /// for with [`Flusher::durable`].
    pub fn append(&mut self, file: &Arc<File>, offset: u64, bytes: Vec<u8>) -> io::Result<u64> {
        if let Some(tx) = self.to_start.take() {
            let shared = self.shared.clone();
            self.thread = Some(
                std::thread::Builder::new()
                    .name("couic-journal".into())
                    .spawn(move || run(&shared, &tx))?,
            );
        }
        let mut st = self.shared.state.lock().expect("journal state");
        st.appended += bytes.len() as u64;
        let upto = st.appended;
        match st.batches.back_mut() {
            Some(last)
                if Arc::ptr_eq(&last.file, file)
                    && last.offset + last.bytes.len() as u64 == offset =>
            {
                last.bytes.extend_from_slice(&bytes);
                last.upto = upto;
            }
            _ => st.batches.push_back(Batch {
                file: file.clone(),
                offset,
                bytes,
                upto,
            }),
        }
        if st.idle {
            st.idle = false;
            self.shared.wake.notify_one();
        }
        Ok(upto)
    }

    /// Everything appended so far.
    pub fn appended(&self) -> u64 {
        self.shared.state.lock().expect("journal state").appended
    }

    /// Why the journal can take nothing more, once a write or sync failed.
    pub fn failure(&self) -> Option<String> {
        match &*self.synced.borrow() {
            Synced::Failed(m) => Some(m.clone()),
            Synced::Upto(_) => None,
        }
    }

    /// Resolves once what was appended up to `ticket` is on disk.
    pub fn durable(
        &self,
        ticket: u64,
    ) -> impl Future<Output = Result<(), String>> + Send + 'static {
        let mut rx = self.synced.clone();
        async move {
            let seen = rx
                .wait_for(|s| match s {
                    Synced::Upto(n) => *n >= ticket,
                    Synced::Failed(_) => true,
                })
                .await
                .map(|s| s.clone());
            match seen {
                Ok(Synced::Upto(_)) => Ok(()),
                Ok(Synced::Failed(m)) => Err(m),
                Err(_) => Err("the journal was closed".into()),
            }
        }
    }

    /// A handle a thread can block on until `ticket` is durable.
    pub fn waiter(&self, ticket: u64) -> impl FnOnce() -> Result<(), String> + Send + 'static {
        let durable = self.durable(ticket);
        move || {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .map_err(|e| e.to_string())?
                .block_on(durable)
        }
    }
}

/// The thread: takes every queued batch, writes them in order, syncs each
/// file after its last batch, then publishes how far that goes.
fn run(shared: &Shared, synced: &watch::Sender<Synced>) {
    loop {
        let batches = {
            let mut st = shared.state.lock().expect("journal state");
            while st.batches.is_empty() && !st.stop {
                st.idle = true;
                st = shared.wake.wait(st).expect("journal state");
            }
            st.idle = false;
            if st.batches.is_empty() {
                return;
            }
            std::mem::take(&mut st.batches)
        };
        let mut upto = None;
        for (i, b) in batches.iter().enumerate() {
            let last_of_file = batches
                .get(i + 1)
                .is_none_or(|next| !Arc::ptr_eq(&next.file, &b.file));
            let done = b.file.write_all_at(&b.bytes, b.offset).and_then(|()| {
                if last_of_file {
                    b.file.sync_data()
                } else {
                    Ok(())
                }
            });
            if let Err(e) = done {
                tracing::error!("the state store failed to write or sync: {e}");
                synced.send_replace(Synced::Failed(e.to_string()));
                return;
            }
            upto = Some(b.upto);
        }
        if let Some(upto) = upto {
            synced.send_replace(Synced::Upto(upto));
        }
    }
}

impl Drop for Flusher {
    /// What is queued is written and synced before the thread ends.
    fn drop(&mut self) {
        self.shared.state.lock().expect("journal state").stop = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
