//! `statewright`: list, inspect and verify the checkpoints in a checkpoint directory.
//!
//! ```text
//! statewright list ./checkpoints
//! statewright inspect ./checkpoints            # the latest checkpoint
//! statewright inspect ./checkpoints/chk-0000000003
//! statewright verify ./checkpoints             # exit code 1 when anything is damaged
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use statewright_core::checkpoint::SnapshotRef;
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
        /// The checkpoint directory (the one holding `MANIFEST`).
        dir: PathBuf,
    },
    /// Show a checkpoint's operators and states: kinds, types, TTLs, entries, sizes.
    Inspect {
        /// The checkpoint directory, or one checkpoint in it (`<dir>/chk-0000000003`).
        checkpoint: PathBuf,
        /// The checkpoint's id (default: the latest, or the one the path names).
        #[arg(long)]
        id: Option<u64>,
    },
    /// Check every file of every retained checkpoint: length and checksum against the
    /// manifest, then every block's checksum and every record's framing. Exit code 1 when
    /// anything is damaged.
    Verify {
        /// The checkpoint directory.
        dir: PathBuf,
    },
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
    }
}

fn time(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

fn list(dir: &Path) -> Result<()> {
    let storage = CheckpointStorage::open(dir)?;
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

/// The storage directory and checkpoint a path names: `<dir>` or `<dir>/chk-NNNNNNNNNN`.
fn locate(path: &Path, id: Option<u64>) -> Result<(CheckpointStorage, CheckpointInfo)> {
    let named = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("chk-"))
        .and_then(|n| n.parse::<u64>().ok());
    let (dir, id) = match (named, path.parent()) {
        (Some(n), Some(parent)) if !path.join("MANIFEST").exists() => (parent, id.or(Some(n))),
        _ => (path, id),
    };
    let storage = CheckpointStorage::open(dir)?;
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
        }
    }
    Ok(())
}

fn verify(dir: &Path) -> Result<ExitCode> {
    let storage = CheckpointStorage::open(dir)?;
    let checkpoints = storage.list()?;
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
