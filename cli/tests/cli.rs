//! The command line tool, end to end, against checkpoints the test writes.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use assert_cmd::Command;
use statewright::prelude::*;

#[derive(StatefulOperator, Default)]
#[operator(name = "clicks", key = u64)]
struct Clicks {
    count: ValueState<u64>,
    #[state(ttl = "1h")]
    pages: MapState<u32, u64>,
}

/// Two checkpoints of 100 keys each.
fn write_checkpoints(dir: &Path) -> Vec<statewright::CheckpointInfo> {
    write_checkpoints_to(&CheckpointStorage::open(dir).unwrap())
}

fn write_checkpoints_to(storage: &CheckpointStorage) -> Vec<statewright::CheckpointInfo> {
    let storage = storage.clone();
    let mut op = Clicks::default()
        .bind(TtlBackend::new(HeapBackend::new()))
        .unwrap();
    let mut taken = Vec::new();
    for round in 1..=2u64 {
        for k in 0..100u64 {
            let mut st = op.key(&k).unwrap();
            st.count().set(&round).unwrap();
            st.pages().put(&(k as u32 % 3), &round).unwrap();
        }
        taken.push(op.checkpoint(&storage).unwrap());
    }
    taken
}

fn cli() -> Command {
    Command::cargo_bin("statewright").unwrap()
}

fn stdout(cmd: &mut Command) -> String {
    let out = cmd.assert().success().get_output().stdout.clone();
    String::from_utf8(out).unwrap()
}

#[test]
fn list_shows_every_retained_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let taken = write_checkpoints(dir.path());
    let out = stdout(cli().arg("list").arg(dir.path()));
    let rows: Vec<&str> = out.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{out}");
    for (row, info) in rows.iter().zip(&taken) {
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols[0], info.id.0.to_string());
        assert_eq!(cols[2], "full");
        assert_eq!(cols[4], "200", "100 values and 100 map entries: {row}");
        assert_eq!(cols[5], info.bytes().to_string());
    }
}

#[test]
fn inspect_shows_operators_states_and_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let taken = write_checkpoints(dir.path());
    let out = stdout(cli().arg("inspect").arg(dir.path()));
    assert!(
        out.starts_with(&format!("checkpoint {} ", taken[1].id.0)),
        "{out}"
    );
    assert!(out.contains("operator `clicks`"), "{out}");
    assert!(out.contains("key type u64, max parallelism 128"), "{out}");
    assert!(
        out.contains("state `count`: ValueState<u64>, 100 entries"),
        "{out}"
    );
    assert!(
        out.contains("state `pages`: MapState<u32 -> u64>, ttl 1h, 100 entries"),
        "{out}"
    );
    // The schemas the snapshot recorded.
    assert!(out.contains("  key schema u64 (fingerprint "), "{out}");
    assert!(
        out.contains("    version 1, value schema u64 (fingerprint "),
        "{out}"
    );
    assert!(
        out.contains("    map key schema u32 (fingerprint "),
        "{out}"
    );

    // One checkpoint by its directory, or by id.
    let first = dir.path().join(format!("chk-{:010}", taken[0].id.0));
    let by_path = stdout(cli().arg("inspect").arg(&first));
    assert!(
        by_path.starts_with(&format!("checkpoint {} ", taken[0].id.0)),
        "{by_path}"
    );
    let by_id = stdout(
        cli()
            .arg("inspect")
            .arg(dir.path())
            .args(["--id", &taken[0].id.0.to_string()]),
    );
    assert_eq!(by_id, by_path);
}

#[test]
fn verify_passes_on_intact_checkpoints_and_fails_on_damage() {
    let dir = tempfile::tempdir().unwrap();
    let taken = write_checkpoints(dir.path());
    let out = stdout(cli().arg("verify").arg(dir.path()));
    assert!(
        out.contains("2 checkpoint(s), 2 file(s): all checksums match"),
        "{out}"
    );

    // Flip one byte in the middle of the newest snapshot.
    let file = dir.path().join(&taken[1].files[0].path);
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&file, bytes).unwrap();
    let assert = cli().arg("verify").arg(dir.path()).assert().code(1);
    let out = String::from_utf8(assert.get_output().stdout.clone()).unwrap();
    assert!(
        out.contains(&format!("ok       checkpoint {}", taken[0].id.0)),
        "{out}"
    );
    assert!(
        out.contains(&format!("DAMAGED  checkpoint {}", taken[1].id.0)),
        "{out}"
    );
    assert!(out.contains("1 of 2 file(s) damaged"), "{out}");
}

