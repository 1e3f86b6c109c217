//! Raw userfaultfd: the syscall, the API handshake and the ioctls the pager
//! uses, declared here with our own `#[repr(C)]` structs.
//!
//! Why not the `userfaultfd` crate: it runs bindgen over the installed kernel
//! headers (needs libclang at build time) and the headers shipped with this
//! distribution predate `UFFDIO_MOVE` (Linux 6.8), so the ioctl we most need
//! would be missing anyway. The structs below are the kernel's stable uAPI
//! (`include/uapi/linux/userfaultfd.h`); their sizes are asserted at compile
//! time and the numbers are built with the same `_IOC` encoding the kernel uses.
//!
//! Everything here is a thin wrapper: policy (which ioctl when, bookkeeping
//! order) lives in `mapping`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::error::Error;

const UFFD_API: u64 = 0xAA;
const UFFDIO: u32 = 0xAA;

const fn ioc(dir: u32, nr: u32, size: usize) -> libc::c_ulong {
    // Same layout as the kernel's generic _IOC on x86/arm/riscv:
    // dir:2 | size:14 | type:8 | nr:8.
    ((dir << 30) | ((size as u32) << 16) | (UFFDIO << 8) | nr) as libc::c_ulong
}
const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

/// `struct uffdio_api`.
#[repr(C)]
#[derive(Default)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}
/// `struct uffdio_range`.
#[repr(C)]
struct UffdioRange {
    start: u64,
    len: u64,
}
/// `struct uffdio_register`.
#[repr(C)]
struct UffdioRegister {
    range: UffdioRange,
    mode: u64,
    ioctls: u64,
}
/// `struct uffdio_copy` and `struct uffdio_move` share this layout.
#[repr(C)]
struct UffdioCopyMove {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    result: i64,
}
/// `struct uffdio_writeprotect`.
#[repr(C)]
struct UffdioWriteprotect {
    range: UffdioRange,
    mode: u64,
}

const _: () = assert!(std::mem::size_of::<UffdioApi>() == 24);
const _: () = assert!(std::mem::size_of::<UffdioRegister>() == 32);
const _: () = assert!(std::mem::size_of::<UffdioCopyMove>() == 40);
const _: () = assert!(std::mem::size_of::<UffdioWriteprotect>() == 24);
const _: () = assert!(std::mem::size_of::<Msg>() == 32);

const UFFDIO_API: libc::c_ulong = ioc(IOC_READ | IOC_WRITE, 0x3F, 24);
const UFFDIO_REGISTER: libc::c_ulong = ioc(IOC_READ | IOC_WRITE, 0x00, 32);
const UFFDIO_WAKE: libc::c_ulong = ioc(IOC_READ, 0x02, 16);
const UFFDIO_COPY: libc::c_ulong = ioc(IOC_READ | IOC_WRITE, 0x03, 40);
const UFFDIO_MOVE: libc::c_ulong = ioc(IOC_READ | IOC_WRITE, 0x05, 40);
const UFFDIO_WRITEPROTECT: libc::c_ulong = ioc(IOC_READ | IOC_WRITE, 0x06, 24);
/// `USERFAULTFD_IOC_NEW` on `/dev/userfaultfd` (`_IO(0xAA, 0)`).
const USERFAULTFD_IOC_NEW: libc::c_ulong = ioc(0, 0x00, 0);

/// Bits of the `ioctls` mask returned by `UFFDIO_REGISTER`.
pub(crate) const IOCTL_WAKE: u64 = 1 << 0x02;
pub(crate) const IOCTL_COPY: u64 = 1 << 0x03;
pub(crate) const IOCTL_MOVE: u64 = 1 << 0x05;
pub(crate) const IOCTL_WRITEPROTECT: u64 = 1 << 0x06;

/// `UFFD_FEATURE_*` bits the pager asks for.
pub(crate) mod feature {
    pub(crate) const PAGEFAULT_FLAG_WP: u64 = 1 << 0;
    pub(crate) const THREAD_ID: u64 = 1 << 8;
    pub(crate) const MOVE: u64 = 1 << 16;
}

/// Registration modes.
pub(crate) const REGISTER_MODE_MISSING: u64 = 1 << 0;
pub(crate) const REGISTER_MODE_WP: u64 = 1 << 1;

const COPY_MODE_DONTWAKE: u64 = 1 << 0;
const COPY_MODE_WP: u64 = 1 << 1;
const MOVE_MODE_DONTWAKE: u64 = 1 << 0;
const WRITEPROTECT_MODE_WP: u64 = 1 << 0;

const EVENT_PAGEFAULT: u8 = 0x12;
/// `UFFD_PAGEFAULT_FLAG_WRITE`.
pub(crate) const FLAG_WRITE: u64 = 1 << 0;
/// `UFFD_PAGEFAULT_FLAG_WP`.
pub(crate) const FLAG_WP: u64 = 1 << 1;

