//! Errors: one typed, non-exhaustive enum for everything a state operation, a snapshot or a
//! checkpoint can fail with.

use std::path::PathBuf;

/// `Result` with statewright's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in statewright.
///
/// Errors carry the context a person needs to act on them: the operator, the state and the key
/// group for state access, the file and what is wrong with it for snapshots and checkpoints.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A state operation failed; `source` says why.
    #[error("operator `{operator}`, state `{state}`, key group {key_group}: {source}")]
    State {
        /// The operator's name.
        operator: &'static str,
        /// The state's name.
        state: &'static str,
        /// The key group of the current key.
        key_group: u16,
        /// What went wrong.
        #[source]
        source: Box<Error>,
    },
    /// A value could not be encoded, or stored bytes are not a valid archive of the state's type.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// Bytes are not a valid canonical key encoding.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The key belongs to a key group this instance does not own.
    #[error("key group {key_group} is outside this instance's range {first}..={last}")]
    KeyGroupNotOwned {
        /// The key's group.
        key_group: u16,
        /// First key group owned by this instance.
        first: u16,
        /// Last key group owned by this instance.
        last: u16,
    },
    /// A state declares a time-to-live, but the backend it was bound to does not enforce one.
    #[error(
        "operator `{operator}`, state `{state}` declares a ttl, but the {backend} backend does not enforce it; wrap the backend: `TtlBackend::new(backend)`"
    )]
    TtlNotEnforced {
        /// The operator's name.
        operator: &'static str,
        /// The state's name.
        state: &'static str,
        /// The backend's name.
        backend: &'static str,
    },
    /// An event-time TTL state was written before the runtime set a watermark, so there is no
    /// time to stamp it with.
    #[error(
        "event-time ttl state `{state}` was written before the first watermark; call `Bound::set_watermark` first (a restore sets the watermark the checkpoint recorded)"
    )]
    NoWatermark {
        /// `operator.state`.
        state: String,
    },
    /// A backend was asked about a state it never registered.
    #[error("state id {id} is not registered with the {backend} backend")]
    UnknownState {
        /// The backend's name.
        backend: &'static str,
        /// The unknown id.
        id: u32,
    },
    /// A backend operation does not fit the state's kind (a user key on a value state, ...),
    /// or the backend found its own data in a state it cannot use.
    #[error("{backend} backend: {message}")]
    Backend {
        /// The backend's name.
        backend: &'static str,
        /// What went wrong.
        message: String,
    },
    /// The backend's storage engine failed (RocksDB's own error, kept as the source).
    #[error("{backend} backend: {source}")]
    Storage {
        /// The backend's name.
        backend: &'static str,
        /// The engine's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The backend does not offer what was asked of it; another configuration or backend does.
    #[error("the {backend} backend does not support {what}")]
    Unsupported {
        /// The backend's name.
        backend: &'static str,
        /// What it does not support, and what to do instead.
        what: String,
    },
    /// An I/O operation on a file or directory failed.
    #[error("i/o error on `{}`: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file is not one of ours: wrong magic bytes.
    #[error("`{}` is not a statewright {expected} file", path.display())]
    Foreign {
        /// The file.
        path: PathBuf,
        /// What kind of file was expected (`snapshot`, `manifest`).
        expected: &'static str,
    },
    /// A file was written by a newer format version than this build reads.
    #[error("`{}` has {what} version {found}; this build reads version {supported}", path.display())]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// Which version field (`format`, `rkyv format`, `key hash`).
        what: &'static str,
        /// The version found.
        found: u32,
        /// The version this build supports.
        supported: u32,
    },
    /// A file is damaged: truncated, a checksum mismatch, or a malformed structure.
    #[error("`{}` is corrupt at byte {offset}: {kind}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Byte offset in the file where the damage was found.
        offset: u64,
        /// What is wrong.
        kind: Corruption,
    },
    /// A path given as an existing checkpoint directory does not exist or is not a directory.
    #[error("`{}` is not a checkpoint directory: {reason}", path.display())]
    NotACheckpointDirectory {
        /// The path.
        path: PathBuf,
        /// Why (`it does not exist`, `it is a file, not a directory`).
        reason: &'static str,
    },
    /// No committed checkpoint matches the request.
    #[error("no checkpoint {wanted} in `{}`", dir.display())]
    CheckpointNotFound {
        /// The checkpoint directory.
        dir: PathBuf,
        /// What was asked for (`latest`, `7`).
        wanted: String,
    },
    /// A checkpoint does not fit the operator restoring from it.
    #[error("operator `{operator}` cannot restore from `{}`: {reason}", path.display())]
    Incompatible {
        /// The operator being restored.
        operator: String,
        /// The snapshot file.
        path: PathBuf,
        /// What does not fit.
        reason: String,
    },
    /// The state in a snapshot does not fit the operator's declaration: a type changed without
    /// a migration, a state is missing, a key type changed. Every state is checked first; the
    /// report lists every problem with the schema changes behind it.
    #[error("operator `{operator}` cannot restore from `{}`: the stored state does not fit the declared state{report}", path.display())]
    SchemaMismatch {
        /// The operator being restored.
        operator: String,
        /// The snapshot file (or checkpoint) read.
        path: PathBuf,
        /// The problems, with their schema diffs.
        report: crate::model::schema::SchemaReport,
    },
    /// A checkpoint cannot start: the previous one is still being written, or no tokio runtime
    /// is there to write it.
    #[error("cannot start a checkpoint: {reason}")]
    CheckpointNotStarted {
        /// Why.
        reason: &'static str,
    },
    /// Another writer committed a checkpoint of the same storage after this one began: this
    /// one is not committed (its files are removed) and the other's commit stands. Checkpoints
    /// of one storage are written by one writer at a time; a second one is found out here
    /// instead of replacing the first one's commit.
    #[error(
        "checkpoint {id} was not committed: another writer committed `{path}` first; one \
         writer at a time checkpoints to a storage"
    )]
    CommitConflict {
        /// The number of the checkpoint that was not committed.
        id: u64,
        /// The manifest the other writer committed.
        path: PathBuf,
    },
    /// A name that becomes part of a path (operator, checkpoint) is not allowed.
    #[error("invalid {what} name `{name}`: {reason}")]
    InvalidName {
        /// What was being named.
        what: &'static str,
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },
}

