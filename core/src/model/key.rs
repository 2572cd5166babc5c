//! Canonical key encoding.
//!
//! Keys are encoded into bytes that are deterministic (the same on every machine and in every
//! process), prefix-free (so encodings can be concatenated for tuples and structs) and
//! order-preserving: `a < b` exactly when `encode(a) < encode(b)` compared as byte strings.
//! The encoding is part of the persisted format: it decides key groups and the order of map
//! entries, so it never depends on a hasher seed, on rkyv, or on the platform.
//!
//! | type | encoding |
//! |---|---|
//! | `u8`..`u128`, `usize` (as `u64`) | big endian |
//! | `i8`..`i128`, `isize` (as `i64`) | big endian with the sign bit flipped |
//! | `f32`, `f64` | IEEE bits, sign bit flipped for positives, all bits flipped for negatives (`total_cmp` order) |
//! | `bool` | one byte, 0 or 1 |
//! | `char` | its scalar value as `u32` |
//! | `String`, `str`, `Vec<u8>`, `[u8]` | bytes with `0x00` escaped as `0x00 0xFF`, then `0x00 0x00` |
//! | `[T; N]` | the elements, one after another |
//! | `Option<T>` | `0x00` for `None`, `0x01` then `T` for `Some` |
//! | tuples, `#[derive(StateKey)]` structs | the fields in order |
//! | `#[derive(StateKey)]` enums | variant index as `u32`, then the fields |

use crate::model::error::KeyError;

/// Encoding half of [`StateKey`], also implemented by unsized borrowed forms (`str`, `[u8]`) so
/// that a `String` key can be looked up with a `&str`.
///
/// An implementation must write exactly what the owned type's [`StateKey`] implementation writes
/// for an equal value.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be used as a state key",
    label = "not a state key",
    note = "state keys need a canonical, order-preserving encoding: add `#[derive(StateKey)]` to the type"
)]
pub trait EncodeKey {
    /// Appends the canonical encoding of `self` to `out`.
    fn encode_key(&self, out: &mut Vec<u8>);
}

/// A type that can key state: the current key of an operator, or a `MapState` user key.
///
/// # Examples
///
/// ```
/// use statewright::prelude::*;
///
/// #[derive(StateKey, Debug, PartialEq, PartialOrd)]
/// struct Account { region: u16, id: String }
///
/// let a = Account { region: 1, id: "zed".into() };
/// let b = Account { region: 2, id: "abe".into() };
/// assert!(a < b && a.to_key_bytes() < b.to_key_bytes());
/// assert_eq!(Account::from_key_bytes(&a.to_key_bytes())?, a);
/// # Ok::<(), statewright::Error>(())
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be used as a state key",
    label = "not a state key",
    note = "state keys need a canonical, order-preserving encoding: add `#[derive(StateKey)]` to the type"
)]
pub trait StateKey: EncodeKey + crate::model::schema::StateSchema + Sized {
    /// Decodes one key from the front of `input`, advancing it past the bytes read.
    ///
    /// # Errors
    ///
    /// [`KeyError`] when the bytes are not an encoding written by [`EncodeKey::encode_key`].
    fn decode_key(input: &mut &[u8]) -> Result<Self, KeyError>;

    /// The canonical encoding as a new vector.
    fn to_key_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_key(&mut out);
        out
    }

    /// Decodes a whole key: every byte of `bytes` must be used.
    ///
    /// # Errors
    ///
    /// [`KeyError`] when the bytes are not exactly one encoded key.
    fn from_key_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        let mut input = bytes;
        let key = Self::decode_key(&mut input)?;
        if input.is_empty() {
            Ok(key)
        } else {
            Err(KeyError::TrailingBytes { count: input.len() })
        }
    }
}

/// Validates that `bytes` is exactly one encoded `K`; used for bytes that come from outside.
///
/// # Errors
///
/// [`KeyError`] when it is not.
pub fn validate_key<K: StateKey>(bytes: &[u8]) -> Result<(), KeyError> {
    K::from_key_bytes(bytes).map(drop)
}

fn take<const N: usize>(input: &mut &[u8], type_name: &'static str) -> Result<[u8; N], KeyError> {
    let (head, rest) = input
        .split_first_chunk::<N>()
        .ok_or(KeyError::Truncated { type_name })?;
    *input = rest;
    Ok(*head)
}

