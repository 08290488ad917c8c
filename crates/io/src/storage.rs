//! Where a run folder's files live: a small key-value interface (get, atomic put, append, list,
//! delete) over `/`-separated keys, with the local filesystem as its implementation. The
//! interface is the shape of an object store (an `object_store` backend implements `append` as
//! get + put), so a run folder's callers never touch paths.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::atomic::write_atomic;

/// A store of byte objects under `/`-separated keys (`checkpoints/100.safetensors`).
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// The object's bytes; `Ok(None)` when there is none.
    fn get(&self, key: &str) -> io::Result<Option<Vec<u8>>>;
    /// Replaces (or creates) the object atomically: a reader sees the old bytes or the new.
    fn put(&self, key: &str, bytes: &[u8]) -> io::Result<()>;
    /// Creates the object only if it does not exist (an object store's conditional put);
    /// `Ok(false)` when it already exists. Locks are built on it.
    fn put_new(&self, key: &str, bytes: &[u8]) -> io::Result<bool>;
    /// Adds bytes at the end of the object (creating it), for append-only logs.
    fn append(&self, key: &str, bytes: &[u8]) -> io::Result<()>;
    /// Makes what `append` wrote to `key` durable.
    fn sync(&self, key: &str) -> io::Result<()>;
    /// Keys under `prefix` (a folder, ending in `/`, or "" for all), at any depth, sorted.
    fn list(&self, prefix: &str) -> io::Result<Vec<String>>;
    /// Removes the object; absent is not an error.
    fn delete(&self, key: &str) -> io::Result<()>;
    /// Whether the object exists.
    fn exists(&self, key: &str) -> bool {
        matches!(self.get(key), Ok(Some(_)))
    }
    /// Removes what interrupted writes left in `folder` (and its subfolders with `below`): a
    /// killed process's temporary files on a local disk. Object stores write atomically and
    /// leave none.
    fn clean_interrupted(&self, _folder: &str, _below: bool) -> io::Result<Vec<String>> {
        Ok(vec![])
    }
    /// The object's location as a user should see it in messages (a path or a URL).
    fn describe(&self, key: &str) -> String;
}

/// A folder of the local filesystem; keys are relative paths inside it.
#[derive(Clone, Debug)]
pub struct LocalFs {
    root: PathBuf,
}

impl LocalFs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalFs { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> PathBuf {
        if key.is_empty() {
            self.root.clone()
        } else {
            self.root.join(key)
        }
    }

    /// An error that names the file.
    fn err(&self, key: &str, e: io::Error) -> io::Error {
        io::Error::new(e.kind(), format!("{}: {e}", self.path(key).display()))
    }

    fn parent(&self, key: &str) -> io::Result<()> {
        if let Some(dir) = self.path(key).parent() {
            fs::create_dir_all(dir).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        Ok(())
    }
}

impl Storage for LocalFs {
    fn get(&self, key: &str) -> io::Result<Option<Vec<u8>>> {
        match fs::read(self.path(key)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err(key, e)),
        }
    }

    fn put(&self, key: &str, bytes: &[u8]) -> io::Result<()> {
        self.parent(key)?;
        write_atomic(&self.path(key), bytes).map_err(|e| self.err(key, e))
    }

