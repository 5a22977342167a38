//! The behaviour every driver must show, as one suite run against each of them.
//!
//! `run` takes a driver, a target it may freely change (never deployed to), and two releases;
//! it panics with a description of the first broken promise.

use super::{Driver, ReleaseBundle, TargetSpec};
use crate::plan::Undo;

pub async fn run(driver: &dyn Driver, spec: &TargetSpec, v1: &ReleaseBundle, v2: &ReleaseBundle) {
    let id = &spec.target.id;
    let o = driver.observe(spec).await.expect("observe a fresh target");
    assert_eq!(o.current, None, "{id}: a fresh target serves nothing");

    // First deploy is the same verb as an upgrade.
    driver.apply(spec, v1).await.expect("first deploy");
    driver
        .verify(spec, &v1.version)
        .await
        .expect("verify first deploy");
    let o = driver.observe(spec).await.unwrap();
    assert_eq!(
        o.current.as_deref(),
        Some(v1.version.as_str()),
        "{id}: serves v1 after deploy"
    );

    // Applying the same release again converges (resume after a crash relies on this).
    driver
        .apply(spec, v1)
        .await
        .expect("re-apply is idempotent");
    assert_eq!(
        driver.observe(spec).await.unwrap(),
        o,
        "{id}: re-apply changes nothing"
    );

    driver.apply(spec, v2).await.expect("upgrade");
    driver
        .verify(spec, &v2.version)
        .await
        .expect("verify upgrade");
    let o = driver.observe(spec).await.unwrap();
    assert_eq!(
        o.current.as_deref(),
        Some(v2.version.as_str()),
        "{id}: serves v2 after upgrade"
    );
    assert!(
        o.releases.contains(&v1.version),
        "{id}: keeps the previous release for back-out: {o:?}"
    );

    // Verifying a version that is not current fails.
    assert!(
        driver.verify(spec, &v1.version).await.is_err(),
        "{id}: verify of a non-current version must fail"
    );

    driver
        .undo(
            spec,
            &Undo::SwitchTo {
                version: v1.version.clone(),
                revision: None,
            },
        )
        .await
        .expect("back out to v1");
    let o = driver.observe(spec).await.unwrap();
    assert_eq!(
        o.current.as_deref(),
        Some(v1.version.as_str()),
        "{id}: serves v1 after back-out"
    );

    // Undo to a release that is not there is an error, not a guess.
    let missing = Undo::SwitchTo {
        version: "0.0.0-missing".into(),
        revision: None,
    };
    assert!(
        driver.undo(spec, &missing).await.is_err(),
        "{id}: undo to a missing release must fail"
    );
    assert_eq!(
        driver.observe(spec).await.unwrap().current.as_deref(),
        Some(v1.version.as_str()),
        "{id}: a failed undo changes nothing"
    );

    driver
        .undo(spec, &Undo::Uninstall)
        .await
        .expect("uninstall");
    assert_eq!(
        driver.observe(spec).await.unwrap().current,
        None,
        "{id}: serves nothing after uninstall"
    );
    driver
        .undo(spec, &Undo::Uninstall)
        .await
        .expect("uninstall twice is idempotent");
}
