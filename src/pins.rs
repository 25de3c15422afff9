//! XDP links pinned in bpffs, so that filtering outlives the process.
//!
//! A link is pinned as `<dir>/link_<mode>_<iface>`. A starting couic that
//! finds its pin swaps its own, already filled program onto that link in
//! one step (`BPF_LINK_UPDATE`): the interface is never unfiltered, not
//! while the old couic stops, not while the new one starts. The old
//! program and its maps are freed by the kernel once the link lets go of
//! them. `couic --detach` removes the pins, and so the filtering.

use std::ffi::CString;
use std::fs;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use libbpf_rs::ProgramHandle;

use crate::config::OperationMode;
use crate::xdp::{self, AttachError, AttachMode, XdpLink};

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error(transparent)]
    Attach(#[from] AttachError),
    #[error("pins in {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The pins of one couic instance.
pub struct Pins {
    dir: PathBuf,
}

/// A link found pinned.
struct Pinned {
    path: PathBuf,
    mode: AttachMode,
    iface: String,
}

impl Pins {
    pub fn new(dir: impl Into<PathBuf>) -> Pins {
        Pins { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where bpffs should be: the dir is `<bpffs>/couic/<instance>`.
    fn bpffs(&self) -> Option<&Path> {
        self.dir.parent()?.parent()
    }

    fn io(&self, e: std::io::Error) -> PinError {
        PinError::Io {
            path: self.dir.clone(),
            source: e,
        }
    }

    /// Attaches `prog` to every interface, each in place of the program of
    /// its pinned link when there is one (the swap loses no packet), else
    /// on a new link, pinned. Pins of interfaces no longer configured are
    /// removed, which detaches their links.
    pub fn attach(
        &self,
        prog: &ProgramHandle,
        ifaces: &[String],
        mode: OperationMode,
    ) -> Result<Vec<XdpLink>, PinError> {
        if ifaces.is_empty() && !self.dir.exists() {
            return Ok(Vec::new());
        }
        if let Some(root) = self.bpffs().filter(|root| !is_bpffs(root)) {
            // Nothing is made there: it is no place for pins.
            tracing::warn!(
                "no bpffs is mounted at {} (`mount -t bpf bpf {0}`, as systemd does at \
                 boot): the links are not pinned, filtering stops when couic stops \
                 (README \"Restarts\")",
                root.display()
            );
            return Ok(xdp::attach_all(prog, ifaces, mode)?);
        }
        let made = fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir);
        if let Err(e) = made {
            // Filtering comes first: attached unpinned, and said so.
            tracing::warn!(
                "cannot make {} ({e}): the links are not pinned, filtering stops when \
                 couic stops (README \"Restarts\")",
                self.dir.display()
            );
            return Ok(xdp::attach_all(prog, ifaces, mode)?);
        }
        // Every interface is looked up before any link is touched.
        let indexes = ifaces
            .iter()
            .map(|iface| xdp::ifindex(iface))
            .collect::<Result<Vec<u32>, AttachError>>()?;
        let mut pinned = self.list()?;
        let mut links = Vec::with_capacity(ifaces.len());
        // Pins made by this start: removed again if a later attach fails.
        let mut made: Vec<PathBuf> = Vec::new();
        for (iface, index) in ifaces.iter().zip(indexes) {
            let mine: Vec<Pinned> = pinned.extract_if(.., |p| &p.iface == iface).collect();
            let mut swapped = None;
            for pin in mine {
                match (swapped.is_none(), Self::swap(&pin, index, prog, mode)) {
                    (true, Ok(link)) => swapped = Some(link),
                    (_, outcome) => {
                        if let Err(why) = outcome {
                            tracing::warn!("{iface}: the pinned link is not reused: {why}");
                        }
                        let _ = fs::remove_file(&pin.path);
                    }
                }
            }
            let link = match swapped {
                Some(link) => {
                    tracing::info!(
                        "XDP program replaced on the pinned link of {iface} (mode: {}): \
                         filtering was not interrupted",
                        link.mode
                    );
                    link
                }
                None => {
                    let mut link = xdp::attach(prog, iface, mode).inspect_err(|_| {
                        for path in &made {
                            let _ = fs::remove_file(path);
                        }
                    })?;
                    if let Some(path) = self.pin(&link) {
                        link.pinned = true;
                        made.push(path);
                    }
                    link
                }
            };
            links.push(link);
        }
        for stale in pinned {
            tracing::info!(
                "{} is no longer configured: its pinned link is removed",
                stale.iface
            );
            let _ = fs::remove_file(&stale.path);
        }
        if links.is_empty() {
            let _ = fs::remove_dir(&self.dir);
        }
        Ok(links)
    }

    /// Removes every pin; a link detaches once no process holds it.
    /// Returns how many there were.
    pub fn detach(&self) -> Result<usize, PinError> {
        if !self.dir.exists() {
            return Ok(0);
        }
        let pinned = self.list()?;
        for pin in &pinned {
            fs::remove_file(&pin.path).map_err(|e| self.io(e))?;
        }
        fs::remove_dir(&self.dir).map_err(|e| self.io(e))?;
        Ok(pinned.len())
    }

    /// The links pinned here (other files are left alone).
    fn list(&self) -> Result<Vec<Pinned>, PinError> {
        let mut found = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(|e| self.io(e))? {
            let entry = entry.map_err(|e| self.io(e))?;
            let name = entry.file_name();
            let Some((mode, iface)) = name
                .to_str()
                .and_then(|n| n.strip_prefix("link_"))
                .and_then(|n| n.split_once('_'))
            else {
                continue;
            };
            let mode = match mode {
                "generic" => AttachMode::Generic,
                "native" => AttachMode::Native,
                "offloaded" => AttachMode::Offloaded,
                _ => continue,
            };
            found.push(Pinned {
                path: entry.path(),
                mode,
                iface: iface.replace(':', "."),
            });
        }
        Ok(found)
    }

    /// The pinned link, if it is an XDP link on `ifindex` in a mode the
    /// config allows, running `prog` from now on.
    fn swap(
        pin: &Pinned,
        ifindex: u32,
        prog: &ProgramHandle,
        mode: OperationMode,
    ) -> Result<XdpLink, String> {
        let allowed = match mode {
            OperationMode::Auto => pin.mode != AttachMode::Offloaded,
            OperationMode::Generic => pin.mode == AttachMode::Generic,
            OperationMode::Native => pin.mode == AttachMode::Native,
            OperationMode::Offloaded => pin.mode == AttachMode::Offloaded,
        };
        if !allowed {
            return Err(format!(
                "it is in {} mode and the config asks for {mode}: the interface is \
                 unfiltered until the new link is made",
                pin.mode
            ));
        }
        let fd = obj_get(&pin.path).map_err(|e| e.to_string())?;
        match link_ifindex(&fd) {
            Some(i) if i == ifindex => {}
            Some(0) | None => return Err("its interface went away since".into()),
            Some(_) => return Err("it is on another interface of the same name".into()),
        }
        // SAFETY: both descriptors are valid for the call; no options.
        let rc = unsafe {
            libbpf_sys::bpf_link_update(fd.as_raw_fd(), prog.as_fd().as_raw_fd(), std::ptr::null())
        };
        if rc < 0 {
            return Err(std::io::Error::from_raw_os_error(-rc).to_string());
        }
        Ok(XdpLink::from_fd(&pin.iface, pin.mode, fd))
    }

    /// Pins a new link; on failure couic goes on unpinned and says what
    /// that means.
    fn pin(&self, link: &XdpLink) -> Option<PathBuf> {
        let path = self.dir.join(pin_name(link.mode, &link.iface));
        let pinned = c_path(&path).and_then(|c| {
            // SAFETY: the fd and the NUL-terminated path are valid for the call.
            let rc = unsafe { libbpf_sys::bpf_obj_pin(link.fd().as_raw_fd(), c.as_ptr()) };
            if rc < 0 {
                Err(std::io::Error::from_raw_os_error(-rc))
            } else {
                Ok(())
            }
        });
        match pinned {
            Ok(()) => {
                tracing::info!("link of {} pinned at {}", link.iface, path.display());
                Some(path)
            }
            Err(e) => {
                tracing::warn!(
                    "cannot pin the link of {} at {} ({e}): it will detach when couic stops",
                    link.iface,
                    path.display()
                );
                None
            }
        }
    }
}

/// Whether `path` is the root of a mounted bpffs (`BPF_FS_MAGIC`).
pub fn is_bpffs(path: &Path) -> bool {
    const BPF_FS_MAGIC: u32 = 0xcafe_4a11;
    let Ok(path) = c_path(path) else {
        return false;
    };
    let mut fs = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: a NUL-terminated path and room for the answer.
    let done = unsafe { libc::statfs(path.as_ptr(), fs.as_mut_ptr()) } == 0;
    // SAFETY: statfs filled it when it returned 0.
    done && unsafe { fs.assume_init() }.f_type as u32 == BPF_FS_MAGIC
}

/// `link_<mode>_<iface>`, a dot of the name (a VLAN's `eth0.100`) as `:`:
/// bpffs refuses dots, and no interface name has a colon.
fn pin_name(mode: AttachMode, iface: &str) -> String {
    format!("link_{mode}_{}", iface.replace('.', ":"))
}

/// `path` as bpf() takes it.
fn c_path(path: &Path) -> std::io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))
}

fn obj_get(path: &Path) -> std::io::Result<OwnedFd> {
    let c = c_path(path)?;
    // SAFETY: `c` is a valid NUL-terminated path for the call.
    let fd = unsafe { libbpf_sys::bpf_obj_get(c.as_ptr()) };
    if fd < 0 {
        return Err(std::io::Error::from_raw_os_error(-fd));
    }
    // SAFETY: bpf_obj_get returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The interface of an XDP link (0 once the interface is gone); `None`
/// for anything else.
fn link_ifindex(fd: &OwnedFd) -> Option<u32> {
    // SAFETY: an all-zero bpf_link_info is valid; the kernel fills it up
    // to `len`.
    let mut info: libbpf_sys::bpf_link_info = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libbpf_sys::bpf_link_info>() as u32;
    // SAFETY: `info` and `len` live across the call, `len` is its size.
    let rc = unsafe { libbpf_sys::bpf_link_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len) };
    if rc < 0 || info.type_ != libbpf_sys::BPF_LINK_TYPE_XDP {
        return None;
    }
    // SAFETY: the kernel filled the xdp member for an XDP link.
    Some(unsafe { info.__bindgen_anon_1.xdp.ifindex })
}
