//! Arbitrary bytes pushed into the `Framer` in arbitrary chunks; frames are pulled after
//! every push until an error (the stream is then dead) or the end of the input.
//!
//! Input: byte 0 = number of split bytes `k` (mod 16); the next `k` bytes are chunk
//! lengths (0 means 1); the rest is the stream. The last chunk length repeats.
#![no_main]

use kinglet::xml::{Framer, XmlLimits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&k, rest)) = data.split_first() else {
        return;
    };
    let k = usize::from(k % 16).min(rest.len());
    let (splits, stream) = rest.split_at(k);
    // Small limits too, so that the limit paths are reached by small inputs.
    let limits = if k % 2 == 0 {
        XmlLimits::default()
    } else {
        XmlLimits {
            max_stanza_bytes: 256,
            max_depth: 4,
            max_attrs: 4,
            ..XmlLimits::default()
        }
    };
    let mut framer = Framer::new(limits);
    let mut pos = 0;
    let mut i = 0;
    let mut restarted = false;
    while pos < stream.len() {
        let n = splits
            .get(i)
            .or(splits.last())
            .map_or(stream.len(), |&b| usize::from(b.max(1)));
        i += 1;
        let end = (pos + n).min(stream.len());
        if framer.push(&stream[pos..end]).is_err() {
            return;
        }
        pos = end;
        loop {
            match framer.next_frame() {
                Ok(Some(kinglet::xml::Frame::Header(_))) if !restarted && k == 3 => {
                    // Exercise a stream restart (as after SASL) once in a while.
                    framer.reset();
                    restarted = true;
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
        let _ = framer.buffered();
        let _ = framer.has_pending();
    }
});
