//! RBAC: which group may do what (§2.1, §2.2), the registry of API clients
//! and their files in `rbac/clients/<name>.toml` (§8).
//!
//! Plain types without a runtime: the API wraps [`ClientRegistry`] in a lock
//! and runs the file operations of [`ClientFiles`] off its async threads.
//!
//! Past 400 lines with its unit tests; the code is under 400.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use couic_common::{Client, ClientName, Group};
use serde::Deserialize;
use uuid::Uuid;

use crate::dirs::Owner;

/// The client created at first start; it cannot be deleted.
pub const DEFAULT_CLIENT: &str = "couicctl";
/// Mode every client file must have, exactly.
pub const CLIENT_FILE_MODE: u32 = 0o600;
const CLIENT_FILE_EXTENSION: &str = "toml";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource {
    Policy,
    Sets,
    Stats,
    Clients,
    /// This node's links to its peers (`/v1/peers`).
    Peers,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    List,
    Create,
    Get,
    Update,
    Delete,
    Peer,
}

/// What a route needs (`resource:verb`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Scope {
    pub resource: Resource,
    pub verb: Verb,
}

impl Scope {
    pub const fn new(resource: Resource, verb: Verb) -> Scope {
        Scope { resource, verb }
    }

    pub const POLICY_LIST: Scope = Scope::new(Resource::Policy, Verb::List);
    pub const POLICY_CREATE: Scope = Scope::new(Resource::Policy, Verb::Create);
    pub const POLICY_GET: Scope = Scope::new(Resource::Policy, Verb::Get);
    pub const POLICY_DELETE: Scope = Scope::new(Resource::Policy, Verb::Delete);
    pub const POLICY_PEER: Scope = Scope::new(Resource::Policy, Verb::Peer);
    pub const SETS_LIST: Scope = Scope::new(Resource::Sets, Verb::List);
    pub const SETS_CREATE: Scope = Scope::new(Resource::Sets, Verb::Create);
    pub const SETS_GET: Scope = Scope::new(Resource::Sets, Verb::Get);
    pub const SETS_UPDATE: Scope = Scope::new(Resource::Sets, Verb::Update);
    pub const SETS_DELETE: Scope = Scope::new(Resource::Sets, Verb::Delete);
    pub const STATS_LIST: Scope = Scope::new(Resource::Stats, Verb::List);
    pub const STATS_GET: Scope = Scope::new(Resource::Stats, Verb::Get);
    pub const CLIENTS_LIST: Scope = Scope::new(Resource::Clients, Verb::List);
    pub const CLIENTS_CREATE: Scope = Scope::new(Resource::Clients, Verb::Create);
    pub const CLIENTS_GET: Scope = Scope::new(Resource::Clients, Verb::Get);
    pub const CLIENTS_DELETE: Scope = Scope::new(Resource::Clients, Verb::Delete);
    pub const PEERS_LIST: Scope = Scope::new(Resource::Peers, Verb::List);

    /// `resource:verb`, as the OpenAPI document names it.
    pub fn as_string(self) -> String {
        let resource = match self.resource {
            Resource::Policy => "policy",
            Resource::Sets => "sets",
            Resource::Stats => "stats",
            Resource::Clients => "clients",
            Resource::Peers => "peers",
        };
        let verb = match self.verb {
            Verb::List => "list",
            Verb::Create => "create",
            Verb::Get => "get",
            Verb::Update => "update",
            Verb::Delete => "delete",
            Verb::Peer => "peer",
        };
        format!("{resource}:{verb}")
    }
}

/// The hard-coded grants of §2.2.
pub fn grants(group: Group, scope: Scope) -> bool {
    use Resource as R;
    use Verb as V;
    match group {
        Group::Admin => true,
        Group::Clientrw => matches!(scope.resource, R::Policy | R::Sets),
        Group::Clientro => {
            matches!(scope.resource, R::Policy | R::Sets) && matches!(scope.verb, V::Get | V::List)
        }
        Group::Monitoring => {
            matches!(scope.resource, R::Stats | R::Peers) && matches!(scope.verb, V::Get | V::List)
        }
        Group::Peering => scope == Scope::POLICY_PEER,
    }
}

