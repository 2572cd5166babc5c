//! Starting a job's processes on one or more machines.

use std::io::Write;

use statewright::{Error, Result};

/// The timely configuration of process `process` of `processes`, each with `workers` worker
/// threads, listening on `host:base_port + i` for process `i` (`hosts` lists one address per
/// process, such as `127.0.0.1`). The addresses go into a host file in the temporary
/// directory, as timely's `-h` option reads them.
///
/// # Errors
///
/// [`Error::InvalidName`] when `hosts` does not have one address per process or `process`
/// is not one of them; an I/O failure writing the host file.
pub fn cluster(
    workers: usize,
    processes: usize,
    process: usize,
    hosts: &[&str],
    base_port: u16,
) -> Result<timely::Config> {
    if hosts.len() != processes || process >= processes || workers == 0 {
        return Err(Error::InvalidName {
            what: "cluster",
            name: format!(
                "{processes} processes, process {process}, {workers} workers, {} hosts",
                hosts.len()
            ),
            reason: "needs one host per process, a process index below the number of \
                     processes and at least one worker",
        });
    }
    let mut path = std::env::temp_dir();
    path.push(format!(
        "statewright-timely-hosts-{}-{process}",
        std::process::id()
    ));
    let mut file = std::fs::File::create(&path).map_err(|e| crate::io_error(&path, e))?;
    for (i, host) in hosts.iter().enumerate() {
        let port = usize::from(base_port) + i;
        writeln!(file, "{host}:{port}").map_err(|e| crate::io_error(&path, e))?;
    }
    drop(file);
    let args = [
        "statewright".to_owned(),
        "-w".to_owned(),
        workers.to_string(),
        "-n".to_owned(),
        processes.to_string(),
        "-p".to_owned(),
        process.to_string(),
        "-h".to_owned(),
        path.display().to_string(),
    ];
    let config =
        timely::Config::from_args(args.into_iter().skip(1)).map_err(|e| Error::InvalidName {
            what: "cluster",
            name: format!("{processes} processes ({e})"),
            reason: "timely does not accept this configuration",
        });
    let _ = std::fs::remove_file(&path);
    config
}