macro_rules! unsigned {
    ($($t:ty),*) => {$(
        impl EncodeKey for $t {
            #[inline]
            fn encode_key(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_be_bytes());
            }
        }
        impl StateKey for $t {
            #[inline]
            fn decode_key(input: &mut &[u8]) -> Result<Self, KeyError> {
                take(input, stringify!($t)).map(<$t>::from_be_bytes)
            }
        }
    )*};
}
unsigned!(u8, u16, u32, u64, u128);

macro_rules! signed {
    ($($t:ty => $u:ty),*) => {$(
        impl EncodeKey for $t {
            #[inline]
            fn encode_key(&self, out: &mut Vec<u8>) {
                // Flipping the sign bit maps i::MIN..=i::MAX onto 0..=u::MAX in order.
                out.extend_from_slice(&((*self as $u) ^ (1 << (<$u>::BITS - 1))).to_be_bytes());
            }
        }
        impl StateKey for $t {
            #[inline]
            fn decode_key(input: &mut &[u8]) -> Result<Self, KeyError> {
                let bits = <$u>::from_be_bytes(take(input, stringify!($t))?);
                Ok((bits ^ (1 << (<$u>::BITS - 1))) as $t)
            }
        }
    )*};
}
signed!(i8 => u8, i16 => u16, i32 => u32, i64 => u64, i128 => u128);

// `usize`/`isize` are encoded as 64-bit so that the bytes do not depend on the platform.
impl EncodeKey for usize {
    fn encode_key(&self, out: &mut Vec<u8>) {
        (*self as u64).encode_key(out);
    }
}
impl StateKey for usize {
    fn decode_key(input: &mut &[u8]) -> Result<Self, KeyError> {
        let v = u64::decode_key(input)?;
        usize::try_from(v).map_err(|_| KeyError::InvalidTag {
            type_name: "usize",
            tag: u32::MAX,
        })
    }
}
impl EncodeKey for isize {
    fn encode_key(&self, out: &mut Vec<u8>) {
        (*self as i64).encode_key(out);
    }
}
impl StateKey for isize {
    fn decode_key(input: &mut &[u8]) -> Result<Self, KeyError> {
        let v = i64::decode_key(input)?;
        isize::try_from(v).map_err(|_| KeyError::InvalidTag {
            type_name: "isize",
            tag: u32::MAX,
        })
    }
}

macro_rules! float {
    ($($t:ty => $u:ty),*) => {$(
        impl EncodeKey for $t {
            #[inline]
            fn encode_key(&self, out: &mut Vec<u8>) {
                let bits = self.to_bits();
                let sign = 1 << (<$u>::BITS - 1);
                let ordered = if bits & sign == 0 { bits ^ sign } else { !bits };
                out.extend_from_slice(&ordered.to_be_bytes());
            }
        }
        impl StateKey for $t {
            #[inline]
            fn decode_key(input: &mut &[u8]) -> Result<Self, KeyError> {
                let ordered = <$u>::from_be_bytes(take(input, stringify!($t))?);
                let sign = 1 << (<$u>::BITS - 1);
                let bits = if ordered & sign != 0 { ordered ^ sign } else { !ordered };
                Ok(<$t>::from_bits(bits))
            }
        }
    )*};
}
float!(f32 => u32, f64 => u64);

