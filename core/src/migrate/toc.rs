//! pg_restore's list of a post-data archive (`pg_restore -l`), read to restore only part of it:
//! in the indexes step, everything but the indexes and constraints the target already has as the
//! source has them (a resumed step does not build again what an earlier run built). Each line is
//! `ID; TABLEOID OID DESC SCHEMA TAG OWNER`; `TABLEOID OID` name the object in the source's
//! catalog (`2606` pg_constraint, `1259` pg_class), which is how an entry is tied to the object
//! the catalogs compare without reading names that may hold spaces.

use std::collections::{BTreeMap, BTreeSet};

/// `pg_constraint`'s and `pg_class`'s OIDs: the catalogs of a CONSTRAINT and an INDEX entry.
pub const PG_CONSTRAINT: u32 = 2606;
pub const PG_CLASS: u32 = 1259;

/// What a list entry builds, as far as choosing entries goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TocKind {
    /// `INDEX` (not `INDEX ATTACH`).
    Index,
    /// `CONSTRAINT` or `FK CONSTRAINT`: a key, unique, exclusion, check or foreign key.
    Constraint,
    /// Anything else: triggers, rules, comments, attachments...
    Other,
}

/// One line of the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TocEntry {
    /// The line as pg_restore wrote it (given back to `pg_restore -L`).
    pub line: String,
    /// The object in the source's catalog: (catalog OID, object OID).
    pub object: (u32, u32),
    pub kind: TocKind,
}

/// An index or constraint of the source as the compared catalog names it
/// ([`super::CatalogItem`]: kind and qualified name), by its catalog object.
pub type Owners = BTreeMap<(u32, u32), (String, String)>;

/// The entries of a list; comment lines (`;`) and anything unreadable are left out.
pub fn parse(list: &str) -> Vec<TocEntry> {
    list.lines().filter_map(entry).collect()
}

fn entry(line: &str) -> Option<TocEntry> {
    let (id, rest) = line.split_once("; ")?;
    id.trim().parse::<u32>().ok()?;
    let mut words = rest.splitn(3, ' ');
    let catalog = words.next()?.parse().ok()?;
    let oid = words.next()?.parse().ok()?;
    let desc = words.next()?;
    let kind = if desc.starts_with("INDEX ") && !desc.starts_with("INDEX ATTACH ") {
        TocKind::Index
    } else if desc.starts_with("CONSTRAINT ") || desc.starts_with("FK CONSTRAINT ") {
        TocKind::Constraint
    } else {
        TocKind::Other
    };
    Some(TocEntry {
        line: line.to_string(),
        object: (catalog, oid),
        kind,
    })
}

/// The lines still to restore: all but the indexes and constraints the target already has as
/// the source has them (`present`: kind and name of the catalog items whose definitions match).
pub fn remaining<'a>(
    toc: &'a [TocEntry],
    owners: &Owners,
    present: &BTreeSet<(String, String)>,
) -> Vec<&'a TocEntry> {
    toc.iter()
        .filter(|e| {
            e.kind == TocKind::Other || !owners.get(&e.object).is_some_and(|o| present.contains(o))
        })
        .collect()
}

/// The catalog items the target has exactly as the source has them, by kind and name.
pub fn matching(
    source: &[super::CatalogItem],
    target: &[super::CatalogItem],
) -> BTreeSet<(String, String)> {
    let theirs: BTreeMap<(&str, &str), &str> = target
        .iter()
        .map(|i| ((i.kind.as_str(), i.name.as_str()), i.definition.as_str()))
        .collect();
    source
        .iter()
        .filter(|i| theirs.get(&(i.kind.as_str(), i.name.as_str())) == Some(&i.definition.as_str()))
        .map(|i| (i.kind.clone(), i.name.clone()))
        .collect()
}

/// The text of a list file for `pg_restore -L`: the chosen lines, one each.
pub fn list_file(entries: &[&TocEntry]) -> String {
    entries.iter().map(|e| format!("{}\n", e.line)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrate::CatalogItem;

    /// `pg_restore -l` of a real post-data archive (PostgreSQL 15): names with spaces, a
    /// comment on an index, partitions, a trigger and a foreign key.
    const LIST: &str = "\
;
; Archive created at 2026-12-03 14:01:32 UTC
;     dbname: toctest
; Selected TOC Entries:
;
3216; 2606 16442 CONSTRAINT public a a_pkey postgres
3220; 2606 16450 CONSTRAINT public b c b c_pkey postgres
3224; 2606 16461 CONSTRAINT public p p_pkey postgres
3221; 1259 16456 INDEX public idx b c postgres
3382; 0 0 COMMENT public INDEX \"idx b c\" postgres
3230; 0 0 INDEX ATTACH public p1_k_idx postgres
3233; 2620 16470 TRIGGER public a t postgres
3232; 2606 16451 FK CONSTRAINT public b c b c_a_id_fkey postgres
";

    fn owners() -> Owners {
        let own = |k: &str, n: &str| (k.to_string(), n.to_string());
        BTreeMap::from([
            ((2606, 16442), own("constraint", "public.a.a_pkey")),
            ((2606, 16450), own("constraint", "public.b c.b c_pkey")),
            ((1259, 16456), own("index", "public.idx b c")),
        ])
    }

    #[test]
    fn a_list_is_read_by_catalog_object_and_kind_whatever_the_names_hold() {
        let toc = parse(LIST);
        assert_eq!(toc.len(), 8, "comment lines are not entries");
        let kinds: Vec<(u32, TocKind)> = toc.iter().map(|e| (e.object.1, e.kind)).collect();
        assert_eq!(
            kinds,
            vec![
                (16442, TocKind::Constraint),
                (16450, TocKind::Constraint),
                (16461, TocKind::Constraint),
                (16456, TocKind::Index),
                (0, TocKind::Other),
                (0, TocKind::Other),
                (16470, TocKind::Other),
                (16451, TocKind::Constraint),
            ]
        );
        assert_eq!(
            toc[1].line,
            "3220; 2606 16450 CONSTRAINT public b c b c_pkey postgres"
        );
    }

    #[test]
    fn what_the_target_has_as_the_source_has_it_is_not_restored_again() {
        let toc = parse(LIST);
        let item = |k: &str, n: &str, d: &str| CatalogItem {
            kind: k.into(),
            name: n.into(),
            definition: d.into(),
        };
        let source = vec![
            item("constraint", "public.a.a_pkey", "PRIMARY KEY (id)"),
            item("index", "public.idx b c", "CREATE INDEX ... (a_id)"),
        ];
        // The key is there as on the source; the index is there but on another column.
        let target = vec![
            item("constraint", "public.a.a_pkey", "PRIMARY KEY (id)"),
            item("index", "public.idx b c", "CREATE INDEX ... (id)"),
        ];
        let present = matching(&source, &target);
        let left: Vec<u32> = remaining(&toc, &owners(), &present)
            .iter()
            .map(|e| e.object.1)
            .collect();
        assert_eq!(left, vec![16450, 16461, 16456, 0, 0, 16470, 16451]);
        assert_eq!(
            list_file(&remaining(&toc, &owners(), &present)[..1]),
            "3220; 2606 16450 CONSTRAINT public b c b c_pkey postgres\n"
        );
    }
}
