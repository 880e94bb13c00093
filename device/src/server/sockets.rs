//! Who may connect: the socket directory and the sockets in it.
//!
//! Whoever can connect to a function's socket drives that function (maps
//! memory, resets it, sends frames); whoever can connect to the control
//! socket drives the card. So vnicd decides their modes itself instead of
//! leaving them to its umask: a socket directory it creates is 0700, the
//! function sockets are 0600 and the control socket is always 0600. For
//! QEMU running as another user (as under libvirt), `--socket-mode` and
//! `--socket-group` open the function sockets, and the directory's search
//! bit, to a group (docs/management.md, "Socket permissions").
//!
//! A socket is created owner-only from the start (see [`bind`]), then given
//! its group and mode, so at no moment can anyone else connect to it.
//!
//! One vnicd per directory: the one serving it holds [`LOCK_FILE`]'s lock,
//! and a socket path someone still listens on is never taken over (a
//! second vnicd would otherwise unlink the first one's sockets, bind its
//! own, and delete them when it exits, leaving the first unreachable).

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::Path;

use log::warn;

/// Mode of the function sockets unless `--socket-mode` says otherwise.
pub const DEFAULT_SOCKET_MODE: u32 = 0o600;
/// Mode of the function sockets with `--socket-group` alone.
pub const DEFAULT_GROUP_SOCKET_MODE: u32 = 0o660;
/// Mode of the control socket, whatever the options: management is vnicd's
/// user's.
pub const CONTROL_SOCKET_MODE: u32 = 0o600;
/// Pending connections per listening socket.
const BACKLOG: i32 = 128;

/// Mode and group of the function sockets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketAccess {
    /// Permission bits (at most 0o777); connecting needs write permission.
    pub mode: u32,
    /// Group the sockets (and a directory vnicd creates) are given.
    pub group: Option<u32>,
}

impl Default for SocketAccess {
    fn default() -> Self {
        SocketAccess {
            mode: DEFAULT_SOCKET_MODE,
            group: None,
        }
    }
}

impl SocketAccess {
    /// From vnicd's options: an explicit mode wins; a group alone means
    /// its members may connect (0660); neither means vnicd's user only.
    pub fn new(mode: Option<u32>, group: Option<u32>) -> Self {
        let default = if group.is_some() {
            DEFAULT_GROUP_SOCKET_MODE
        } else {
            DEFAULT_SOCKET_MODE
        };
        SocketAccess {
            mode: mode.unwrap_or(default),
            group,
        }
    }

    /// The socket directory's mode: rwx for vnicd's user, and search (x)
    /// for the group or others if the sockets let them in (reaching a
    /// socket by its path needs no more).
    pub fn dir_mode(&self) -> u32 {
        let mut mode = 0o700;
        if self.mode & 0o070 != 0 {
            mode |= 0o010;
        }
        if self.mode & 0o007 != 0 {
            mode |= 0o001;
        }
        mode
    }
}

/// Parses `--socket-mode`: octal permission bits, at most 0777 (`0660`,
/// `660` and `0o660` are the same).
pub fn parse_mode(s: &str) -> Result<u32, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    let mode = u32::from_str_radix(digits, 8).map_err(|_| format!("{s:?} is not an octal mode"))?;
    if mode > 0o777 {
        return Err(format!("{s}: only permission bits (at most 0777)"));
    }
    Ok(mode)
}

/// Parses `--socket-group`: a group name (looked up as `ls -l` would) or a
/// numeric group ID.
pub fn parse_group(s: &str) -> Result<u32, String> {
    if let Ok(gid) = s.parse::<u32>() {
        return Ok(gid);
    }
    let name = CString::new(s).map_err(|_| format!("{s:?} is not a group name"))?;
    let mut buf: Vec<libc::c_char> = vec![0; 4096];
    loop {
        // SAFETY: `libc::group` is plain data (pointers and an integer), for
        // which all zeroes is a valid value; getgrnam_r fills it in.
        let mut group: libc::group = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::group = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call: the NUL-terminated
        // name, the group struct, the buffer with its true length, and the
        // result pointer. The strings getgrnam_r leaves in `buf` are not
        // used after it; only the gid is read.
        let rc = unsafe {
            libc::getgrnam_r(
                name.as_ptr(),
                &mut group,
                buf.as_mut_ptr(),
                buf.len(),
                &mut found,
            )
        };
        match rc {
            libc::ERANGE if buf.len() < 1 << 20 => buf.resize(buf.len() * 2, 0),
            0 if !found.is_null() => return Ok(group.gr_gid),
            0 => return Err(format!("no group named {s:?}")),
            e => {
                let e = io::Error::from_raw_os_error(e);
                return Err(format!("looking up group {s:?}: {e}"));
            }
        }
    }
}

