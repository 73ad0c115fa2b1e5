//! Primitive wire types shared by every message: big-endian integers, short strings, session ids, options.
//!
//! Reading goes through [`Reader`], a cursor over untrusted bytes whose every accessor checks the remaining
//! length first and returns a typed error; nothing here indexes or slices without that check, so a hostile
//! body can at worst produce `Malformed`. `bytes::Buf`'s getters are not used for reading because they panic on
//! short input.

use bytes::BufMut;

use super::MAX_STRING_LEN;
use super::error::{DecodeError, EncodeError};

/// A bounds-checked cursor over one message body. Knows the message type so its errors can name it.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    msg_type: u8,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], msg_type: u8) -> Reader<'a> {
        Reader { buf, msg_type }
    }

    pub(crate) fn malformed(&self, what: &'static str) -> DecodeError {
        DecodeError::Malformed {
            msg_type: self.msg_type,
            what,
        }
    }

    pub(crate) fn too_many(&self, what: &'static str, count: usize, max: usize) -> DecodeError {
        DecodeError::TooMany {
            msg_type: self.msg_type,
            what,
            count,
            max,
        }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Takes exactly `n` bytes, or fails naming the field that was cut short.
    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(self.malformed(what));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let bytes = self.take(N, what)?;
        // `take` returned exactly N bytes, so this conversion cannot fail; map it anyway rather than unwrap.
        bytes.try_into().map_err(|_| self.malformed(what))
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }

    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        self.array(what).map(u16::from_be_bytes)
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        self.array(what).map(u32::from_be_bytes)
    }

    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        self.array(what).map(u64::from_be_bytes)
    }

    pub(crate) fn session(&mut self, what: &'static str) -> Result<[u8; 16], DecodeError> {
        self.array(what)
    }

    /// `u8 length | UTF-8 bytes`.
    pub(crate) fn string(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let len = self.u8(what)? as usize;
        let bytes = self.take(len, what)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| self.malformed(what))
    }

    /// `u8 0` (absent) or `u8 1` (present, followed by the value).
    pub(crate) fn present(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(self.malformed(what)),
        }
    }

    /// Strict end of a message: leftover bytes mean the peer and we disagree about the layout, which must not
    /// pass silently.
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(self.malformed("trailing bytes"))
        }
    }
}

/// Writes `u8 length | bytes`, refusing strings the length byte cannot describe.
pub(crate) fn put_string(
    out: &mut impl BufMut,
    s: &str,
    field: &'static str,
) -> Result<(), EncodeError> {
    // MAX_STRING_LEN is u8::MAX, so the conversion fails exactly when the limit is exceeded.
    let len = u8::try_from(s.len())
        .ok()
        .filter(|&len| usize::from(len) <= MAX_STRING_LEN)
        .ok_or(EncodeError::StringTooLong {
            field,
            len: s.len(),
        })?;
    out.put_u8(len);
    out.put_slice(s.as_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_refuses_short_input_instead_of_panicking() {
        let mut r = Reader::new(&[1, 2, 3], 7);
        assert_eq!(
            r.u32("x"),
            Err(DecodeError::Malformed {
                msg_type: 7,
                what: "x"
            })
        );
        // A failed read consumes nothing.
        assert_eq!(r.u16("y"), Ok(0x0102));
        assert_eq!(r.remaining(), 1);
        assert!(r.finish().is_err());
    }

    #[test]
    fn string_length_longer_than_input_is_malformed() {
        let mut r = Reader::new(&[5, b'a', b'b'], 1);
        assert!(r.string("s").is_err());
    }

    #[test]
    fn invalid_utf8_is_malformed() {
        let mut r = Reader::new(&[2, 0xc3, 0x28], 1);
        assert!(matches!(
            r.string("s"),
            Err(DecodeError::Malformed { what: "s", .. })
        ));
    }

    #[test]
    fn option_tag_other_than_zero_or_one_is_malformed() {
        assert_eq!(Reader::new(&[0], 1).present("o"), Ok(false));
        assert_eq!(Reader::new(&[1], 1).present("o"), Ok(true));
        assert!(Reader::new(&[2], 1).present("o").is_err());
    }

    #[test]
    fn strings_up_to_255_bytes_encode_and_longer_do_not() {
        let mut out = Vec::new();
        put_string(&mut out, &"a".repeat(255), "f").unwrap();
        assert_eq!(out.len(), 256);
        assert_eq!(out[0], 255);
        assert_eq!(
            put_string(&mut out, &"a".repeat(256), "f"),
            Err(EncodeError::StringTooLong {
                field: "f",
                len: 256
            })
        );
        assert_eq!(out.len(), 256, "a refused string writes nothing");
    }
}
