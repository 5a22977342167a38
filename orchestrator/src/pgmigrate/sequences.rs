//! Sequences: read on the source after the write fence, set on the target (`setval`), then
//! each sequence that feeds a column is checked to be past that column's largest value on the
//! target, so the first row the app inserts after the cut-over cannot collide.

use serde::Serialize;
use serde_json::{Value, json};

use super::{Migration, catalog};
use crate::migrate::quote_literal;

#[derive(Debug, Serialize)]
struct SequenceSet {
    sequence: String,
    /// The source's last value (none: never used; the target's starts where it starts).
    source_last_value: Option<i64>,
    /// The value the target's sequence hands out next.
    target_next: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    column: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    column_max: Option<String>,
}

pub async fn run(m: &Migration<'_>) -> Result<Value, String> {
    let (source, target) = tokio::try_join!(m.source(), m.target())?;
    let mut out = Vec::new();
    let mut behind = Vec::new();
    for s in catalog::sequences(&source).await? {
        let set = match s.last_value {
            Some(v) => format!("SELECT setval({}, {v}, true)", quote_literal(&s.name)),
            None => format!(
                "SELECT setval({}, {}, false)",
                quote_literal(&s.name),
                s.start
            ),
        };
        target
            .client
            .query_one(&set, &[])
            .await
            .map_err(|e| target.error(&e))?;
        // What the target's sequence now hands out next, read back from the target.
        let r = target
            .client
            .query_one(
                &format!(
                    "SELECT CASE WHEN is_called THEN last_value + {} ELSE last_value END FROM {}",
                    s.increment, s.name
                ),
                &[],
            )
            .await
            .map_err(|e| target.error(&e))?;
        let next: i64 = r.get(0);
        let mut column_max = None;
        if let Some((table, col, shown)) = &s.column {
            let q = format!("SELECT max({col})::text FROM {table}");
            let r = target
                .client
                .query_one(&q, &[])
                .await
                .map_err(|e| target.error(&e))?;
            let max: Option<String> = r.get(0);
            if let Some(v) = max.as_deref().and_then(|v| v.parse::<i128>().ok())
                && s.increment > 0
                && i128::from(next) <= v
            {
                behind.push(format!(
                    "{} hands out {next} next, but {shown} already holds {v}",
                    s.name
                ));
            }
            column_max = max;
        }
        out.push(SequenceSet {
            sequence: s.name.clone(),
            source_last_value: s.last_value,
            target_next: next,
            column: s.column.as_ref().map(|c| c.2.clone()),
            column_max,
        });
    }
    if !behind.is_empty() {
        return Err(format!(
            "{} sequence(s) behind their column on {}: {}",
            behind.len(),
            target.db.place,
            behind.join("; ")
        ));
    }
    Ok(json!({ "sequences": out }))
}
