//! Version ids and the major each carries, per the app's scheme.
//!
//! `semver` (the default): `MAJOR.MINOR.PATCH[-pre][+build]`, the major is `MAJOR`; every
//! version of an app is one lineage. `template` (clinical templates, the EHRServer rule):
//! `concept.lang.vN`, a snake_case concept, an ISO 639-1 language and `v` + the major; each
//! `concept.lang` is its own lineage (`consultation_note.en` and `consultation_note.es` keep
//! their majors apart).

use serde::{Deserialize, Serialize};

/// How an app's version ids are written.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Scheme {
    #[default]
    Semver,
    Template,
}

/// What an id says: the lineage whose majors it counts against, and its major.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct VersionId {
    pub lineage: String,
    pub major: u64,
}

/// Parses `id` under `scheme`, or says exactly what is wrong with it.
pub fn parse(scheme: Scheme, id: &str) -> Result<VersionId, String> {
    match scheme {
        Scheme::Semver => parse_semver(id),
        Scheme::Template => parse_template(id),
    }
}

fn parse_semver(id: &str) -> Result<VersionId, String> {
    let v = semver::Version::parse(id).map_err(|e| {
        format!("`{id}` is not a semantic version (MAJOR.MINOR.PATCH, like `3.1.0`): {e}")
    })?;
    Ok(VersionId {
        lineage: String::new(),
        major: v.major,
    })
}

fn parse_template(id: &str) -> Result<VersionId, String> {
    let parts: Vec<&str> = id.split('.').collect();
    let [concept, lang, version] = parts[..] else {
        return Err(format!(
            "`{id}` is not a template id `concept.lang.vN` (like `consultation_note.en.v1`)"
        ));
    };
    let mut wrong = Vec::new();
    if !is_snake_case(concept) {
        wrong.push(format!(
            "the concept `{concept}` is not snake_case (lowercase words joined by `_`, like `lab_results`)"
        ));
    }
    if isolang::Language::from_639_1(lang).is_none() {
        wrong.push(format!(
            "`{lang}` is not an ISO 639-1 language code (two lowercase letters, like `en`, `es`, `pt`)"
        ));
    }
    let major = version
        .strip_prefix('v')
        .filter(|n| !n.is_empty() && !n.starts_with('0') && n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse::<u64>().ok());
    if major.is_none() {
        wrong.push(format!(
            "the version part `{version}` is not `v` and a major number from 1 (like `v1`, `v192`)"
        ));
    }
    match major {
        Some(major) if wrong.is_empty() => Ok(VersionId {
            lineage: format!("{concept}.{lang}"),
            major,
        }),
        _ => Err(format!("`{id}`: {}", wrong.join("; "))),
    }
}

fn is_snake_case(s: &str) -> bool {
    !s.is_empty()
        && s.split('_').all(|w| {
            !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
        && s.starts_with(|c: char| c.is_ascii_lowercase())
}

/// The id of `major` in `lineage`: `concept.lang.vN`, or `N.0.0`.
pub fn id_of_major(scheme: Scheme, lineage: &str, major: u64) -> String {
    match scheme {
        Scheme::Semver => format!("{major}.0.0"),
        Scheme::Template => format!("{lineage}.v{major}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_ids_follow_the_ehrserver_rules() {
        let ok = parse(Scheme::Template, "demographic_data.es.v2").unwrap();
        assert_eq!(ok.lineage, "demographic_data.es");
        assert_eq!(ok.major, 2);
        assert_eq!(
            parse(Scheme::Template, "lab_results.pt.v192")
                .unwrap()
                .major,
            192
        );
        for (bad, says) in [
            ("DemographicData.en.v1", "not snake_case"),
            ("demographic__data.en.v1", "not snake_case"),
            ("demographic_data.xx.v1", "`xx` is not an ISO 639-1"),
            ("demographic_data.eng.v1", "`eng` is not an ISO 639-1"),
            ("demographic_data.en.1", "version part `1`"),
            ("demographic_data.en.v0", "version part `v0`"),
            ("demographic_data.en.v01", "version part `v01`"),
            ("demographic_data.en", "not a template id"),
            ("a.b.c.d", "not a template id"),
        ] {
            let e = parse(Scheme::Template, bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        // Every problem of one id at once.
        let e = parse(Scheme::Template, "Lab.zz.x1").unwrap_err();
        assert!(
            e.contains("snake_case") && e.contains("`zz`") && e.contains("`x1`"),
            "{e}"
        );
    }

    #[test]
    fn semver_ids_carry_their_major() {
        assert_eq!(parse(Scheme::Semver, "3.1.0").unwrap().major, 3);
        assert_eq!(parse(Scheme::Semver, "2.0.0-rc.1+b7").unwrap().major, 2);
        let e = parse(Scheme::Semver, "v3.1").unwrap_err();
        assert!(e.contains("`v3.1` is not a semantic version"), "{e}");
        assert_eq!(id_of_major(Scheme::Semver, "", 4), "4.0.0");
        assert_eq!(
            id_of_major(Scheme::Template, "lab_results.en", 4),
            "lab_results.en.v4"
        );
    }
}
