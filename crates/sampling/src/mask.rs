//! Restricted ("weight-refined") LLC: which parameter tensors the sampler may move, chosen by
//! glob patterns over tensor names (`*` matches within one dot-separated segment, `**` across
//! segments, `?` one character), as the reference's `include` / `exclude`. A pattern may end in
//! `[i/n]`: only part `i` of `n` equal parts along the tensor's first axis (for TransformerLens'
//! `[heads, ...]` attention tensors, head `i` of `n`).

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

/// A pattern's glob and its `[i/n]` part, if any.
fn parse(pattern: &str) -> Result<(&str, Option<(usize, usize)>), String> {
    let Some(open) = pattern
        .strip_suffix(']')
        .and_then(|p| p.rfind('[').map(|i| (p, i)))
    else {
        return Ok((pattern, None));
    };
    let (body, i) = open;
    let part = &body[i + 1..];
    let parsed = part.split_once('/').and_then(|(a, b)| {
        Some((
            a.trim().parse::<usize>().ok()?,
            b.trim().parse::<usize>().ok()?,
        ))
    });
    match parsed {
        Some((i_part, n)) if n > 0 && i_part < n => Ok((&body[..i], Some((i_part, n)))),
        _ => Err(format!(
            "pattern {pattern:?}: a part is written [i/n] with 0 <= i < n, e.g. blocks.1.attn.W_Q[3/8]"
        )),
    }
}

/// Per-coordinate mask over tensors `(name, len)`: included by some `include` pattern and by no
/// `exclude` pattern. `None` when every coordinate is free.
pub fn build_mask(
    tensors: &[(String, usize)],
    include: &[String],
    exclude: &[String],
) -> Result<Option<Vec<bool>>, String> {
    let inc = include
        .iter()
        .map(|p| parse(p))
        .collect::<Result<Vec<_>, _>>()?;
    let exc = exclude
        .iter()
        .map(|p| parse(p))
        .collect::<Result<Vec<_>, _>>()?;
    // Marks the coordinates of `name` (`len` values) that the patterns cover.
    let cover = |pats: &[(&str, Option<(usize, usize)>)],
                 name: &str,
                 len: usize,
                 out: &mut Vec<bool>| {
        out.clear();
        out.resize(len, false);
        for (glob, part) in pats {
            if !glob_match(glob, name) {
                continue;
            }
            match part {
                None => out.fill(true),
                Some((i, n)) => {
                    if len % n != 0 {
                        return Err(format!(
                            "{name}: {len} values do not split into {n} equal parts (pattern {glob}[{i}/{n}])"
                        ));
                    }
                    let k = len / n;
                    out[i * k..(i + 1) * k].fill(true);
                }
            }
        }
        Ok(())
    };
    let mut mask = Vec::new();
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for (name, len) in tensors {
        cover(&inc, name, *len, &mut on)?;
        cover(&exc, name, *len, &mut off)?;
        mask.extend(on.iter().zip(&off).map(|(a, b)| *a && !*b));
    }
    if !mask.iter().any(|m| *m) {
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

    #[test]
    fn parts_select_one_head_of_a_heads_first_tensor() {
        // W_Q [heads 3, 2 values each], b_O [4].
        let t = vec![("attn.W_Q".to_string(), 6), ("attn.b_O".to_string(), 4)];
        let m = build_mask(&t, &["attn.W_Q[1/3]".into()], &[])
            .unwrap()
            .unwrap();
        assert_eq!(
            m,
            [
                false, false, true, true, false, false, false, false, false, false
            ]
        );
        let m = build_mask(&t, &["attn.*".into()], &["attn.W_Q[0/3]".into()])
            .unwrap()
            .unwrap();
        assert_eq!(
            m,
            [false, false, true, true, true, true, true, true, true, true]
        );
        let e = build_mask(&t, &["attn.b_O[1/3]".into()], &[]).unwrap_err();
        assert!(e.contains("do not split into 3"), "{e}");
        let e = build_mask(&t, &["attn.W_Q[3/3]".into()], &[]).unwrap_err();
        assert!(e.contains("[i/n]"), "{e}");
    }
}