/// What is wrong with a corrupt file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Corruption {
    /// The file ends before a structure it declares.
    #[error("truncated: needed {needed} more bytes, {available} available")]
    Truncated {
        /// Bytes needed.
        needed: u64,
        /// Bytes available.
        available: u64,
    },
    /// A checksum does not match the bytes it covers.
    #[error("crc32c mismatch in {section}: stored {stored:#010x}, computed {computed:#010x}")]
    ChecksumMismatch {
        /// Which part of the file (`header`, `index`, `block`, `manifest`).
        section: &'static str,
        /// The stored checksum.
        stored: u32,
        /// The checksum of the bytes as read.
        computed: u32,
    },
    /// A structure is well-checksummed but makes no sense (bad lengths, unknown kinds).
    #[error("malformed {section}: {detail}")]
    Malformed {
        /// Which part of the file.
        section: &'static str,
        /// What makes no sense.
        detail: String,
    },
    /// An entry's bytes do not decode as the state's declared key or value type.
    #[error("invalid entry in state `{state}`: {detail}")]
    InvalidEntry {
        /// The state.
        state: String,
        /// What failed to validate.
        detail: String,
    },
}

/// A value failed to encode, or bytes failed validation as an archive of the expected type.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// Serialising a value failed.
    #[error("cannot encode a `{type_name}`: {message}")]
    Encode {
        /// The value's type.
        type_name: &'static str,
        /// The serialiser's message.
        message: String,
    },
    /// Bytes are not a valid archive of the type.
    #[error("bytes are not a valid archived `{type_name}`: {message}")]
    Invalid {
        /// The expected type.
        type_name: &'static str,
        /// The validator's message.
        message: String,
    },
    /// A list's framing (length prefixes) is damaged.
    #[error("list element framing is damaged at byte {offset}")]
    Framing {
        /// Offset of the damaged frame in the list's bytes.
        offset: usize,
    },
}

/// Bytes are not a valid canonical key encoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The bytes end in the middle of a key.
    #[error("key bytes end early while decoding a `{type_name}`")]
    Truncated {
        /// The type being decoded.
        type_name: &'static str,
    },
    /// A tag byte (option, enum variant, escape) has a value no encoder writes.
    #[error("invalid tag {tag:#04x} while decoding a `{type_name}`")]
    InvalidTag {
        /// The type being decoded.
        type_name: &'static str,
        /// The offending byte or variant index.
        tag: u32,
    },
    /// A string's bytes are not UTF-8, or a `char` is not a Unicode scalar value.
    #[error("invalid text while decoding a `{type_name}`")]
    InvalidText {
        /// The type being decoded.
        type_name: &'static str,
    },
    /// Bytes are left over after a whole key was decoded.
    #[error("{count} bytes left over after decoding a key")]
    TrailingBytes {
        /// How many bytes were left.
        count: usize,
    },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, offset: u64, kind: Corruption) -> Self {
        Error::Corrupt {
            path: path.into(),
            offset,
            kind,
        }
    }
}
