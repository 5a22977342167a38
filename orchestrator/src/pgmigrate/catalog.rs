//! What ferry reads of a database's catalog: the tables it copies (columns, primary key, size),
//! the objects it compares, the extensions and the sequences.

use std::collections::BTreeMap;

use tokio_postgres::Client;

use super::Side;
use crate::migrate::{CatalogItem, Column, Table};

/// Schemas that are not the application's: PostgreSQL's own and ferry's chunk markers.
pub const USER_SCHEMAS: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema', 'ferry_migration') \
AND n.nspname NOT LIKE 'pg\\_%'";

/// The tables of a database (ordinary tables and partitions; a partitioned parent holds no
/// rows of its own), with columns (generated ones left to the target to compute) and keys.
pub async fn tables(side: &Side) -> Result<Vec<Table>, String> {
    let c = &side.client;
    let sql = format!(
        "SELECT c.oid, n.nspname, c.relname, c.reltuples::bigint, \
(pg_relation_size(c.oid) / current_setting('block_size')::int)::bigint, pg_total_relation_size(c.oid) \
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
WHERE c.relkind = 'r' AND {USER_SCHEMAS} \
AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e') \
ORDER BY 2, 3"
    );
    let rows = side.rows(&sql).await?;
    let mut columns = columns(side).await?;
    let mut keys = keys(side).await?;
    let mut out = Vec::new();
    for r in rows {
        let oid: u32 = r.get(0);
        let mut t = Table {
            schema: r.get(1),
            name: r.get(2),
            columns: columns.remove(&oid).unwrap_or_default(),
            key: keys.remove(&oid).unwrap_or_default(),
            rows_estimate: r.get(3),
            pages: r.get(4),
            bytes: r.get(5),
        };
        if t.rows_estimate < 0 {
            // Never analyzed: count, once, so chunking has a number to go by.
            let q = format!("SELECT count(*) FROM ONLY {}", t.quoted());
            let n = c.query_one(&q, &[]).await.map_err(|e| side.error(&e))?;
            t.rows_estimate = n.get(0);
        }
        out.push(t);
    }
    Ok(out)
}

async fn columns(side: &Side) -> Result<BTreeMap<u32, Vec<Column>>, String> {
    let rows = side
        .rows(
            "SELECT a.attrelid, a.attname::text, format_type(a.atttypid, a.atttypmod), \
(t.oid < 16384 AND (t.typelem = 0 OR t.typelem < 16384)), t.typcollation <> 0, a.atttypid \
FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid JOIN pg_class c ON c.oid = a.attrelid \
WHERE c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' \
ORDER BY a.attrelid, a.attnum",
        )
        .await?;
    let mut out: BTreeMap<u32, Vec<Column>> = BTreeMap::new();
    for r in rows {
        out.entry(r.get(0)).or_default().push(Column {
            name: r.get(1),
            type_name: r.get(2),
            binary: r.get(3),
            collatable: r.get(4),
            oid: r.get(5),
        });
    }
    Ok(out)
}

async fn keys(side: &Side) -> Result<BTreeMap<u32, Vec<String>>, String> {
    let rows = side
        .rows(
            "SELECT i.indrelid, a.attname::text FROM pg_index i \
CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) \
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
WHERE i.indisprimary ORDER BY i.indrelid, k.ord",
        )
        .await?;
    let mut out: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for r in rows {
        out.entry(r.get(0)).or_default().push(r.get(1));
    }
    Ok(out)
}

/// Each table's autovacuum switch as its reloptions set it (its own and its TOAST table's;
/// `None` where the server's default applies), by table id.
pub async fn autovacuum(side: &Side) -> Result<crate::migrate::sql::AutovacuumSwitches, String> {
    let pick = |rel: &str| {
        format!(
            "(SELECT substr(o, 20) FROM unnest({rel}.reloptions) o WHERE o LIKE 'autovacuum\\_enabled=%')"
        )
    };
    let sql = format!(
        "SELECT n.nspname || '.' || c.relname, {}, {} \
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace LEFT JOIN pg_class t ON t.oid = c.reltoastrelid \
WHERE c.relkind = 'r' AND {USER_SCHEMAS}",
        pick("c"),
        pick("t")
    );
    let rows = side.rows(&sql).await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), [r.get(1), r.get(2)]))
        .collect())
}

/// The indexes and constraints of the ordinary tables (not a partition's: those are attached to
/// their parent's), by their catalog object as pg_restore's list names it, each with the kind and
/// name [`items`] gives it.
pub async fn owned(side: &Side) -> Result<crate::migrate::toc::Owners, String> {
    use crate::migrate::toc::{PG_CLASS, PG_CONSTRAINT};
    let sql = format!(
        "SELECT {PG_CLASS}::oid, i.indexrelid, 'index', ni.nspname || '.' || ci.relname \
FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
JOIN pg_class ci ON ci.oid = i.indexrelid JOIN pg_namespace ni ON ni.oid = ci.relnamespace \
WHERE c.relkind = 'r' AND NOT c.relispartition AND {USER_SCHEMAS} \
UNION ALL \
SELECT {PG_CONSTRAINT}::oid, co.oid, CASE WHEN co.contype = 'c' THEN 'check' ELSE 'constraint' END, \
n.nspname || '.' || c.relname || '.' || co.conname \
FROM pg_constraint co JOIN pg_class c ON c.oid = co.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
WHERE c.relkind = 'r' AND NOT c.relispartition AND {USER_SCHEMAS}"
    );
    let rows = side.rows(&sql).await?;
    Ok(rows
        .iter()
        .map(|r| ((r.get(0), r.get(1)), (r.get(2), r.get(3))))
        .collect())
}

