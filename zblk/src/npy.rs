//! The `.npy` header NumPy writes (`numpy.lib.format`, versions 1.0 and
//! 2.0), byte for byte as `np.save` makes it for ASCII field names.
//!
//! Layout: magic `\x93NUMPY`, major and minor version, the header length
//! (little-endian u16 in 1.0, u32 in 2.0), then the header: a Python dict
//! literal `{'descr': ..., 'fortran_order': ..., 'shape': ..., }`, spaces
//! so that the shape can grow in place (21 minus the digits of the growth
//! axis), more spaces to align the data to 64 bytes, and a newline.

use crate::array::NpyHeader;
use crate::dtype::py_tuple;

const MAGIC: &[u8; 6] = b"\x93NUMPY";
/// Data starts at a multiple of this.
const ARRAY_ALIGN: usize = 64;
/// Room left for the growth axis' digits (`len(str(8 * 2**64 - 1))`).
const GROWTH_AXIS_MAX_DIGITS: usize = 21;

/// The header dict as NumPy prints it, before padding.
fn dict_text(h: &NpyHeader) -> String {
    let mut s = String::from("{'descr': ");
    s.push_str(&h.descr.to_python());
    s.push_str(", 'fortran_order': ");
    s.push_str(if h.fortran_order { "True" } else { "False" });
    s.push_str(", 'shape': ");
    py_tuple(&mut s, &h.shape);
    s.push_str(", }");
    let growth = if h.fortran_order {
        h.shape.last()
    } else {
        h.shape.first()
    };
    if let Some(n) = growth {
        let digits = n.to_string().len();
        s.push_str(&" ".repeat(GROWTH_AXIS_MAX_DIGITS.saturating_sub(digits)));
    }
    s
}

/// The complete header: magic, version, length, dict, padding, newline.
/// Version 1.0 unless the header exceeds its 64 KiB limit. The dict is
/// ASCII ([`crate::dtype::Descr::to_python`] escapes other characters), so
/// version 3.0 (UTF-8) is never needed.
pub fn header(h: &NpyHeader) -> Vec<u8> {
    let dict = dict_text(h);
    let hlen = dict.len() + 1;
    // Magic, two version bytes, the length field, the dict and its newline.
    let pad = |prefix: usize| ARRAY_ALIGN - (MAGIC.len() + 2 + prefix + hlen) % ARRAY_ALIGN;
    let mut out = Vec::with_capacity(hlen + 2 * ARRAY_ALIGN);
    out.extend_from_slice(MAGIC);
    let padlen = pad(2);
    match u16::try_from(hlen + padlen) {
        Ok(n) => {
            out.extend_from_slice(&[1, 0]);
            out.extend_from_slice(&le_u16(n));
            out.extend_from_slice(dict.as_bytes());
            out.resize(out.len() + padlen, b' ');
        }
        Err(_) => {
            let padlen = pad(4);
            out.extend_from_slice(&[2, 0]);
            out.extend_from_slice(&le_u32(u32::try_from(hlen + padlen).unwrap_or(u32::MAX)));
            out.extend_from_slice(dict.as_bytes());
            out.resize(out.len() + padlen, b' ');
        }
    }
    out.push(b'\n');
    out
}

#[expect(
    clippy::little_endian_bytes,
    reason = "the .npy header length is little-endian by format"
)]
fn le_u16(n: u16) -> [u8; 2] {
    n.to_le_bytes()
}

#[expect(
    clippy::little_endian_bytes,
    reason = "the .npy header length is little-endian by format"
)]
fn le_u32(n: u32) -> [u8; 4] {
    n.to_le_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::{Descr, DescrField};

    #[test]
    fn simple_header_matches_numpy() {
        // np.save(f, np.zeros((3, 4)))
        let h = header(&NpyHeader {
            descr: Descr::Type("<f8".into()),
            fortran_order: false,
            shape: vec![3, 4],
        });
        let expect =
            b"\x93NUMPY\x01\x00v\x00{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4), }";
        assert_eq!(h.get(..expect.len()), Some(&expect[..]));
        assert_eq!(h.len() % 64, 0);
        assert_eq!(h.last(), Some(&b'\n'));
        assert_eq!(h.len(), 128);
    }

    #[test]
    fn structured_descr_and_scalar_shape() {
        let d = Descr::Fields(vec![
            DescrField {
                name: "x".into(),
                title: Some("t'".into()),
                descr: Descr::Type("<i4".into()),
                shape: None,
            },
            DescrField {
                name: "é".into(),
                title: None,
                descr: Descr::Type(">f8".into()),
                shape: Some(vec![2]),
            },
        ]);
        assert_eq!(
            d.to_python(),
            r#"[(("t'", 'x'), '<i4'), ('\xe9', '>f8', (2,))]"#
        );
        let h = header(&NpyHeader {
            descr: Descr::Type("|u1".into()),
            fortran_order: true,
            shape: vec![],
        });
        let text = String::from_utf8_lossy(&h);
        assert!(
            text.contains("'fortran_order': True, 'shape': (), }"),
            "{text}"
        );
        assert_eq!(h.len() % 64, 0);
    }
}
