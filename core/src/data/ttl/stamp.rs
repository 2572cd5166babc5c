//! TTL stamps: adding, reading, stripping and checking them, and the expiry filter.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::model::codec::Frames;
use crate::model::descriptor::TtlTime;
use crate::model::error::{CodecError, Result};

use super::clock::Time;

use super::STAMP_LEN;

pub(crate) fn split_stamp(raw: &[u8], offset: usize) -> Result<(i64, &[u8]), CodecError> {
    raw.split_first_chunk::<STAMP_LEN>()
        .map(|(s, rest)| (i64::from_le_bytes(*s), rest))
        .ok_or(CodecError::Framing { offset })
}

pub(crate) fn is_expired(stamp: i64, ttl_ms: i64, now: i64) -> bool {
    stamp.saturating_add(ttl_ms) <= now
}

pub(crate) fn push_frame(
    out: &mut Vec<u8>,
    stamp: Option<i64>,
    element: &[u8],
) -> Result<(), CodecError> {
    let extra = if stamp.is_some() { STAMP_LEN } else { 0 };
    let len = u32::try_from(element.len() + extra)
        .map_err(|_| CodecError::Framing { offset: out.len() })?;
    out.extend_from_slice(&len.to_le_bytes());
    if let Some(s) = stamp {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out.extend_from_slice(element);
    Ok(())
}

/// Appends `plain` (a value, or a list's frames when `list`) to `out` with every part stamped
/// `stamp`.
///
/// # Errors
///
/// Damaged list framing.
pub fn add_stamps(
    list: bool,
    plain: &[u8],
    stamp: i64,
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    if list {
        for frame in Frames::new(plain) {
            push_frame(out, Some(stamp), frame?)?;
        }
    } else {
        out.extend_from_slice(&stamp.to_le_bytes());
        out.extend_from_slice(plain);
    }
    Ok(())
}

/// Appends `raw` (a stored value, or a list's frames when `list`; stamped when `stamped`) to
/// `out` with each part converted by `migrate`, keeping its stamp. Returns the parts converted.
///
/// # Errors
///
/// Damaged framing, a missing stamp, or the migration's error.
pub fn migrate_parts(
    list: bool,
    stamped: bool,
    raw: &[u8],
    out: &mut Vec<u8>,
    migrate: fn(&[u8], &mut Vec<u8>) -> Result<(), CodecError>,
) -> Result<u64, CodecError> {
    let mut one = Vec::new();
    let mut convert = |i: usize, part: &[u8], out: &mut Vec<u8>| {
        let (stamp, element) = if stamped {
            let (s, e) = split_stamp(part, i)?;
            (Some(s), e)
        } else {
            (None, part)
        };
        migrate(element, &mut one)?;
        if list {
            push_frame(out, stamp, &one)
        } else {
            if let Some(s) = stamp {
                out.extend_from_slice(&s.to_le_bytes());
            }
            out.extend_from_slice(&one);
            Ok(())
        }
    };
    if !list {
        convert(0, raw, out)?;
        return Ok(1);
    }
    let mut n = 0;
    for (i, frame) in Frames::new(raw).enumerate() {
        convert(i, frame?, out)?;
        n += 1;
    }
    Ok(n)
}

/// Appends `stamped` (as a stamped state stores it) to `out` without its stamps.
///
/// # Errors
///
/// Damaged framing or a missing stamp.
pub fn strip_stamps(list: bool, stamped: &[u8], out: &mut Vec<u8>) -> Result<(), CodecError> {
    if list {
        for (i, frame) in Frames::new(stamped).enumerate() {
            let (_, element) = split_stamp(frame?, i)?;
            push_frame(out, None, element)?;
        }
    } else {
        out.extend_from_slice(split_stamp(stamped, 0)?.1);
    }
    Ok(())
}

/// What [`retain_live`] kept and dropped (values or list elements).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Retained {
    pub(crate) kept: u64,
    pub(crate) dropped: u64,
}

/// Appends the live parts of `stamped` to `out`, restamped with `max(stamp, restamp)` when
/// `restamp` is given.
pub(crate) fn retain_live(
    list: bool,
    stamped: &[u8],
    ttl_ms: i64,
    now: i64,
    restamp: Option<i64>,
    out: &mut Vec<u8>,
) -> Result<Retained, CodecError> {
    let mut r = Retained::default();
    let mut one = |stamp: i64, element: &[u8], out: &mut Vec<u8>| {
        if is_expired(stamp, ttl_ms, now) {
            r.dropped += 1;
            return Ok(());
        }
        r.kept += 1;
        let stamp = restamp.map_or(stamp, |t| t.max(stamp));
        if list {
            push_frame(out, Some(stamp), element)
        } else {
            out.extend_from_slice(&stamp.to_le_bytes());
            out.extend_from_slice(element);
            Ok(())
        }
    };
    if list {
        for (i, frame) in Frames::new(stamped).enumerate() {
            let (stamp, element) = split_stamp(frame?, i)?;
            one(stamp, element, out)?;
        }
    } else {
        let (stamp, value) = split_stamp(stamped, 0)?;
        one(stamp, value, out)?;
    }
    Ok(r)
}

/// Drops expired entries of one stamped state in a backend's background work (installed with
/// [`ExpiryHooks::install_expiry_filter`](crate::ExpiryHooks::install_expiry_filter)); safe to call from any thread.
#[derive(Debug, Clone)]
pub struct ExpiryFilter {
    pub(crate) list: bool,
    pub(crate) ttl_ms: i64,
    pub(crate) mode: TtlTime,
    pub(crate) time: Time,
    pub(crate) dropped: Arc<AtomicU64>,
}

impl ExpiryFilter {
    /// Whether everything in one stored value (every element of a list) has expired, so the
    /// entry can be removed; counts what it drops. Undamaged data only: what cannot be parsed
    /// is kept. A list with some live elements is kept whole; reads drop its expired elements.
    pub fn remove(&self, stored: &[u8]) -> bool {
        let now = self.time.now(self.mode);
        let (expired, parts) = count_expired(self.list, stored, self.ttl_ms, now);
        let all = parts > 0 && expired == parts;
        if all {
            self.dropped.fetch_add(expired, Ordering::Relaxed);
        }
        all
    }

    /// Values (or list elements) this filter has dropped.
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// `(expired, parts)`: how many of the stored value's parts (the value, or each list element)
/// have expired, of how many. A part whose stamp cannot be read counts as live.
pub(crate) fn count_expired(list: bool, raw: &[u8], ttl_ms: i64, now: i64) -> (u64, u64) {
    let expired = |part: &[u8]| split_stamp(part, 0).is_ok_and(|(s, _)| is_expired(s, ttl_ms, now));
    if !list {
        return (u64::from(expired(raw)), 1);
    }
    Frames::new(raw).fold((0, 0), |(e, n), f| {
        (e + u64::from(f.is_ok_and(&expired)), n + 1)
    })
}