#[test]
fn every_command_has_help_and_bad_input_is_an_error() {
    for cmd in [
        &["--help"][..],
        &["list", "--help"],
        &["inspect", "--help"],
        &["verify", "--help"],
    ] {
        let out = stdout(cli().args(cmd));
        assert!(out.contains("Usage: statewright"), "{cmd:?}: {out}");
    }
    let dir = tempfile::tempdir().unwrap();
    let out = stdout(cli().arg("list").arg(dir.path()));
    assert!(out.contains("no committed checkpoints"), "{out}");
    let assert = cli().arg("inspect").arg(dir.path()).assert().code(2);
    let err = String::from_utf8(assert.get_output().stderr.clone()).unwrap();
    assert!(err.starts_with("error: "), "{err}");
}

/// The command's exit code and standard error.
fn failure(cmd: &mut Command) -> (Option<i32>, String) {
    let out = cmd.assert().failure().get_output().clone();
    (out.status.code(), String::from_utf8(out.stderr).unwrap())
}

#[test]
fn a_mistyped_path_is_an_error_and_is_not_created() {
    let dir = tempfile::tempdir().unwrap();
    write_checkpoints(dir.path());
    let typo = dir.path().join("chekpoints");
    for cmd in [
        &["list"][..],
        &["inspect"],
        &["verify"],
        &["dump", "--state", "count"],
    ] {
        let (code, err) = failure(cli().arg(cmd[0]).arg(&typo).args(&cmd[1..]));
        assert_eq!(code, Some(2), "{cmd:?}: {err}");
        assert!(
            err.contains(&format!(
                "`{}` is not a checkpoint directory: it does not exist",
                typo.display()
            )),
            "{cmd:?}: {err}"
        );
        assert!(!typo.exists(), "{cmd:?} created {}", typo.display());
    }
    // A checkpoint that is not there names its directory, which is not created either.
    let missing = typo.join("chk-0000000001");
    let (_, err) = failure(cli().arg("inspect").arg(&missing));
    assert!(err.contains("is not a checkpoint directory"), "{err}");
    assert!(!typo.exists());
}

#[test]
fn verify_of_a_directory_without_checkpoints_fails() {
    let dir = tempfile::tempdir().unwrap();
    let before: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(before.is_empty());
    let assert = cli().arg("verify").arg(dir.path()).assert().code(2);
    let out = assert.get_output();
    let (printed, err) = (
        String::from_utf8(out.stdout.clone()).unwrap(),
        String::from_utf8(out.stderr.clone()).unwrap(),
    );
    assert!(!printed.contains("all checksums match"), "{printed}");
    assert!(
        err.contains("has no manifest") && err.contains("nothing to verify"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "verify wrote into the directory"
    );

    // A manifest that lists no checkpoint (every one was deleted by hand) verifies nothing
    // either.
    write_checkpoints(dir.path());
    let manifest_path = CheckpointStorage::open_existing(dir.path())
        .unwrap()
        .manifest_location()
        .unwrap()
        .unwrap();
    let manifest = std::fs::read_to_string(&manifest_path).unwrap();
    let (body, _) = manifest.trim_end().rsplit_once('\n').unwrap();
    // `checkpoints` is the manifest's last field.
    let start = body.find("\"checkpoints\": [").unwrap();
    let body = format!("{}\"checkpoints\": []\n}}", &body[..start]);
    let crc = crc32c::crc32c(body.as_bytes());
    std::fs::write(&manifest_path, format!("{body}\ncrc32c {crc:08x}\n")).unwrap();
    let list = stdout(cli().arg("list").arg(dir.path()));
    assert!(list.contains("no committed checkpoints"), "{list}");
    let assert = cli().arg("verify").arg(dir.path()).assert().code(2);
    let out = assert.get_output();
    let (printed, err) = (
        String::from_utf8(out.stdout.clone()).unwrap(),
        String::from_utf8(out.stderr.clone()).unwrap(),
    );
    assert!(!printed.contains("all checksums match"), "{printed}");
    assert!(
        err.contains("holds no committed checkpoint; nothing to verify"),
        "{err}"
    );
}

#[test]
fn inspect_of_a_file_says_it_is_not_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, "not a checkpoint").unwrap();
    for cmd in ["inspect", "list", "verify"] {
        let (code, err) = failure(cli().arg(cmd).arg(&file));
        assert_eq!(code, Some(2), "{cmd}: {err}");
        assert!(
            err.contains(&format!(
                "`{}` is not a checkpoint directory: it is a file, not a directory",
                file.display()
            )),
            "{cmd}: {err}"
        );
        assert!(!err.contains("os error"), "{cmd}: {err}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "not a checkpoint");
    }
}

