//! The manifest: the list of retained checkpoints, its encoding and its checks.

#![allow(clippy::wildcard_imports)]

use super::*;

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Manifest {
    pub(super) format: String,
    pub(super) version: u32,
    pub(super) next_id: u64,
    pub(super) checkpoints: Vec<CheckpointInfo>,
    /// The number of the manifest object it was read from (0: none, or the `MANIFEST` of a
    /// directory written before manifests were numbered).
    #[serde(skip)]
    pub(super) seq: u64,
}

/// The bytes of a manifest: pretty JSON, then a line with its crc32c.
pub(super) fn encode_manifest(manifest: &Manifest) -> Result<Vec<u8>> {
    let body = serde_json::to_string_pretty(manifest).map_err(|e| Error::Backend {
        backend: "checkpoint",
        message: format!("cannot encode the manifest: {e}"),
    })?;
    let crc = crc32c::crc32c(body.as_bytes());
    Ok(format!("{body}\n{CRC_PREFIX}{crc:08x}\n").into_bytes())
}

/// Decodes the bytes of a manifest into its retained checkpoints, checking its format,
/// version and checksum (for tools and fuzzing; [`CheckpointStorage::list`] reads the newest one).
///
/// # Errors
///
/// [`Error::Foreign`], [`Error::UnsupportedVersion`] or [`Error::Corrupt`].
pub fn decode_manifest(path: &Path, bytes: &[u8]) -> Result<Vec<CheckpointInfo>> {
    Ok(parse_manifest(path, bytes)?.checkpoints)
}

pub(super) fn parse_manifest(path: &Path, text: &[u8]) -> Result<Manifest> {
    let prefix = br#"{
  "format": "statewright-checkpoints""#;
    if !text.starts_with(prefix) {
        return Err(Error::Foreign {
            path: path.to_owned(),
            expected: "checkpoint manifest",
        });
    }
    let malformed = |offset: usize, detail: String| {
        Error::corrupt(
            path,
            offset as u64,
            Corruption::Malformed {
                section: "manifest",
                detail,
            },
        )
    };
    let text =
        std::str::from_utf8(text).map_err(|e| malformed(e.valid_up_to(), "not UTF-8".into()))?;
    let trimmed = text.strip_suffix('\n').unwrap_or(text);
    let Some((body, crc_line)) = trimmed.rsplit_once('\n') else {
        return Err(Error::corrupt(
            path,
            text.len() as u64,
            Corruption::Truncated {
                needed: 1,
                available: 0,
            },
        ));
    };
    let Some(stored) = crc_line
        .strip_prefix(CRC_PREFIX)
        .and_then(|h| u32::from_str_radix(h, 16).ok())
    else {
        return Err(Error::corrupt(
            path,
            body.len() as u64,
            Corruption::Truncated {
                needed: 1,
                available: 0,
            },
        ));
    };
    let computed = crc32c::crc32c(body.as_bytes());
    if stored != computed {
        return Err(Error::corrupt(
            path,
            0,
            Corruption::ChecksumMismatch {
                section: "manifest",
                stored,
                computed,
            },
        ));
    }
    let manifest: Manifest =
        serde_json::from_str(body).map_err(|e| malformed(0, format!("json: {e}")))?;
    if manifest.format != MANIFEST_FORMAT {
        return Err(Error::Foreign {
            path: path.to_owned(),
            expected: "checkpoint manifest",
        });
    }
    if !(MANIFEST_OLDEST_READABLE..=MANIFEST_VERSION).contains(&manifest.version) {
        return Err(Error::UnsupportedVersion {
            path: path.to_owned(),
            what: "manifest",
            found: manifest.version,
            supported: MANIFEST_VERSION,
        });
    }
    for checkpoint in &manifest.checkpoints {
        for file in &checkpoint.files {
            if file.first_key_group > file.last_key_group {
                return Err(malformed(
                    0,
                    format!(
                        "checkpoint {}: `{}` has key groups {}..={}, the first after the last",
                        checkpoint.id, file.path, file.first_key_group, file.last_key_group
                    ),
                ));
            }
        }
    }
    Ok(manifest)
}
