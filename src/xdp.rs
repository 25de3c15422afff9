//! Attaching the program to interfaces as XDP links.
//!
//! A link detaches when its last reference goes: its fd here, and its pin
//! when it is pinned (see [`crate::pins`]). Unpinned, dropping an
//! [`XdpLink`] (or the process dying, even by SIGKILL) leaves nothing
//! attached.

use std::ffi::CString;
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use libbpf_rs::ProgramHandle;

use crate::config::OperationMode;

/// The mode a link was actually created in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    Generic,
    Native,
    Offloaded,
}

impl AttachMode {
    fn flags(self) -> u32 {
        match self {
            AttachMode::Generic => libbpf_sys::XDP_FLAGS_SKB_MODE,
            AttachMode::Native => libbpf_sys::XDP_FLAGS_DRV_MODE,
            AttachMode::Offloaded => libbpf_sys::XDP_FLAGS_HW_MODE,
        }
    }
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AttachMode::Generic => "generic",
            AttachMode::Native => "native",
            AttachMode::Offloaded => "offloaded",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("interface '{0}' does not exist")]
    NoSuchInterface(String),
    #[error(
        "cannot attach XDP to interface '{iface}': another XDP program is attached to it \
         ({holder}); remove it first (`ip link set dev {iface} xdp off`, or `couic --detach` \
         with the config of the couic that attached it)"
    )]
    Occupied { iface: String, holder: String },
    #[error("cannot attach XDP to interface '{iface}' in {mode} mode: {source}")]
    Refused {
        iface: String,
        mode: AttachMode,
        #[source]
        source: std::io::Error,
    },
}

/// One attachment; detached on drop.
#[derive(Debug)]
pub struct XdpLink {
    pub iface: String,
    pub mode: AttachMode,
    /// Pinned in bpffs: it outlives this process.
    pub pinned: bool,
    _fd: OwnedFd,
}

impl XdpLink {
    /// A link taken over from its pin.
    pub(crate) fn from_fd(iface: &str, mode: AttachMode, fd: OwnedFd) -> XdpLink {
        XdpLink {
            iface: iface.to_string(),
            mode,
            pinned: true,
            _fd: fd,
        }
    }

    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self._fd.as_fd()
    }
}

pub fn ifindex(iface: &str) -> Result<u32, AttachError> {
    let name = CString::new(iface).map_err(|_| AttachError::NoSuchInterface(iface.to_string()))?;
    // SAFETY: `name` is a valid NUL-terminated string for the whole call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(AttachError::NoSuchInterface(iface.to_string()));
    }
    Ok(index)
}

fn link_create(
    prog: &ProgramHandle,
    iface: &str,
    ifindex: u32,
    mode: AttachMode,
) -> Result<XdpLink, AttachError> {
    let opts = libbpf_sys::bpf_link_create_opts {
        sz: size_of::<libbpf_sys::bpf_link_create_opts>() as _,
        flags: mode.flags(),
        ..Default::default()
    };
    // SAFETY: the program fd is valid for the call and `opts` is a properly
    // sized, initialised options struct.
    let fd = unsafe {
        libbpf_sys::bpf_link_create(
            prog.as_fd().as_raw_fd(),
            ifindex as i32,
            libbpf_sys::BPF_XDP,
            &opts,
        )
    };
    if fd == -libc::EEXIST || fd == -libc::EBUSY {
        return Err(AttachError::Occupied {
            iface: iface.to_string(),
            holder: attached_program(ifindex),
        });
    }
    if fd < 0 {
        return Err(AttachError::Refused {
            iface: iface.to_string(),
            mode,
            source: std::io::Error::from_raw_os_error(-fd),
        });
    }
    // SAFETY: bpf_link_create returned a new fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    Ok(XdpLink {
        iface: iface.to_string(),
        mode,
        pinned: false,
        _fd: fd,
    })
}

/// The program attached to an interface, as "program id N, name X", as
/// far as the kernel tells.
fn attached_program(ifindex: u32) -> String {
    let mut id = 0u32;
    // SAFETY: `id` lives across the call.
    let rc = unsafe { libbpf_sys::bpf_xdp_query_id(ifindex as i32, 0, &mut id) };
    if rc < 0 || id == 0 {
        return "program unknown".into();
    }
    // SAFETY: plain id lookup; a returned fd is owned below.
    let fd = unsafe { libbpf_sys::bpf_prog_get_fd_by_id(id) };
    if fd < 0 {
        return format!("program id {id}");
    }
    // SAFETY: the fd was just returned to us and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: an all-zero bpf_prog_info is valid; the kernel fills it up to `len`.
    let mut info: libbpf_sys::bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libbpf_sys::bpf_prog_info>() as u32;
    // SAFETY: `info` and `len` live across the call.
    let rc = unsafe { libbpf_sys::bpf_prog_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len) };
    if rc < 0 {
        return format!("program id {id}");
    }
    let name: Vec<u8> = info
        .name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    format!("program id {id}, name {}", String::from_utf8_lossy(&name))
}

/// Attaches to one interface; `auto` tries native then generic.
pub fn attach(
    prog: &ProgramHandle,
    iface: &str,
    mode: OperationMode,
) -> Result<XdpLink, AttachError> {
    let index = ifindex(iface)?;
    match mode {
        OperationMode::Generic => link_create(prog, iface, index, AttachMode::Generic),
        OperationMode::Native => link_create(prog, iface, index, AttachMode::Native),
        OperationMode::Offloaded => link_create(prog, iface, index, AttachMode::Offloaded),
        OperationMode::Auto => link_create(prog, iface, index, AttachMode::Native).or_else(|err| {
            tracing::warn!(iface, error = %err, "native XDP refused, falling back to generic mode");
            link_create(prog, iface, index, AttachMode::Generic)
        }),
    }
}

/// Attaches to every interface or to none: on an error the links made so far
/// are dropped, which detaches them.
pub fn attach_all(
    prog: &ProgramHandle,
    ifaces: &[String],
    mode: OperationMode,
) -> Result<Vec<XdpLink>, AttachError> {
    ifaces
        .iter()
        .map(|iface| attach(prog, iface, mode))
        .collect()
}
