//! The value codec: the one module that encodes and decodes state values.
//!
//! Values are rkyv 0.8 archives in the `unaligned`, little-endian, 32-bit-offset format, fixed
//! for every build of statewright and recorded in snapshot headers ([`RKYV_FORMAT`]). With
//! `unaligned`, every archived type has alignment 1, so a value can be read in place from any
//! byte slice: a heap vector, an element in the middle of a list, or a RocksDB block.
//!
//! Every read validates the bytes (`bytecheck`) before handing out a reference; there is no
//! `unsafe` on the read path. Bytes from outside (snapshots) are validated when restored too.
//!
//! List states store their elements one after another, each framed by a little-endian `u32`
//! length, so that appending is a byte append (a RocksDB merge) and never rewrites the list.

use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;

use crate::model::error::CodecError;

/// The rkyv format of stored values: bit 0 `unaligned`, bit 1 big endian (never set),
/// bits 2-3 offset width (`1` = 32 bit). Written into snapshot headers.
pub const RKYV_FORMAT: u8 = 0b0101;

/// The serialiser state values are written with.
pub type ValueSerializer<'a> = HighSerializer<Vec<u8>, ArenaHandle<'a>, rancor::Error>;
/// The validator state values are checked with.
pub type ValueValidator<'a> = HighValidator<'a, rancor::Error>;
/// The deserialiser owned values are made with.
pub type ValueDeserializer = HighDeserializer<rancor::Error>;

/// A type that can be stored as a state value.
///
/// Implemented for primitives, `String`, `Vec<T>`, `Option<T>`, arrays and tuples of state
/// values, and for user types marked `#[statewright::value]`:
///
/// ```
/// use statewright::prelude::*;
///
/// #[statewright::value]
/// #[derive(Debug, PartialEq)]
/// pub struct Txn { pub card: u64, pub amount_cents: i64 }
///
/// fn assert_state_value<T: StateValue>() {}
/// assert_state_value::<Txn>();
/// assert_state_value::<Vec<Option<Txn>>>();
/// ```
///
/// The methods are the codec's entry points for generated code; call them through the typed
/// state views instead.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be stored as a state value",
    label = "not a state value",
    note = "mark the type with `#[statewright::value]` (it derives the zero-copy codec)"
)]
pub trait StateValue: rkyv::Archive + crate::model::schema::StateSchema + Sized + 'static {
    #[doc(hidden)]
    fn __encode(&self, out: Vec<u8>) -> Result<Vec<u8>, rancor::Error>;
    /// Appends the archive to `buf` (on error, `buf` may be left empty).
    #[doc(hidden)]
    #[inline]
    fn __encode_into(&self, buf: &mut Vec<u8>) -> Result<(), rancor::Error> {
        *buf = self.__encode(std::mem::take(buf))?;
        Ok(())
    }
    #[doc(hidden)]
    fn __access(bytes: &[u8]) -> Result<&Self::Archived, rancor::Error>;
    #[doc(hidden)]
    fn __deserialize(archived: &Self::Archived) -> Result<Self, rancor::Error>;
}

#[doc(hidden)]
pub mod raw {
    //! Generic helpers that generated `StateValue` impls call; their bounds are rkyv's.
    use super::{ValueDeserializer, ValueSerializer, ValueValidator};
    use rkyv::rancor;

    #[inline]
    pub fn encode<T>(value: &T, out: Vec<u8>) -> Result<Vec<u8>, rancor::Error>
    where
        T: for<'a> rkyv::Serialize<ValueSerializer<'a>>,
    {
        rkyv::api::high::to_bytes_in::<Vec<u8>, rancor::Error>(value, out)
    }

    #[inline]
    pub fn access<T>(bytes: &[u8]) -> Result<&T::Archived, rancor::Error>
    where
        T: rkyv::Archive,
        T::Archived: for<'a> bytecheck::CheckBytes<ValueValidator<'a>>,
    {
        rkyv::access::<T::Archived, rancor::Error>(bytes)
    }

    #[inline]
    pub fn deserialize<T>(archived: &T::Archived) -> Result<T, rancor::Error>
    where
        T: rkyv::Archive,
        T::Archived: rkyv::Deserialize<T, ValueDeserializer>,
    {
        rkyv::deserialize::<T, rancor::Error>(archived)
    }

