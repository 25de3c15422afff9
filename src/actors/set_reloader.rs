//! The async half of a set reload, beside the MapWriter that applies it:
//! one reload at a time, the files read and checked on the blocking pool,
//! then the whole target sent in one `ReloadSets` message. Not an actor:
//! a handle shared by startup and the API.

use std::sync::Arc;

use actix::Addr;

use crate::actors::map_writer::{MapWriter, ReloadSets};
use crate::firewall::set_plan::ReloadSummary;
use crate::firewall::WriteError;
use crate::sets::{SetError, Sets};

/// Why a reload did not apply.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// Nothing was applied.
    #[error(transparent)]
    File(#[from] SetError),
    /// Capacity (nothing applied) or a kernel failure (store and maps still
    /// agree; the part applied before the failure stays).
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("sets reload interrupted: {0}")]
    Internal(String),
}

pub struct SetReloader {
    files: Arc<Sets>,
    writer: Addr<MapWriter>,
    /// One reload at a time, so a slow reload cannot apply older files
    /// after a newer one.
    reloading: tokio::sync::Mutex<()>,
}

impl SetReloader {
    pub fn new(files: Arc<Sets>, writer: Addr<MapWriter>) -> Arc<SetReloader> {
        Arc::new(SetReloader {
            files,
            writer,
            reloading: tokio::sync::Mutex::new(()),
        })
    }

    /// The set files, for the API's reads and writes.
    pub fn files(&self) -> &Arc<Sets> {
        &self.files
    }

    /// Reads and validates every file, then applies the difference in one
    /// MapWriter message. A bad file changes nothing and is named.
    pub async fn reload(&self) -> Result<ReloadSummary, ReloadError> {
        let _one_at_a_time = self.reloading.lock().await;
        let files = Arc::clone(&self.files);
        let target = tokio::task::spawn_blocking(move || files.load_target())
            .await
            .map_err(|e| ReloadError::Internal(e.to_string()))??;
        let applied = self
            .writer
            .send(ReloadSets { target })
            .await
            .map_err(|e| ReloadError::Internal(e.to_string()))??;
        Ok(applied)
    }
}
