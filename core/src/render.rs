//! Rendering configuration templates (Tera) for a release. Pure: text and values in, text out.

use serde::Serialize;

#[derive(Debug, thiserror::Error)]
#[error("template {template}: {message}")]
pub struct RenderError {
    pub template: String,
    pub message: String,
}

/// Values a configuration template sees. Secrets are deliberately absent: they reach the app
/// through its environment at run time, never a file ferry writes.
#[derive(Debug, Clone, Serialize)]
pub struct RenderContext<'a> {
    pub app: &'a str,
    pub version: &'a str,
    pub site: &'a str,
    pub tier: &'a str,
    pub location: Option<&'a str>,
    pub target: &'a str,
    pub env: &'a std::collections::BTreeMap<String, String>,
    /// Kubernetes apps: the namespace on this site and the app's `values`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub values: Option<&'a std::collections::BTreeMap<String, serde_json::Value>>,
}

/// A Tera instance that sees only the context ferry gives it. Tera registers `get_env`
/// whatever its features, which would let a configuration or manifest template read any
/// variable of ferry's process (other apps' secrets, cloud credentials) into a rendered file
/// or an error message; it is replaced by a function that refuses. Tera's other functions
/// (`range`, `throw`) and its filters read nothing outside the template and its context;
/// `now` and `get_random` exist only with its `builtins` feature, which ferry leaves off, and
/// `include`/`extends` resolve only templates added to this instance, never files.
pub fn sandboxed_tera() -> tera::Tera {
    let mut t = tera::Tera::default();
    t.register_function(
        "get_env",
        |_: &std::collections::HashMap<String, tera::Value>| -> tera::Result<tera::Value> {
            Err(tera::Error::msg(
                "get_env is not available: ferry templates see only the values ferry gives them (app, version, site, tier, location, target, env, namespace, values); secrets reach the app through its environment at run time",
            ))
        },
    );
    t
}

/// Renders one template text with `ctx` in a [`sandboxed_tera`].
pub fn render_one_off(name: &str, text: &str, ctx: &tera::Context) -> tera::Result<String> {
    let mut t = sandboxed_tera();
    t.add_raw_template(name, text)?;
    t.render(name, ctx)
}

/// A Tera error as a `RenderError`: Tera puts the useful part (line, variable) in the source
/// chain, so the whole chain is the message.
pub fn tera_error(template_name: &str, e: &tera::Error) -> RenderError {
    let mut message = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        message.push_str(": ");
        message.push_str(&s.to_string());
        src = s.source();
    }
    RenderError {
        template: template_name.to_owned(),
        message,
    }
}

/// Tera names a missing variable but not where it is used: the first line of `text` that uses
/// it inside `{{ }}` or `{% %}`, as `line N`.
fn variable_line(text: &str, message: &str) -> Option<usize> {
    let var = message.split("Variable `").nth(1)?.split('`').next()?;
    text.lines()
        .position(|line| {
            let mut rest = line;
            while let Some(open) = rest.find("{{").or_else(|| rest.find("{%")) {
                let after = &rest[open + 2..];
                let close = after
                    .find("}}")
                    .or_else(|| after.find("%}"))
                    .unwrap_or(after.len());
                let tag = &after[..close];
                if tag.match_indices(var).any(|(i, _)| {
                    let before = tag[..i].chars().next_back();
                    let next = tag[i + var.len()..].chars().next();
                    !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.')
                        && !next.is_some_and(|c| c.is_alphanumeric() || c == '_')
                }) {
                    return true;
                }
                rest = &after[close..];
            }
            false
        })
        .map(|n| n + 1)
}

pub fn render(
    template_name: &str,
    text: &str,
    ctx: &RenderContext<'_>,
) -> Result<String, RenderError> {
    let err = |e: tera::Error| {
        let mut r = tera_error(template_name, &e);
        if let Some(line) = variable_line(text, &r.message) {
            r.message = format!("line {line}: {}", r.message);
        }
        r
    };
    let context = tera::Context::from_serialize(ctx).map_err(err)?;
    render_one_off(template_name, text, &context).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(env: &std::collections::BTreeMap<String, String>) -> RenderContext<'_> {
        RenderContext {
            app: "demo",
            version: "1.1.0",
            site: "clinic-a",
            tier: "prod",
            location: None,
            target: "clinic-a/local-a/demo",
            env,
            namespace: None,
            values: None,
        }
    }

    #[test]
    fn renders_values() {
        let env = [("LOG_LEVEL".to_owned(), "info".to_owned())].into();
        let out = render(
            "t",
            "{{ app }}={{ version }} at {{ site }} log={{ env.LOG_LEVEL }}",
            &ctx(&env),
        )
        .unwrap();
        assert_eq!(out, "demo=1.1.0 at clinic-a log=info");
    }

    /// A template cannot read ferry's environment, neither into the file nor into an error.
    #[test]
    fn templates_cannot_read_the_environment() {
        // SAFETY (test): set before any thread of this test reads the environment.
        unsafe { std::env::set_var("FERRY_TEST_TEMPLATE_SECRET", "s3cr3t-value") };
        let env = Default::default();
        for text in [
            "{{ get_env(name='FERRY_TEST_TEMPLATE_SECRET') }}",
            "{{ get_env(name='FERRY_TEST_TEMPLATE_SECRET', default='x') }}",
            "{{ throw(message=get_env(name='FERRY_TEST_TEMPLATE_SECRET')) }}",
            "{% set k = get_env(name='FERRY_TEST_TEMPLATE_SECRET') %}{{ k }}",
        ] {
            let e = render("evil.tera", text, &ctx(&env)).unwrap_err();
            assert!(!e.to_string().contains("s3cr3t"), "{e}");
            assert!(e.to_string().contains("get_env is not available"), "{e}");
        }
        // What a template is given still renders, `throw` included.
        let e = render("t", "{{ throw(message='stop: ' ~ site) }}", &ctx(&env)).unwrap_err();
        assert!(e.to_string().contains("stop: clinic-a"), "{e}");
        let inc = render("t", "{% include 'other' %}", &ctx(&env)).unwrap_err();
        assert!(inc.to_string().contains("other"), "{inc}");
    }

    #[test]
    fn unknown_variable_names_template_and_variable() {
        let env = Default::default();
        let e = render("app.conf.tera", "line1\nport={{ port }}\n", &ctx(&env)).unwrap_err();
        assert!(e.to_string().contains("app.conf.tera"), "{e}");
        assert!(e.to_string().contains("port"), "{e}");
        assert!(e.to_string().contains("line 2:"), "{e}");
        let e = render(
            "web.yaml.tera",
            "a: {{ app }}\nb: {{ values.port }}\nc: {{ values.replicas | default(value=1) }}\n",
            &ctx(&env),
        )
        .unwrap_err();
        assert!(e.to_string().contains("line 2:"), "{e}");
    }
}
