//! The TAP uplink: a TAP device on the host, opened through
//! `/dev/net/tun` with `IFF_TAP | IFF_NO_PI` (created if it does not exist;
//! attached to if it does, e.g. made persistent by `ip tuntap add`). One
//! read or write is one Ethernet frame. vnicd neither brings the interface
//! up nor gives it addresses: that is the host's business.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use super::Received;

const TUN_DEVICE: &str = "/dev/net/tun";

pub struct Tap {
    file: File,
}

impl Tap {
    pub fn open(name: &str) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(TUN_DEVICE)
            .map_err(|e| io::Error::new(e.kind(), format!("{TUN_DEVICE}: {e}")))?;
        // SAFETY: ifreq is plain data; all-zero is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        // The caller checked the name's length (< IFNAMSIZ, so the NUL
        // stays) and characters.
        for (dst, &src) in req.ifr_name.iter_mut().zip(name.as_bytes()) {
            *dst = src as libc::c_char;
        }
        req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: TUNSETIFF reads and writes one ifreq, which `req` is, on
        // a descriptor of /dev/net/tun this function owns.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("TUNSETIFF: {e}")));
        }
        Ok(Tap { file })
    }

    /// The TAP device an earlier worker opened (docs/restart.md).
    pub fn adopt(file: File) -> Self {
        Tap { file }
    }

    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    pub fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        match self.file.write(frame) {
            Ok(n) if n == frame.len() => Ok(()),
            Ok(n) => Err(io::Error::other(format!(
                "short write: {n} of {} bytes",
                frame.len()
            ))),
            Err(e) => Err(e),
        }
    }

    pub(super) fn recv(&mut self, buf: &mut [u8]) -> io::Result<Received> {
        loop {
            return match self.file.read(buf) {
                Ok(0) => Ok(Received::Empty),
                Ok(n) => Ok(Received::Frame(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Received::Empty),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
        }
    }
}