/// A backend's native files (here written by the test, as a backend would), next to a
/// canonical snapshot in the same checkpoint.
#[test]
fn native_snapshots_are_listed_inspected_and_verified() {
    use statewright::backend::{NativeFileSpec, NativeFiles};
    use statewright::keygroup::KeyGroupRange;

    let dir = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::open(dir.path().join("c")).unwrap();
    let native = |round: u8| {
        let files = dir.path().join(format!("capture-{round}"));
        std::fs::create_dir(&files).unwrap();
        std::fs::write(files.join("CURRENT"), b"MANIFEST-000001\n").unwrap();
        std::fs::write(files.join("000007.sst"), vec![7u8; 5000]).unwrap();
        std::fs::write(files.join(format!("00001{round}.sst")), vec![round; 300]).unwrap();
        NativeFiles::new(
            "test-backend",
            files,
            vec![
                NativeFileSpec {
                    name: "CURRENT".into(),
                    shared_as: None,
                },
                NativeFileSpec {
                    name: "000007.sst".into(),
                    shared_as: Some("lineage-000007.sst".into()),
                },
                NativeFileSpec {
                    name: format!("00001{round}.sst"),
                    shared_as: Some(format!("lineage-00001{round}.sst")),
                },
            ],
        )
    };
    let mut op = Clicks::default()
        .bind(TtlBackend::new(HeapBackend::new()))
        .unwrap();
    op.key(&1).unwrap().count().set(&1).unwrap();
    let mut taken = Vec::new();
    for round in 1..=2u8 {
        let mut pending = storage.begin().unwrap();
        pending.add(&op).unwrap();
        pending
            .add_native_files("sessions", KeyGroupRange::all(128), 128, native(round))
            .unwrap();
        taken.push(pending.commit().unwrap());
    }
    // The second checkpoint shares 000007.sst: it wrote its CURRENT and one new file.
    let second = &taken[1].files[1];
    assert_eq!(second.bytes, 16 + 300);

    let out = stdout(cli().arg("list").arg(dir.path().join("c")));
    let row: Vec<&str> = out.lines().nth(2).unwrap().split_whitespace().collect();
    assert_eq!(row[2], "native", "{out}");
    assert_eq!(row[5], taken[1].bytes().to_string(), "{out}");

    let out = stdout(cli().arg("inspect").arg(dir.path().join("c")));
    assert!(
        out.contains("operator `sessions` (chk-0000000002/sessions.kg0-127.native, native test-backend checkpoint)"),
        "{out}"
    );
    assert!(
        out.contains("3 files (2 shared), 5316 bytes (316 newly written)"),
        "{out}"
    );
    assert!(out.contains("shared/lineage-000007.sst"), "{out}");
    assert!(out.contains("operator `clicks`"), "{out}");

    let out = stdout(cli().arg("verify").arg(dir.path().join("c")));
    assert!(out.contains("(3 native files)"), "{out}");
    assert!(out.contains("all checksums match"), "{out}");

    // `dump` reads canonical snapshots only, and says so.
    let assert = cli()
        .args(["dump", "--state", "count", "--operator", "sessions"])
        .arg(dir.path().join("c"))
        .assert()
        .code(2);
    let err = String::from_utf8(assert.get_output().stderr.clone()).unwrap();
    assert!(err.contains("native test-backend snapshot"), "{err}");

    // Damage the file both checkpoints share: both native snapshots are reported.
    let shared = dir.path().join("c/shared/lineage-000007.sst");
    let mut bytes = std::fs::read(&shared).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&shared, bytes).unwrap();
    let assert = cli()
        .arg("verify")
        .arg(dir.path().join("c"))
        .assert()
        .code(1);
    let out = String::from_utf8(assert.get_output().stdout.clone()).unwrap();
    assert!(out.contains("2 of 4 file(s) damaged"), "{out}");
}

