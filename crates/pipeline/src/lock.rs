//! One writer at a time: an advisory lock object (`.lock` in the folder a command writes) made
//! by the storage's conditional put and holding who took it. The holder then cleans what a
//! killed writer left half-written there (`Folder::clean_interrupted`). The holder rewrites the
//! lock's heartbeat every [`stale_after`] / 5 seconds. A lock is stale, and taken over, when its
//! process is gone (same host: no such process, or a zombie) or, from any host, when its
//! heartbeat is older than [`stale_after`] (a job pre-empted on one node and re-queued on
//! another); any other holder is an error that says who it is.

use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Result, bail};

use crate::rundir::Folder;

/// A held lock; dropping it releases it.
#[derive(Debug)]
pub struct Lock {
    folder: Folder,
    key: String,
    /// The holder line this process wrote (a lock taken over by another is not released).
    holder: String,
    /// Stops the heartbeat thread (dropped with the lock).
    stop: Option<mpsc::Sender<()>>,
    beat: Option<std::thread::JoinHandle<()>>,
}

/// A lock whose heartbeat is older than this is stale: 300 s, or `STAGEWISE_LOCK_STALE_SECS`.
pub fn stale_after() -> Duration {
    let secs = std::env::var("STAGEWISE_LOCK_STALE_SECS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|s| *s > 0)
        .unwrap_or(300);
    Duration::from_secs(secs)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
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

/// The lock's content: the holder line and the time of its last heartbeat.
fn with_beat(holder: &str) -> String {
    format!("{holder}beat {}\n", unix_now())
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
            let holder = holder_line(command);
            if folder.put_new(&key, with_beat(&holder).as_bytes())? {
                return Ok(Lock::held(folder.clone(), key, holder));
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
            let first_line = text.lines().next().unwrap_or("");
            let rest: Vec<&str> = first_line.split_whitespace().skip(2).collect();
            let beat_age = text
                .lines()
                .find_map(|l| l.strip_prefix("beat "))
                .and_then(|t| t.trim().parse::<u64>().ok())
                .map(|t| unix_now().saturating_sub(t));
            let silent = beat_age.is_some_and(|a| a > stale_after().as_secs());
            let stale = silent
                || match (h, pid) {
                    (Some(h), Some(pid)) if h == host() && pid != std::process::id() => {
                        alive(pid) == Some(false)
                            || started.is_some_and(|t| start_time(pid).is_some_and(|now| now != t))
                    }
                    // Locks are written whole; an empty one is what an older, non-atomic
                    // version left when killed while taking it.
                    (None, _) => text.trim().is_empty(),
                    _ => false,
                };
            if !stale {
                bail!(
                    "{}: in use by `{}` (process {} on {}{}); wait for it to finish, or if that process is gone, delete {}",
                    folder.display(),
                    if rest.is_empty() {
                        "?".into()
                    } else {
                        rest.join(" ")
                    },
                    pid.map_or("?".into(), |p| p.to_string()),
                    h.unwrap_or("?"),
                    beat_age.map_or(String::new(), |a| format!(
                        ", heartbeat {a} s ago; taken over after {} s without one",
                        stale_after().as_secs()
                    )),
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

impl Lock {
    /// Removes the lock `name` of `folder` if a writer that is gone left it (killed after its
    /// last result, before releasing it); a live holder's lock is left alone. For callers that
    /// find the work already done and so never take the lock.
    pub fn clear_stale(folder: &Folder, name: &str) {
        if folder.exists(&format!(".{name}")) {
            // Taken over only if stale; dropping it releases it. A live holder is an error,
            // which is fine: that holder releases its own lock.
            let _ = Lock::take(folder, name, "clearing a stale lock");
        }
    }

    /// A lock just taken: starts its heartbeat, which rewrites it while it is still ours.
    fn held(folder: Folder, key: String, holder: String) -> Lock {
        let every = (stale_after() / 5).max(Duration::from_secs(1));
        Self::held_every(folder, key, holder, every)
    }

    fn held_every(folder: Folder, key: String, holder: String, every: Duration) -> Lock {
        let (stop, stopped) = mpsc::channel::<()>();
        let (f, k, h) = (folder.clone(), key.clone(), holder.clone());
        let beat = std::thread::spawn(move || {
            let holder = h;
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                let ours = f
                    .get(&k)
                    .ok()
                    .flatten()
                    .is_some_and(|b| b.starts_with(holder.as_bytes()));
                if !ours {
                    return;
                }
                let _ = f.put(&k, with_beat(&holder).as_bytes());
            }
        });
        Lock {
            folder,
            key,
            holder,
            stop: Some(stop),
            beat: Some(beat),
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(b) = self.beat.take() {
            let _ = b.join();
        }
        let ours = self
            .folder
            .get(&self.key)
            .ok()
            .flatten()
            .is_some_and(|b| b.starts_with(self.holder.as_bytes()));
        if ours {
            let _ = self.folder.delete(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clearing_removes_a_dead_writers_lock_and_leaves_a_live_one() {
        let dir = std::env::temp_dir().join(format!("sw-lock-clear-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let folder = Folder::local(&dir);
        Lock::clear_stale(&folder, "lock");
        assert!(!dir.join(".lock").exists(), "nothing to clear");
        if alive(std::process::id()) == Some(true) {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(
                dir.join(".lock"),
                format!("{} 4294967 stagewise train\n", host()),
            )
            .unwrap();
            Lock::clear_stale(&folder, "lock");
            assert!(
                !dir.join(".lock").exists(),
                "a dead writer's lock is cleared"
            );
        }
        let held = Lock::take(&folder, "lock", "stagewise train").unwrap();
        Lock::clear_stale(&folder, "lock");
        assert!(dir.join(".lock").exists(), "a live holder keeps its lock");
        drop(held);
        assert!(!dir.join(".lock").exists());
    }

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
        // A holder on another host is taken over only when its heartbeat is old.
        std::fs::write(dir.join(".lock"), "elsewhere 1 stagewise llc\n").unwrap();
        let e = Lock::take(&folder, "lock", "x").unwrap_err().to_string();
        assert!(e.contains("on elsewhere"), "{e}");
        let now = unix_now();
        std::fs::write(
            dir.join(".lock"),
            format!("elsewhere 1 stagewise llc\nbeat {}\n", now - 10),
        )
        .unwrap();
        let e = Lock::take(&folder, "lock", "x").unwrap_err().to_string();
        assert!(
            e.contains("heartbeat 1") && e.contains("on elsewhere"),
            "{e}"
        );
        std::fs::write(
            dir.join(".lock"),
            format!("elsewhere 1 stagewise llc\nbeat {}\n", now - 301),
        )
        .unwrap();
        drop(Lock::take(&folder, "lock", "x").unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_heartbeat_refreshes_a_held_lock_until_it_is_dropped() {
        let dir = std::env::temp_dir().join(format!("sw-beat-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let folder = Folder::local(&dir);
        let holder = holder_line("x");
        folder
            .put(".lock", format!("{holder}beat 1\n").as_bytes())
            .unwrap();
        let lock = Lock::held_every(
            folder.clone(),
            ".lock".into(),
            holder.clone(),
            Duration::from_millis(50),
        );
        std::thread::sleep(Duration::from_millis(300));
        let text = std::fs::read_to_string(dir.join(".lock")).unwrap();
        let beat: u64 = text
            .lines()
            .nth(1)
            .unwrap()
            .strip_prefix("beat ")
            .unwrap()
            .parse()
            .unwrap();
        assert!(unix_now() - beat <= 2, "{text}");
        // Taken over by another writer: the heartbeat stops rewriting it.
        std::fs::write(dir.join(".lock"), "elsewhere 7 y\nbeat 5\n").unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            std::fs::read_to_string(dir.join(".lock")).unwrap(),
            "elsewhere 7 y\nbeat 5\n"
        );
        drop(lock);
        assert!(
            dir.join(".lock").exists(),
            "released a lock another writer holds"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
