//! Drop-in under a real `wandb agent`: the agent runs a sweep's `command:` with `${args}` as
//! `--key=value` arguments, a nested parameter's value being the Python `str()` of a dict
//! (`--task_config={'num_tasks': 'inf', 'pretrain_seed': None, 'layer_norm': True}`).

use anyhow::{Result, bail};
use serde_json::{Map, Value};

/// A Python literal (`str()` of a dict, list, number, bool, None or string) as a document.
pub fn python_literal(text: &str) -> Result<Value> {
    // Outside quotes, Python's None / True / False become YAML's null / true / false; then the
    // text is a YAML flow value (single- and double-quoted strings included).
    let mut out = String::with_capacity(text.len());
    let mut quote: Option<char> = None;
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        out.push_str(match word.as_str() {
            "None" => "null",
            "True" => "true",
            "False" => "false",
            w => w,
        });
        word.clear();
    };
    let mut escaped = false;
    for c in text.chars() {
        if let Some(q) = quote {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' && q == '"' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        if c.is_alphanumeric() || c == '_' {
            word.push(c);
            continue;
        }
        flush(&mut word, &mut out);
        if c == '\'' || c == '"' {
            quote = Some(c);
        }
        out.push(c);
    }
    flush(&mut word, &mut out);
    stagewise_io::config::parse_yaml(&out)
        .map_err(|e| anyhow::anyhow!("{text:?}: not a value W&B passes: {e}"))
}

/// The document that `--key=value` agent arguments describe (dotted keys nest).
pub fn agent_args_document(args: &[String]) -> Result<Value> {
    let mut doc = Value::Object(Map::new());
    for a in args {
        let Some((key, val)) = a.strip_prefix("--").and_then(|s| s.split_once('=')) else {
            bail!("{a:?}: expected --key=value");
        };
        if key.is_empty() {
            bail!("{a:?}: empty key");
        }
        crate::spec::set_path(&mut doc, key, python_literal(val)?);
    }
    Ok(doc)
}

/// Splits a command line into what the argument parser takes and the `--key=value` agent
/// arguments of `subcommand` (those whose key is not one of its `flags`). The subcommand is the
/// first argument that is neither a `--flag` nor the value of `--threads`.
pub fn split_agent_args(
    args: Vec<String>,
    subcommand: &str,
    flags: &[&str],
) -> (Vec<String>, Vec<String>) {
    let mut i = 1;
    while i < args.len() && args[i].starts_with("--") {
        i += if args[i] == "--threads" { 2 } else { 1 };
    }
    if args.get(i).map(String::as_str) != Some(subcommand) {
        return (args, Vec::new());
    }
    let (mut keep, mut agent) = (args[..=i].to_vec(), Vec::new());
    for a in &args[i + 1..] {
        let key = a
            .strip_prefix("--")
            .and_then(|r| r.split_once('='))
            .map(|(k, _)| k);
        match key {
            Some(k) if !flags.contains(&k) => agent.push(a.clone()),
            _ => keep.push(a.clone()),
        }
    }
    (keep, agent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_arguments_become_the_run_config() {
        let args: Vec<String> = [
            "--task_config={'task_size': 4, 'num_tasks': 'inf', 'pretrain_seed': None, 'layer_norm': True, 'name': \"it's\"}",
            "--optimizer_config={'lr': 0.003, 'betas': [0.9, 0.999]}",
            "--eval_batch_size=1024",
            "--checkpointer_config.checkpoint_steps.log_space=100",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let doc = agent_args_document(&args).unwrap();
        assert_eq!(
            doc,
            serde_json::json!({
                "task_config": {"task_size": 4, "num_tasks": "inf", "pretrain_seed": null, "layer_norm": true, "name": "it's"},
                "optimizer_config": {"lr": 0.003, "betas": [0.9, 0.999]},
                "eval_batch_size": 1024,
                "checkpointer_config": {"checkpoint_steps": {"log_space": 100}}
            })
        );
        assert!(agent_args_document(&["--lr".into()]).is_err());
    }

    #[test]
    fn agent_arguments_are_split_from_the_flags() {
        let argv = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (keep, agent) = split_agent_args(
            argv(&[
                "sw",
                "--threads",
                "2",
                "train",
                "--out=x",
                "--lr=3",
                "--mlflow=http://h",
                "cfg.yaml",
            ]),
            "train",
            &["out", "mlflow"],
        );
        assert_eq!(
            keep,
            argv(&[
                "sw",
                "--threads",
                "2",
                "train",
                "--out=x",
                "--mlflow=http://h",
                "cfg.yaml"
            ])
        );
        assert_eq!(agent, argv(&["--lr=3"]));
        let other = argv(&["sw", "llc", "--x=1"]);
        assert_eq!(
            split_agent_args(other.clone(), "train", &[]),
            (other, vec![])
        );
    }
}
