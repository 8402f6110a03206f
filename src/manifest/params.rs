//! Run parameters (issue 12): the `[pipeline.params]` declarations, a step's `params = [...]`
//! list, binding the values of one run, and the `GRIT_PARAM_<NAME>` variables a script sees.
//!
//! A parameter's value is part of the version of every step that lists it (see
//! [`super::version`]): binding a run's values changes those steps' version hashes and nothing
//! else. So runs with different values never share results, a value seen before finds its
//! tasks again (memoised, and its outputs live again, as a reverted script's do), and steps that
//! do not list a parameter keep their version whatever its value.

use std::collections::BTreeMap;

use toml::Spanned;
use toml::de::DeValue;

use super::error::ManifestError;
use super::parse::{Ctx, closest, entries_in_order, type_name};
use super::{Manifest, Step};

/// The prefix of the variable a step's script reads a parameter from.
pub const ENV_PREFIX: &str = "GRIT_PARAM_";

/// One declared parameter.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Param {
    pub name: String,
    /// `None`: the parameter is required, every run must give it a value.
    pub default: Option<String>,
    pub description: Option<String>,
    /// 1-based line and column of its declaration.
    #[serde(skip)]
    pub line: usize,
    #[serde(skip)]
    pub column: usize,
}

impl Param {
    /// The variable its value reaches scripts in: `GRIT_PARAM_` and the name upper-cased.
    pub fn env_name(&self) -> String {
        env_name(&self.name)
    }
}

fn env_name(name: &str) -> String {
    format!("{ENV_PREFIX}{}", name.to_ascii_uppercase())
}

/// Values for a run that do not fit the manifest's declarations (exit 2 from the CLI).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    #[error("unknown parameter `{name}`\n  help: {}", unknown_help(.suggestion.as_deref(), .declared))]
    Unknown {
        name: String,
        suggestion: Option<String>,
        declared: Vec<String>,
    },
    #[error("parameter `{name}` is required and has no value{}\n  help: give it one: --param {name}=VALUE (or declare a default: {name} = {{ default = \"...\" }})", .description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Missing {
        name: String,
        description: Option<String>,
    },
    #[error(
        "the value of parameter `{name}` contains a NUL character, which cannot reach a script's environment"
    )]
    Nul { name: String },
    #[error(
        "--param `{arg}`: expected NAME=VALUE\n  help: e.g. --param region=us (repeat --param for several)"
    )]
    Syntax { arg: String },
    #[error("--param {name} is given twice\n  help: give each parameter once")]
    Repeated { name: String },
}

fn unknown_help(suggestion: Option<&str>, declared: &[String]) -> String {
    let list = if declared.is_empty() {
        "the manifest declares none; declare it under [pipeline.params]".to_string()
    } else {
        format!("declared parameters: {}", declared.join(", "))
    };
    match suggestion {
        Some(s) => format!("did you mean `{s}`? {list}"),
        None => list,
    }
}

/// One `--param NAME=VALUE` argument.
pub fn parse_assignment(arg: &str) -> Result<(String, String), ParamError> {
    match arg.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
        _ => Err(ParamError::Syntax { arg: arg.into() }),
    }
}

/// `--param` arguments as a map; a name given twice is an error (which one was meant?).
pub fn parse_assignments(args: &[String]) -> Result<BTreeMap<String, String>, ParamError> {
    let mut out = BTreeMap::new();
    for arg in args {
        let (name, value) = parse_assignment(arg)?;
        if out.insert(name.clone(), value).is_some() {
            return Err(ParamError::Repeated { name });
        }
    }
    Ok(out)
}

impl Manifest {
    /// Fix the parameter values of one run: `given` overrides the declared defaults. Every step
    /// then carries the values of the parameters it lists, which become part of its version.
    /// Binding again starts from the defaults, so it is idempotent.
    pub fn bind_params(&mut self, given: &BTreeMap<String, String>) -> Result<(), ParamError> {
        self.param_values = self.effective_params(given)?;
        for step in &mut self.steps {
            step.param_values = step
                .params
                .iter()
                .filter_map(|n| Some((n.clone(), self.param_values.get(n)?.clone())))
                .collect();
        }
        Ok(())
    }