/// `struct uffd_msg` (packed in the kernel; with this field order `repr(C)`
/// has no padding, asserted above).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub(crate) struct Msg {
    event: u8,
    reserved1: u8,
    reserved2: u16,
    reserved3: u32,
    arg: [u64; 3],
}

/// A page fault reported by the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Fault {
    pub(crate) address: usize,
    pub(crate) flags: u64,
    /// Thread id of the faulting thread (0 without `UFFD_FEATURE_THREAD_ID`).
    pub(crate) tid: u32,
}

impl Msg {
    /// The page fault this message reports, or `None` for other events
    /// (none are enabled, so those would be ignored).
    pub(crate) fn fault(&self) -> Option<Fault> {
        (self.event == EVENT_PAGEFAULT).then(|| Fault {
            flags: self.arg[0],
            address: self.arg[1] as usize,
            // `feat.ptid` is the first 32-bit field of the third word.
            tid: (self.arg[2] & 0xffff_ffff) as u32,
        })
    }
}

/// What the kernel offers, found by [`probe`](crate::probe).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Features {
    /// All `UFFD_FEATURE_*` bits the running kernel reports.
    pub bits: u64,
}

impl Features {
    /// `UFFDIO_MOVE` (Linux ≥ 6.8): install a block by moving a filled pool
    /// slot instead of copying it page by page.
    pub fn has_move(&self) -> bool {
        self.bits & feature::MOVE != 0
    }
    /// Write-protect faults (Linux ≥ 5.7 for anonymous memory): dirty tracking.
    pub fn has_write_protect(&self) -> bool {
        self.bits & feature::PAGEFAULT_FLAG_WP != 0
    }
    /// Faulting thread id in fault messages: lets the handler signal the
    /// faulting thread when a fault cannot be served.
    pub fn has_thread_id(&self) -> bool {
        self.bits & feature::THREAD_ID != 0
    }
}

/// An open, API-negotiated userfaultfd.
#[derive(Debug)]
pub(crate) struct Uffd {
    fd: OwnedFd,
    features: Features,
}

