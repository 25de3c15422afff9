//! A read-only view of a bucket array, mapped into the daemon for one
//! change and unmapped when dropped.
//!
//! A change of thousands of rules touches thousands of buckets scattered
//! over the array (the hash spreads them on purpose), and a lookup syscall
//! each is most of what a bulk add costs. Mapping the array (its buckets
//! are `BPF_F_MMAPABLE`) lets them be read as memory. The view is not kept
//! between changes: the kernel maps every page of it at once, and they
//! would count in the daemon's RSS for as long as it stayed. For the same
//! reason a change maps at most 1 MiB at a time.

use std::io;
use std::os::fd::{AsFd, AsRawFd};

use libbpf_rs::MapHandle;

use super::buckets::BUCKET_SIZE;

/// Some pages of the buckets of one array map, readable as memory.
pub struct MappedBuckets {
    base: *const u8,
    len: usize,
    /// The buckets mapped: `first..first + count`.
    first: u32,
    count: u32,
}

/// Buckets per page.
fn per_page() -> u32 {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    (page.max(BUCKET_SIZE as libc::c_long) as usize / BUCKET_SIZE) as u32
}

/// Pages mapped at once at most (1 MiB): a change over a larger part of
/// an array maps it window by window, so the daemon's peak RSS grows by
/// no more than this.
const WINDOW_PAGES: u32 = 256;

impl MappedBuckets {
    /// `ids` (sorted) cut into runs that each span at most
    /// [`WINDOW_PAGES`] pages.
    pub fn windows(ids: &[u32]) -> impl Iterator<Item = &[u32]> {
        let per = per_page();
        let mut rest = ids;
        std::iter::from_fn(move || {
            let first = *rest.first()? / per;
            let end = rest.partition_point(|&id| id / per - first < WINDOW_PAGES);
            let (window, after) = rest.split_at(end);
            rest = after;
            Some(window)
        })
    }

    /// Whether reading `ids` (sorted, at least one) through a mapping
    /// beats a lookup each: mapping and unmapping cost about a lookup per
    /// page (~0.4 us a page here, ~0.5 us a lookup), so when there are at
    /// least as many buckets to read as pages they span.
    pub fn worth_it(ids: &[u32]) -> bool {
        let (Some(first), Some(last)) = (ids.first(), ids.last()) else {
            return false;
        };
        let per = per_page();
        ids.len() > 1 && ids.len() as u32 > last / per - first / per
    }

    /// Maps, read-only, the pages of `map` that hold buckets `ids`
    /// (sorted, at least one).
    pub fn of(map: &MapHandle, ids: &[u32]) -> io::Result<Self> {
        let per = per_page();
        let first_page = ids.first().map_or(0, |id| id / per);
        let pages = ids.last().map_or(0, |id| id / per) - first_page + 1;
        let len = pages as usize * per as usize * BUCKET_SIZE;
        // SAFETY: a fresh shared read-only mapping of the map's fd; the
        // kernel checks that the range lies within the array, and the
        // pointer is only used while `self` lives.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                map.as_fd().as_raw_fd(),
                libc::off_t::from(first_page) * (per as usize * BUCKET_SIZE) as libc::off_t,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(MappedBuckets {
            base: base.cast(),
            len,
            first: first_page * per,
            count: pages * per,
        })
    }

    /// A copy of bucket `id`.
    pub fn bucket(&self, id: u32) -> io::Result<[u8; BUCKET_SIZE]> {
        let Some(at) = id.checked_sub(self.first).filter(|&at| at < self.count) else {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        };
        let mut out = [0u8; BUCKET_SIZE];
        // SAFETY: `at` is below the number of buckets mapped, so the 64
        // bytes read lie within the mapping. Only the MapWriter, which
        // holds `self`, writes to the map, and not while reading.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.base.add(at as usize * BUCKET_SIZE),
                out.as_mut_ptr(),
                BUCKET_SIZE,
            );
        }
        Ok(out)
    }
}

impl Drop for MappedBuckets {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `of` mapped; nothing borrows it.
        unsafe {
            libc::munmap(self.base.cast_mut().cast(), self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mapping_pays_when_there_are_as_many_buckets_as_pages() {
        let per = per_page();
        assert!(!MappedBuckets::worth_it(&[]));
        assert!(!MappedBuckets::worth_it(&[7]), "one bucket: one lookup");
        assert!(MappedBuckets::worth_it(&[per, per + 1]), "one page");
        assert!(!MappedBuckets::worth_it(&[0, 2 * per]), "2 over 3 pages");
        assert!(MappedBuckets::worth_it(&[0, per, 2 * per]), "3 over 3");
    }

    #[test]
    fn windows_span_a_bounded_number_of_pages() {
        let per = per_page();
        let ids: Vec<u32> = (0..4 * WINDOW_PAGES).map(|p| p * per + 1).collect();
        let windows: Vec<&[u32]> = MappedBuckets::windows(&ids).collect();
        assert_eq!(windows.len(), 4);
        assert!(windows.iter().all(|w| w.len() == WINDOW_PAGES as usize));
        assert_eq!(windows.concat(), ids, "every id once, in order");
        let far = [0, WINDOW_PAGES * per - 1, WINDOW_PAGES * per];
        let windows: Vec<&[u32]> = MappedBuckets::windows(&far).collect();
        assert_eq!(windows, [&far[..2], &far[2..]]);
        assert_eq!(MappedBuckets::windows(&[]).count(), 0);
    }
}