    /// The values a run given `given` would have: declared defaults overlaid with `given`.
    pub fn effective_params(
        &self,
        given: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, ParamError> {
        let declared: Vec<&str> = self.params.iter().map(|p| p.name.as_str()).collect();
        for (name, value) in given {
            if !declared.contains(&name.as_str()) {
                return Err(ParamError::Unknown {
                    name: name.clone(),
                    suggestion: closest(name, &declared).map(str::to_string),
                    declared: declared.iter().map(|s| s.to_string()).collect(),
                });
            }
            if value.contains('\0') {
                return Err(ParamError::Nul { name: name.clone() });
            }
        }
        let mut values = BTreeMap::new();
        for param in &self.params {
            match given.get(&param.name).or(param.default.as_ref()) {
                Some(v) => {
                    values.insert(param.name.clone(), v.clone());
                }
                None => {
                    return Err(ParamError::Missing {
                        name: param.name.clone(),
                        description: param.description.clone(),
                    });
                }
            }
        }
        Ok(values)
    }

    /// The declared parameter called `name`.
    pub fn param(&self, name: &str) -> Option<&Param> {
        self.params.iter().find(|p| p.name == name)
    }
}

impl Step {
    /// `GRIT_PARAM_<NAME>` for each parameter this step lists, with the bound value.
    pub fn param_env(&self) -> impl Iterator<Item = (String, String)> + '_ {
        self.param_values
            .iter()
            .map(|(name, value)| (env_name(name), value.clone()))
    }

    /// What the step version records of its parameters: each listed name and its bound value
    /// (`None` before binding, so an unbound step never shares a version with a bound one).
    pub(super) fn canonical_params(&self) -> BTreeMap<&str, Option<&str>> {
        self.params
            .iter()
            .map(|n| (n.as_str(), self.param_values.get(n).map(String::as_str)))
            .collect()
    }
}

type Res<T> = Result<T, ManifestError>;

const PARAM_KEYS: &[&str] = &["default", "description"];

/// `[pipeline.params]`: `name = { default = "...", description = "..." }`, or `name = "..."` for
/// a default alone. A parameter without a default is required at run time.
pub(super) fn parse_declarations(ctx: &Ctx<'_>, value: &Spanned<DeValue<'_>>) -> Res<Vec<Param>> {
    let DeValue::Table(table) = value.get_ref() else {
        return Err(ctx.err(
            value.span().start,
            format!(
                "`params` in [pipeline] must be a table, not {}",
                type_name(value.get_ref())
            ),
            Some(DECLARATION_EXAMPLE.into()),
        ));
    };
    let mut params: Vec<Param> = Vec::new();
    for (key, v) in entries_in_order(table) {
        let name: &str = key.get_ref();
        check_name(ctx, name, key.span().start)?;
        if let Some(other) = params.iter().find(|p| p.name.eq_ignore_ascii_case(name)) {
            return Err(ctx.err(
                key.span().start,
                format!(
                    "parameters `{}` and `{name}` would both reach scripts as {}",
                    other.name,
                    env_name(name)
                ),
                Some("rename one of them: names are upper-cased for the environment".into()),
            ));
        }
        let at = super::error::Position::of(ctx.text, key.span().start);
        let (default, description) = match v.get_ref() {
            DeValue::String(s) => (Some(string_value(ctx, name, "default", s, v)?), None),
            DeValue::Table(t) => {
                let mut default = None;
                let mut description = None;
                for (k, field) in entries_in_order(t) {
                    let slot = match k.get_ref().as_ref() {
                        "default" => &mut default,
                        "description" => &mut description,
                        other => {
                            let help = match closest(other, PARAM_KEYS) {
                                Some(c) => format!("did you mean `{c}`? {DECLARATION_EXAMPLE}"),
                                None => format!(
                                    "a parameter has `default` and `description`: {DECLARATION_EXAMPLE}"
                                ),
                            };
                            return Err(ctx.err(
                                k.span().start,
                                format!("unknown key `{other}` in parameter `{name}`"),
                                Some(help),
                            ));
                        }
                    };
                    let DeValue::String(s) = field.get_ref() else {
                        let shown = ctx.text.get(field.span()).unwrap_or("...").trim();
                        return Err(ctx.err(
                            field.span().start,
                            format!(
                                "`{}` of parameter `{name}` must be a string, not {}",
                                k.get_ref(),
                                type_name(field.get_ref())
                            ),
                            Some(format!(
                                "quote it: {} = \"{}\" (parameter values are text)",
                                k.get_ref(),
                                shown.replace('"', "\\\"")
                            )),
                        ));
                    };
                    *slot = Some(string_value(ctx, name, k.get_ref(), s, field)?);
                }
                (default, description)
            }
            other => {
                let shown = ctx.text.get(v.span()).unwrap_or("...").trim();
                return Err(ctx.err(
                    v.span().start,
                    format!(
                        "parameter `{name}` must be a table or a string, not {}",
                        type_name(other)
                    ),
                    Some(format!(
                        "{name} = {{ default = \"{}\", description = \"...\" }}",
                        shown.replace('"', "\\\"")
                    )),
                ));
            }
        };
        params.push(Param {
            name: name.to_string(),
            default,
            description,
            line: at.line,
            column: at.column,
        });
    }
    Ok(params)
}

