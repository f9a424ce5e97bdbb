//! Base64 (RFC 4648 §4, standard alphabet, with padding) as used by SASL in XMPP (RFC 6120 §6.4.2)
//! and inside SCRAM messages (RFC 5802).
//!
//! Decoding is strict: characters outside the alphabet, misplaced or excess padding, a length
//! that is not a multiple of four and non-zero pad bits are all rejected. ASCII whitespace is
//! skipped, because XMPP clients may wrap long payloads. Input is bounded by
//! [`BASE64_MAX_INPUT`].

/// Upper bound on the length (in bytes, whitespace included) of a string given to
/// [`base64_decode`]. SASL payloads are a few hundred bytes; 64 KiB leaves room for any
/// reasonable mechanism while bounding the work and the output allocation (at most 48 KiB).
pub const BASE64_MAX_INPUT: usize = 64 * 1024;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Encodes `data` as padded standard base64.
pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b0 = chunk[0];
        let b1 = chunk.get(1).copied().unwrap_or(0);
        let b2 = chunk.get(2).copied().unwrap_or(0);
        let n = (u32::from(b0) << 16) | (u32::from(b1) << 8) | u32::from(b2);
        out.push(char::from(ALPHABET[(n >> 18) as usize & 63]));
        out.push(char::from(ALPHABET[(n >> 12) as usize & 63]));
        if chunk.len() > 1 {
            out.push(char::from(ALPHABET[(n >> 6) as usize & 63]));
        } else {
            out.push('=');
        }
        if chunk.len() > 2 {
            out.push(char::from(ALPHABET[n as usize & 63]));
        } else {
            out.push('=');
        }
    }
    out
}

/// Value of one alphabet character, or `None` for anything else (including `=`).
fn value(c: u8) -> Option<u32> {
    let v = match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    };
    Some(u32::from(v))
}

/// Decodes padded standard base64, skipping ASCII whitespace.
///
/// A lone `=` decodes to the empty byte string: RFC 6120 §6.4.2 uses it for an empty
/// initial response. The empty string also decodes to the empty byte string.
///
/// Returns `None` if the input is longer than [`BASE64_MAX_INPUT`], contains a character
/// outside the alphabet, has a length (without whitespace) that is not a multiple of four,
/// has padding anywhere but at the end or more than two padding characters, or has non-zero
/// pad bits (non-canonical encodings are rejected so that each byte string has exactly one
/// accepted encoding).
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    if s.len() > BASE64_MAX_INPUT {
        return None;
    }
    let mut clean: Vec<u8> = Vec::with_capacity(s.len());
    clean.extend(s.bytes().filter(|b| !b.is_ascii_whitespace()));
    if clean == b"=" {
        return Some(Vec::new());
    }
    if clean.len() % 4 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(clean.len() / 4 * 3);
    let quads = clean.len() / 4;
    for (i, quad) in clean.chunks_exact(4).enumerate() {
        let last = i + 1 == quads;
        let pad = quad.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n: u32 = 0;
        for &c in &quad[..4 - pad] {
            n = (n << 6) | value(c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        match pad {
            0 => out.extend_from_slice(&bytes),
            1 => {
                if bytes[2] != 0 {
                    return None;
                }
                out.extend_from_slice(&bytes[..2]);
            }
            _ => {
                if bytes[1] != 0 || bytes[2] != 0 {
                    return None;
                }
                out.push(bytes[0]);
            }
        }
    }
    Some(out)
}