/// Creates the socket directory if it is missing (its parents as usual),
/// with [`SocketAccess::dir_mode`] whatever the umask, and `access`'s
/// group. An existing directory is used as it is: its permissions are its
/// owner's business (it may be /run or /tmp), but if the sockets grant
/// access it does not let through, that is logged.
pub(super) fn create_dir(dir: &Path, access: &SocketAccess) -> io::Result<()> {
    let mode = access.dir_mode();
    match std::fs::metadata(dir) {
        Ok(meta) => {
            let search = mode & 0o011 & !meta.mode();
            if meta.is_dir() && search != 0 {
                warn!(
                    "socket directory {} is mode {:o}: the sockets' group or others cannot reach them",
                    dir.display(),
                    meta.mode() & 0o7777
                );
            }
            return Ok(());
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    // The umask can only take bits away from 0700: nobody else gets in
    // between creating and setting the mode.
    std::fs::DirBuilder::new().mode(0o700).create(dir)?;
    if let Some(gid) = access.group {
        std::os::unix::fs::chown(dir, None, Some(gid))?;
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
}

/// The lock file in the socket directory. The vnicd serving the directory
/// holds an exclusive `flock` on it for as long as it runs (the kernel
/// drops it when the process ends, however it ends) and writes its PID
/// into it (its keeper's, `keeper::served_pid`, the process to stop). The file itself stays: removing it on exit would let two
/// later vnicds lock two different files of the same name.
pub const LOCK_FILE: &str = "vnicd.lock";

/// Why the socket directory could not be locked.
#[derive(Debug)]
pub enum LockError {
    /// Another process holds the lock; its PID, if it wrote one.
    Held(Option<u32>),
    Io(io::Error),
}

/// Takes the socket directory's lock ([`LOCK_FILE`] in `dir`), without
/// waiting: a directory is served by one vnicd at a time. The returned
/// file holds the lock until it is closed.
pub(super) fn lock_dir(dir: &Path) -> Result<File, LockError> {
    let path = dir.join(LOCK_FILE);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(LockError::Io)?;
    // SAFETY: flock(2) on a descriptor `file` owns for the whole call; it
    // touches no memory of ours.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(LockError::Io(e));
        }
        let mut text = String::new();
        let _ = file.read_to_string(&mut text);
        return Err(LockError::Held(text.trim().parse().ok()));
    }
    file.set_len(0).map_err(LockError::Io)?;
    writeln!(file, "{}", crate::keeper::served_pid()).map_err(LockError::Io)?;
    Ok(file)
}

/// `path` as a `sockaddr_un` and its length.
fn socket_addr(path: &Path) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    let bytes = path.as_os_str().as_bytes();
    let mut addr = libc::sockaddr_un {
        sun_family: libc::AF_UNIX as libc::sa_family_t,
        sun_path: [0; 108],
    };
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "socket path longer than 107 bytes",
        ));
    }
    for (to, &from) in addr.sun_path.iter_mut().zip(bytes) {
        *to = from as libc::c_char;
    }
    let len = std::mem::offset_of!(libc::sockaddr_un, sun_path) + bytes.len() + 1;
    Ok((addr, len as libc::socklen_t))
}

/// A new UNIX stream socket with `flags` (`SOCK_NONBLOCK`, ...) besides
/// `SOCK_CLOEXEC`.
fn stream_socket(flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments; it returns a new
    // descriptor or -1.
    let raw = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | flags,
            0,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is the descriptor socket(2) just returned; nothing else
    // owns it, and the OwnedFd closes it.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Whether something listens on the UNIX socket at `path`: a connection
/// attempt that does not wait. It is accepted (or the listener's backlog is
/// full): someone listens. It is refused: the socket is stale, left by a
/// process that is gone.
fn listening(path: &Path) -> io::Result<bool> {
    let (addr, len) = socket_addr(path)?;
    let fd = stream_socket(libc::SOCK_NONBLOCK)?;
    // SAFETY: `addr` is an initialised sockaddr_un that outlives the call,
    // and `len` is within its size.
    let rc = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast::<libc::sockaddr>(),
            len,
        )
    };
    if rc == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN | libc::EINPROGRESS) => Ok(true),
        Some(libc::ECONNREFUSED) => Ok(false),
        _ => Err(e),
    }
}

