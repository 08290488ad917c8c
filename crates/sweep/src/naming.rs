//! The reference's run names (`RegressionConfig.validate_extra`): sha256 of Python's
//! `json.dumps(d, sort_keys=True)` of the task, optimizer and scheduler configs, six hex digits
//! each. A training task and an LLC task with the same task config find the same run folder.

use serde_json::Value;
use sha2::{Digest, Sha256};
use stagewise_train::TrainConfig;

/// Python's `json.dumps(v, sort_keys=True)` with its default separators (", " and ": "),
/// `ensure_ascii`, and floats as `repr` writes them (`249999.0`, `1e-05`).
pub fn python_json(v: &Value) -> String {
    let mut out = String::new();
    write_json(v, &mut out);
    out
}

fn write_json(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => out.push_str(&i.to_string()),
            (_, Some(u), _) => out.push_str(&u.to_string()),
            (_, _, Some(f)) => out.push_str(&python_float(f)),
            _ => out.push_str(&n.to_string()),
        },
        Value::String(s) => write_string(s, out),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_json(x, out);
            }
            out.push(']');
        }
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_string(k, out);
                out.push_str(": ");
                write_json(&m[k], out);
            }
            out.push('}');
        }
    }
}

fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `repr(float)`: the shortest digits that round-trip, fixed notation for exponents -4..16
/// (with ".0" when integral), otherwise `d.ddde+XX`.
pub fn python_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    let sci = format!("{f:e}"); // "-1.2345e-5": shortest round-trip digits
    let (mant, exp) = sci.split_once('e').expect("{:e} has an exponent");
    let exp: i32 = exp.parse().expect("integer exponent");
    let (sign, mant) = match mant.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mant),
    };
    let digits: String = mant.chars().filter(|c| *c != '.').collect();
    if (-4..16).contains(&exp) {
        let point = exp + 1; // digits before the decimal point
        let body = if point <= 0 {
            format!("0.{}{digits}", "0".repeat((-point) as usize))
        } else if point as usize >= digits.len() {
            format!("{digits}{}.0", "0".repeat(point as usize - digits.len()))
        } else {
            let (a, b) = digits.split_at(point as usize);
            format!("{a}.{b}")
        };
        format!("{sign}{body}")
    } else {
        let m = if digits.len() > 1 {
            format!("{}.{}", &digits[..1], &digits[1..])
        } else {
            digits
        };
        let e = if exp < 0 {
            format!("-{:02}", -exp)
        } else {
            format!("+{exp:02}")
        };
        format!("{sign}{m}e{e}")
    }
}

/// First six hex digits of sha256 of the Python JSON of `v`.
pub fn hash6(v: &Value) -> String {
    let digest = Sha256::digest(python_json(v).as_bytes());
    digest.iter().take(3).map(|b| format!("{b:02x}")).collect()
}

/// The reference's run name: `M-{num_tasks}-seed-{model_seed}-task-{h}-opt-{h}-sched-{h}`.
///
/// `raw_task` is the task config as the sweep gave it, before defaults (`layer_norm: true` and
/// `include_output: false` are left out of its hash, as the reference does); the optimizer and
/// scheduler configs are hashed with every default filled in, the scheduler's derived ones
/// (`max_lr`, `total_steps`, the div factors) included.
pub fn run_name(raw_task: &Value, config: &TrainConfig) -> String {
    let mut task = raw_task.as_object().cloned().unwrap_or_default();
    if task.get("layer_norm").and_then(Value::as_bool) == Some(true) {
        task.remove("layer_norm");
    }
    if task.get("include_output").and_then(Value::as_bool) == Some(false) {
        task.remove("include_output");
    }
    let shown = |v: Option<&Value>| match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "None".into(),
        Some(v) => v.to_string(),
    };
    let optimizer = serde_json::to_value(&config.optimizer_config).expect("serialisable");
    let scheduler = match &config.scheduler_config {
        Some(s) => {
            let half = (config.num_steps / 2) as f64 - 1.0;
            let mut filled = s.clone();
            filled.max_lr.get_or_insert(config.optimizer_config.lr);
            filled.total_steps.get_or_insert(config.num_steps);
            filled.div_factor.get_or_insert(half);
            filled.final_div_factor.get_or_insert(half);
            serde_json::to_value(&filled).expect("serialisable")
        }
        None => Value::Null,
    };
    format!(
        "M-{}-seed-{}-task-{}-opt-{}-sched-{}",
        shown(task.get("num_tasks")),
        shown(task.get("model_seed")),
        hash6(&Value::Object(task)),
        hash6(&optimizer),
        hash6(&scheduler)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_as_python_repr() {
        for (f, want) in [
            (0.125, "0.125"),
            (0.003, "0.003"),
            (249999.0, "249999.0"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (1.5e-7, "1.5e-07"),
            (1e16, "1e+16"),
            (1234567890123456.0, "1234567890123456.0"),
            (-2.5, "-2.5"),
            (100.0, "100.0"),
            (0.1 + 0.2, "0.30000000000000004"),
            (0.0, "0.0"),
        ] {
            assert_eq!(python_float(f), want, "{f:e}");
        }
    }

    #[test]
    fn json_matches_python_dumps() {
        let v: Value =
            serde_json::json!({"b": [0.9, 0.999], "a": null, "c": "inf", "d": true, "é": 1});
        assert_eq!(
            python_json(&v),
            r#"{"a": null, "b": [0.9, 0.999], "c": "inf", "d": true, "\u00e9": 1}"#
        );
    }
}