impl EncodeKey for bool {
    fn encode_key(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
}
impl StateKey for bool {
    fn decode_key(input: &mut &[u8]) -> Result<Self, KeyError> {
        match take::<1>(input, "bool")? {
            [0] => Ok(false),
            [1] => Ok(true),
            [tag] => Err(KeyError::InvalidTag {
                type_name: "bool",
                tag: u32::from(tag),
            }),
        }
    }
}

impl EncodeKey for char {
    fn encode_key(&self, out: &mut Vec<u8>) {
        u32::from(*self).encode_key(out);
    }
}
impl StateKey for char {
    fn decode_key(input: &mut &[u8]) -> Result<Self, KeyError> {
        char::from_u32(u32::decode_key(input)?).ok_or(KeyError::InvalidText { type_name: "char" })
    }
}

impl EncodeKey for () {
    fn encode_key(&self, _out: &mut Vec<u8>) {}
}
impl StateKey for () {
    fn decode_key(_input: &mut &[u8]) -> Result<Self, KeyError> {
        Ok(())
    }
}

/// Escaped, terminated byte string: `0x00` becomes `0x00 0xFF`, the end is `0x00 0x00`.
fn encode_bytes(bytes: &[u8], out: &mut Vec<u8>) {
    out.reserve(bytes.len() + 2);
    let mut rest = bytes;
    while let Some(zero) = rest.iter().position(|&b| b == 0) {
        out.extend_from_slice(&rest[..=zero]);
        out.push(0xFF);
        rest = &rest[zero + 1..];
    }
    out.extend_from_slice(rest);
    out.extend_from_slice(&[0, 0]);
}

fn decode_bytes(input: &mut &[u8], type_name: &'static str) -> Result<Vec<u8>, KeyError> {
    let mut out = Vec::new();
    let mut i = 0;
    let bytes = *input;
    loop {
        let zero = bytes[i..]
            .iter()
            .position(|&b| b == 0)
            .ok_or(KeyError::Truncated { type_name })?;
        out.extend_from_slice(&bytes[i..i + zero]);
        i += zero;
        match bytes.get(i + 1) {
            Some(0x00) => {
                *input = &bytes[i + 2..];
                return Ok(out);
            }
            Some(0xFF) => {
                out.push(0);
                i += 2;
            }
            Some(&tag) => {
                return Err(KeyError::InvalidTag {
                    type_name,
                    tag: u32::from(tag),
                });
            }
            None => return Err(KeyError::Truncated { type_name }),
        }
    }
}

impl EncodeKey for str {
    fn encode_key(&self, out: &mut Vec<u8>) {
        encode_bytes(self.as_bytes(), out);
    }
}
impl EncodeKey for String {
    fn encode_key(&self, out: &mut Vec<u8>) {
        encode_bytes(self.as_bytes(), out);
    }
}
impl StateKey for String {
    fn decode_key(input: &mut &[u8]) -> Result<Self, KeyError> {
        String::from_utf8(decode_bytes(input, "String")?).map_err(|_| KeyError::InvalidText {
            type_name: "String",
        })
    }
}
impl EncodeKey for [u8] {
    fn encode_key(&self, out: &mut Vec<u8>) {
        encode_bytes(self, out);
    }
}
impl EncodeKey for Vec<u8> {
    fn encode_key(&self, out: &mut Vec<u8>) {
        encode_bytes(self, out);
    }
}
impl StateKey for Vec<u8> {
    fn decode_key(input: &mut &[u8]) -> Result<Self, KeyError> {
        decode_bytes(input, "Vec<u8>")
    }
}

impl<T: EncodeKey, const N: usize> EncodeKey for [T; N] {
    fn encode_key(&self, out: &mut Vec<u8>) {
        for item in self {
            item.encode_key(out);
        }
    }
}
impl<T: StateKey, const N: usize> StateKey for [T; N] {
    fn decode_key(input: &mut &[u8]) -> Result<Self, KeyError> {
        let mut items = Vec::with_capacity(N.min(input.len()));
        for _ in 0..N {
            items.push(T::decode_key(input)?);
        }
        items
            .try_into()
            .map_err(|_| KeyError::Truncated { type_name: "array" })
    }
}

impl<T: EncodeKey> EncodeKey for Option<T> {
    fn encode_key(&self, out: &mut Vec<u8>) {
        match self {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                v.encode_key(out);
            }
        }
    }
}
impl<T: StateKey> StateKey for Option<T> {
    fn decode_key(input: &mut &[u8]) -> Result<Self, KeyError> {
        match take::<1>(input, "Option")? {
            [0] => Ok(None),
            [1] => T::decode_key(input).map(Some),
            [tag] => Err(KeyError::InvalidTag {
                type_name: "Option",
                tag: u32::from(tag),
            }),
        }
    }
}

impl<T: EncodeKey + ?Sized> EncodeKey for &T {
    fn encode_key(&self, out: &mut Vec<u8>) {
        (**self).encode_key(out);
    }
}

