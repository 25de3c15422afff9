//! The journal's flusher: the MapWriter only copies records into a queue;
//! one thread writes each run of them where it belongs and syncs the file,
//! then says how far the journal is durable. Whatever was queued while a
//! sync ran goes in the next one (group commit), and the MapWriter, the
//! one writer of the rules, makes no system call for it.

use std::collections::VecDeque;
use std::fs::File;
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

/// Called once its records are on disk (or the journal failed), on the
/// flusher's thread: it answers a request without waking anyone between.
pub type OnDurable = Box<dyn FnOnce(Result<(), String>) + Send>;

#[derive(Default)]
struct State {
    batches: VecDeque<Batch>,
    appended: u64,
    /// By ticket, in the order appended (tickets only grow).
    callbacks: VecDeque<(u64, OnDurable)>,
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

    /// What was appended up to `ticket`, to wait for until it is on disk.
    pub fn pending(&self, ticket: u64) -> Pending {
        Pending {
            ticket,
            shared: self.shared.clone(),
            synced: self.synced.clone(),
        }
    }
}

/// Records appended up to a ticket, not known to be on disk yet: a handle
/// to wait for them, by a callback or a future. Cheap: two counted
/// references, nothing allocated until one waits.
pub struct Pending {
    ticket: u64,
    shared: Arc<Shared>,
    synced: watch::Receiver<Synced>,
}

impl Pending {
    /// The outcome if it is known now.
    fn settled(&self) -> Option<Result<(), String>> {
        match &*self.synced.borrow() {
            Synced::Upto(n) if *n >= self.ticket => Some(Ok(())),
            Synced::Upto(_) => None,
            Synced::Failed(m) => Some(Err(m.clone())),
        }
    }

    /// Calls `then` once the records are on disk: on the flusher's thread
    /// after its sync, or here if that is done.
    pub fn on_durable(self, then: OnDurable) {
        let mut st = self.shared.state.lock().expect("journal state");
        // The thread publishes a sync before it takes the callbacks, under
        // this lock: one not due here is taken after the sync that is.
        match self.settled() {
            Some(outcome) => {
                drop(st);
                then(outcome);
            }
            None => st.callbacks.push_back((self.ticket, then)),
        }
    }

    /// Resolves once the records are on disk.
    pub async fn wait(self) -> Result<(), String> {
        let Pending {
            ticket, mut synced, ..
        } = self;
        let seen = synced
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

    /// Blocks the calling thread until the records are on disk.
    pub fn block(self) -> Result<(), String> {
        if let Some(outcome) = self.settled() {
            return outcome;
        }
        tokio::runtime::Builder::new_current_thread()
            .build()
            .map_err(|e| e.to_string())?
            .block_on(self.wait())
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
                let all =
                    std::mem::take(&mut shared.state.lock().expect("journal state").callbacks);
                for (_, then) in all {
                    then(Err(e.to_string()));
                }
                return;
            }
            upto = Some(b.upto);
        }
        if let Some(upto) = upto {
            synced.send_replace(Synced::Upto(upto));
            let due: Vec<OnDurable> = {
                let mut st = shared.state.lock().expect("journal state");
                let n = st.callbacks.iter().take_while(|(t, _)| *t <= upto).count();
                st.callbacks.drain(..n).map(|(_, then)| then).collect()
            };
            for then in due {
                then(Ok(()));
            }
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

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    fn outcome(flusher: &Flusher, ticket: u64) -> mpsc::Receiver<Result<(), String>> {
        let (tx, rx) = mpsc::channel();
        flusher.pending(ticket).on_durable(Box::new(move |r| {
            let _ = tx.send(r);
        }));
        rx
    }

    #[test]
    fn a_callback_runs_once_its_records_are_synced_or_at_once_after() {
        let file = Arc::new(tempfile::tempfile().unwrap());
        let mut flusher = Flusher::new();
        let first = flusher.append(&file, 0, b"abc".to_vec()).unwrap();
        let second = flusher.append(&file, 3, b"defg".to_vec()).unwrap();
        let (a, b) = (outcome(&flusher, first), outcome(&flusher, second));
        let wait = Duration::from_secs(10);
        assert_eq!(a.recv_timeout(wait), Ok(Ok(())));
        assert_eq!(b.recv_timeout(wait), Ok(Ok(())));
        let mut on_disk = vec![0; 7];
        file.read_exact_at(&mut on_disk, 0).unwrap();
        assert_eq!(on_disk, b"abcdefg", "written before the callbacks ran");
        // Long synced: answered on the caller's thread, before it returns.
        assert_eq!(outcome(&flusher, first).try_recv(), Ok(Ok(())));
    }

    #[test]
    fn a_failed_write_fails_every_callback_then_and_after() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        std::fs::write(&path, b"").unwrap();
        // Opened read-only: the write fails.
        let file = Arc::new(File::open(&path).unwrap());
        let mut flusher = Flusher::new();
        let ticket = flusher.append(&file, 0, b"abc".to_vec()).unwrap();
        let failed = outcome(&flusher, ticket);
        let got = failed.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(got.is_err(), "{got:?}");
        assert!(outcome(&flusher, ticket).try_recv().unwrap().is_err());
    }
}
