//! A truncated, corrupted or foreign snapshot gives a typed error naming the file, never a
//! panic, and never half-restored state.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use statewright::prelude::*;
use statewright::snapshot::{SnapshotOptions, SnapshotReader};
use statewright::{Corruption, Error};

#[statewright::value]
#[derive(Debug, Clone, PartialEq)]
pub struct Visit {
    pub page: String,
    pub millis: u64,
}

#[derive(StatefulOperator, Default)]
#[operator(name = "sessions", key = String, max_parallelism = 32)]
pub struct Sessions {
    visits: ListState<Visit>,
    last: ValueState<u64>,
    pages: MapState<String, u32>,
}

fn filled() -> statewright::Result<Bound<Sessions, HeapBackend>> {
    let mut op = Sessions::default().bind(HeapBackend::new())?;
    for u in 0..40u64 {
        let user = format!("user-{u}");
        let mut st = op.key(user.as_str())?;
        st.last().set(&(u * 1000))?;
        for p in 0..3 {
            let page = format!("/p/{p}");
            st.visits().add(&Visit {
                page: page.clone(),
                millis: u * 10 + p,
            })?;
            st.pages().update(&page, |c| c.unwrap_or(0) + 1)?;
        }
    }
    Ok(op)
}

fn snapshot(op: &Bound<Sessions, HeapBackend>, compression: bool) -> Vec<u8> {
    let mut bytes = Vec::new();
    let options = SnapshotOptions {
        compression,
        block_size: 512,
    };
    op.write_snapshot(options, Path::new("sessions.snap"), &mut bytes)
        .unwrap();
    bytes
}

fn restore(bytes: &[u8]) -> statewright::Result<Bound<Sessions, HeapBackend>> {
    let reader = SnapshotReader::parse("sessions.snap", bytes)?;
    let mut op = Sessions::default().bind(HeapBackend::new())?;
    op.restore_snapshot(&reader)?;
    Ok(op)
}

#[test]
fn a_snapshot_restores_every_state() -> statewright::Result<()> {
    let op = filled()?;
    for compression in [true, false] {
        let mut back = restore(&snapshot(&op, compression))?;
        let mut st = back.key("user-7")?;
        assert_eq!(st.last().get_owned()?, Some(7000));
        assert_eq!(st.visits().len()?, 3);
        assert_eq!(st.pages().get_owned("/p/2")?, Some(1));
        assert_eq!(back.backend().entries(), op.backend().entries());
    }
    Ok(())
}

#[test]
fn every_truncation_is_a_typed_error() {
    let bytes = snapshot(&filled().unwrap(), true);
    for len in 0..bytes.len() {
        match restore(&bytes[..len]) {
            Err(Error::Corrupt { path, .. } | Error::Foreign { path, .. }) => {
                assert_eq!(path, Path::new("sessions.snap"));
            }
            Err(other) => panic!("truncated to {len}: unexpected error {other}"),
            Ok(_) => panic!("truncated to {len} bytes restored"),
        }
    }
}

#[test]
fn every_single_byte_flip_is_detected() {
    let bytes = snapshot(&filled().unwrap(), true);
    for at in 0..bytes.len() {
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x20;
        match restore(&damaged) {
            Err(
                Error::Corrupt { .. } | Error::Foreign { .. } | Error::UnsupportedVersion { .. },
            ) => {}
            Err(other) => panic!("flip at {at}: unexpected error {other}"),
            Ok(_) => panic!("flip at byte {at} of {} went unnoticed", bytes.len()),
        }
    }
}

#[test]
fn damage_is_reported_where_it_is() {
    let bytes = snapshot(&filled().unwrap(), true);
    // A block byte (just after the 20-byte header).
    let mut block = bytes.clone();
    block[25] ^= 1;
    assert!(matches!(
        restore(&block),
        Err(Error::Corrupt {
            kind: Corruption::ChecksumMismatch {
                section: "block",
                ..
            },
            ..
        })
    ));
    // The header's checksum.
    let mut header = bytes.clone();
    header[12] ^= 1;
    assert!(matches!(
        restore(&header),
        Err(Error::Corrupt {
            kind: Corruption::ChecksumMismatch {
                section: "header",
                ..
            },
            offset: 16,
            ..
        })
    ));
    // A cut-off file loses its footer.
    assert!(matches!(
        restore(&bytes[..bytes.len() - 3]),
        Err(Error::Corrupt {
            kind: Corruption::Truncated { .. },
            ..
        })
    ));
}

#[test]
fn foreign_files_are_named_as_such() {
    for foreign in [
        &b""[..],
        b"{\"json\": true}",
        b"\x89PNG\r\n\x1a\n and then some",
        b"SWSNAP",
    ] {
        let err = restore(foreign).err().unwrap();
        assert!(
            matches!(
                err,
                Error::Foreign {
                    expected: "snapshot",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("sessions.snap"), "{err}");
    }
}

#[test]
fn a_newer_format_version_is_refused_by_name() {
    let mut bytes = snapshot(&filled().unwrap(), true);
    bytes[8] = 3; // format version 3, with a correct header checksum
    let crc = crc32c(&bytes[..16]);
    bytes[16..20].copy_from_slice(&crc.to_le_bytes());
    let err = restore(&bytes).err().unwrap();
    assert!(
        matches!(
            err,
            Error::UnsupportedVersion {
                what: "format",
                found: 3,
                supported: 2,
                ..
            }
        ),
        "{err}"
    );
}

/// crc32c (Castagnoli), bitwise, so that the test does not share the library's implementation.
fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[derive(StatefulOperator, Default)]
#[operator(name = "sessions", key = String, max_parallelism = 64)]
pub struct SessionsRescaled {
    last: ValueState<u64>,
}

#[derive(StatefulOperator, Default)]
#[operator(name = "sessions", key = String, max_parallelism = 32)]
pub struct SessionsWithoutVisits {
    last: ValueState<u64>,
    pages: MapState<String, u32>,
}

#[derive(StatefulOperator, Default)]
#[operator(name = "sessions", key = String, max_parallelism = 32)]
pub struct SessionsRetyped {
    visits: ListState<Visit>,
    last: ValueState<Visit>,
    pages: MapState<String, u32>,
}

#[test]
fn snapshots_that_do_not_fit_the_operator_are_refused() -> statewright::Result<()> {
    let bytes = snapshot(&filled()?, true);
    let reader = SnapshotReader::parse("sessions.snap", &bytes)?;

    let mut other_parallelism = SessionsRescaled::default().bind(HeapBackend::new())?;
    let err = other_parallelism.restore_snapshot(&reader).unwrap_err();
    assert!(err.to_string().contains("max_parallelism 32"), "{err}");

    let mut fewer = SessionsWithoutVisits::default().bind(HeapBackend::new())?;
    let err = fewer.restore_snapshot(&reader).unwrap_err();
    assert!(matches!(err, Error::SchemaMismatch { .. }), "{err}");
    assert!(err.to_string().contains("`visits`"), "{err}");

    // `last` was written as u64; the snapshot's schema says so, and the restore refuses it
    // before anything is written.
    let mut retyped = SessionsRetyped::default().bind(HeapBackend::new())?;
    let err = retyped.restore_snapshot(&reader).unwrap_err();
    assert!(matches!(err, Error::SchemaMismatch { .. }), "{err}");
    assert!(err.to_string().contains("~ type: u64 -> Visit {"), "{err}");
    assert_eq!(retyped.backend().entries(), 0);
    Ok(())
}
