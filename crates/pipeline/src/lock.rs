//! One writer at a time: an advisory lock object (`.lock` in the folder a command writes) made
//! by the storage's conditional put and holding who took it. The holder then cleans what a
//! killed writer left half-written there (`Folder::clean_interrupted`). A lock left by a process that is
//! gone (same host, no such process) is stale and taken over; any other holder is an error
//! that says who it is.

use anyhow::{Result, bail};

use crate::rundir::Folder;

/// A held lock; dropping it releases it.
#[derive(Debug)]
pub struct Lock {
    folder: Folder,
    key: String,
}

/// `host pid[@start] command`: what a lock object holds (`start`: the process's start time,
/// so that a pid reused by another process is not taken for the holder).
fn holder_line(command: &str) -> String {
    let pid = std::process::id();
    match start_time(pid) {
        Some(t) => format!("{} {pid}@{t} {command}\n", host()),
        None => format!("{} {pid} {command}\n", host()),
    }
}

/// A process's start time in clock ticks since boot (/proc/PID/stat, field 22).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty() && !h.contains(char::is_whitespace))
        .unwrap_or_else(|| "unknown-host".into())
}

use stagewise_io::atomic::process_alive as alive;

impl Lock {
    /// Takes the lock `name` (a file `.NAME` in `folder`) for `command` (shown to others).
    pub fn take(folder: &Folder, name: &str, command: &str) -> Result<Lock> {
        let key = format!(".{name}");
        for _ in 0..2 {
            if folder.put_new(&key, holder_line(command).as_bytes())? {
                return Ok(Lock {
                    folder: folder.clone(),
                    key,
                });
            }
            let text = folder
                .get(&key)?
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            let mut parts = text.split_whitespace();
            let h = parts.next();
            let (pid, started) = match parts.next().map(|p| p.split_once('@').unwrap_or((p, ""))) {
                Some((p, t)) => (p.parse::<u32>().ok(), t.parse::<u64>().ok()),
                None => (None, None),
            };
            let rest: Vec<&str> = parts.collect();
            let stale = match (h, pid) {
                (Some(h), Some(pid)) if h == host() && pid != std::process::id() => {
                    alive(pid) == Some(false)
                        || started.is_some_and(|t| start_time(pid).is_some_and(|now| now != t))
                }
                // Locks are written whole; an empty one is what an older, non-atomic version
                // left when killed while taking it.
                (None, _) => text.trim().is_empty(),
                _ => false,
            };
            if !stale {
                bail!(
                    "{}: in use by `{}` (process {} on {}); wait for it to finish, or if that process is gone, delete {}",
                    folder.display(),
                    if rest.is_empty() {
                        "?".into()
                    } else {
                        rest.join(" ")
                    },
                    pid.map_or("?".into(), |p| p.to_string()),
                    h.unwrap_or("?"),
                    folder.describe(&key)
                );
            }
            // Left by a process that is gone (killed): take it over, unless another process
            // took it over first (the lock's content changed since it was read).
            let now = folder
                .get(&key)?
                .map(|b| String::from_utf8_lossy(&b).into_owned());
            if now.as_deref() == Some(text.as_str()) {
                folder.delete(&key)?;
            }
        }
        bail!("{}: cannot take the lock", folder.describe(&key))
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = self.folder.delete(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_is_refused_and_a_dead_holder_is_taken_over() {
        let dir = std::env::temp_dir().join(format!("sw-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let folder = Folder::local(&dir);
        let held = Lock::take(&folder, "lock", "stagewise llc RUN").unwrap();
        let e = Lock::take(&folder, "lock", "stagewise llc RUN")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("in use by `stagewise llc RUN`")
                && e.contains(&format!("process {}", std::process::id())),
            "{e}"
        );
        drop(held);
        assert!(!dir.join(".lock").exists(), "released");
        let again = Lock::take(&folder, "lock", "x").unwrap();
        drop(again);
        // A holder on this host whose process is gone: stale, taken over.
        if alive(std::process::id()) == Some(true) {
            std::fs::write(
                dir.join(".lock"),
                format!("{} 4294967 stagewise train\n", host()),
            )
            .unwrap();
            let taken = Lock::take(&folder, "lock", "stagewise train").unwrap();
            let text = std::fs::read_to_string(dir.join(".lock")).unwrap();
            assert!(text.contains(&std::process::id().to_string()), "{text}");
            drop(taken);
        }
        // A live pid that is another process than the holder (its start time differs): stale.
        if let Some(t) = start_time(std::process::id()) {
            let parent = std::os::unix::process::parent_id();
            std::fs::write(
                dir.join(".lock"),
                format!("{} {parent}@{} stagewise llc\n", host(), t + 12345),
            )
            .unwrap();
            drop(Lock::take(&folder, "lock", "x").unwrap());
            // ... and with its true start time, it holds the lock.
            if let Some(pt) = start_time(parent) {
                std::fs::write(
                    dir.join(".lock"),
                    format!("{} {parent}@{pt} stagewise llc\n", host()),
                )
                .unwrap();
                assert!(Lock::take(&folder, "lock", "x").is_err());
                std::fs::remove_file(dir.join(".lock")).unwrap();
            }
        }
        // An empty lock (left by a writer killed mid-write) is stale too.
        std::fs::write(dir.join(".lock"), "").unwrap();
        drop(Lock::take(&folder, "lock", "x").unwrap());
        // A holder on another host is never taken over.
        std::fs::write(dir.join(".lock"), "elsewhere 1 stagewise llc\n").unwrap();
        let e = Lock::take(&folder, "lock", "x").unwrap_err().to_string();
        assert!(e.contains("on elsewhere"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
