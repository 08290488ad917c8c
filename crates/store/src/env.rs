//! Settings: the process environment, over a `.env` file's `KEY=VALUE` lines for what the
//! environment does not set. Values are never printed (`Debug` shows the keys only).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};

#[derive(Clone, Default)]
pub struct Settings {
    values: BTreeMap<String, String>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.values.keys()).finish()
    }
}

impl Settings {
    /// The environment over `./.env` (if present).
    pub fn load() -> Result<Self> {
        Self::load_from(Path::new(".env"), std::env::vars())
    }

    /// The variables `vars` over the file `dotenv` (if it exists).
    pub fn load_from(dotenv: &Path, vars: impl Iterator<Item = (String, String)>) -> Result<Self> {
        let mut values = BTreeMap::new();
        if dotenv.exists() {
            let text = std::fs::read_to_string(dotenv)
                .with_context(|| format!("{}: cannot read", dotenv.display()))?;
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let line = line.strip_prefix("export ").unwrap_or(line);
                let Some((k, v)) = line.split_once('=') else {
                    bail!("{}:{}: expected KEY=VALUE", dotenv.display(), n + 1);
                };
                let v = v.trim();
                let v = v
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                    .unwrap_or(v);
                values.insert(k.trim().to_string(), v.to_string());
            }
        }
        values.extend(vars);
        Ok(Settings { values })
    }

    pub fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        Settings {
            values: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.values
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// Every `(key, value)` whose key starts with `prefix`.
    pub fn with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.values
            .iter()
            .filter(move |(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Hides every secret value that occurs in `text` (for messages built from server replies).
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for key in [
            "AWS_SECRET_ACCESS_KEY",
            "AWS_ACCESS_KEY_ID",
            "AWS_SESSION_TOKEN",
        ] {
            if let Some(v) = self.get(key).filter(|v| v.len() >= 4) {
                out = out.replace(v, "***");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_wins_over_dotenv_and_debug_hides_values() {
        let dir = std::env::temp_dir().join(format!("sw-env-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join(".env");
        std::fs::write(
            &f,
            "# comment\nAWS_ACCESS_KEY_ID=fromfile\nexport AWS_SECRET_ACCESS_KEY=\"s3cr3t\"\nAWS_BUCKET_NAME='b'\n",
        )
        .unwrap();
        let s = Settings::load_from(
            &f,
            [("AWS_ACCESS_KEY_ID".to_string(), "fromenv".to_string())].into_iter(),
        )
        .unwrap();
        assert_eq!(s.get("AWS_ACCESS_KEY_ID"), Some("fromenv"));
        assert_eq!(s.get("AWS_SECRET_ACCESS_KEY"), Some("s3cr3t"));
        assert_eq!(s.get("AWS_BUCKET_NAME"), Some("b"));
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("fromenv"),
            "{shown}"
        );
        assert_eq!(s.redact("key fromenv secret s3cr3t"), "key *** secret ***");
        std::fs::write(&f, "NOEQUALS\n").unwrap();
        assert!(
            Settings::load_from(&f, std::iter::empty())
                .unwrap_err()
                .to_string()
                .contains(":1: expected KEY=VALUE")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