/// A client: name, bearer token, group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRecord {
    pub name: ClientName,
    pub token: Uuid,
    pub group: Group,
}

impl ClientRecord {
    /// A new client with a random v4 token.
    pub fn generate(name: ClientName, group: Group) -> ClientRecord {
        ClientRecord {
            name,
            token: Uuid::new_v4(),
            group,
        }
    }

    pub fn to_wire(&self) -> Client {
        Client {
            name: self.name.to_string(),
            token: self.token,
            group: self.group,
        }
    }
}

/// Compares two tokens without an early exit, so the time taken does not
/// tell how many leading bytes of a guess were right.
fn tokens_equal(a: &Uuid, b: &Uuid) -> bool {
    let diff = a
        .as_bytes()
        .iter()
        .zip(b.as_bytes())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// The clients known in memory, by name.
#[derive(Debug, Default, Clone)]
pub struct ClientRegistry {
    clients: BTreeMap<String, ClientRecord>,
}

impl ClientRegistry {
    pub fn new(records: Vec<ClientRecord>) -> Self {
        ClientRegistry {
            clients: records
                .into_iter()
                .map(|r| (r.name.to_string(), r))
                .collect(),
        }
    }

    /// The client holding `token`. Every client is compared, in constant
    /// time per comparison, whether or not an earlier one matched.
    pub fn authenticate(&self, token: &Uuid) -> Option<&ClientRecord> {
        let mut found = None;
        for record in self.clients.values() {
            if tokens_equal(&record.token, token) {
                found = Some(record);
            }
        }
        found
    }

    pub fn get(&self, name: &str) -> Option<&ClientRecord> {
        self.clients.get(name)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.clients.contains_key(name)
    }

    pub fn list(&self) -> impl Iterator<Item = &ClientRecord> {
        self.clients.values()
    }

    pub fn insert(&mut self, record: ClientRecord) {
        self.clients.insert(record.name.to_string(), record);
    }

    pub fn remove(&mut self, name: &str) -> Option<ClientRecord> {
        self.clients.remove(name)
    }

    pub fn len(&self) -> usize {
        self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RbacError {
    #[error("cannot read client directory {path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A client file that stops startup: its path and why.
    #[error("invalid client file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("cannot write client file {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What a client file holds; its name is the file stem. Unknown keys are
/// ignored, the group must be spelt exactly in lowercase.
#[derive(Deserialize)]
struct ClientFile {
    token: String,
    group: Group,
}

/// The client files of `rbac/clients`, all owned by `owner`, mode 0600.
#[derive(Debug, Clone)]
pub struct ClientFiles {
    dir: PathBuf,
    owner: Owner,
}

impl ClientFiles {
    pub fn new(dir: impl Into<PathBuf>, owner: Owner) -> Self {
        ClientFiles {
            dir: dir.into(),
            owner,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.{CLIENT_FILE_EXTENSION}"))
    }

    /// Reads and checks every `*.toml` file; any problem is an error naming
    /// the file, and so is a token used by two files.
    pub fn load_all(&self) -> Result<Vec<ClientRecord>, RbacError> {
        let dir_err = |source| RbacError::Dir {
            path: self.dir.clone(),
            source,
        };
        let mut paths = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(dir_err)? {
            let path = entry.map_err(dir_err)?.path();
            if path.extension().is_some_and(|e| e == CLIENT_FILE_EXTENSION) {
                paths.push(path);
            }
        }
        paths.sort();

        let mut records = Vec::new();
        let mut tokens: HashMap<Uuid, PathBuf> = HashMap::new();
        for path in paths {
            let meta = fs::metadata(&path).map_err(|e| file_err(&path, e))?;
            if !meta.is_file() {
                continue;
            }
            let record = self.load_one(&path, &meta)?;
            if let Some(other) = tokens.insert(record.token, path.clone()) {
                return Err(file_err(
                    &path,
                    format!("token already used by {}", other.display()),
                ));
            }
            records.push(record);
        }
        Ok(records)
    }

    fn load_one(&self, path: &Path, meta: &fs::Metadata) -> Result<ClientRecord, RbacError> {
        let mode = meta.mode() & 0o7777;
        if !self.owner.owns(meta) || mode != CLIENT_FILE_MODE {
            return Err(file_err(
                path,
                format!(
                    "wrong permissions: must be owned by {}:{} with mode 0600 (found {}:{}, mode {mode:o})",
                    self.owner.uid,
                    self.owner.gid,
                    meta.uid(),
                    meta.gid()
                ),
            ));
        }
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        let name = ClientName::parse(stem).map_err(|e| file_err(path, e))?;
        let text = fs::read_to_string(path).map_err(|e| file_err(path, e))?;
        let file: ClientFile =
            toml::from_str(&text).map_err(|e| file_err(path, e.message().trim()))?;
        let token =
            Uuid::parse_str(&file.token).map_err(|e| file_err(path, format!("token: {e}")))?;
        Ok(ClientRecord {
            name,
            token,
            group: file.group,
        })
    }

    /// Writes the client's file atomically: a unique temporary file in the
    /// same directory, mode 0600, given to the owner, then renamed.
    pub fn write(&self, record: &ClientRecord) -> Result<PathBuf, RbacError> {
        let path = self.path(record.name.as_str());
        let write_err = |source| RbacError::Write {
            path: path.clone(),
            source,
        };
        // The `.tmp` extension keeps a leftover out of the loader's way.
        let tmp = self.dir.join(format!(
            "{}.toml.{}.tmp",
            record.name,
            Uuid::new_v4().simple()
        ));
        let body = format!(
            "token = \"{}\"\ngroup = \"{}\"\n",
            record.token, record.group
        );
        let result = (|| {
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(CLIENT_FILE_MODE)
                .open(&tmp)?;
            file.write_all(body.as_bytes())?;
            file.sync_all()?;
            fs::set_permissions(&tmp, fs::Permissions::from_mode(CLIENT_FILE_MODE))?;
            self.owner.apply(&tmp)?;
            fs::rename(&tmp, &path)?;
            fs::File::open(&self.dir)?.sync_all()
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(write_err(e));
        }
        Ok(path)
    }

    /// Removes the client's file; `Ok(false)` when it was already gone.
    pub fn remove(&self, name: &str) -> Result<bool, RbacError> {
        let path = self.path(name);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(RbacError::Write { path, source }),
        }
    }
}

fn file_err(path: &Path, reason: impl std::fmt::Display) -> RbacError {
    RbacError::File {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Loads every client file and creates the default admin client when no
/// client is named `couicctl`. Returns the registry and, when it was
/// created, the default client's file.
pub fn load_or_init(files: &ClientFiles) -> Result<(ClientRegistry, Option<PathBuf>), RbacError> {
    let mut registry = ClientRegistry::new(files.load_all()?);
    if registry.contains(DEFAULT_CLIENT) {
        return Ok((registry, None));
    }
    let name = ClientName::parse(DEFAULT_CLIENT).expect("a valid name");
    let record = ClientRecord::generate(name, Group::Admin);
    let path = files.write(&record)?;
    registry.insert(record);
    Ok((registry, Some(path)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> (tempfile::TempDir, ClientFiles) {
        let tmp = tempfile::tempdir().unwrap();
        let files = ClientFiles::new(tmp.path(), Owner::current());
        (tmp, files)
    }

    fn write_raw(dir: &Path, name: &str, body: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, body).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn grants_follow_the_group_table() {
        use Group::*;
        assert!(grants(Admin, Scope::CLIENTS_DELETE));
        assert!(grants(Clientrw, Scope::POLICY_PEER) && grants(Clientrw, Scope::SETS_UPDATE));
        assert!(!grants(Clientrw, Scope::STATS_LIST) && !grants(Clientrw, Scope::CLIENTS_LIST));
        assert!(grants(Clientro, Scope::POLICY_GET) && grants(Clientro, Scope::SETS_LIST));
        assert!(!grants(Clientro, Scope::POLICY_CREATE) && !grants(Clientro, Scope::POLICY_PEER));
        assert!(grants(Monitoring, Scope::STATS_GET) && !grants(Monitoring, Scope::POLICY_LIST));
        assert!(grants(Peering, Scope::POLICY_PEER) && !grants(Peering, Scope::POLICY_CREATE));
        assert_eq!(Scope::SETS_CREATE.as_string(), "sets:create");
    }

    #[test]
    fn authenticates_by_token_value() {
        let a = ClientRecord::generate(ClientName::parse("a").unwrap(), Group::Admin);
        let b = ClientRecord::generate(ClientName::parse("b").unwrap(), Group::Peering);
        let registry = ClientRegistry::new(vec![a.clone(), b.clone()]);
        assert_eq!(registry.authenticate(&b.token), Some(&b));
        assert_eq!(registry.authenticate(&Uuid::nil()), None);
        // Any spelling of the same UUID is the same token.
        let upper = Uuid::parse_str(&a.token.simple().to_string().to_uppercase()).unwrap();
        assert_eq!(registry.authenticate(&upper), Some(&a));
    }

    #[test]
    fn creates_the_default_client_once() {
        let (tmp, files) = files();
        let (registry, created) = load_or_init(&files).unwrap();
        let path = created.expect("created at first start");
        assert_eq!(path, tmp.path().join("couicctl.toml"));
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o600);
        let text = fs::read_to_string(&path).unwrap();
        let token = registry.get(DEFAULT_CLIENT).unwrap().token;
        assert_eq!(text, format!("token = \"{token}\"\ngroup = \"admin\"\n"));
        let (again, created) = load_or_init(&files).unwrap();
        assert!(created.is_none());
        assert_eq!(again.get(DEFAULT_CLIENT).unwrap().token, token);
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1);
    }

    #[test]
    fn every_bad_file_is_named_with_its_reason() {
        let token = Uuid::new_v4();
        let cases = [
            (
                "mode.toml",
                format!("token = \"{token}\"\ngroup = \"admin\"\n"),
                0o644,
                "wrong permissions",
            ),
            (
                "syntax.toml",
                "token = \n".to_string(),
                0o600,
                "syntax.toml",
            ),
            (
                "uuid.toml",
                "token = \"nope\"\ngroup = \"admin\"\n".to_string(),
                0o600,
                "token",
            ),
            (
                "group.toml",
                format!("token = \"{token}\"\ngroup = \"ADMIN\"\n"),
                0o600,
                "group.toml",
            ),
            (
                "bad.name.toml",
                format!("token = \"{token}\"\ngroup = \"admin\"\n"),
                0o600,
                "Client name",
            ),
        ];
        for (name, body, mode, needle) in cases {
            let (tmp, files) = files();
            let path = write_raw(tmp.path(), name, &body, mode);
            let err = files.load_all().unwrap_err().to_string();
            assert!(err.contains(&path.display().to_string()), "{name}: {err}");
            assert!(err.contains(needle), "{name}: {err}");
        }
    }

    #[test]
    fn duplicate_tokens_are_fatal_and_other_files_ignored() {
        let (tmp, files) = files();
        let token = Uuid::new_v4();
        let body = format!("token = \"{token}\"\ngroup = \"clientro\"\nextra = 1\n");
        write_raw(tmp.path(), "one.toml", &body, 0o600);
        write_raw(tmp.path(), "x.toml.tmp", "garbage", 0o644);
        write_raw(tmp.path(), "notes.txt", "garbage", 0o644);
        let loaded = files.load_all().unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(
            (loaded[0].name.as_str(), loaded[0].group),
            ("one", Group::Clientro)
        );
        write_raw(tmp.path(), "two.toml", &body, 0o600);
        let err = files.load_all().unwrap_err().to_string();
        assert!(
            err.contains("two.toml") && err.contains("one.toml"),
            "{err}"
        );
    }

    #[test]
    fn remove_reports_a_missing_file() {
        let (_tmp, files) = files();
        let record = ClientRecord::generate(ClientName::parse("x").unwrap(), Group::Monitoring);
        files.write(&record).unwrap();
        assert!(files.remove("x").unwrap());
        assert!(!files.remove("x").unwrap());
    }
}
