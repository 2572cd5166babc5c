//! `statewright`: list, inspect and verify the checkpoints in a checkpoint directory.
//!
//! Every command only reads: none creates or changes the directory it is given.
//!
//! ```text
//! statewright list ./checkpoints
//! statewright inspect ./checkpoints            # the latest checkpoint
//! statewright inspect ./checkpoints/chk-0000000003
//! statewright verify ./checkpoints             # exit code 1 when anything is damaged
//! statewright dump ./checkpoints --state per_merchant --key 42 --format csv
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::{BTreeMap, HashMap};

use serde_json::Value;
use statewright_core::StateKey;
use statewright_core::backend::Change;
use statewright_core::checkpoint::SnapshotRef;
use statewright_core::codec::{self, Frames};
use statewright_core::descriptor::StateKind;
use statewright_core::keygroup::KeyGroupRange;
use statewright_core::snapshot::SnapshotReader;
use statewright_core::{CheckpointId, CheckpointInfo, CheckpointStorage, RestorePoint};

/// Inspect statewright checkpoints.
#[derive(Parser)]
#[command(name = "statewright", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the retained checkpoints: id, commit time, kind, operators, entries, bytes.
    List {
        /// The checkpoint directory (the one holding `manifests/`), or a URL
        /// (`s3://bucket/prefix`, credentials and endpoint from the `AWS_*` variables;
        /// `redis://[:password@]host:port/db/prefix`).
        dir: PathBuf,
    },
    /// Show a checkpoint's operators and states: kinds, types, TTLs, entries, sizes.
    Inspect {
        /// The checkpoint directory or URL, or one checkpoint in it (`<dir>/chk-0000000003`).
        checkpoint: PathBuf,
        /// The checkpoint's id (default: the latest, or the one the path names).
        #[arg(long)]
        id: Option<u64>,
    },
    /// Check every file of every retained checkpoint: length and checksum against the
    /// manifest, then every block's checksum and every record's framing. Exit code 1 when
    /// anything is damaged, 2 when there is nothing to check (no committed checkpoint).
    Verify {
        /// The checkpoint directory, or a URL (`s3://bucket/prefix`, `redis://host:port/db/prefix`).
        dir: PathBuf,
    },
    /// Print one state's entries as of a checkpoint (its incremental chains applied), keys and
    /// values decoded where their types are primitives or strings (hex otherwise).
    Dump {
        /// The checkpoint directory or URL, or one checkpoint in it (`<dir>/chk-0000000003`).
        checkpoint: PathBuf,
        /// The checkpoint's id (default: the latest, or the one the path names).
        #[arg(long)]
        id: Option<u64>,
        /// The state's name.
        #[arg(long)]
        state: String,
        /// The operator (needed when several operators have a state of that name).
        #[arg(long)]
        operator: Option<String>,
        /// Only this key (as printed: a number, or a string's text).
        #[arg(long)]
        key: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Json)]
        format: Format,
    },
}

/// How `dump` prints entries.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    /// A JSON array of objects: `key_group`, `key`, `user_key` (map states), `value`.
    Json,
    /// CSV with a header: `key_group,key,user_key,value` (non-scalar values as JSON).
    Csv,
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::List { dir } => list(&dir).map(|()| ExitCode::SUCCESS),
        Command::Inspect { checkpoint, id } => inspect(&checkpoint, id).map(|()| ExitCode::SUCCESS),
        Command::Verify { dir } => verify(&dir),
        Command::Dump {
            checkpoint,
            id,
            state,
            operator,
            key,
            format,
        } => dump(
            &checkpoint,
            id,
            &state,
            operator.as_deref(),
            key.as_deref(),
            format,
        )
        .map(|()| ExitCode::SUCCESS),
    }
}

