//! Helpers for tests, benches and fuzzers that play the client's part.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};

/// A memfd of `len` bytes sealed against growing and shrinking, as QEMU's
/// `memory-backend-memfd` makes guest RAM.
pub fn memfd(len: u64) -> File {
    let name = CString::new("vnic-test").expect("static name has no NUL");
    // SAFETY: memfd_create with a valid NUL-terminated name; the result is
    // checked before use.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_ALLOW_SEALING) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: fd was just created and nothing else owns it.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(len).expect("size the memfd");
    // SAFETY: fcntl on a descriptor we own; adding seals has no memory effects.
    let rc = unsafe {
        libc::fcntl(
            file.as_raw_fd(),
            libc::F_ADD_SEALS,
            libc::F_SEAL_SHRINK | libc::F_SEAL_GROW,
        )
    };
    assert_eq!(rc, 0, "seal the memfd");
    file
}
