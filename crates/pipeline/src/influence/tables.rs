//! The scan's Parquet tables: per-checkpoint summaries, every observed value, every draw on
//! request, and the folder's combined table.

use anyhow::{Context, Result, bail};
use stagewise_sampling::influence::Susceptibility;
use stagewise_sampling::observed::ObservedRestriction;
use stagewise_tables::Column;

use super::{SummaryRow, done_steps};
use crate::rundir::Folder;

/// Observable, sequence and example (or token) of observed value `i` (`n` sequences of `k`
/// values per observable).
fn label(i: usize, observables: &[String], n: usize, k: usize) -> (String, i64, i64) {
    (
        observables[i / (n * k)].clone(),
        ((i / k) % n) as i64,
        (i % k) as i64,
    )
}

pub(super) fn summary_parquet(step: u64, rows: &[SummaryRow]) -> Result<Vec<u8>> {
    let cols = vec![
        (
            "step".to_string(),
            Column::Int(rows.iter().map(|_| Some(step as i64)).collect()),
        ),
        (
            "restriction".into(),
            Column::Text(rows.iter().map(|r| Some(r.restriction.clone())).collect()),
        ),
        (
            "observable".into(),
            Column::Text(rows.iter().map(|r| Some(r.observable.clone())).collect()),
        ),
        (
            "token".into(),
            Column::Int(rows.iter().map(|r| r.token.map(|t| t as i64)).collect()),
        ),
        (
            "chi".into(),
            Column::Float(rows.iter().map(|r| Some(r.chi)).collect()),
        ),
        (
            "se".into(),
            Column::Float(rows.iter().map(|r| Some(r.se)).collect()),
        ),
        (
            "ess".into(),
            Column::Float(rows.iter().map(|r| Some(r.ess)).collect()),
        ),
        (
            "draws".into(),
            Column::Int(rows.iter().map(|r| Some(r.draws as i64)).collect()),
        ),
    ];
    Ok(stagewise_tables::columns_parquet_bytes(&cols)?)
}

/// Every (restriction, observable, sequence, example) value with its standard error.
pub(super) fn tokens_parquet(
    step: u64,
    names: &[&str],
    chis: &[(usize, Susceptibility)],
    observables: &[String],
    n: usize,
    k: usize,
) -> Result<Vec<u8>> {
    let (mut r_col, mut o_col, mut s_col, mut t_col, mut v_col, mut e_col) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for (ri, chi) in chis {
        let se = chi.standard_errors();
        for (i, (v, e)) in chi.value.iter().zip(&se).enumerate() {
            let (o, seq, tok) = label(i, observables, n, k);
            r_col.push(Some(names[*ri].to_string()));
            o_col.push(Some(o));
            s_col.push(Some(seq));
            t_col.push(Some(tok));
            v_col.push(Some(*v));
            e_col.push(Some(*e));
        }
    }
    let rows = v_col.len();
    let cols = vec![
        (
            "step".to_string(),
            Column::Int(vec![Some(step as i64); rows]),
        ),
        ("restriction".into(), Column::Text(r_col)),
        ("observable".into(), Column::Text(o_col)),
        ("sequence".into(), Column::Int(s_col)),
        ("token".into(), Column::Int(t_col)),
        ("chi".into(), Column::Float(v_col)),
        ("se".into(), Column::Float(e_col)),
    ];
    Ok(stagewise_tables::columns_parquet_bytes(&cols)?)
}

/// Every draw's observed losses: one row per (restriction, chain, draw, observable, sequence,
/// example or token).
pub(super) fn draws_parquet(
    step: u64,
    names: &[&str],
    res: &[ObservedRestriction],
    observables: &[String],
    n: usize,
    k: usize,
) -> Result<Vec<u8>> {
    let (mut r_col, mut c_col, mut d_col, mut o_col, mut s_col, mut t_col, mut v_col) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    for (ri, r) in res.iter().enumerate() {
        for (c, chain) in r.chains.iter().enumerate() {
            for (d, draw) in chain.draws.iter().enumerate() {
                for (i, v) in draw.iter().enumerate() {
                    let (o, seq, tok) = label(i, observables, n, k);
                    r_col.push(Some(names[ri].to_string()));
                    c_col.push(Some(c as i64));
                    d_col.push(Some(d as i64));
                    o_col.push(Some(o));
                    s_col.push(Some(seq));
                    t_col.push(Some(tok));
                    v_col.push(Some(*v));
                }
            }
        }
    }
    let rows = v_col.len();
    let cols = vec![
        (
            "step".to_string(),
            Column::Int(vec![Some(step as i64); rows]),
        ),
        ("restriction".into(), Column::Text(r_col)),
        ("chain".into(), Column::Int(c_col)),
        ("draw".into(), Column::Int(d_col)),
        ("observable".into(), Column::Text(o_col)),
        ("sequence".into(), Column::Int(s_col)),
        ("token".into(), Column::Int(t_col)),
        ("loss".into(), Column::Float(v_col)),
    ];
    Ok(stagewise_tables::columns_parquet_bytes(&cols)?)
}

/// Rewrites the folder's combined table (`susceptibility.parquet` / `bif.parquet`) from its
/// per-checkpoint files, in step order.
pub(crate) fn combine(folder: &Folder, table: &str) -> Result<()> {
    let mut steps = done_steps(folder)?;
    steps.sort_unstable();
    let mut all: Vec<(String, Column)> = Vec::new();
    for s in steps {
        let name = format!("{s}.parquet");
        let bytes = folder
            .get(&name)?
            .with_context(|| format!("{}: missing", folder.describe(&name)))?;
        let cols = stagewise_tables::read_columns_bytes(bytes)
            .with_context(|| format!("{}: not a readable Parquet file", folder.describe(&name)))?;
        if all.is_empty() {
            all = cols;
            continue;
        }
        for ((_, a), (_, b)) in all.iter_mut().zip(cols) {
            match (a, b) {
                (Column::Text(a), Column::Text(b)) => a.extend(b),
                (Column::Int(a), Column::Int(b)) => a.extend(b),
                (Column::Float(a), Column::Float(b)) => a.extend(b),
                _ => bail!(
                    "{}: its columns differ from the other checkpoints'",
                    folder.describe(&name)
                ),
            }
        }
    }
    folder.put(
        &format!("{table}.parquet"),
        &stagewise_tables::columns_parquet_bytes(&all)?,
    )
}
