//! The Internet checksum (RFC 1071): the one ones'-complement sum in the
//! crate. IPv4 header checksums (VxLAN outer headers), checksum completion
//! and the TCP checksums of software segmentation ([`crate::offload`]) all
//! use it.
//!
//! The sum is split into [`partial`] and [`fold`] because a TCP or UDP
//! checksum covers a pseudo-header that is not contiguous with the
//! segment: callers add the pieces one after the other and fold once. Each
//! piece but the last must have an even length, so that its bytes keep
//! their position in the 16-bit words.

/// Adds the big-endian 16-bit words of `data` to `acc` (an odd last byte
/// is padded with a zero byte). A `u64` accumulator cannot overflow for any
/// frame the card handles, so folding waits until the end.
pub fn partial(data: &[u8], acc: u64) -> u64 {
    let mut words = data.chunks_exact(2);
    let mut sum = acc;
    for w in &mut words {
        sum += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        sum += u64::from(*last) << 8;
    }
    sum
}

/// Folds the carries of `acc` back in: the 16-bit ones'-complement sum
/// (not yet complemented).
pub fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The complemented sum of `data`: the checksum to store in a header whose
/// checksum field was 0 while summing. Data that carries its correct
/// checksum gives 0.
pub fn checksum(data: &[u8]) -> u16 {
    !fold(partial(data, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: 0001 f203 f4f5 f6f7 sums to 0xddf2.
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(partial(&d, 0)), 0xddf2);
        assert_eq!(checksum(&d), !0xddf2);
    }

    #[test]
    fn pieces_add_up_and_odd_tails_are_padded() {
        let d: Vec<u8> = (0..101u8).map(|i| i.wrapping_mul(37)).collect();
        let whole = fold(partial(&d, 0));
        assert_eq!(fold(partial(&d[40..], partial(&d[..40], 0))), whole);
        let mut padded = d.clone();
        padded.push(0);
        assert_eq!(fold(partial(&padded, 0)), whole);
        assert_eq!(checksum(&[]), 0xffff);
    }
}
