//! Restricted ("weight-refined") LLC: which parameter tensors the sampler may move, chosen by
//! glob patterns over tensor names (`*` matches within one dot-separated segment, `**` across
//! segments, `?` one character), as the reference's `include` / `exclude`.

/// True if `name` matches `pattern`.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    fn rec(p: &[u8], n: &[u8]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some(b'*') if p.get(1) == Some(&b'*') => (0..=n.len()).any(|i| rec(&p[2..], &n[i..])),
            Some(b'*') => (0..=n.len())
                .take_while(|&i| i == 0 || n[i - 1] != b'.')
                .any(|i| rec(&p[1..], &n[i..])),
            Some(b'?') => !n.is_empty() && n[0] != b'.' && rec(&p[1..], &n[1..]),
            Some(c) => n.first() == Some(c) && rec(&p[1..], &n[1..]),
        }
    }
    rec(pattern.as_bytes(), name.as_bytes())
}

/// Per-coordinate mask over tensors `(name, len)`: included by some `include` pattern and by no
/// `exclude` pattern. `None` when every coordinate is free.
pub fn build_mask(
    tensors: &[(String, usize)],
    include: &[String],
    exclude: &[String],
) -> Result<Option<Vec<bool>>, String> {
    let mut mask = Vec::new();
    let mut any = false;
    for (name, len) in tensors {
        let on = include.iter().any(|p| glob_match(p, name))
            && !exclude.iter().any(|p| glob_match(p, name));
        any |= on;
        mask.extend(std::iter::repeat_n(on, *len));
    }
    if !any {
        return Err(format!(
            "include {include:?} / exclude {exclude:?} select no parameter tensor"
        ));
    }
    Ok(if mask.iter().all(|m| *m) {
        None
    } else {
        Some(mask)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_follow_dotted_segments() {
        let n = "token_sequence_transformer.blocks.0.attention.attention.weight";
        assert!(glob_match("**", n));
        assert!(glob_match(
            "token_sequence_transformer.blocks.*.attention.**",
            n
        ));
        assert!(glob_match("**.weight", n));
        assert!(!glob_match("token_sequence_transformer.*.weight", n));
        assert!(glob_match(
            "token_sequence_transformer.blocks.?.attention.attention.weight",
            n
        ));
        assert!(!glob_match("token_sequence_transformer.blocks.1.**", n));
    }

    #[test]
    fn masks_cover_included_tensors_only() {
        let t = vec![("a.w".to_string(), 2), ("b.w".to_string(), 3)];
        let m = build_mask(&t, &["**".into()], &["b.*".into()])
            .unwrap()
            .unwrap();
        assert_eq!(m, vec![true, true, false, false, false]);
        assert_eq!(build_mask(&t, &["**".into()], &[]).unwrap(), None);
        assert!(build_mask(&t, &["c.*".into()], &[]).is_err());
    }
}