fn last_errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Open a new userfaultfd without the API handshake: the syscall first, then
/// `/dev/userfaultfd` (which is governed by file permissions rather than the
/// sysctl).
fn open_raw() -> Result<OwnedFd, Error> {
    let flags = libc::O_CLOEXEC | libc::O_NONBLOCK;
    // SAFETY: the userfaultfd syscall takes one int of flags and touches no
    // memory of ours; it returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, flags) };
    if fd >= 0 {
        // SAFETY: the syscall just returned this fd and nothing else owns it.
        return Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
    }
    let sys_errno = last_errno();
    // SAFETY: the path is a NUL-terminated literal; open touches nothing else.
    let dev = unsafe { libc::open(c"/dev/userfaultfd".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if dev >= 0 {
        // SAFETY: open just returned this fd and nothing else owns it.
        let dev = unsafe { OwnedFd::from_raw_fd(dev) };
        // SAFETY: USERFAULTFD_IOC_NEW takes the flags as its integer argument
        // and returns a new fd; no memory of ours is passed.
        let fd = unsafe { libc::ioctl(dev.as_raw_fd(), USERFAULTFD_IOC_NEW, flags) };
        if fd >= 0 {
            // SAFETY: the ioctl just returned this fd and nothing else owns it.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }
    match sys_errno {
        libc::EPERM | libc::EACCES => Err(Error::UffdNotPermitted { errno: sys_errno }),
        _ => Err(Error::UffdUnavailable { errno: sys_errno }),
    }
}

fn api(fd: &OwnedFd, features: u64) -> io::Result<UffdioApi> {
    let mut api = UffdioApi {
        api: UFFD_API,
        features,
        ioctls: 0,
    };
    // SAFETY: UFFDIO_API reads and writes exactly one `struct uffdio_api`,
    // which `api` is (layout asserted above) and which outlives the call.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), UFFDIO_API, &mut api as *mut UffdioApi) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(api)
}

impl Uffd {
    /// Which userfaultfd features this kernel offers, or why userfaultfd
    /// cannot be used by this process at all.
    ///
    /// A separate descriptor is used because `UFFDIO_API` may succeed only
    /// once per descriptor and asking for an unknown feature fails it.
    pub(crate) fn probe() -> Result<Features, Error> {
        let fd = open_raw()?;
        let api = api(&fd, 0).map_err(|source| Error::Syscall {
            op: "UFFDIO_API",
            addr: 0,
            len: 0,
            source,
        })?;
        Ok(Features { bits: api.features })
    }

    /// Open a userfaultfd with `wanted ∩ offered` features enabled.
    pub(crate) fn open(wanted: u64) -> Result<Self, Error> {
        let offered = Self::probe()?;
        let fd = open_raw()?;
        let api = api(&fd, wanted & offered.bits).map_err(|source| Error::Syscall {
            op: "UFFDIO_API",
            addr: 0,
            len: 0,
            source,
        })?;
        Ok(Uffd {
            fd,
            features: Features {
                bits: api.features & wanted,
            },
        })
    }

    pub(crate) fn features(&self) -> Features {
        self.features
    }

    pub(crate) fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn ioctl_err(op: &'static str, addr: usize, len: usize) -> Error {
        Error::Syscall {
            op,
            addr,
            len,
            source: io::Error::last_os_error(),
        }
    }

    /// Register `[start, start+len)` with `mode`; returns the mask of range
    /// ioctls the kernel allows there.
    ///
    /// # Safety
    /// The range must be an anonymous private mapping owned by the caller for
    /// as long as this descriptor lives: from now on faults there are reported
    /// to this descriptor and block until it resolves them.
    pub(crate) unsafe fn register(
        &self,
        start: usize,
        len: usize,
        mode: u64,
    ) -> Result<u64, Error> {
        let mut reg = UffdioRegister {
            range: UffdioRange {
                start: start as u64,
                len: len as u64,
            },
            mode,
            ioctls: 0,
        };
        // SAFETY: UFFDIO_REGISTER reads and writes one `struct uffdio_register`
        // (`reg`, live across the call); the range itself is the caller's
        // (function contract).
        let r = unsafe {
            libc::ioctl(
                self.raw_fd(),
                UFFDIO_REGISTER,
                &mut reg as *mut UffdioRegister,
            )
        };
        if r < 0 {
            return Err(Self::ioctl_err("UFFDIO_REGISTER", start, len));
        }
        Ok(reg.ioctls)
    }

    /// Move the pages of `[src, src+len)` onto the unpopulated `[dst,
    /// dst+len)` without waking threads waiting on `dst`. Retries `EAGAIN`
    /// and continues after partial moves.
    ///
    /// # Safety
    /// `dst` must be registered with this descriptor and hold no pages; `src`
    /// must be fully populated anonymous memory of this process whose content
    /// no Rust reference relies on (it becomes unpopulated).
    pub(crate) unsafe fn move_pages(
        &self,
        dst: usize,
        src: usize,
        len: usize,
    ) -> Result<(), Error> {
        let mut done = 0usize;
        let mut tries = 0u32;
        while done < len {
            let mut m = UffdioCopyMove {
                dst: (dst + done) as u64,
                src: (src + done) as u64,
                len: (len - done) as u64,
                mode: MOVE_MODE_DONTWAKE,
                result: 0,
            };
            // SAFETY: UFFDIO_MOVE reads and writes one `struct uffdio_move`
            // (`m`, live across the call); the ranges satisfy the function
            // contract.
            let r =
                unsafe { libc::ioctl(self.raw_fd(), UFFDIO_MOVE, &mut m as *mut UffdioCopyMove) };
            if r == 0 {
                return Ok(());
            }
            let err = io::Error::last_os_error();
            if m.result > 0 {
                done += m.result as usize;
            }
            match err.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EBUSY) if tries < 1000 => {
                    tries += 1;
                    std::thread::yield_now();
                }
                _ => {
                    return Err(Error::Syscall {
                        op: "UFFDIO_MOVE",
                        addr: dst + done,
                        len: len - done,
                        source: err,
                    });
                }
            }
        }
        Ok(())
    }

    /// Copy `[src, src+len)` into fresh pages at `dst` (4 KiB pages), write
    /// protected if `wp`, without waking waiters on `dst`.
    ///
    /// # Safety
    /// `dst` must be registered with this descriptor (with `WP` mode if `wp`)
    /// and hold no pages; `src` must be readable memory of `len` bytes.
    pub(crate) unsafe fn copy(
        &self,
        dst: usize,
        src: usize,
        len: usize,
        wp: bool,
    ) -> Result<(), Error> {
        let mut done = 0usize;
        let mut tries = 0u32;
        while done < len {
            let mut c = UffdioCopyMove {
                dst: (dst + done) as u64,
                src: (src + done) as u64,
                len: (len - done) as u64,
                mode: COPY_MODE_DONTWAKE | if wp { COPY_MODE_WP } else { 0 },
                result: 0,
            };
            // SAFETY: UFFDIO_COPY reads and writes one `struct uffdio_copy`
            // (`c`, live across the call); the ranges satisfy the function
            // contract.
            let r =
                unsafe { libc::ioctl(self.raw_fd(), UFFDIO_COPY, &mut c as *mut UffdioCopyMove) };
            if r == 0 {
                return Ok(());
            }
            let err = io::Error::last_os_error();
            if c.result > 0 {
                done += c.result as usize;
            }
            match err.raw_os_error() {
                Some(libc::EAGAIN) if tries < 1000 => {
                    tries += 1;
                    std::thread::yield_now();
                }
                _ => {
                    return Err(Error::Syscall {
                        op: "UFFDIO_COPY",
                        addr: dst + done,
                        len: len - done,
                        source: err,
                    });
                }
            }
        }
        Ok(())
    }

    /// Set (`wp`) or clear write protection on `[start, start+len)`. Clearing
    /// wakes the threads waiting on the range; setting never wakes.
    ///
    /// The kernel refuses ranges not registered with this descriptor in `WP`
    /// mode, so this cannot affect memory the pager does not own.
    pub(crate) fn write_protect(&self, start: usize, len: usize, wp: bool) -> Result<(), Error> {
        let mut w = UffdioWriteprotect {
            range: UffdioRange {
                start: start as u64,
                len: len as u64,
            },
            // The kernel rejects WP|DONTWAKE (setting protection never wakes).
            mode: if wp { WRITEPROTECT_MODE_WP } else { 0 },
        };
        loop {
            // SAFETY: UFFDIO_WRITEPROTECT reads and writes one `struct
            // uffdio_writeprotect` (`w`, live across the call). It changes
            // only protection bits of ranges registered with this descriptor.
            let r = unsafe {
                libc::ioctl(
                    self.raw_fd(),
                    UFFDIO_WRITEPROTECT,
                    &mut w as *mut UffdioWriteprotect,
                )
            };
            if r == 0 {
                return Ok(());
            }
            if io::Error::last_os_error().raw_os_error() != Some(libc::EAGAIN) {
                return Err(Self::ioctl_err("UFFDIO_WRITEPROTECT", start, len));
            }
        }
    }

    /// Wake the threads blocked on faults in `[start, start+len)`; they retry
    /// their access.
    pub(crate) fn wake(&self, start: usize, len: usize) -> Result<(), Error> {
        let mut range = UffdioRange {
            start: start as u64,
            len: len as u64,
        };
        // SAFETY: UFFDIO_WAKE reads one `struct uffdio_range` (`range`, live
        // across the call) and only wakes waiters; it changes no memory.
        let r = unsafe { libc::ioctl(self.raw_fd(), UFFDIO_WAKE, &mut range as *mut UffdioRange) };
        if r < 0 {
            return Err(Self::ioctl_err("UFFDIO_WAKE", start, len));
        }
        Ok(())
    }

    /// Read pending messages without blocking; returns how many were read
    /// (0 when none is pending).
    pub(crate) fn read(&self, buf: &mut [Msg]) -> io::Result<usize> {
        let bytes = std::mem::size_of_val(buf);
        // SAFETY: `buf` is valid for `bytes` bytes of writes for the whole call
        // and `Msg` accepts any bit pattern; the fd is non-blocking.
        let n = unsafe { libc::read(self.raw_fd(), buf.as_mut_ptr().cast(), bytes) };
        if n < 0 {
            let err = io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::EAGAIN) => Ok(0),
                _ => Err(err),
            };
        }
        Ok(n as usize / std::mem::size_of::<Msg>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_kernel_uapi() {
        // Values computed by the C preprocessor from linux/userfaultfd.h.
        assert_eq!(UFFDIO_API, 0xC018_AA3F);
        assert_eq!(UFFDIO_REGISTER, 0xC020_AA00);
        assert_eq!(UFFDIO_WAKE, 0x8010_AA02);
        assert_eq!(UFFDIO_COPY, 0xC028_AA03);
        assert_eq!(UFFDIO_MOVE, 0xC028_AA05);
        assert_eq!(UFFDIO_WRITEPROTECT, 0xC018_AA06);
        assert_eq!(USERFAULTFD_IOC_NEW, 0xAA00);
    }

    #[test]
    fn message_decodes_a_page_fault() {
        let msg = Msg {
            event: EVENT_PAGEFAULT,
            arg: [FLAG_WRITE, 0x7f00_0000_1000, 1234],
            ..Msg::default()
        };
        assert_eq!(
            msg.fault(),
            Some(Fault {
                address: 0x7f00_0000_1000,
                flags: FLAG_WRITE,
                tid: 1234
            })
        );
        let other = Msg {
            event: 0x13,
            ..Msg::default()
        };
        assert_eq!(other.fault(), None);
    }

    #[test]
    fn probe_reports_features_or_a_reason() {
        match Uffd::probe() {
            Ok(f) => eprintln!(
                "userfaultfd features {:#x}: move={} wp={} tid={}",
                f.bits,
                f.has_move(),
                f.has_write_protect(),
                f.has_thread_id()
            ),
            Err(e) => {
                let text = e.to_string();
                eprintln!("skipping: userfaultfd unusable here: {text}");
                assert!(text.contains("userfaultfd"));
            }
        }
    }
}
