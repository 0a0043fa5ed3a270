//! A provided-buffer ring: one pool of receive buffers per shard, shared by all of its
//! connections. The kernel picks a buffer only when data arrives, so an idle connection
//! holds no read buffer; the shard parses the bytes in place and hands the buffer back.
//!
//! Ownership of each buffer alternates: the kernel's from `recycle`+`publish` until a
//! completion names it, then the shard's (`take`) until `recycle`. `lent` tracks the
//! shard's side so that a buffer is never handed out twice or given back twice.

use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;

use super::ring::Ring;

/// An anonymous private mapping, unmapped on drop. Pages are only resident once touched.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn new(len: usize) -> io::Result<Mapping> {
        // SAFETY: an anonymous private mapping at an address of the kernel's choice; no
        // existing memory is affected.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr =
            NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Mapping { ptr, len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the mapping created in `new`, unmapped once.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

pub struct BufRing {
    group: u16,
    entries: u16,
    buf_len: u32,
    /// The shared ring of `io_uring_buf` entries, page aligned as the kernel requires.
    ring: Mapping,
    /// `entries * buf_len` bytes of buffers.
    bufs: Mapping,
    /// Our tail: entries written so far (wrapping); published to the kernel by `publish`.
    tail: u16,
    /// `lent[bid]`: the shard holds buffer `bid` (taken, not yet recycled).
    lent: Vec<bool>,
}

// SAFETY: the mappings are owned exclusively by this value; moving it to another thread
// moves that ownership (it is created before the shard thread starts using its ring).
unsafe impl Send for BufRing {}

impl BufRing {
    /// Maps `entries` buffers of `buf_len` bytes, registers them as buffer group `group`
    /// of `ring`, and gives them all to the kernel. `entries` must be a power of two
    /// (at most 32768).
    pub fn new(ring: &Ring, group: u16, entries: u16, buf_len: u32) -> io::Result<BufRing> {
        if !entries.is_power_of_two() || entries > 32768 || buf_len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "buffer ring: {entries} entries of {buf_len} bytes (entries must be a power of two <= 32768)"
                ),
            ));
        }
        let ring_mem = Mapping::new(usize::from(entries) * size_of::<BufRingEntry>())?;
        let bufs = Mapping::new(usize::from(entries) * buf_len as usize)?;
        // SAFETY: `ring_mem` is page aligned (fresh mmap) and holds `entries` entries; it is
        // owned by the returned `BufRing`, which the shard drops only after its ring (the
        // `Shard` declares the ring first), so the kernel never reads it after unmap.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                ring_mem.ptr.as_ptr() as u64,
                entries,
                group,
                0,
            )
        }
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot register a provided-buffer ring (needs Linux 5.19+): {e}"),
            )
        })?;
        let mut this = BufRing {
            group,
            entries,
            buf_len,
            ring: ring_mem,
            bufs,
            tail: 0,
            lent: vec![true; usize::from(entries)],
        };
        for bid in 0..entries {
            this.recycle(bid);
        }
        this.publish();
        Ok(this)
    }

    pub fn group(&self) -> u16 {
        self.group
    }

    pub fn buf_len(&self) -> u32 {
        self.buf_len
    }

    /// The `len` bytes the kernel wrote into buffer `bid`, named by a recv completion.
    /// The shard owns them until it calls [`recycle`](Self::recycle).
    ///
    /// Panics if `bid` is out of range, already taken, or `len` exceeds a buffer: each
    /// means a completion was misread, and continuing would race the kernel.
    pub fn take(&mut self, bid: u16, len: usize) -> &mut [u8] {
        let i = usize::from(bid);
        assert!(
            i < self.lent.len() && len <= self.buf_len as usize,
            "bad buffer {bid}/{len}"
        );
        assert!(!self.lent[i], "buffer {bid} taken twice");
        self.lent[i] = true;
        // SAFETY: buffer `bid` lies within `bufs` (bid < entries, len <= buf_len); the kernel
        // finished writing it before posting the completion that named it and will not
        // write it again until `recycle` puts it back in the ring; `lent` ensures this is
        // the only live slice of it, and the borrow of `self` keeps it from outliving that.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.bufs.ptr.as_ptr().add(i * self.buf_len as usize),
                len,
            )
        }
    }

    /// Gives buffer `bid` back to the kernel (visible after the next [`publish`](Self::publish)).
    pub fn recycle(&mut self, bid: u16) {
        let i = usize::from(bid);
        assert!(
            i < self.lent.len() && self.lent[i],
            "buffer {bid} recycled but not taken"
        );
        self.lent[i] = false;
        let slot = usize::from(self.tail & (self.entries - 1));
        let addr = self.bufs.ptr.as_ptr() as u64 + (i * self.buf_len as usize) as u64;
        // SAFETY: `slot < entries`, inside the ring mapping; the kernel reads only entries
        // between its head and the published tail, and this one is past the published tail.
        unsafe {
            let entry = &mut *self.ring.ptr.as_ptr().cast::<BufRingEntry>().add(slot);
            entry.set_addr(addr);
            entry.set_len(self.buf_len);
            entry.set_bid(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Publishes recycled buffers to the kernel: one release store of the tail.
    pub fn publish(&mut self) {
        // SAFETY: the tail field lives in the first entry of the page-aligned ring mapping
        // and is only ever accessed atomically (the kernel reads it with an acquire load).
        unsafe {
            let tail = BufRingEntry::tail(self.ring.ptr.as_ptr().cast::<BufRingEntry>());
            (*tail.cast::<AtomicU16>()).store(self.tail, Ordering::Release);
        }
    }

    /// Buffers currently held by the shard (not in the kernel's ring).
    pub fn lent(&self) -> usize {
        self.lent.iter().filter(|&&l| l).count()
    }
}