const DECLARATION_EXAMPLE: &str = "e.g. [pipeline.params] then region = { default = \"eu\", description = \"where to fetch from\" }";

fn string_value(
    ctx: &Ctx<'_>,
    name: &str,
    key: &str,
    s: &str,
    at: &Spanned<DeValue<'_>>,
) -> Res<String> {
    if s.contains('\0') {
        return Err(ctx.err(
            at.span().start,
            format!("the {key} of parameter `{name}` contains a NUL character"),
            None,
        ));
    }
    Ok(s.to_string())
}

/// Parameter names become environment variable suffixes: ASCII letters, digits and `_`.
fn check_name(ctx: &Ctx<'_>, name: &str, at: usize) -> Res<()> {
    let valid = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if valid {
        return Ok(());
    }
    let fixed: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    Err(ctx.err(
        at,
        format!(
            "parameter name `{name}` cannot be part of an environment variable name (scripts read {ENV_PREFIX}<NAME>)"
        ),
        Some(format!(
            "use letters, digits and `_`, not starting with a digit, e.g. `{}`",
            if fixed.is_empty() || fixed.starts_with(|c: char| c.is_ascii_digit()) {
                format!("p_{fixed}")
            } else {
                fixed
            }
        )),
    ))
}

/// A step's `params = ["region", ...]`: the names with their offsets, checked against the
/// declarations later (they may come after the step in the file).
pub(super) fn parse_step_list(
    ctx: &Ctx<'_>,
    value: &Spanned<DeValue<'_>>,
) -> Res<Vec<(String, usize)>> {
    let DeValue::Array(items) = value.get_ref() else {
        let help = match value.get_ref() {
            DeValue::String(s) => format!("use an array: params = [\"{s}\"]"),
            _ => "params = [\"region\"]".to_string(),
        };
        return Err(ctx.err(
            value.span().start,
            format!(
                "`params` must be an array of parameter names, not {}",
                type_name(value.get_ref())
            ),
            Some(help),
        ));
    };
    let mut out: Vec<(String, usize)> = Vec::new();
    for item in items.iter() {
        let DeValue::String(s) = item.get_ref() else {
            return Err(ctx.err(
                item.span().start,
                format!(
                    "each entry of `params` must be a parameter name, not {}",
                    type_name(item.get_ref())
                ),
                Some("params = [\"region\"]".into()),
            ));
        };
        if out.iter().any(|(n, _)| n == s.as_ref()) {
            return Err(ctx.err(
                item.span().start,
                format!("parameter `{s}` is listed twice"),
                Some("list each parameter once".into()),
            ));
        }
        out.push((s.to_string(), item.span().start));
    }
    Ok(out)
}