    use rkyv::bytecheck;
}

/// Implements [`StateValue`] for types whose rkyv impls satisfy the codec's bounds.
#[doc(hidden)]
#[macro_export]
macro_rules! __impl_state_value {
    (generic [$($gen:tt)*] $t:ty where $($bounds:tt)*) => {
        $crate::__impl_state_value!(@impl [$($gen)*] $t [$($bounds)*]);
    };
    ($t:ty) => {
        $crate::__impl_state_value!(@impl [] $t []);
    };
    (@impl [$($gen:tt)*] $t:ty [$($bounds:tt)*]) => {
        #[automatically_derived]
        impl<$($gen)*> $crate::StateValue for $t where $($bounds)* {
            #[inline]
            fn __encode(&self, out: ::std::vec::Vec<u8>) -> ::core::result::Result<::std::vec::Vec<u8>, $crate::__private::rkyv::rancor::Error> {
                $crate::__private::raw::encode::<Self>(self, out)
            }
            #[inline]
            fn __access(bytes: &[u8]) -> ::core::result::Result<&<Self as $crate::__private::rkyv::Archive>::Archived, $crate::__private::rkyv::rancor::Error> {
                $crate::__private::raw::access::<Self>(bytes)
            }
            #[inline]
            fn __deserialize(archived: &<Self as $crate::__private::rkyv::Archive>::Archived) -> ::core::result::Result<Self, $crate::__private::rkyv::rancor::Error> {
                $crate::__private::raw::deserialize::<Self>(archived)
            }
        }
    };
}

/// Fixed-size primitives: their archive (unaligned, little endian) is their little-endian
/// bytes, so they are written directly rather than through rkyv's general serialiser and its
/// allocator, which took a third of a small value's write (`bench/ANALYSIS.md`). A test checks
/// the bytes against rkyv's for every such type.
///
/// Reading: integers and floats archive as plain-old-data (every bit pattern is a value,
/// alignment 1), so a read is a length check (`bytemuck`); `bool`, `char` and `()` have invalid
/// bit patterns and go through rkyv's check. Both reject exactly the same inputs: a slice of
/// another length falls back to rkyv, which reports it (or reads its trailing archive, as rkyv
/// always does).
macro_rules! fixed_prims {
    ($($access:ident $t:ty => |$v:ident| $bytes:expr),* $(,)?) => {$(
        impl StateValue for $t {
            #[inline]
            fn __encode(&self, mut out: Vec<u8>) -> Result<Vec<u8>, rancor::Error> {
                let $v = *self;
                out.extend_from_slice(&$bytes);
                Ok(out)
            }
            #[inline]
            fn __encode_into(&self, buf: &mut Vec<u8>) -> Result<(), rancor::Error> {
                let $v = *self;
                buf.extend_from_slice(&$bytes);
                Ok(())
            }
            #[inline]
            fn __access(bytes: &[u8]) -> Result<&Self::Archived, rancor::Error> {
                fixed_prims!(@$access bytes)
            }
            #[inline]
            fn __deserialize(archived: &Self::Archived) -> Result<Self, rancor::Error> {
                raw::deserialize::<Self>(archived)
            }
        }
    )*};
    (@pod $bytes:ident) => {
        match bytemuck::try_from_bytes::<Self::Archived>($bytes) {
            Ok(archived) => Ok(archived),
            Err(_) => fixed_prims!(@checked $bytes),
        }
    };
    // A primitive has no pointers, so the validator needs no table of shared ones: rkyv's
    // low-level check is the same check, without setting one up.
    (@checked $bytes:ident) => {
        rkyv::api::low::access::<Self::Archived, rancor::Error>($bytes)
    };
}
fixed_prims!(
    checked () => |v| { let () = v; [0u8; 0] },
    checked bool => |v| [u8::from(v)],
    pod u8 => |v| v.to_le_bytes(),
    pod u16 => |v| v.to_le_bytes(),
    pod u32 => |v| v.to_le_bytes(),
    pod u64 => |v| v.to_le_bytes(),
    pod u128 => |v| v.to_le_bytes(),
    pod i8 => |v| v.to_le_bytes(),
    pod i16 => |v| v.to_le_bytes(),
    pod i32 => |v| v.to_le_bytes(),
    pod i64 => |v| v.to_le_bytes(),
    pod i128 => |v| v.to_le_bytes(),
    pod f32 => |v| v.to_le_bytes(),
    pod f64 => |v| v.to_le_bytes(),
    checked char => |v| u32::from(v).to_le_bytes(),
);
crate::__impl_state_value!(String);