/// `dump` prints a state as of a checkpoint: its incremental chain applied, keys and values
/// decoded, as JSON or CSV, for one key or all.
#[test]
fn dump_prints_a_state_as_of_a_checkpoint() {
    use statewright::checkpointer::{CheckpointConfig, Checkpointer};

    #[derive(StatefulOperator, Default)]
    #[operator(name = "shop", key = String)]
    struct Shop {
        visits: ValueState<u64>,
        basket: ListState<String>,
        #[state(ttl = "1h")]
        spent: MapState<u32, i64>,
    }

    let dir = tempfile::tempdir().unwrap();
    let mut checkpointer = Checkpointer::new(CheckpointConfig::new(dir.path())).unwrap();
    let mut op = Shop::default()
        .bind(TtlBackend::new(HeapBackend::new()))
        .unwrap();
    for user in ["ada", "bob", "cy,d"] {
        let mut st = op.key(user).unwrap();
        st.visits().set(&1).unwrap();
        st.basket().add(&format!("{user}-first")).unwrap();
        st.spent().put(&7, &100).unwrap();
    }
    checkpointer.checkpoint_now(&mut [&mut op]).unwrap();
    // An incremental checkpoint: a change, an addition, a deleted map entry and a cleared key.
    {
        let mut st = op.key("ada").unwrap();
        st.visits().set(&2).unwrap();
        st.basket().add(&"ada-second".to_owned()).unwrap();
        st.spent().put(&9, &-5).unwrap();
        st.spent().remove(&7).unwrap();
    }
    op.key("bob").unwrap().visits().clear().unwrap();
    let second = checkpointer.checkpoint_now(&mut [&mut op]).unwrap();
    assert_eq!(
        second.info.kind(),
        statewright::checkpoint::SnapshotKind::Incremental
    );

    let out = stdout(cli().args(["dump", "--state", "visits"]).arg(dir.path()));
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let mut visits: Vec<(String, u64)> = rows
        .iter()
        .map(|r| {
            (
                r["key"].as_str().unwrap().to_owned(),
                r["value"].as_u64().unwrap(),
            )
        })
        .collect();
    visits.sort();
    assert_eq!(
        visits,
        vec![("ada".to_owned(), 2), ("cy,d".to_owned(), 1)],
        "{out}"
    );

    let out = stdout(
        cli()
            .args(["dump", "--state", "basket", "--key", "ada"])
            .arg(dir.path()),
    );
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(rows.len(), 1, "{out}");
    assert_eq!(
        rows[0]["value"],
        serde_json::json!(["ada-first", "ada-second"])
    );

    // The TTL stamps are stripped; map entries come with their user key.
    let out = stdout(
        cli()
            .args(["dump", "--state", "spent", "--format", "csv"])
            .arg(dir.path()),
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "key_group,key,user_key,value");
    let mut cells: Vec<Vec<String>> = lines[1..]
        .iter()
        .map(|l| {
            // key_group,key,user_key,value; the key may be quoted and hold a comma.
            let (kg, rest) = l.split_once(',').unwrap();
            let mut tail: Vec<&str> = rest.rsplitn(3, ',').collect();
            tail.reverse();
            let _ = kg;
            tail.into_iter().map(str::to_owned).collect()
        })
        .collect();
    cells.sort();
    assert_eq!(
        cells,
        vec![
            vec!["\"cy,d\"".to_owned(), "7".to_owned(), "100".to_owned()],
            vec!["ada".to_owned(), "9".to_owned(), "-5".to_owned()],
            vec!["bob".to_owned(), "7".to_owned(), "100".to_owned()],
        ],
        "{out}"
    );

    // The first checkpoint, by id: before the changes.
    let out = stdout(
        cli()
            .args(["dump", "--state", "visits", "--id", "1", "--key", "bob"])
            .arg(dir.path()),
    );
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(rows[0]["value"], 1);

    // Unknown states are errors.
    cli()
        .args(["dump", "--state", "nope"])
        .arg(dir.path())
        .assert()
        .code(2);
}

/// The commands read checkpoints on S3 (SeaweedFS on 127.0.0.1, started by `bash .ci/test`;
/// where `STATEWRIGHT_REQUIRE_S3` is set, a missing server fails the test).
#[test]
fn the_commands_read_checkpoints_on_s3() {
    let Some(endpoint) = statewright_object_store::testing::s3_endpoint().unwrap() else {
        return;
    };
    let url = statewright_object_store::testing::unique_url("cli");
    let storage = statewright_object_store::open_url(
        &url,
        [
            ("aws_endpoint", endpoint.as_str()),
            ("aws_allow_http", "true"),
        ],
    )
    .unwrap();
    let taken = write_checkpoints_to(&storage);
    let s3 = |args: &[&str]| {
        let mut cmd = cli();
        cmd.args(args)
            .env("AWS_ENDPOINT", &endpoint)
            .env("AWS_ALLOW_HTTP", "true");
        cmd
    };
    let list = stdout(&mut s3(&["list", &url]));
    for info in &taken {
        assert!(list.contains(&info.id.to_string()), "{list}");
    }
    let verified = stdout(&mut s3(&["verify", &url]));
    assert!(verified.contains("all checksums match"), "{verified}");
    let inspected = stdout(&mut s3(&[
        "inspect",
        &format!("{url}/chk-{:010}", taken[0].id.0),
    ]));
    assert!(inspected.contains("clicks"), "{inspected}");
    // A bucket that is not there is an error, not an empty list.
    s3(&["list", "s3://no-such-bucket/x"]).assert().failure();
}