/// Every name a step lists must be declared.
pub(super) fn check_step_list(
    ctx: &Ctx<'_>,
    step: &str,
    listed: &[(String, usize)],
    declared: &[Param],
) -> Res<()> {
    let names: Vec<&str> = declared.iter().map(|p| p.name.as_str()).collect();
    for (name, at) in listed {
        if names.contains(&name.as_str()) {
            continue;
        }
        let help = match (closest(name, &names), names.is_empty()) {
            (Some(c), _) => format!(
                "did you mean `{c}`? declared parameters: {}",
                names.join(", ")
            ),
            (None, true) => format!(
                "declare it: [pipeline.params] then {name} = {{ default = \"...\", description = \"...\" }}"
            ),
            (None, false) => format!(
                "declared parameters: {}; or declare it under [pipeline.params]",
                names.join(", ")
            ),
        };
        return Err(ctx.err(
            *at,
            format!(
                "step `{step}` reads parameter `{name}`, which [pipeline.params] does not declare"
            ),
            Some(help),
        ));
    }
    Ok(())
}

/// The declared parameters as a table (empty text when there are none), for `grit validate` and
/// `grit status -m`.
pub fn render(m: &Manifest) -> String {
    use std::fmt::Write;
    if m.params.is_empty() {
        return String::new();
    }
    let rows: Vec<[String; 4]> = m
        .params
        .iter()
        .map(|p| {
            let readers: Vec<&str> = m
                .steps
                .iter()
                .filter(|s| s.params.contains(&p.name))
                .map(|s| s.name.as_str())
                .collect();
            [
                p.name.clone(),
                p.default
                    .as_ref()
                    .map_or_else(|| "(required)".to_string(), |d| format!("{d:?}")),
                if readers.is_empty() {
                    "-".to_string()
                } else {
                    readers.join(",")
                },
                p.description.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let header = ["PARAMETER", "DEFAULT", "READ BY", "DESCRIPTION"];
    let width = |i: usize| {
        rows.iter()
            .map(|r| r[i].chars().count())
            .chain([header[i].len()])
            .max()
            .unwrap_or(0)
    };
    let (w0, w1, w2) = (width(0), width(1), width(2));
    let mut out = format!(
        "parameters: {} declared (scripts read GRIT_PARAM_<NAME>)\n",
        m.params.len()
    );
    for row in std::iter::once(header.map(str::to_string)).chain(rows) {
        let line = format!(
            "  {:<w0$}  {:<w1$}  {:<w2$}  {}",
            row[0], row[1], row[2], row[3]
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}

/// Warnings: a declared parameter no step lists (its value changes nothing), and a script that
/// names `$GRIT_PARAM_X` without listing `x` (it would see no such variable).
pub fn warnings(m: &Manifest) -> Vec<super::Warning> {
    let mut out = Vec::new();
    for param in &m.params {
        if !m.steps.iter().any(|s| s.params.contains(&param.name)) {
            out.push(super::Warning {
                path: m.path.clone(),
                line: param.line,
                column: 1,
                message: format!(
                    "parameter `{}` is declared but no step lists it in `params`: its value changes nothing\n  help: add params = [\"{}\"] to the steps that read {}",
                    param.name,
                    param.name,
                    param.env_name()
                ),
            });
        }
    }
    for step in &m.steps {
        let listed: Vec<String> = step.params.iter().map(|n| env_name(n)).collect();
        let mut named = env_names_in(&step.script);
        named.retain(|v| !listed.contains(v));
        named.dedup();
        for var in named {
            let suffix = &var[ENV_PREFIX.len()..];
            let name = m
                .params
                .iter()
                .find(|p| p.env_name() == var)
                .map_or_else(|| suffix.to_ascii_lowercase(), |p| p.name.clone());
            out.push(super::Warning {
                path: m.path.clone(),
                line: step.line,
                column: 1,
                message: format!(
                    "step `{}` uses ${var} but does not list `{name}` in `params`: its script does not see it\n  help: add params = [\"{name}\"] to the step{}",
                    step.name,
                    if m.param(&name).is_some() {
                        ""
                    } else {
                        " and declare it under [pipeline.params]"
                    }
                ),
            });
        }
    }
    out
}

/// The `GRIT_PARAM_*` variable names a script mentions, sorted.
fn env_names_in(script: &str) -> Vec<String> {
    let mut out: Vec<String> = script
        .match_indices(ENV_PREFIX)
        .filter(|(at, _)| {
            // Not the tail of a longer name (`MY_GRIT_PARAM_X`).
            !script[..*at].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        })
        .map(|(at, _)| {
            let rest = &script[at + ENV_PREFIX.len()..];
            let len = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            script[at..at + ENV_PREFIX.len() + len].to_string()
        })
        .filter(|v| v.len() > ENV_PREFIX.len())
        .collect();
    out.sort();
    out
}

/// A step's `env` may not set what parameters set.
pub(super) fn is_reserved_env(key: &str) -> bool {
    key.starts_with(ENV_PREFIX)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const BASE: &str = r#"
[pipeline.params]
region = { default = "eu", description = "where to fetch from" }
year = { description = "which year" }
mode = "fast"

[[step]]
name = "fetch"
params = ["region", "year"]
script = "echo $GRIT_PARAM_REGION > $OUTPUT_DIR/x"

[[step]]
name = "other"
script = "echo hi > $OUTPUT_DIR/y"
"#;

    fn manifest(text: &str) -> Result<Manifest, ManifestError> {
        super::super::parse(text, Path::new("m.toml")).map(|l| l.manifest)
    }

    fn error(text: &str) -> String {
        manifest(text).expect_err("invalid").to_string()
    }

    fn given(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn declarations_keep_defaults_descriptions_and_the_bare_form() {
        let m = manifest(BASE).expect("valid");
        let names: Vec<&str> = m.params.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["region", "year", "mode"]);
        assert_eq!(m.params[0].default.as_deref(), Some("eu"));
        assert_eq!(
            m.params[0].description.as_deref(),
            Some("where to fetch from")
        );
        assert_eq!(m.params[0].line, 3);
        assert_eq!(m.params[1].default, None, "no default: required");
        assert_eq!(m.params[2].default.as_deref(), Some("fast"));
        assert_eq!(m.steps[0].params, ["region", "year"]);
        assert!(m.steps[1].params.is_empty());
        assert_eq!(m.params[0].env_name(), "GRIT_PARAM_REGION");
    }

    #[test]
    fn binding_fills_defaults_and_refuses_unknown_and_missing_values() {
        let mut m = manifest(BASE).expect("valid");
        assert_eq!(
            m.bind_params(&given(&[])),
            Err(ParamError::Missing {
                name: "year".into(),
                description: Some("which year".into())
            })
        );
        let err = m
            .bind_params(&given(&[("regoin", "us"), ("year", "2024")]))
            .expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "unknown parameter `regoin`\n  help: did you mean `region`? declared parameters: region, year, mode"
        );
        m.bind_params(&given(&[("year", "2024")])).expect("bound");
        assert_eq!(
            m.param_values,
            given(&[("mode", "fast"), ("region", "eu"), ("year", "2024")])
        );
        assert_eq!(
            m.steps[0].param_values,
            given(&[("region", "eu"), ("year", "2024")])
        );
        assert!(m.steps[1].param_values.is_empty());
        let env: Vec<(String, String)> = m.steps[0].param_env().collect();
        assert_eq!(
            env,
            [
                ("GRIT_PARAM_REGION".to_string(), "eu".to_string()),
                ("GRIT_PARAM_YEAR".to_string(), "2024".to_string())
            ]
        );
    }

    #[test]
    fn values_change_the_version_of_the_steps_that_list_them_only() {
        let mut m = manifest(BASE).expect("valid");
        m.bind_params(&given(&[("year", "2024")])).expect("bound");
        let (fetch, other) = (m.steps[0].version_hash(), m.steps[1].version_hash());
        m.bind_params(&given(&[("year", "2024"), ("region", "us")]))
            .expect("bound");
        assert_ne!(m.steps[0].version_hash(), fetch);
        assert_eq!(m.steps[1].version_hash(), other);
        m.bind_params(&given(&[("year", "2024"), ("mode", "slow")]))
            .expect("bound");
        assert_eq!(m.steps[0].version_hash(), fetch, "back to the same values");
        assert_eq!(m.steps[1].version_hash(), other, "mode is read by no step");
    }

    #[test]
    fn undeclared_names_are_located_with_a_suggestion() {
        let text = BASE.replace(
            "params = [\"region\", \"year\"]",
            "params = [\"region\", \"yeer\"]",
        );
        assert_eq!(
            error(&text),
            "m.toml:9:21: error: step `fetch` reads parameter `yeer`, which [pipeline.params] does not declare\n  help: did you mean `year`? declared parameters: region, year, mode"
        );
        let none = "[[step]]\nname = \"a\"\nparams = [\"region\"]\nscript = \"true\"\n";
        assert!(error(none).starts_with("m.toml:3:11: error: step `a` reads parameter `region`"));
    }

    #[test]
    fn bad_declarations_are_located() {
        let cases = [
            (
                "[pipeline.params]\n\"my-region\" = \"eu\"\n",
                "2:1",
                "cannot be part of an environment variable name",
            ),
            (
                "[pipeline.params]\nregion = { default = 3 }\n",
                "2:22",
                "must be a string, not an integer",
            ),
            (
                "[pipeline.params]\nregion = { defualt = \"eu\" }\n",
                "2:12",
                "unknown key `defualt`",
            ),
            (
                "[pipeline.params]\nregion = 3\n",
                "2:10",
                "must be a table or a string",
            ),
            (
                "[pipeline.params]\nregion = \"eu\"\nREGION = \"us\"\n",
                "3:1",
                "would both reach scripts as GRIT_PARAM_REGION",
            ),
            (
                "[pipeline]\nparams = [\"region\"]\n",
                "2:10",
                "`params` in [pipeline] must be a table",
            ),
        ];
        for (head, at, message) in cases {
            let text = format!("{head}\n[[step]]\nname = \"a\"\nscript = \"true\"\n");
            let e = error(&text);
            assert!(e.starts_with(&format!("m.toml:{at}: error: ")), "{e}");
            assert!(e.contains(message), "{e}");
            assert!(e.contains("\n  help: "), "{e}");
        }
        let e = error("[[step]]\nname = \"a\"\nparams = \"region\"\nscript = \"true\"\n");
        assert!(e.contains("use an array: params = [\"region\"]"), "{e}");
        let e =
            error("[[step]]\nname = \"a\"\nenv = { GRIT_PARAM_X = \"1\" }\nscript = \"true\"\n");
        assert!(e.starts_with("m.toml:3:9: error: "), "{e}");
    }

    #[test]
    fn warns_about_unread_parameters_and_unlisted_variables() {
        let text = r#"
[pipeline.params]
region = "eu"
mode = "fast"

[[step]]
name = "a"
script = "echo $GRIT_PARAM_REGION ${GRIT_PARAM_YEAR:-} $MY_GRIT_PARAM_X > $OUTPUT_DIR/x"
"#;
        let m = manifest(text).expect("valid");
        let messages: Vec<String> = warnings(&m).iter().map(|w| w.to_string()).collect();
        assert_eq!(messages.len(), 4, "{messages:#?}");
        assert!(messages[0].starts_with(
            "m.toml:3:1: warning: parameter `region` is declared but no step lists it"
        ));
        assert!(messages[2].starts_with(
            "m.toml:6:1: warning: step `a` uses $GRIT_PARAM_REGION but does not list `region`"
        ));
        assert!(messages[3].contains("add params = [\"year\"] to the step and declare it"));
        assert_eq!(env_names_in("$GRIT_PARAM_ x"), Vec::<String>::new());
    }

    #[test]
    fn assignments_need_a_name_and_an_equals_sign_once_each() {
        assert_eq!(
            parse_assignments(&["a=1".into(), "b=x=y".into(), "c=".into()]),
            Ok(given(&[("a", "1"), ("b", "x=y"), ("c", "")]))
        );
        assert!(matches!(
            parse_assignment("region"),
            Err(ParamError::Syntax { .. })
        ));
        assert!(matches!(
            parse_assignment("=us"),
            Err(ParamError::Syntax { .. })
        ));
        assert_eq!(
            parse_assignments(&["a=1".into(), "a=2".into()]),
            Err(ParamError::Repeated { name: "a".into() })
        );
    }
}