/// The objects compared between the two databases, each with its definition.
pub async fn items(side: &Side) -> Result<Vec<CatalogItem>, String> {
    let sql = format!(
        "SELECT 'relation', n.nspname || '.' || c.relname, c.relkind::text \
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND {USER_SCHEMAS} \
UNION ALL \
SELECT 'column', n.nspname || '.' || c.relname || '.' || a.attname, \
format_type(a.atttypid, a.atttypmod) || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END \
|| coalesce(' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid), '') \
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND a.attnum > 0 AND NOT a.attisdropped AND {USER_SCHEMAS} \
UNION ALL \
SELECT CASE WHEN co.contype = 'c' THEN 'check' ELSE 'constraint' END, \
n.nspname || '.' || c.relname || '.' || co.conname, pg_get_constraintdef(co.oid) \
|| CASE WHEN co.contype IN ('p', 'u', 'x') AND NOT coalesce((SELECT x.indisvalid FROM pg_index x WHERE x.indexrelid = co.conindid), true) \
THEN ' (INVALID)' ELSE '' END \
FROM pg_constraint co JOIN pg_class c ON c.oid = co.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
WHERE {USER_SCHEMAS} \
UNION ALL \
SELECT 'index', n.nspname || '.' || ci.relname, \
pg_get_indexdef(ci.oid) || CASE WHEN i.indisvalid THEN '' ELSE ' (INVALID)' END \
FROM pg_index i JOIN pg_class ci ON ci.oid = i.indexrelid JOIN pg_namespace n ON n.oid = ci.relnamespace \
WHERE {USER_SCHEMAS} \
UNION ALL \
SELECT 'sequence', schemaname || '.' || sequencename, \
data_type::text || ' increment ' || increment_by || ' from ' || min_value || ' to ' || max_value || CASE WHEN cycle THEN ' cycle' ELSE '' END \
FROM pg_sequences n WHERE n.schemaname NOT IN ('pg_catalog', 'information_schema', 'ferry_migration') \
UNION ALL \
SELECT 'grant', n.nspname || '.' || c.relname || ' to ' || coalesce(r.rolname::text, 'PUBLIC'), \
string_agg(x.privilege_type, ', ' ORDER BY x.privilege_type) \
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace CROSS JOIN LATERAL aclexplode(c.relacl) x \
LEFT JOIN pg_roles r ON r.oid = x.grantee \
WHERE x.grantee <> c.relowner AND x.grantee <> (SELECT oid FROM pg_roles WHERE rolname = current_user) \
AND {USER_SCHEMAS} GROUP BY 1, 2 \
ORDER BY 1, 2"
    );
    let rows = side.rows(&sql).await?;
    Ok(rows
        .iter()
        .map(|r| CatalogItem {
            kind: r.get(0),
            name: r.get(1),
            definition: r.get(2),
        })
        .collect())
}

/// The server's version number (`150004`) and its text (`15.4 (Debian 15.4-1)`).
pub async fn version(side: &Side) -> Result<(i32, String), String> {
    let r = side
        .client
        .query_one(
            "SELECT current_setting('server_version_num')::int, current_setting('server_version')",
            &[],
        )
        .await
        .map_err(|e| side.error(&e))?;
    Ok((r.get(0), r.get(1)))
}

/// Installed extensions and their versions.
pub async fn extensions(c: &Client) -> Result<BTreeMap<String, String>, tokio_postgres::Error> {
    let rows = c
        .query("SELECT extname::text, extversion FROM pg_extension", &[])
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Extensions the server could install: name -> (default version, installed version).
pub async fn available_extensions(
    side: &Side,
) -> Result<BTreeMap<String, (Option<String>, Option<String>)>, String> {
    let rows = side
        .rows("SELECT name::text, default_version, installed_version FROM pg_available_extensions")
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect())
}

/// A sequence: its name, where it stands, and the column it feeds (if it is owned by one).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sequence {
    pub name: String,
    pub last_value: Option<i64>,
    pub increment: i64,
    pub start: i64,
    /// `schema.table.column`, quoted for SQL, and shown.
    pub column: Option<(String, String, String)>,
}

pub async fn sequences(side: &Side) -> Result<Vec<Sequence>, String> {
    let rows = side.rows("SELECT quote_ident(s.schemaname) || '.' || quote_ident(s.sequencename), s.last_value, s.increment_by, s.start_value, \
quote_ident(tn.nspname) || '.' || quote_ident(t.relname), quote_ident(a.attname), \
tn.nspname || '.' || t.relname || '.' || a.attname \
FROM pg_sequences s \
JOIN pg_namespace sn ON sn.nspname = s.schemaname \
JOIN pg_class sc ON sc.relname = s.sequencename AND sc.relnamespace = sn.oid \
LEFT JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = sc.oid AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i') \
LEFT JOIN pg_class t ON t.oid = d.refobjid LEFT JOIN pg_namespace tn ON tn.oid = t.relnamespace \
LEFT JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid \
WHERE s.schemaname NOT IN ('pg_catalog', 'information_schema', 'ferry_migration') ORDER BY 1").await?;
    Ok(rows
        .iter()
        .map(|r| Sequence {
            name: r.get(0),
            last_value: r.get(1),
            increment: r.get(2),
            start: r.get(3),
            column: r
                .get::<_, Option<String>>(4)
                .map(|t| (t, r.get(5), r.get(6))),
        })
        .collect())
}
