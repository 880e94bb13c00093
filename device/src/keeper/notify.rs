//! What a worker tells its keeper: systemd's `sd_notify` datagrams, one
//! `KEY=VALUE` per line (sd_notify(3)), parsed and checked before the
//! keeper acts on any of it.
//!
//! A datagram is taken whole or not at all: if any line is malformed, or a
//! field the keeper knows has a value it cannot take, the datagram is
//! refused ([`NotifyError`]) and the descriptors that came with it are
//! closed. Fields the keeper does not know are ignored, as systemd ignores
//! them; a known flag with a value other than the one it acts on (`READY=0`)
//! is ignored too.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use thiserror::Error;

/// Largest datagram taken, in bytes: systemd's limit (PIPE_BUF). A longer
/// one arrives truncated and is refused.
pub const MAX_DATAGRAM: usize = 4096;
/// Longest descriptor name (systemd's FDNAME_MAX).
pub const MAX_NAME: usize = 255;
/// The name of descriptors stored without an `FDNAME=` (systemd's).
pub const DEFAULT_NAME: &str = "stored";

/// One datagram's fields the keeper acts on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Notification {
    /// `READY=1`: the worker serves.
    pub ready: bool,
    /// `STOPPING=1`: the worker is stopping by itself.
    pub stopping: bool,
    /// `WATCHDOG=1`: the worker is alive.
    pub watchdog: bool,
    /// `WATCHDOG=trigger`: the worker asks to be treated as hung.
    pub watchdog_trigger: bool,
    /// `FDSTORE=1`: store the datagram's descriptors under [`Self::name`].
    pub fd_store: bool,
    /// `FDSTOREREMOVE=1`: drop the descriptors stored under [`Self::name`].
    pub fd_store_remove: bool,
    /// `FDNAME=`: the name the two above act on (checked by
    /// [`check_name`]).
    pub name: Option<String>,
    /// `STATUS=`: free text for people.
    pub status: Option<String>,
    /// `ERRNO=`: the worker's failure, as an errno.
    pub errno: Option<i32>,
    /// `X_VNICD_SUCCESSOR=`: the binary of the worker that is to take over
    /// (checked by the keeper, which answers every request with a signal).
    pub successor: Option<OsString>,
    /// `X_VNICD_SUCCESSOR_ABORT=1`: the worker cancels its request.
    pub successor_abort: bool,
}

/// Why a descriptor name is refused.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum NameError {
    #[error("empty")]
    Empty,
    #[error("{0} bytes, more than {MAX_NAME}")]
    TooLong(usize),
    #[error("byte {0:#04x} is not one of A-Z a-z 0-9 _ . -")]
    BadByte(u8),
}

/// Why a datagram is refused.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum NotifyError {
    #[error("empty datagram")]
    Empty,
    #[error("datagram longer than {MAX_DATAGRAM} bytes")]
    TooLong,
    #[error("NUL byte at offset {0}")]
    Nul(usize),
    #[error("line {0} is not KEY=VALUE")]
    NotKeyValue(usize),
    #[error("FDNAME {0}")]
    Name(NameError),
    #[error("ERRNO is not a number")]
    Errno,
}

