//! `ferry kube rbac`: the least RBAC an inventory's Kubernetes apps need.

use std::path::Path;

use super::{CliError, Ctx, OutputFormat};
use crate::kubernetes::rbac::{self, Need, Subject};
use crate::{exit, workspace};

/// Who the bindings name: `--user NAME`, or `--service-account NAMESPACE/NAME`.
pub fn subject(user: Option<&str>, service_account: Option<&str>) -> Result<Subject, CliError> {
    match (user, service_account) {
        (_, Some(sa)) => {
            let (namespace, name) = sa.split_once('/').ok_or_else(|| {
                CliError::Refused(format!("--service-account `{sa}`: write it NAMESPACE/NAME"))
            })?;
            Ok(Subject::ServiceAccount {
                namespace: namespace.into(),
                name: name.into(),
            })
        }
        (Some(u), None) => Ok(Subject::User(u.into())),
        (None, None) => Ok(Subject::User("ferry".into())),
    }
}

/// Renders every Kubernetes app of the inventory on each of its sites (at its inventory
/// version), collects the kinds and namespaces, and prints the Namespaces, ClusterRole,
/// Roles and bindings: YAML documents (each in JSON form, which is YAML) for `kubectl apply
/// -f`, or one `List` with `--output json`.
pub fn rbac(ctx: &Ctx, inventory: &Path, name: &str, subject: &Subject) -> Result<u8, CliError> {
    let (inv, _) = workspace::load(inventory, &[]).map_err(CliError::Invalid)?;
    let base = workspace::base_dir(&inv.source.path);
    let mut need = Need::default();
    let mut apps = 0;
    for app in inv.value.apps.iter().filter(|a| a.kubernetes.is_some()) {
        apps += 1;
        for site_id in &app.sites {
            let Some(site) = inv.value.site(site_id) else {
                continue;
            };
            let (ns, objects) =
                workspace::kube_objects(&inv.value, &base, app, site).map_err(|e| {
                    CliError::Refused(format!("app `{}` on site `{site_id}`: {e}", app.id))
                })?;
            need.add(&ns, &objects);
        }
    }
    if apps == 0 {
        return Err(CliError::Refused(format!(
            "{} has no kubernetes apps: no RBAC to derive",
            inventory.display()
        )));
    }
    let objects = rbac::objects(&need, name, subject);
    // A document generator, like `ferry schema`: the text is the result.
    match ctx.output {
        OutputFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"apiVersion": "v1", "kind": "List", "items": objects})
            )
            .expect("JSON values serialize")
        ),
        _ => {
            println!(
                "# The least RBAC ferry needs for {} ({} namespace(s)); apply as a cluster admin:\n# kubectl apply --server-side -f THIS_FILE",
                inventory.display(),
                need.namespaces.len()
            );
            for o in &objects {
                println!(
                    "---\n{}",
                    serde_json::to_string_pretty(o).expect("JSON values serialize")
                );
            }
        }
    }
    Ok(exit::OK)
}