    fn put_new(&self, key: &str, bytes: &[u8]) -> io::Result<bool> {
        self.parent(key)?;
        // Whole or not at all, even if killed: the bytes go to a temporary file, which is then
        // linked under the key (a link never replaces an existing file). A kill in between
        // leaves only the temporary, which `clean_interrupted` removes.
        let target = self.path(key);
        let name = target
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let tmp = target.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
        let written = File::create(&tmp).and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        });
        let linked = written.and_then(|()| fs::hard_link(&tmp, &target));
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(self.err(key, e)),
        }
    }

    fn append(&self, key: &str, bytes: &[u8]) -> io::Result<()> {
        self.parent(key)?;
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path(key))
            .map_err(|e| self.err(key, e))?;
        f.write_all(bytes).map_err(|e| self.err(key, e))
    }

    fn sync(&self, key: &str) -> io::Result<()> {
        match File::open(self.path(key)) {
            Ok(f) => f.sync_data().map_err(|e| self.err(key, e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.err(key, e)),
        }
    }

    fn list(&self, prefix: &str) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        let start = self.path(prefix.trim_end_matches('/'));
        let mut stack = vec![(start, prefix.trim_end_matches('/').to_string())];
        while let Some((dir, key)) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) if e.kind() == io::ErrorKind::NotADirectory => continue,
                Err(e) => {
                    return Err(io::Error::new(e.kind(), format!("{}: {e}", dir.display())));
                }
            };
            for entry in entries.flatten() {
                let Ok(name) = entry.file_name().into_string() else {
                    continue;
                };
                // Temporary files of atomic writes in progress are not objects.
                if name.starts_with('.') {
                    continue;
                }
                let k = if key.is_empty() {
                    name
                } else {
                    format!("{key}/{name}")
                };
                match entry.file_type() {
                    Ok(t) if t.is_dir() => stack.push((entry.path(), k)),
                    Ok(_) => out.push(k),
                    Err(_) => {}
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn delete(&self, key: &str) -> io::Result<()> {
        match fs::remove_file(self.path(key)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.err(key, e)),
        }
        // Folders exist only through their objects (as in an object store): remove the ones
        // this left empty, below the root.
        let mut dir = Path::new(key).parent();
        while let Some(d) = dir.filter(|d| !d.as_os_str().is_empty()) {
            if fs::remove_dir(self.root.join(d)).is_err() {
                break;
            }
            dir = d.parent();
        }
        Ok(())
    }

    fn exists(&self, key: &str) -> bool {
        self.path(key).is_file()
    }

    fn describe(&self, key: &str) -> String {
        self.path(key).display().to_string()
    }

    fn clean_interrupted(&self, folder: &str, below: bool) -> io::Result<Vec<String>> {
        let dir = self.path(folder.trim_end_matches('/'));
        crate::atomic::remove_stale_temporaries(&dir, below)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_append_list_delete() {
        let dir = std::env::temp_dir().join(format!("sw-storage-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let s = LocalFs::new(&dir);
        assert_eq!(s.get("a/b.txt").unwrap(), None);
        s.put("a/b.txt", b"one").unwrap();
        s.put("a/b.txt", b"two").unwrap();
        assert_eq!(s.get("a/b.txt").unwrap().unwrap(), b"two");
        s.append("a/c/log.csv", b"x\n").unwrap();
        s.append("a/c/log.csv", b"y\n").unwrap();
        s.sync("a/c/log.csv").unwrap();
        assert_eq!(s.get("a/c/log.csv").unwrap().unwrap(), b"x\ny\n");
        s.put("top", b"").unwrap();
        assert_eq!(s.list("a/").unwrap(), vec!["a/b.txt", "a/c/log.csv"]);
        assert_eq!(s.list("").unwrap(), vec!["a/b.txt", "a/c/log.csv", "top"]);
        assert_eq!(s.list("missing/").unwrap(), Vec::<String>::new());
        assert!(s.exists("top") && !s.exists("a"));
        s.delete("a/b.txt").unwrap();
        s.delete("a/b.txt").unwrap();
        assert_eq!(s.list("a/").unwrap(), vec!["a/c/log.csv"]);
        // Deleting the last object of a folder removes the folders it leaves empty.
        s.put("x/y/z.txt", b"").unwrap();
        s.delete("x/y/z.txt").unwrap();
        assert!(!dir.join("x").exists() && dir.exists());
        // A conditional put creates once.
        assert!(s.put_new("a/.lock", b"me").unwrap());
        assert!(!s.put_new("a/.lock", b"you").unwrap());
        assert_eq!(s.get("a/.lock").unwrap().unwrap(), b"me");
        // Errors name the file.
        s.put("file", b"").unwrap();
        let e = s.put("file/inner", b"").unwrap_err().to_string();
        assert!(e.contains("file"), "{e}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