/// Checks a descriptor name: 1 to [`MAX_NAME`] bytes of `A-Z a-z 0-9 _ .
/// -`. systemd takes any printable ASCII but `:` (the separator of
/// `LISTEN_FDNAMES`); the names vnicd's worker uses pass both checks.
pub fn check_name(name: &[u8]) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME {
        return Err(NameError::TooLong(name.len()));
    }
    match name
        .iter()
        .find(|&&b| !(b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-'))
    {
        Some(&b) => Err(NameError::BadByte(b)),
        None => Ok(()),
    }
}

/// Parses one datagram of `bytes` (as received: `bytes.len()` equal to the
/// receive buffer means it may have been cut, and is refused by the
/// caller's buffer being one byte longer than [`MAX_DATAGRAM`]).
pub fn parse(bytes: &[u8]) -> Result<Notification, NotifyError> {
    if bytes.is_empty() {
        return Err(NotifyError::Empty);
    }
    if bytes.len() > MAX_DATAGRAM {
        return Err(NotifyError::TooLong);
    }
    if let Some(at) = bytes.iter().position(|&b| b == 0) {
        return Err(NotifyError::Nul(at));
    }
    let mut n = Notification::default();
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let Some(eq) = line.iter().position(|&b| b == b'=') else {
            return Err(NotifyError::NotKeyValue(i + 1));
        };
        let (key, value) = (&line[..eq], &line[eq + 1..]);
        if key.is_empty() {
            return Err(NotifyError::NotKeyValue(i + 1));
        }
        match key {
            b"READY" => n.ready |= value == b"1",
            b"STOPPING" => n.stopping |= value == b"1",
            b"WATCHDOG" => {
                n.watchdog |= value == b"1";
                n.watchdog_trigger |= value == b"trigger";
            }
            b"FDSTORE" => n.fd_store |= value == b"1",
            b"FDSTOREREMOVE" => n.fd_store_remove |= value == b"1",
            b"FDNAME" => {
                check_name(value).map_err(NotifyError::Name)?;
                n.name = Some(String::from_utf8_lossy(value).into_owned());
            }
            b"STATUS" => n.status = Some(String::from_utf8_lossy(value).into_owned()),
            b"ERRNO" => {
                let text = std::str::from_utf8(value).map_err(|_| NotifyError::Errno)?;
                n.errno = Some(text.parse().map_err(|_| NotifyError::Errno)?);
            }
            b"X_VNICD_SUCCESSOR" => n.successor = Some(OsString::from_vec(value.to_vec())),
            b"X_VNICD_SUCCESSOR_ABORT" => n.successor_abort |= value == b"1",
            _ => {}
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_line_by_line_and_unknown_ones_ignored() {
        let n = parse(b"READY=1\nSTATUS=serving 3 functions\nMAINPID=7\nX_OTHER=1\n").unwrap();
        assert!(n.ready && !n.stopping && !n.fd_store);
        assert_eq!(n.status.as_deref(), Some("serving 3 functions"));
    }

    #[test]
    fn a_store_request_carries_its_name() {
        let n = parse(b"FDSTORE=1\nFDNAME=vf0.listen").unwrap();
        assert!(n.fd_store && !n.fd_store_remove);
        assert_eq!(n.name.as_deref(), Some("vf0.listen"));
        let n = parse(b"FDSTOREREMOVE=1\nFDNAME=state").unwrap();
        assert!(n.fd_store_remove && !n.fd_store);
    }

    #[test]
    fn flags_act_only_on_their_value() {
        let n = parse(b"READY=0\nSTOPPING=yes\nWATCHDOG=2\nFDSTORE=0").unwrap();
        assert_eq!(n, Notification::default());
        assert!(parse(b"WATCHDOG=trigger").unwrap().watchdog_trigger);
        assert!(parse(b"WATCHDOG=1").unwrap().watchdog);
    }

    #[test]
    fn successor_fields_are_taken_as_sent() {
        let n = parse(b"X_VNICD_SUCCESSOR=/usr/local/bin/vnicd.new").unwrap();
        assert_eq!(
            n.successor,
            Some(OsString::from("/usr/local/bin/vnicd.new"))
        );
        assert!(parse(b"X_VNICD_SUCCESSOR_ABORT=1").unwrap().successor_abort);
        // A path that is not UTF-8 is still a path.
        let n = parse(b"X_VNICD_SUCCESSOR=/opt/\xff").unwrap();
        assert_eq!(
            n.successor.map(|p| p.into_vec()),
            Some(b"/opt/\xff".to_vec())
        );
    }

    #[test]
    fn malformed_datagrams_are_refused_whole() {
        assert_eq!(parse(b""), Err(NotifyError::Empty));
        assert_eq!(parse(&[b'A'; MAX_DATAGRAM + 1]), Err(NotifyError::TooLong));
        assert_eq!(parse(b"READY=1\0"), Err(NotifyError::Nul(7)));
        assert_eq!(parse(b"READY=1\nhello"), Err(NotifyError::NotKeyValue(2)));
        assert_eq!(parse(b"=1"), Err(NotifyError::NotKeyValue(1)));
        assert_eq!(parse(b"ERRNO=five"), Err(NotifyError::Errno));
        assert_eq!(parse(b"ERRNO=12").unwrap().errno, Some(12));
        assert_eq!(
            parse(b"READY=1\nFDSTORE=1\nFDNAME=a:b"),
            Err(NotifyError::Name(NameError::BadByte(b':')))
        );
    }

    #[test]
    fn names_are_checked_like_systemd_but_narrower() {
        assert_eq!(check_name(b"pf.listen-0_x"), Ok(()));
        assert_eq!(check_name(b""), Err(NameError::Empty));
        assert_eq!(check_name(&[b'a'; MAX_NAME]), Ok(()));
        assert_eq!(
            check_name(&[b'a'; MAX_NAME + 1]),
            Err(NameError::TooLong(MAX_NAME + 1))
        );
        for bad in [&b"a b"[..], b"a:b", b"a/b", b"\xc3\xa9", b"a\tb"] {
            assert!(
                matches!(check_name(bad), Err(NameError::BadByte(_))),
                "{bad:?}"
            );
        }
    }
}