macro_rules! tuple {
    ($($name:ident)+) => {
        impl<$($name: EncodeKey),+> EncodeKey for ($($name,)+) {
            #[allow(non_snake_case)]
            fn encode_key(&self, out: &mut Vec<u8>) {
                let ($($name,)+) = self;
                $($name.encode_key(out);)+
            }
        }
        impl<$($name: StateKey),+> StateKey for ($($name,)+) {
            fn decode_key(input: &mut &[u8]) -> Result<Self, KeyError> {
                Ok(($($name::decode_key(input)?,)+))
            }
        }
    };
}
tuple!(A);
tuple!(A B);
tuple!(A B C);
tuple!(A B C D);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn roundtrip_and_order<K: StateKey + PartialOrd + std::fmt::Debug>(a: &K, b: &K) {
        let (ea, eb) = (a.to_key_bytes(), b.to_key_bytes());
        assert_eq!(&K::from_key_bytes(&ea).unwrap(), a);
        assert_eq!(&K::from_key_bytes(&eb).unwrap(), b);
        assert_eq!(a.partial_cmp(b), ea.partial_cmp(&eb), "{a:?} vs {b:?}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn u64_keys(a: u64, b: u64) { roundtrip_and_order(&a, &b) }
        #[test]
        fn i64_keys(a: i64, b: i64) { roundtrip_and_order(&a, &b) }
        #[test]
        fn i8_keys(a: i8, b: i8) { roundtrip_and_order(&a, &b) }
        #[test]
        fn i128_keys(a: i128, b: i128) { roundtrip_and_order(&a, &b) }
        #[test]
        fn u16_keys(a: u16, b: u16) { roundtrip_and_order(&a, &b) }
        #[test]
        fn bool_keys(a: bool, b: bool) { roundtrip_and_order(&a, &b) }
        #[test]
        fn char_keys(a: char, b: char) { roundtrip_and_order(&a, &b) }
        #[test]
        fn string_keys(a in "\\PC{0,12}|[\\x00-\\x02a]{0,6}", b in "\\PC{0,12}|[\\x00-\\x02a]{0,6}") {
            roundtrip_and_order(&a, &b)
        }
        #[test]
        fn byte_keys(a in proptest::collection::vec(0u8..4, 0..8), b in proptest::collection::vec(0u8..4, 0..8)) {
            roundtrip_and_order(&a, &b)
        }
        #[test]
        fn option_keys(a: Option<i32>, b: Option<i32>) { roundtrip_and_order(&a, &b) }
        #[test]
        fn array_keys(a: [i16; 3], b: [i16; 3]) { roundtrip_and_order(&a, &b) }
        #[test]
        fn tuple_keys(a: (String, i32, Option<u8>, bool), b: (String, i32, Option<u8>, bool)) {
            roundtrip_and_order(&a, &b)
        }
        #[test]
        fn float_keys_follow_total_order(a: f64, b: f64) {
            let (ea, eb) = (a.to_key_bytes(), b.to_key_bytes());
            prop_assert_eq!(a.total_cmp(&b), ea.cmp(&eb));
            prop_assert_eq!(f64::from_key_bytes(&ea).unwrap().to_bits(), a.to_bits());
        }
        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..24)) {
            let _ = <(String, Option<u64>, char)>::from_key_bytes(&bytes);
            let _ = <Vec<u8>>::from_key_bytes(&bytes);
        }
    }

    #[test]
    fn str_and_string_encode_alike() {
        assert_eq!(
            "a\0b".to_key_bytes_via_str(),
            String::from("a\0b").to_key_bytes()
        );
    }

    trait ViaStr {
        fn to_key_bytes_via_str(&self) -> Vec<u8>;
    }
    impl ViaStr for str {
        fn to_key_bytes_via_str(&self) -> Vec<u8> {
            let mut out = Vec::new();
            self.encode_key(&mut out);
            out
        }
    }

    #[test]
    fn encodings_are_fixed() {
        // These bytes are part of the persisted format; a change here breaks old checkpoints.
        assert_eq!(1u32.to_key_bytes(), [0, 0, 0, 1]);
        assert_eq!((-1i16).to_key_bytes(), [0x7F, 0xFF]);
        assert_eq!(String::from("a\0").to_key_bytes(), [b'a', 0, 0xFF, 0, 0]);
        assert_eq!(Some(true).to_key_bytes(), [1, 1]);
    }

    #[test]
    fn trailing_and_truncated_bytes_are_errors() {
        assert_eq!(
            u16::from_key_bytes(&[0, 1, 2]),
            Err(KeyError::TrailingBytes { count: 1 })
        );
        assert!(matches!(
            u32::from_key_bytes(&[0, 1]),
            Err(KeyError::Truncated { .. })
        ));
        assert!(matches!(
            String::from_key_bytes(&[b'a', 0, 7]),
            Err(KeyError::InvalidTag { tag: 7, .. })
        ));
        assert!(matches!(
            String::from_key_bytes(&[0xC0, 0, 0]),
            Err(KeyError::InvalidText { .. })
        ));
    }
}
