//! Giving up privileges once every kernel handle is taken.
//!
//! couic needs CAP_BPF and CAP_NET_ADMIN only to load and attach. With
//! CAP_PERFMON as well, the verifier trusts the loader with speculation and
//! leaves out the barriers it otherwise puts after stack writes (Spectre v4),
//! which cost 1.5 to 2.5 times the per-packet time. After loading, map fds
//! work without capabilities, so all of them are dropped and `no_new_privs`
//! is set: a compromised daemon cannot regain them.

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("cannot drop capabilities: {0}")]
    Capset(#[source] std::io::Error),
    #[error("cannot set no_new_privs: {0}")]
    NoNewPrivs(#[source] std::io::Error),
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Limits the calling thread's effective and permitted sets to `caps`
/// (capability numbers, e.g. 39 for CAP_BPF) and empties its inheritable set.
/// Capabilities are per thread: other threads keep theirs.
pub fn keep_only(caps: &[u32]) -> Result<(), PrivilegeError> {
    let mut data = [CapData::default(); 2];
    for &cap in caps {
        let slot = &mut data[(cap / 32) as usize];
        slot.effective |= 1 << (cap % 32);
        slot.permitted |= 1 << (cap % 32);
    }
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    // SAFETY: header and data are valid, correctly sized v3 structures that
    // live across the call; capset only reads them, and pid 0 is the calling
    // thread.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        )
    };
    if ret != 0 {
        return Err(PrivilegeError::Capset(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Capability numbers (linux/capability.h). couic loads and attaches with
/// the first two; with CAP_PERFMON too, the verifier adds no speculation
/// barriers.
pub const CAP_NET_ADMIN: u32 = 12;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

/// Whether the calling thread holds `cap` in its effective set.
pub fn has_effective(cap: u32) -> bool {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: header and data are valid, correctly sized v3 structures that
    // live across the call; capget writes only into `data`.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut header as *mut CapHeader,
            data.as_mut_ptr(),
        )
    };
    ret == 0 && data[(cap / 32) as usize].effective & (1 << (cap % 32)) != 0
}

/// Empties the effective, permitted and inheritable sets of the calling
/// thread and sets `no_new_privs`.
pub fn drop_all() -> Result<(), PrivilegeError> {
    keep_only(&[])?;
    // SAFETY: prctl with PR_SET_NO_NEW_PRIVS takes plain integer arguments.
    let ret = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if ret != 0 {
        return Err(PrivilegeError::NoNewPrivs(std::io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_capability_is_seen_gone_on_this_thread_only() {
        let before = has_effective(CAP_PERFMON);
        std::thread::spawn(|| {
            keep_only(&[]).unwrap();
            assert!(!has_effective(CAP_PERFMON));
        })
        .join()
        .unwrap();
        assert_eq!(has_effective(CAP_PERFMON), before);
    }
}
