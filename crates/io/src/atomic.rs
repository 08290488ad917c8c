//! Atomic file replacement: write a temporary file beside the target, sync it, rename it over
//! the target, sync the folder. A reader sees the old file or the new one, never a mix.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other("path has no file name"))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Whether process `pid` runs on this machine (`/proc`); `None` where that cannot be told. A
/// zombie (killed, not yet reaped by its parent) is not running: it holds nothing any more.
pub fn process_alive(pid: u32) -> Option<bool> {
    let proc = Path::new("/proc");
    if !proc.join("self").exists() {
        return None;
    }
    let Ok(stat) = fs::read_to_string(proc.join(pid.to_string()).join("stat")) else {
        return Some(false);
    };
    // "PID (COMMAND) STATE ...": the command may hold spaces and parentheses.
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    Some(!matches!(state, Some("Z") | Some("X")))
}

/// Removes the temporaries `write_atomic` left in `dir` (and, with `below`, in its subfolders)
/// when its process was killed: `.NAME.tmp-PID` with PID no longer running here. Returns the
/// names removed.
pub fn remove_stale_temporaries(dir: &Path, below: bool) -> io::Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(e),
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if below && entry.file_type().is_ok_and(|t| t.is_dir()) {
            removed.extend(remove_stale_temporaries(&entry.path(), true)?);
            continue;
        }
        let pid = name
            .strip_prefix('.')
            .and_then(|n| n.rsplit_once(".tmp-"))
            .and_then(|(_, pid)| pid.parse::<u32>().ok());
        if let Some(pid) = pid
            && pid != std::process::id()
            && process_alive(pid) == Some(false)
        {
            fs::remove_file(entry.path())?;
            removed.push(name);
        }
    }
    removed.sort();
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_and_leaves_no_temporary_file() {
        let dir = std::env::temp_dir().join(format!("sw-atomic-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.txt");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn stale_temporaries_of_dead_processes_are_removed() {
        if process_alive(std::process::id()) != Some(true) {
            eprintln!("no /proc: skipped");
            return;
        }
        let dir = std::env::temp_dir().join(format!("sw-stale-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let own = format!(".a.txt.tmp-{}", std::process::id());
        for name in [
            ".index.html.tmp-4294967",
            own.as_str(),
            ".b.tmp-x",
            "c.tmp-4294967",
        ] {
            fs::write(dir.join(name), b"").unwrap();
        }
        fs::create_dir_all(dir.join("traces")).unwrap();
        fs::write(dir.join("traces/.3.csv.tmp-4294967"), b"").unwrap();
        let removed = remove_stale_temporaries(&dir, false).unwrap();
        assert_eq!(removed, [".index.html.tmp-4294967"]);
        assert!(dir.join("traces/.3.csv.tmp-4294967").exists());
        let removed = remove_stale_temporaries(&dir, true).unwrap();
        assert_eq!(removed, [".3.csv.tmp-4294967"]);
        assert!(dir.join(&own).exists() && dir.join("c.tmp-4294967").exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_zombie_is_not_alive() {
        if process_alive(std::process::id()) != Some(true) {
            eprintln!("no /proc: skipped");
            return;
        }
        let mut child = std::process::Command::new("true").spawn().unwrap();
        // Exited, not yet reaped: a zombie until `wait`.
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert_eq!(process_alive(child.id()), Some(false));
        child.wait().unwrap();
        assert_eq!(process_alive(child.id()), Some(false));
        let mut sleeper = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        assert_eq!(process_alive(sleeper.id()), Some(true));
        sleeper.kill().unwrap();
        sleeper.wait().unwrap();
    }
}