crate::__impl_state_value!(generic [T] Vec<T> where Vec<T>: for<'a> rkyv::Serialize<ValueSerializer<'a>>,
    <Vec<T> as rkyv::Archive>::Archived: for<'a> rkyv::bytecheck::CheckBytes<ValueValidator<'a>> + rkyv::Deserialize<Vec<T>, ValueDeserializer>,
    T: rkyv::Archive + crate::model::schema::StateSchema + 'static);
crate::__impl_state_value!(generic [T] Option<T> where Option<T>: for<'a> rkyv::Serialize<ValueSerializer<'a>>,
    <Option<T> as rkyv::Archive>::Archived: for<'a> rkyv::bytecheck::CheckBytes<ValueValidator<'a>> + rkyv::Deserialize<Option<T>, ValueDeserializer>,
    T: rkyv::Archive + crate::model::schema::StateSchema + 'static);
crate::__impl_state_value!(generic [T, const N: usize] [T; N] where [T; N]: for<'a> rkyv::Serialize<ValueSerializer<'a>>,
    <[T; N] as rkyv::Archive>::Archived: for<'a> rkyv::bytecheck::CheckBytes<ValueValidator<'a>> + rkyv::Deserialize<[T; N], ValueDeserializer>,
    T: rkyv::Archive + crate::model::schema::StateSchema + 'static);
crate::__impl_state_value!(generic [A, B] (A, B) where (A, B): for<'a> rkyv::Serialize<ValueSerializer<'a>>,
    <(A, B) as rkyv::Archive>::Archived: for<'a> rkyv::bytecheck::CheckBytes<ValueValidator<'a>> + rkyv::Deserialize<(A, B), ValueDeserializer>,
    A: rkyv::Archive + crate::model::schema::StateSchema + 'static, B: rkyv::Archive + crate::model::schema::StateSchema + 'static);
crate::__impl_state_value!(generic [A, B, C] (A, B, C) where (A, B, C): for<'a> rkyv::Serialize<ValueSerializer<'a>>,
    <(A, B, C) as rkyv::Archive>::Archived: for<'a> rkyv::bytecheck::CheckBytes<ValueValidator<'a>> + rkyv::Deserialize<(A, B, C), ValueDeserializer>,
    A: rkyv::Archive + crate::model::schema::StateSchema + 'static, B: rkyv::Archive + crate::model::schema::StateSchema + 'static, C: rkyv::Archive + crate::model::schema::StateSchema + 'static);
crate::__impl_state_value!(generic [A, B, C, D] (A, B, C, D) where (A, B, C, D): for<'a> rkyv::Serialize<ValueSerializer<'a>>,
    <(A, B, C, D) as rkyv::Archive>::Archived: for<'a> rkyv::bytecheck::CheckBytes<ValueValidator<'a>> + rkyv::Deserialize<(A, B, C, D), ValueDeserializer>,
    A: rkyv::Archive + crate::model::schema::StateSchema + 'static, B: rkyv::Archive + crate::model::schema::StateSchema + 'static, C: rkyv::Archive + crate::model::schema::StateSchema + 'static, D: rkyv::Archive + crate::model::schema::StateSchema + 'static);

/// Encodes `value` into `buf` (cleared first), reusing its allocation.
///
/// # Errors
///
/// [`CodecError::Encode`] when serialisation fails.
#[inline]
pub fn encode_into<T: StateValue>(value: &T, buf: &mut Vec<u8>) -> Result<(), CodecError> {
    buf.clear();
    value.__encode_into(buf).map_err(|e| CodecError::Encode {
        type_name: std::any::type_name::<T>(),
        message: e.to_string(),
    })
}

/// Appends one list frame (`u32` length, then the archive) for `value` to `buf`.
///
/// # Errors
///
/// [`CodecError::Encode`] when serialisation fails or the archive exceeds 4 GiB.
pub fn encode_frame_into<T: StateValue>(value: &T, buf: &mut Vec<u8>) -> Result<(), CodecError> {
    let start = buf.len();
    buf.extend_from_slice(&[0; 4]);
    // rkyv's relative pointers do not depend on where the archive starts, and the unaligned
    // format needs no padding, so the archive can be written right after the length prefix.
    value.__encode_into(buf).map_err(|e| CodecError::Encode {
        type_name: std::any::type_name::<T>(),
        message: e.to_string(),
    })?;
    let len = u32::try_from(buf.len() - start - 4).map_err(|_| CodecError::Encode {
        type_name: std::any::type_name::<T>(),
        message: "a list element's archive exceeds 4 GiB".into(),
    })?;
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    Ok(())
}

/// A validated view of archived `T` in `bytes`.
///
/// # Errors
///
/// [`CodecError::Invalid`] when the bytes are not a valid archive of `T`.
#[inline]
pub fn access<T: StateValue>(bytes: &[u8]) -> Result<&T::Archived, CodecError> {
    T::__access(bytes).map_err(|e| CodecError::Invalid {
        type_name: std::any::type_name::<T>(),
        message: e.to_string(),
    })
}

/// An owned `T` from a validated archive.
///
/// # Errors
///
/// [`CodecError::Invalid`] when the bytes are not a valid archive of `T`.
pub fn decode<T: StateValue>(bytes: &[u8]) -> Result<T, CodecError> {
    to_owned::<T>(access::<T>(bytes)?)
}

/// An owned `T` from an archived one.
///
/// # Errors
///
/// [`CodecError::Invalid`] when deserialisation fails.
pub fn to_owned<T: StateValue>(archived: &T::Archived) -> Result<T, CodecError> {
    T::__deserialize(archived).map_err(|e| CodecError::Invalid {
        type_name: std::any::type_name::<T>(),
        message: e.to_string(),
    })
}

/// Validates that `bytes` is one archived `T`.
///
/// # Errors
///
/// [`CodecError::Invalid`] when it is not.
pub fn validate<T: StateValue>(bytes: &[u8]) -> Result<(), CodecError> {
    access::<T>(bytes).map(drop)
}

/// Validates that `bytes` is a sequence of list frames, each an archived `T`.
///
/// # Errors
///
/// [`CodecError::Framing`] or [`CodecError::Invalid`].
pub fn validate_frames<T: StateValue>(bytes: &[u8]) -> Result<(), CodecError> {
    for element in Frames::new(bytes) {
        access::<T>(element?)?;
    }
    Ok(())
}

/// Iterator over the frames of a list's bytes.
#[derive(Debug, Clone)]
pub struct Frames<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Frames<'a> {
    /// Frames of `bytes`.
    #[must_use]
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, offset: 0 }
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<&'a [u8], CodecError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.bytes.get(self.offset..)?;
        if rest.is_empty() {
            return None;
        }
        let framing = CodecError::Framing {
            offset: self.offset,
        };
        let Some((len, body)) = rest.split_first_chunk::<4>() else {
            self.offset = self.bytes.len();
            return Some(Err(framing));
        };
        let len = u32::from_le_bytes(*len) as usize;
        match body.get(..len) {
            Some(element) => {
                self.offset += 4 + len;
                Some(Ok(element))
            }
            None => {
                self.offset = self.bytes.len();
                Some(Err(framing))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_roundtrip_through_frames_at_odd_offsets() {
        let mut buf = vec![0xAB]; // misalign every frame on purpose
        for s in ["a", "", "hello world", "ü"] {
            encode_frame_into(&(s.to_string(), 7u64, Some(-3i32)), &mut buf).unwrap();
        }
        let items: Vec<_> = Frames::new(&buf[1..])
            .map(|f| decode::<(String, u64, Option<i32>)>(f.unwrap()).unwrap())
            .collect();
        assert_eq!(items.len(), 4);
        assert_eq!(items[2], ("hello world".to_string(), 7, Some(-3)));
    }

    /// The direct encoding of fixed-size primitives is exactly rkyv's archive.
    #[test]
    fn primitives_encode_as_rkyv_archives_them() {
        fn same<T>(values: &[T])
        where
            T: StateValue + for<'a> rkyv::Serialize<ValueSerializer<'a>> + std::fmt::Debug,
        {
            for v in values {
                let ours = v.__encode(Vec::new()).unwrap();
                let rkyv =
                    rkyv::api::high::to_bytes_in::<Vec<u8>, rancor::Error>(v, Vec::new()).unwrap();
                assert_eq!(ours, rkyv, "{} {v:?}", std::any::type_name::<T>());
                access::<T>(&ours).unwrap();
            }
        }
        same(&[()]);
        same(&[false, true]);
        same(&[0u8, 1, 0x7F, 0xFF]);
        same(&[0u16, 1, 0x1234, u16::MAX]);
        same(&[0u32, 1, 0x1234_5678, u32::MAX]);
        same(&[0u64, 1, 0x0123_4567_89AB_CDEF, u64::MAX]);
        same(&[0u128, 1, u128::MAX / 3, u128::MAX]);
        same(&[0i8, -1, i8::MIN, i8::MAX]);
        same(&[0i16, -1, i16::MIN, i16::MAX]);
        same(&[0i32, -1, i32::MIN, i32::MAX]);
        same(&[0i64, -1, i64::MIN, i64::MAX, 42]);
        same(&[0i128, -1, i128::MIN, i128::MAX]);
        same(&[
            0.0f32,
            -0.0,
            1.5,
            f32::NAN,
            f32::INFINITY,
            f32::MIN_POSITIVE,
        ]);
        same(&[0.0f64, -0.0, 1.5, f64::NAN, f64::NEG_INFINITY, f64::MAX]);
        same(&['a', '\0', 'ü', '\u{10FFFF}']);
        assert_eq!(
            decode::<i64>(&(-5i64).__encode(Vec::new()).unwrap()).unwrap(),
            -5
        );
        assert_eq!(
            decode::<char>(&'ü'.__encode(Vec::new()).unwrap()).unwrap(),
            'ü'
        );
    }

    /// The length-check read of integers and floats accepts and rejects exactly what rkyv's
    /// checked access does, for every length around the archive's, and reads the same value.
    #[test]
    fn primitive_reads_match_rkyv_checked_access() {
        fn agree<T>(bytes: &[u8])
        where
            T: StateValue,
            T::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::low::LowValidator<'a, rancor::Error>>
                + PartialEq
                + std::fmt::Debug,
        {
            for len in 0..=bytes.len() {
                let input = &bytes[..len];
                let ours = T::__access(input).ok();
                let theirs = rkyv::api::low::access::<T::Archived, rancor::Error>(input).ok();
                assert_eq!(
                    ours,
                    theirs,
                    "{} from {len} bytes",
                    std::any::type_name::<T>()
                );
            }
        }
        let bytes: Vec<u8> = (1..=40).collect();
        agree::<u8>(&bytes);
        agree::<u16>(&bytes);
        agree::<u32>(&bytes);
        agree::<u64>(&bytes);
        agree::<u128>(&bytes);
        agree::<i8>(&bytes);
        agree::<i16>(&bytes);
        agree::<i32>(&bytes);
        agree::<i64>(&bytes);
        agree::<i128>(&bytes);
        agree::<f32>(&bytes);
        agree::<f64>(&bytes);
        assert_eq!(access::<i64>(&7i64.to_le_bytes()).unwrap().to_native(), 7);
        assert!(access::<i64>(&[1, 2, 3]).is_err());
    }

    #[test]
    fn damaged_frames_are_errors_not_panics() {
        let mut buf = Vec::new();
        encode_frame_into(&12345u64, &mut buf).unwrap();
        for cut in 0..buf.len() {
            let r = validate_frames::<u64>(&buf[..cut]);
            assert!(cut == 0 || r.is_err(), "cut at {cut}");
        }
        assert!(validate::<String>(&[0xFF; 3]).is_err());
    }
}
