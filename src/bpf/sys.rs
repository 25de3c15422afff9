//! Raw syscalls on the maps and the program: array reads (one value, a
//! span in one batch lookup, or buckets through a mapping), batch updates
//! and deletes with a result per item, and BPF_PROG_TEST_RUN.

use std::io;
use std::os::fd::{AsFd, AsRawFd};

use libbpf_rs::{MapHandle, ProgramHandle};

use super::buckets::{Bucket, BUCKET_SIZE};
use super::mapped::MappedBuckets;

/// Outcome of a batch: how many leading items the kernel applied, and the
/// error that stopped it, if any.
struct BatchOutcome {
    applied: usize,
    error: Option<std::io::Error>,
}

/// Buckets `ids` (sorted, unique) of a bucket array, each read once:
/// through a mapping where enough of them share its pages, else by
/// [`read_many`].
pub fn read_buckets(map: &MapHandle, ipv4: bool, ids: &[u32]) -> Vec<io::Result<Bucket>> {
    let decode = |v: &[u8]| Bucket::from_bytes(ipv4, v.try_into().expect("one bucket"));
    let mut read = Vec::with_capacity(ids.len());
    for window in MappedBuckets::windows(ids) {
        let mapped = MappedBuckets::worth_it(window)
            .then(|| MappedBuckets::of(map, window).ok())
            .flatten();
        match mapped {
            Some(view) => read.extend(window.iter().map(|&id| view.bucket(id).map(|v| decode(&v)))),
            None => read.extend(read_many(map, window, BUCKET_SIZE, decode)),
        }
    }
    read
}

/// Buckets spanned by one batch read at most (64 KiB).
const READ_SPAN: u32 = 1024;

/// Reads `ids` (sorted, unique) from an array map of `size`-byte values
/// (at most a bucket), each decoded by `decode`. Where they lie close
/// together, one batch lookup reads the whole span; lone ones are read
/// singly.
pub fn read_many<T>(
    map: &MapHandle,
    ids: &[u32],
    size: usize,
    decode: impl Fn(&[u8]) -> T,
) -> Vec<io::Result<T>> {
    let mut out = Vec::with_capacity(ids.len());
    let mut k = 0;
    while k < ids.len() {
        let first = ids[k];
        let end = ids[k..].partition_point(|&b| b - first < READ_SPAN) + k;
        let span = ids[end - 1] - first + 1;
        // A batch read costs a fraction of a single lookup per value, the
        // smaller the value the smaller the fraction: a span is read whole
        // when a quarter of its buckets' worth of bytes is wanted.
        let worth = (end - k) * 4 * BUCKET_SIZE / size;
        if worth >= span as usize && end - k > 1 {
            match read_span(map, first, span, size) {
                Ok(all) => out.extend(ids[k..end].iter().map(|&b| {
                    let at = (b - first) as usize * size;
                    Ok(decode(&all[at..at + size]))
                })),
                Err(e) => out.extend(ids[k..end].iter().map(|_| Err(copy_error(&e)))),
            }
            k = end;
        } else {
            out.push(read_one(map, first, size).map(|v| decode(&v[..size])));
            k += 1;
        }
    }
    out
}

/// One value of an array map, of `size` bytes (at most a bucket).
fn read_one(map: &MapHandle, id: u32, size: usize) -> io::Result<[u8; BUCKET_SIZE]> {
    assert!(size <= BUCKET_SIZE);
    let mut value = [0u8; BUCKET_SIZE];
    // SAFETY: the key is a u32 and the buffer holds at least one value, the
    // map's key and value sizes.
    let ret = unsafe {
        libbpf_sys::bpf_map_lookup_elem(
            map.as_fd().as_raw_fd(),
            (&id as *const u32).cast(),
            value.as_mut_ptr().cast(),
        )
    };
    if ret != 0 {
        return Err(io::Error::from_raw_os_error(-ret));
    }
    Ok(value)
}

/// Writes `value` as entry `id` of an array map whose values are
/// `value.len()` bytes.
pub fn write_one(map: &MapHandle, id: u32, value: &[u8]) -> io::Result<()> {
    // SAFETY: the key is a u32 and `value` holds one value, the map's key
    // and value sizes; the kernel only reads them.
    let ret = unsafe {
        libbpf_sys::bpf_map_update_elem(
            map.as_fd().as_raw_fd(),
            (&id as *const u32).cast(),
            value.as_ptr().cast(),
            u64::from(libbpf_sys::BPF_ANY),
        )
    };
    if ret != 0 {
        return Err(io::Error::from_raw_os_error(-ret));
    }
    Ok(())
}

/// One bucket.
pub fn read_bucket(map: &MapHandle, ipv4: bool, id: u32) -> io::Result<Bucket> {
    read_one(map, id, BUCKET_SIZE).map(|v| Bucket::from_bytes(ipv4, v))
}