fn time(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

fn list(dir: &Path) -> Result<()> {
    let storage = open_storage(dir)?;
    let checkpoints = storage.list()?;
    if checkpoints.is_empty() {
        println!("no committed checkpoints in {}", dir.display());
        return Ok(());
    }
    println!(
        "{:>6}  {:<24}  {:<11}  {:>9}  {:>12}  {:>12}",
        "id", "committed", "kind", "snapshots", "entries", "bytes"
    );
    for c in &checkpoints {
        println!(
            "{:>6}  {:<24}  {:<11}  {:>9}  {:>12}  {:>12}",
            c.id.0,
            time(c.created_ms),
            c.kind().to_string(),
            c.files.len(),
            c.files.iter().map(|f| f.entries).sum::<u64>(),
            c.bytes()
        );
    }
    Ok(())
}

/// The checkpoint storage at `location`: a directory, which must exist (nothing is created), or
/// a URL (`s3://bucket/prefix`, credentials and endpoint from the `AWS_*` variables;
/// `redis://[:password@]host:port/db/prefix`).
fn open_storage(location: &Path) -> statewright_core::Result<CheckpointStorage> {
    match location.to_str() {
        Some(url) if url.starts_with("redis://") || url.starts_with("rediss://") => {
            statewright_redis::open_url(url)
        }
        Some(url) if url.contains("://") => {
            statewright_object_store::open_url(url, std::iter::empty::<(&str, String)>())
        }
        _ => CheckpointStorage::open_existing(location),
    }
}

/// Whether `path` is a checkpoint directory with a commit in it.
fn holds_checkpoints(path: &Path) -> bool {
    open_storage(path)
        .and_then(|s| s.manifest_location())
        .is_ok_and(|m| m.is_some())
}

/// The storage directory and checkpoint a path names: `<dir>` or `<dir>/chk-NNNNNNNNNN`.
fn locate(path: &Path, id: Option<u64>) -> Result<(CheckpointStorage, CheckpointInfo)> {
    let named = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("chk-"))
        .and_then(|n| n.parse::<u64>().ok());
    let (dir, id) = match (named, path.parent()) {
        (Some(n), Some(parent)) if !holds_checkpoints(path) => (parent, id.or(Some(n))),
        _ => (path, id),
    };
    let storage = open_storage(dir)?;
    let point = id.map_or(RestorePoint::Latest, |i| RestorePoint::Id(CheckpointId(i)));
    let info = storage.resolve(point)?;
    Ok((storage, info))
}

fn inspect(path: &Path, id: Option<u64>) -> Result<()> {
    let (storage, info) = locate(path, id)?;
    println!(
        "checkpoint {} committed {}: {} snapshot(s), {} {} bytes ({} bytes with the snapshots it builds on)",
        info.id.0,
        time(info.created_ms),
        info.files.len(),
        info.kind(),
        info.bytes(),
        info.restore_bytes()
    );
    for file in &info.files {
        if let Some(native) = &file.native {
            let shared = native.files.iter().filter(|f| f.shared.is_some()).count();
            println!();
            println!(
                "operator `{}` ({}, native {} checkpoint)",
                file.operator, file.path, native.backend
            );
            println!(
                "  max parallelism {}, key groups {}..={}, {} files ({shared} shared), {} bytes \
                 ({} newly written)",
                native.max_parallelism,
                file.first_key_group,
                file.last_key_group,
                native.files.len(),
                native.files.iter().map(|f| f.bytes).sum::<u64>(),
                file.bytes
            );
            for f in &native.files {
                match &f.shared {
                    Some(s) => println!("  {:<24} {:>12} bytes  shared/{s}", f.name, f.bytes),
                    None => println!("  {:<24} {:>12} bytes", f.name, f.bytes),
                }
            }
            if let Some(schemas) = &native.schemas {
                println!("  key schema {}", schemas.key.desc);
                for st in &schemas.states {
                    println!(
                        "  state `{}`: version {}, value schema {}",
                        st.name, st.version, st.value.desc
                    );
                }
            }
            continue;
        }
        let (file_path, bytes) = storage.read_file(&file.to_ref())?;
        let reader = SnapshotReader::parse(&file_path, &bytes)?;
        let index = reader.index();
        println!();
        println!(
            "operator `{}` ({}, {})",
            index.operator, file.path, file.kind
        );
        for b in &file.base {
            println!(
                "  applies on top of {} ({}, {} bytes)",
                b.path, b.kind, b.bytes
            );
        }
        println!(
            "  key type {}, max parallelism {}, key groups {}..={}, {} bytes",
            index.key_type,
            index.max_parallelism,
            index.first_key_group,
            index.last_key_group,
            file.bytes
        );
        if let Some(k) = &index.key_schema {
            println!(
                "  key schema {} (fingerprint {:016x})",
                k.desc, k.fingerprint
            );
        }
        for s in &index.states {
            let value = if s.user_key_type.is_empty() {
                s.value_type.clone()
            } else {
                format!("{} -> {}", s.user_key_type, s.value_type)
            };
            let ttl = if s.ttl_ms == 0 {
                String::new()
            } else {
                format!(
                    ", ttl {}",
                    humantime::format_duration(Duration::from_millis(s.ttl_ms))
                )
            };
            println!(
                "  state `{}`: {}<{}>{ttl}, {} entries, {} bytes in {} key groups",
                s.name,
                s.kind.type_name(),
                value,
                s.entries,
                s.raw_bytes,
                s.key_groups.len()
            );
            if let Some(v) = &s.value_schema {
                println!(
                    "    version {}, value schema {} (fingerprint {:016x})",
                    s.version, v.desc, v.fingerprint
                );
            }
            if let Some(k) = &s.user_key_schema {
                // Maps key their entries; namespaced states and timers lead with the namespace.
                let what = if matches!(s.kind, StateKind::Map | StateKind::Broadcast) {
                    "map key"
                } else {
                    "user key"
                };
                println!(
                    "    {what} schema {} (fingerprint {:016x})",
                    k.desc, k.fingerprint
                );
            }
        }
    }
    Ok(())
}