/// The commands read checkpoints in Redis (`redis-server` on 127.0.0.1, started by
/// `bash .ci/test`; where `STATEWRIGHT_REQUIRE_REDIS` is set, a missing server fails the test).
#[test]
fn the_commands_read_checkpoints_in_redis() {
    let Some(base) = statewright_redis::testing::redis_url().unwrap() else {
        return;
    };
    let url = statewright_redis::testing::unique_url(&base, "cli");
    let storage = statewright_redis::open_url(&url).unwrap();
    let taken = write_checkpoints_to(&storage);
    let list = stdout(cli().args(["list", &url]));
    for info in &taken {
        assert!(list.contains(&info.id.to_string()), "{list}");
    }
    let verified = stdout(cli().args(["verify", &url]));
    assert!(verified.contains("all checksums match"), "{verified}");
    let inspected = stdout(cli().args(["inspect", &format!("{url}/chk-{:010}", taken[0].id.0)]));
    assert!(inspected.contains("clicks"), "{inspected}");
    let dumped = stdout(cli().args(["dump", "--state", "count", &url]));
    let rows: Vec<serde_json::Value> = serde_json::from_str(&dumped).unwrap();
    assert_eq!(rows.len(), 100, "{dumped}");
    assert!(
        rows.iter().all(|r| r["value"].as_u64() == Some(2)),
        "{dumped}"
    );
    let empty = statewright_redis::testing::unique_url(&base, "cli-empty");
    let listed = stdout(cli().args(["list", &empty]));
    assert!(listed.contains("no committed checkpoints"), "{listed}");
    // Refused credentials are an error, and the message does not show the password.
    let host = base
        .trim_start_matches("redis://")
        .rsplit('@')
        .next()
        .unwrap();
    let wrong = format!("redis://:not-the-password@{host}/0/x");
    let out = cli()
        .args(["list", &wrong])
        .assert()
        .failure()
        .get_output()
        .stderr
        .clone();
    let err = String::from_utf8(out).unwrap();
    assert!(
        !err.contains("not-the-password") && !err.is_empty(),
        "{err}"
    );
}

#[test]
fn inspect_and_dump_show_timers_and_windows() {
    use statewright::window::TimeWindow;

    #[derive(StatefulOperator, Default)]
    #[operator(name = "windows", key = String)]
    struct Windowed {
        #[state(namespace = TimeWindow, reduce = sum)]
        count: ReducingState<u64>,
        timers: TimerService<TimeWindow>,
    }

    let dir = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::open(dir.path()).unwrap();
    let mut op = Windowed::default().bind(HeapBackend::new()).unwrap();
    let w = TimeWindow::new(0, 10_000);
    {
        let mut st = op.key("ada").unwrap();
        st.count(&w).add(&3).unwrap();
        st.timers().register_event_time_in(&w, 9_999).unwrap();
        st.timers().register_processing_time_in(&w, 50).unwrap();
    }
    op.checkpoint(&storage).unwrap();

    let out = stdout(cli().arg("inspect").arg(dir.path()));
    assert!(
        out.contains(
            "state `timers`: TimerService<(TimeDomain, i64, TimeWindow) -> ()>, 2 entries"
        ),
        "{out}"
    );
    assert!(
        out.contains("state `count`: ReducingState<TimeWindow -> u64>, 1 entries"),
        "{out}"
    );

    let out = stdout(cli().args(["dump", "--state", "timers"]).arg(dir.path()));
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(rows.len(), 2, "{out}");
    assert_eq!(rows[0]["key"], "ada");
    assert_eq!(rows[0]["user_key"]["domain"], "event");
    assert_eq!(rows[0]["user_key"]["timestamp"], 9_999);
    assert_eq!(rows[0]["user_key"]["namespace"]["end"], 10_000);
    assert_eq!(rows[1]["user_key"]["domain"], "processing");
    assert_eq!(rows[1]["user_key"]["timestamp"], 50);

    let out = stdout(cli().args(["dump", "--state", "count"]).arg(dir.path()));
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(rows[0]["user_key"]["start"], 0, "{out}");
    assert_eq!(rows[0]["value"], 3, "{out}");
}