/// `count` values of `size` bytes from `first` on, in one batch lookup.
fn read_span(map: &MapHandle, first: u32, count: u32, size: usize) -> io::Result<Vec<u8>> {
    let mut keys = vec![0u32; count as usize];
    let mut values = vec![0u8; count as usize * size];
    // The batch starts after the key given, so the one before `first`.
    let before = first.wrapping_sub(1);
    let mut next = 0u32;
    let mut n = count;
    let opts = batch_opts(0);
    // SAFETY: `keys` and `values` hold `count` keys and values; the kernel
    // writes at most `n` of each, the next key into `next`, and how many it
    // read into `n`.
    let ret = unsafe {
        libbpf_sys::bpf_map_lookup_batch(
            map.as_fd().as_raw_fd(),
            if first == 0 {
                std::ptr::null_mut()
            } else {
                (&before as *const u32).cast_mut().cast()
            },
            (&mut next as *mut u32).cast(),
            keys.as_mut_ptr().cast(),
            values.as_mut_ptr().cast(),
            &mut n,
            &opts,
        )
    };
    // ENOENT only says the array ended; the span never runs past it.
    if ret != 0 && -ret != libc::ENOENT {
        return Err(io::Error::from_raw_os_error(-ret));
    }
    if n != count || keys.first() != Some(&first) {
        return Err(io::Error::from_raw_os_error(libc::EIO));
    }
    Ok(values)
}

pub fn copy_error(e: &io::Error) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error().unwrap_or(libc::EIO))
}

/// Writes (`values` given) or deletes `keys` in `map` by batches; what a
/// batch could not apply is retried one by one, so each item gets its own
/// result.
pub fn batch_items(
    map: &MapHandle,
    keys: &[Vec<u8>],
    values: Option<&[Vec<u8>]>,
) -> Vec<io::Result<()>> {
    let mut results: Vec<io::Result<()>> = keys.iter().map(|_| Ok(())).collect();
    let mut start = 0;
    while start < keys.len() {
        let outcome = batch_call(map, &keys[start..], values.map(|v| &v[start..]));
        if outcome.error.is_none() {
            break;
        }
        if outcome.applied > 0 {
            start += outcome.applied;
            continue;
        }
        // Nothing applied: the first item fails alone, or the batch as a
        // whole did; either way try it singly.
        let single = batch_call(map, &keys[start..=start], values.map(|v| &v[start..=start]));
        if let Some(e) = single.error {
            results[start] = Err(e);
        }
        start += 1;
    }
    results
}

/// One batch update (`values` given) or delete of `keys` in `map`.
fn batch_call(map: &MapHandle, keys: &[Vec<u8>], values: Option<&[Vec<u8>]>) -> BatchOutcome {
    let count = keys.len();
    let mut n = count as u32;
    let flat_keys: Vec<u8> = keys.concat();
    let fd = map.as_fd().as_raw_fd();
    let ret = match values {
        Some(values) => {
            let flat_values: Vec<u8> = values.concat();
            let opts = batch_opts(libbpf_sys::BPF_ANY as u64);
            // SAFETY: the buffers hold `count` keys and values of the map's
            // sizes; the kernel reads at most `n` of each and writes back how
            // many it processed into `n`.
            unsafe {
                libbpf_sys::bpf_map_update_batch(
                    fd,
                    flat_keys.as_ptr().cast(),
                    flat_values.as_ptr().cast(),
                    &mut n,
                    &opts,
                )
            }
        }
        None => {
            let opts = batch_opts(0);
            // SAFETY: as above, for keys only.
            unsafe {
                libbpf_sys::bpf_map_delete_batch(fd, flat_keys.as_ptr().cast(), &mut n, &opts)
            }
        }
    };
    outcome(ret, n as usize, count)
}

fn batch_opts(elem_flags: u64) -> libbpf_sys::bpf_map_batch_opts {
    libbpf_sys::bpf_map_batch_opts {
        sz: size_of::<libbpf_sys::bpf_map_batch_opts>() as _,
        elem_flags,
        flags: 0,
    }
}

fn outcome(ret: i32, processed: usize, count: usize) -> BatchOutcome {
    if ret == 0 {
        return BatchOutcome {
            applied: count,
            error: None,
        };
    }
    let errno = if ret < 0 {
        -ret
    } else {
        std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    };
    // A call refused before it began leaves the count as it was given:
    // then nothing was applied.
    BatchOutcome {
        applied: if processed >= count { 0 } else { processed },
        error: Some(std::io::Error::from_raw_os_error(errno)),
    }
}

/// One BPF_PROG_TEST_RUN of the program on `frame`, `repeat` times: the XDP
/// action returned and the kernel's average time per run.
pub fn test_run(
    program: &ProgramHandle,
    frame: &[u8],
    repeat: u32,
) -> std::io::Result<(u32, std::time::Duration)> {
    let mut opts = libbpf_sys::bpf_test_run_opts {
        sz: size_of::<libbpf_sys::bpf_test_run_opts>() as _,
        data_in: frame.as_ptr().cast(),
        data_size_in: frame.len() as u32,
        repeat: repeat.max(1) as i32,
        ..Default::default()
    };
    // SAFETY: `frame` outlives the call and its length is given; no output
    // buffers are passed, so the kernel writes only into `opts`.
    let ret = unsafe { libbpf_sys::bpf_prog_test_run_opts(program.as_fd().as_raw_fd(), &mut opts) };
    if ret != 0 {
        return Err(std::io::Error::from_raw_os_error(-ret));
    }
    Ok((
        opts.retval,
        std::time::Duration::from_nanos(u64::from(opts.duration)),
    ))
}