fn verify(dir: &Path) -> Result<ExitCode> {
    let storage = open_storage(dir)?;
    // Without a manifest there is nothing to check, which must not pass for a verified one.
    if storage.manifest_location()?.is_none() {
        return Err(format!(
            "`{}` has no manifest: not a checkpoint directory, or no checkpoint was ever \
             committed to it; nothing to verify",
            dir.display()
        )
        .into());
    }
    let checkpoints = storage.list()?;
    if checkpoints.is_empty() {
        return Err(format!(
            "`{}` holds no committed checkpoint; nothing to verify",
            dir.display()
        )
        .into());
    }
    let files: u64 = checkpoints.iter().map(|c| c.files.len() as u64).sum();
    let bar = ProgressBar::new(files).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} files {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut damaged = 0usize;
    for c in &checkpoints {
        for file in &c.files {
            bar.set_message(file.path.clone());
            let checked = match &file.native {
                Some(native) => storage
                    .verify_native(file, &mut |_| {})
                    .map(|()| format!("{} native files", native.files.len()))
                    .map_err(Into::into),
                None => check_file(&storage, &file.to_ref()).map(|r| format!("{r} records")),
            };
            match checked {
                Ok(what) => bar.suspend(|| {
                    println!("ok       checkpoint {} {} ({what})", c.id.0, file.path);
                }),
                Err(e) => {
                    damaged += 1;
                    bar.suspend(|| {
                        println!("DAMAGED  checkpoint {} {}: {e}", c.id.0, file.path);
                    });
                }
            }
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    if damaged == 0 {
        println!(
            "{} checkpoint(s), {files} file(s): all checksums match",
            checkpoints.len()
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!("{damaged} of {files} file(s) damaged");
        Ok(ExitCode::from(1))
    }
}

/// Reads one snapshot whole: its manifest checksum, header, index, every block and record.
fn check_file(storage: &CheckpointStorage, file: &SnapshotRef) -> Result<u64> {
    let (path, bytes) = storage.read_file(file)?;
    let reader = SnapshotReader::parse(&path, &bytes)?;
    let index = reader.index();
    let range = KeyGroupRange::all(index.max_parallelism);
    let mut records = 0u64;
    for state in &index.states {
        reader.for_each_change(state, range, &mut |_, _, _, _| {
            records += 1;
            Ok(())
        })?;
    }
    Ok(records)
}

/// `(canonical key, user key)` -> `(key group, stored value)`.
type Entries = BTreeMap<(Vec<u8>, Vec<u8>), (u16, Vec<u8>)>;

fn dump(
    path: &Path,
    id: Option<u64>,
    state: &str,
    operator: Option<&str>,
    key: Option<&str>,
    format: Format,
) -> Result<()> {
    let (storage, info) = locate(path, id)?;
    // Which operator's state: the one named, or the only one with a state of that name.
    let mut section = None;
    let mut operators = Vec::new();
    let mut native_only = Vec::new();
    // Files read while looking for the state, read again only if not kept here.
    let mut read: HashMap<String, (PathBuf, Vec<u8>)> = HashMap::new();
    for file in &info.files {
        if operator.is_some_and(|o| o != file.operator) || operators.contains(&file.operator) {
            continue;
        }
        if let Some(native) = &file.native {
            if operator.is_some() {
                return Err(format!(
                    "checkpoint {} holds a native {} snapshot of `{}`, which `dump` cannot read; \
                     take a canonical checkpoint (`CheckpointConfig::native(false)`) to dump it",
                    info.id, native.backend, file.operator
                )
                .into());
            }
            native_only.push(format!("`{}` ({})", file.operator, native.backend));
            continue;
        }
        let (file_path, bytes) = storage.read_file(&file.to_ref())?;
        let reader = SnapshotReader::parse(&file_path, &bytes)?;
        if let Some(s) = reader.index().states.iter().find(|s| s.name == state) {
            operators.push(file.operator.clone());
            section = Some((reader.index().key_type.clone(), s.clone()));
        }
        read.insert(file.path.clone(), (file_path, bytes));
    }
    let (key_type, section) = match (section, operators.len()) {
        (Some(found), 1) => found,
        (_, 0) if native_only.is_empty() => {
            return Err(format!("checkpoint {} has no state `{state}`", info.id).into());
        }
        (_, 0) => {
            return Err(format!(
                "checkpoint {} has no canonical snapshot with a state `{state}`; its native \
                 snapshots of {} are the backend's own files, which `dump` cannot read (take a \
                 canonical checkpoint with `CheckpointConfig::native(false)`)",
                info.id,
                native_only.join(", ")
            )
            .into());
        }
        _ => {
            return Err(format!(
                "several operators have a state `{state}` ({}); choose one with --operator",
                operators.join(", ")
            )
            .into());
        }
    };
    let operator = &operators[0];

    // Apply every instance's chain, oldest first, at the level of stored bytes.
    let mut entries = Entries::new();
    for file in info.files.iter().filter(|f| &f.operator == operator) {
        for link in file.chain() {
            let (file_path, bytes) = match read.remove(&link.path) {
                Some(kept) => kept,
                None => storage.read_file(&link)?,
            };
            let reader = SnapshotReader::parse(&file_path, &bytes)?;
            let Some(s) = reader.index().states.iter().find(|s| s.name == state) else {
                continue;
            };
            let range = KeyGroupRange::all(reader.index().max_parallelism);
            reader.for_each_change(s, range, &mut |kg, k, uk, change| {
                match change {
                    Change::Put(value) => {
                        entries.insert((k.to_vec(), uk.to_vec()), (kg, value.to_vec()));
                    }
                    Change::Delete => {
                        entries.remove(&(k.to_vec(), uk.to_vec()));
                    }
                    Change::DeleteKey => {
                        entries.retain(|(key, _), _| key.as_slice() != k);
                    }
                }
                Ok(())
            })?;
        }
    }

    let list = section.kind == StateKind::List;
    let map = !section.user_key_type.is_empty();
    let mut rows = Vec::new();
    for ((k, uk), (kg, stored)) in &entries {
        let key_value = decode_key(&key_type, k);
        if key.is_some_and(|wanted| scalar_text(&key_value) != wanted) {
            continue;
        }
        let mut plain = Vec::new();
        let bytes = if section.ttl_ms != 0 {
            statewright_core::ttl::strip_stamps(list, stored, &mut plain)?;
            &plain
        } else {
            stored
        };
        let value = if list {
            Value::Array(
                Frames::new(bytes)
                    .map(|f| f.map(|e| decode_value(&section.value_type, e)))
                    .collect::<std::result::Result<Vec<_>, _>>()?,
            )
        } else {
            decode_value(&section.value_type, bytes)
        };
        let mut row = serde_json::Map::new();
        row.insert("key_group".into(), Value::from(*kg));
        row.insert("key".into(), key_value);
        if section.kind == StateKind::Timers {
            // A timer: its domain, time and namespace are the user key; it has no value.
            row.insert("user_key".into(), decode_timer(&section.user_key_type, uk));
            row.insert("value".into(), Value::Null);
            rows.push(row);
            continue;
        }
        if map {
            row.insert("user_key".into(), decode_key(&section.user_key_type, uk));
        }
        row.insert("value".into(), value);
        rows.push(row);
    }
    match format {
        Format::Json => {
            println!("[");
            for (i, row) in rows.iter().enumerate() {
                let comma = if i + 1 < rows.len() { "," } else { "" };
                println!("  {}{comma}", serde_json::to_string(row)?);
            }
            println!("]");
        }
        Format::Csv => {
            println!("key_group,key,{}value", if map { "user_key," } else { "" });
            for row in &rows {
                let cells: Vec<String> = ["key_group", "key", "user_key", "value"]
                    .iter()
                    .filter_map(|column| row.get(*column))
                    .map(|v| csv_cell(&scalar_text(v)))
                    .collect();
                println!("{}", cells.join(","));
            }
        }
    }
    eprintln!(
        "{} entries of `{operator}.{state}` in checkpoint {}",
        rows.len(),
        info.id
    );
    Ok(())
}

/// A number or string as its plain text; anything else as JSON.
fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn csv_cell(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

fn hex(bytes: &[u8]) -> Value {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    serde_json::json!({ "hex": out })
}

/// A stored timer's user key, `(TimeDomain, i64, N)`: `{"domain", "timestamp", "namespace"}`.
fn decode_timer(type_name: &str, bytes: &[u8]) -> Value {
    let namespace_type = type_name
        .strip_prefix("(TimeDomain, i64, ")
        .and_then(|t| t.strip_suffix(')'))
        .unwrap_or("");
    let Some((&tag, mut rest)) = bytes.split_first() else {
        return hex(bytes);
    };
    let domain = match statewright_core::TimeDomain::from_tag(tag) {
        Some(statewright_core::TimeDomain::EventTime) => "event",
        Some(statewright_core::TimeDomain::ProcessingTime) => "processing",
        None => return hex(bytes),
    };
    let Ok(timestamp) = i64::decode_key(&mut rest) else {
        return hex(bytes);
    };
    serde_json::json!({
        "domain": domain,
        "timestamp": timestamp,
        "namespace": decode_key(namespace_type, rest),
    })
}

/// A canonical key decoded as `type_name` when it is a primitive, a string, `()` or a
/// `TimeWindow`.
fn decode_key(type_name: &str, bytes: &[u8]) -> Value {
    match type_name {
        "()" if bytes.is_empty() => return Value::Null,
        "TimeWindow" => {
            if let Ok(w) = statewright_core::window::TimeWindow::from_key_bytes(bytes) {
                return serde_json::json!({ "start": w.start, "end": w.end });
            }
        }
        _ => {}
    }
    macro_rules! by_type {
        ($($name:literal => $t:ty),* $(,)?) => {
            match type_name {
                $($name => <$t as StateKey>::from_key_bytes(bytes).ok().map(|v| serde_json::json!(v)),)*
                _ => None,
            }
        };
    }
    by_type!(
        "u8" => u8, "u16" => u16, "u32" => u32, "u64" => u64,
        "i8" => i8, "i16" => i16, "i32" => i32, "i64" => i64,
        "f32" => f32, "f64" => f64, "bool" => bool, "char" => char, "String" => String,
    )
    .unwrap_or_else(|| hex(bytes))
}

/// A stored value decoded as `type_name` when it is a primitive or a string.
fn decode_value(type_name: &str, bytes: &[u8]) -> Value {
    macro_rules! by_type {
        ($($name:literal => $t:ty),* $(,)?) => {
            match type_name {
                $($name => codec::decode::<$t>(bytes).ok().map(|v| serde_json::json!(v)),)*
                _ => None,
            }
        };
    }
    by_type!(
        "u8" => u8, "u16" => u16, "u32" => u32, "u64" => u64,
        "i8" => i8, "i16" => i16, "i32" => i32, "i64" => i64,
        "f32" => f32, "f64" => f64, "bool" => bool, "char" => char, "String" => String,
    )
    .unwrap_or_else(|| hex(bytes))
}