/// Makes way for a socket at `path`: nothing there is fine; a stale socket
/// (nobody listening) is removed; a socket someone listens on, or a file
/// that is not a socket, is left alone and refused.
fn clear_stale(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {}
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "a file that is not a socket is in the way",
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    if listening(path)? {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "another process is listening on it (a running vnicd?); stop it, or use another path",
        ));
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Binds and listens on a UNIX socket at `path` with `mode` and `group`,
/// whatever vnicd's umask. A stale socket there (nobody listening: a vnicd
/// that crashed) is replaced; a socket another process listens on, or a
/// file that is no socket, is refused and left as it is.
///
/// Linux creates a socket's file with the mode of the socket's own inode,
/// less the umask; that inode is 0777 unless changed. So the socket is made
/// owner-only with fchmod before bind: its file appears 0600 or narrower,
/// then gets its group, and only then its final mode.
pub(super) fn bind(path: &Path, mode: u32, group: Option<u32>) -> io::Result<UnixListener> {
    let (addr, len) = socket_addr(path)?;
    clear_stale(path)?;
    let fd = stream_socket(0)?;
    // SAFETY: fchmod on a descriptor we own; it only changes the socket
    // inode's mode.
    if unsafe { libc::fchmod(fd.as_raw_fd(), 0o600) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `addr` is an initialised sockaddr_un that outlives the call,
    // and `len` (its family, the path and the NUL) is within its size.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast::<libc::sockaddr>(),
            len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: listen(2) on a bound socket we own.
    if unsafe { libc::listen(fd.as_raw_fd(), BACKLOG) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if group.is_some() {
        std::os::unix::fs::chown(path, None, group)?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(UnixListener::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_octal_permission_bits() {
        assert_eq!(parse_mode("0660"), Ok(0o660));
        assert_eq!(parse_mode("660"), Ok(0o660));
        assert_eq!(parse_mode("0o600"), Ok(0o600));
        assert!(parse_mode("0888").is_err());
        assert!(parse_mode("4770").is_err(), "no setuid or sticky bits");
        assert!(parse_mode("rw").is_err());
    }

    #[test]
    fn groups_are_names_or_numbers() {
        assert_eq!(parse_group("1234"), Ok(1234));
        assert_eq!(parse_group("root"), Ok(0), "root is group 0 on Linux");
        assert!(parse_group("no-such-group-vnic").is_err());
        assert!(parse_group("a\0b").is_err());
    }

    #[test]
    fn defaults_are_owner_only_and_a_group_gets_rw_and_search() {
        let owner = SocketAccess::new(None, None);
        assert_eq!((owner.mode, owner.dir_mode()), (0o600, 0o700));
        let group = SocketAccess::new(None, Some(64));
        assert_eq!((group.mode, group.dir_mode()), (0o660, 0o710));
        let all = SocketAccess::new(Some(0o666), None);
        assert_eq!(all.dir_mode(), 0o711);
    }

    #[test]
    fn sockets_and_directories_get_the_modes_asked_for() {
        let root = std::env::temp_dir().join(format!("vnic-sockets-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dir = root.join("card");
        let access = SocketAccess::new(Some(0o660), None);
        create_dir(&dir, &access).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&dir), 0o710);
        let path = dir.join("pf.sock");
        let listener = bind(&path, access.mode, None).unwrap();
        assert_eq!(mode(&path), 0o660);
        let _client = std::os::unix::net::UnixStream::connect(&path).unwrap();
        assert!(listener.accept().is_ok(), "listening");
        drop(listener);
        let again = bind(&path, 0o600, None).unwrap();
        assert_eq!(mode(&path), 0o600, "a stale socket is replaced");
        drop(again);
        create_dir(&dir, &SocketAccess::default()).unwrap();
        assert_eq!(mode(&dir), 0o710, "an existing directory is left alone");
        let long = dir.join("x".repeat(120));
        assert!(bind(&long, 0o600, None).is_err());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_socket_someone_listens_on_or_a_file_in_the_way_is_not_taken_over() {
        let dir = std::env::temp_dir().join(format!("vnic-stale-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pf.sock");
        let first = bind(&path, 0o600, None).unwrap();
        let e = bind(&path, 0o600, None).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}");
        assert!(e.to_string().contains("listening"), "{e}");
        let _client = std::os::unix::net::UnixStream::connect(&path).unwrap();
        assert!(
            first.accept().is_ok(),
            "the first listener still has its socket"
        );
        drop(first);
        let again = bind(&path, 0o600, None).expect("nobody listens: stale, replaced");
        drop(again);
        let file = dir.join("control.sock");
        std::fs::write(&file, "not a socket").unwrap();
        let e = bind(&file, 0o600, None).unwrap_err();
        assert!(e.to_string().contains("not a socket"), "{e}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "not a socket");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_socket_directory_is_locked_by_one_holder_at_a_time() {
        let dir = std::env::temp_dir().join(format!("vnic-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let held = lock_dir(&dir).unwrap();
        // Another open file description conflicts, as another process's would.
        match lock_dir(&dir) {
            Err(LockError::Held(pid)) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("second lock: {other:?}"),
        }
        drop(held);
        let again = lock_dir(&dir).expect("free once the holder closed it");
        drop(again);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
