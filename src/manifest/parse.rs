//! Walks the TOML tree (with spans) into a [`Manifest`], validating every key and value and
//! reporting the earliest problem as a located [`ManifestError`] with a fix hint.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::dialect::{self, TableLayout, Tables};
use super::error::{ManifestError, Position};
use super::glob;
use super::params::{self, Param};
use super::units::{DURATION_FORMS, SIZE_FORMS, parse_duration, parse_size};
use super::{Keep, Manifest, Policy, SandboxMode, Step, default_shell};

type Res<T> = Result<T, ManifestError>;

const TOP_KEYS: &[&str] = &["step", "pipeline", "task", "executor"];
const STEP_ONLY_KEYS: &[&str] = &[
    "script",
    "inputs",
    "input",
    "once",
    "gather",
    "keep",
    "gather_partial",
    "files",
    "min_interval",
    "params",
    "image",
    "slurm",
];
/// Keys valid both in `[[step]]` and as `[pipeline]` defaults.
const SHARED_KEYS: &[&str] = &[
    "name",
    "parallel",
    "timeout",
    "retries",
    "env",
    "shell",
    "sandbox",
    "network",
    "read_only",
    "read_write",
    "memory",
    "processes",
    "open_files",
    "cpu",
    "max_output",
];

/// Variables grit sets for every task; a manifest may not override them.
const RESERVED_ENV: &[&str] = &[
    "INPUT_FILE",
    "INPUT_DIR",
    "OUTPUT_DIR",
    "GRIT_STEP",
    "GRIT_TASK",
    "GRIT_RUN",
    "GRIT_INPUT_NAME",
    "GRIT_INPUT_HASH",
];

pub(super) struct Ctx<'a> {
    pub(super) text: &'a str,
    path: &'a Path,
}

impl Ctx<'_> {
    pub(super) fn err(
        &self,
        offset: usize,
        message: impl Into<String>,
        help: Option<String>,
    ) -> ManifestError {
        let Position { line, column } = Position::of(self.text, offset);
        ManifestError::Invalid {
            path: self.path.to_path_buf(),
            line,
            column,
            message: message.into(),
            help,
        }
    }

    /// Column-exact offset of the `char_index`-th character inside a string value, when the
    /// value is written without escapes; otherwise the start of the value.
    fn offset_in_string(&self, span: &Range<usize>, content: &str, char_index: usize) -> usize {
        let raw = self.text.get(span.clone()).unwrap_or("");
        let quote_len = if raw.starts_with("'''") || raw.starts_with("\"\"\"") {
            3
        } else {
            1
        };
        let inner = raw
            .get(quote_len..raw.len().saturating_sub(quote_len))
            .unwrap_or("");
        if inner == content {
            let byte = content
                .char_indices()
                .nth(char_index)
                .map_or(content.len(), |(b, _)| b);
            span.start + quote_len + byte
        } else {
            span.start
        }
    }
}

pub(super) fn type_name(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// A correct example for each key, used in type-error hints.
fn example(key: &str) -> &'static str {
    match key {
        "name" => "name = \"fetch\"",
        "script" => "script = \"echo hi > $OUTPUT_DIR/greeting\"",
        "inputs" => "inputs = [\"raw\", \"item_*\"]",
        "input" => "input = \"raw\"",
        "parallel" => "parallel = 4",
        "timeout" => "timeout = \"30s\"",
        "retries" => "retries = 2",
        "env" => "env = { KEY = \"value\" }",
        "once" => "once = true",
        "gather" => "gather = true",
        "keep" => "keep = \"latest\"",
        "gather_partial" => "gather_partial = true",
        "files" => "files = [\"tools/normalize.sh\", \"data/*.txt\"]",
        "params" => "params = [\"region\"]",
        "image" => "image = \"images/debian-rootfs\"",
        "shell" => "shell = [\"bash\", \"-ec\"]",
        "sandbox" => "sandbox = \"strict\"",
        "network" => "network = true",
        "read_only" => "read_only = [\"/srv/data\"]",
        "read_write" => "read_write = [\"/srv/cache\"]",
        "memory" => "memory = \"512M\"",
        "processes" => "processes = 64",
        "open_files" => "open_files = 1024",
        "cpu" => "cpu = \"10m\"",
        "max_output" => "max_output = \"1G\"",
        "time" => "time = \"30m\"",
        "mem" => "mem = \"2G\"",
        "cpus" => "cpus = 2",
        "max_jobs" => "max_jobs = 100",
        "group_target" => "group_target = \"30s\"",
        "sbatch_args" => "sbatch_args = [\"--qos=short\"]",
        "partition" => "partition = \"batch\"",
        "account" => "account = \"lab\"",
        _ => "",
    }
}

/// The closest of `candidates` to `key`, if it is close enough to be a likely typo.
pub(super) fn closest<'c>(key: &str, candidates: &[&'c str]) -> Option<&'c str> {
    let k = key.to_ascii_lowercase();
    candidates
        .iter()
        .map(|c| {
            (
                strsim::jaro_winkler(&k, c),
                strsim::damerau_levenshtein(&k, c),
                *c,
            )
        })
        .filter(|(jw, d, _)| *jw >= 0.85 || *d <= 2.min(k.len().saturating_sub(1)))
        .max_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1)))
        .map(|(_, _, c)| c)
}

pub(super) fn entries_in_order<'t, 'i>(
    table: &'t DeTable<'i>,
) -> Vec<(
    &'t Spanned<std::borrow::Cow<'i, str>>,
    &'t Spanned<DeValue<'i>>,
)> {
    let mut v: Vec<_> = table.iter().collect();
    v.sort_by_key(|(k, _)| k.span().start);
    v
}

/// Parse and validate a manifest. `dir` is the scripts' working directory.
/// `start_override` is task-pipeline's `-start NAME` (see [`dialect`]).
pub(crate) fn parse_manifest(
    text: &str,
    path: &Path,
    dir: PathBuf,
    start_override: Option<&str>,
) -> Res<Manifest> {
    let ctx = Ctx { text, path };
    let root = DeTable::parse(text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        let message = format!("invalid TOML: {}", e.message().trim_end());
        ctx.err(offset, message, syntax_help(e.message()))
    })?;
    let root = root.get_ref();

    // Parse every section, then report the earliest error so fixes go top to bottom.
    let mut errors: Vec<ManifestError> = Vec::new();
    let mut pipeline = Settings::default();
    let mut pipeline_name = None;
    let mut declared = Vec::new();
    let mut raw_steps: Vec<RawStep> = Vec::new();
    let mut executor = super::cluster::ExecutorConfig::default();
    let mut tables = Tables {
        step_at: None,
        task_at: None,
    };
    for (key, value) in entries_in_order(root) {
        let k: &str = key.get_ref();
        match k {
            "pipeline" => match parse_pipeline(&ctx, value) {
                Ok((s, name, params)) => {
                    pipeline = s;
                    pipeline_name = name;
                    declared = params;
                }
                Err(e) => errors.push(e),
            },
            "step" | "task" => match step_tables(&ctx, value) {
                Ok(found) => {
                    let first = if k == "step" {
                        &mut tables.step_at
                    } else {
                        &mut tables.task_at
                    };
                    first.get_or_insert(key.span().start);
                    for (offset, table) in found {
                        match parse_step(&ctx, offset, table, k) {
                            Ok(s) => raw_steps.push(s),
                            Err(e) => errors.push(e),
                        }
                    }
                }
                Err(e) => errors.push(e),
            },
            "executor" => match super::cluster::parse_executor(&ctx, value) {
                Ok(config) => executor = config,
                Err(e) => errors.push(e),
            },
            _ => errors.push(unknown_top_key(&ctx, k, key.span().start)),
        }
    }
    if let Some(e) = errors.into_iter().min_by_key(|e| e.position()) {
        return Err(e);
    }
    if raw_steps.is_empty() {
        return Err(ctx.err(
            0,
            "the manifest has no steps",
            Some("add a step: [[step]] with `name = \"...\"` and `script = \"...\"`".into()),
        ));
    }
    check_unique_names(&ctx, &raw_steps)?;
    let dialect = dialect::resolve(&ctx, &tables, &mut raw_steps, start_override)?;
    let layout = raw_steps
        .iter()
        .map(|raw| TableLayout {
            header: raw.header,
            name_at: raw.name_offset,
            start_key: raw.start.map(|(_, at)| at),
        })
        .collect();
    for raw in &raw_steps {
        params::check_step_list(&ctx, &raw.name, &raw.params, &declared)?;
    }
    for raw in &mut raw_steps {
        raw.file_hashes = resolve_files(&ctx, &dir, &raw.name, &raw.files)?;
        if let Some((spec, at)) = &raw.image {
            let sandbox = raw.settings.sandbox.or(pipeline.sandbox);
            raw.image_ref = Some(super::image::resolve(
                &ctx, &dir, &raw.name, spec, *at, sandbox,
            )?);
        }
    }
    let steps = raw_steps
        .into_iter()
        .map(|raw| raw.finish(text, &pipeline))
        .collect();
    Ok(Manifest {
        path: path.to_path_buf(),
        dir,
        text: text.to_string(),
        pipeline_name,
        steps,
        dialect,
        layout,
        params: declared,
        param_values: BTreeMap::new(),
        executor,
    })
}

fn syntax_help(message: &str) -> Option<String> {
    if message.contains("duplicate key") {
        Some("each key may appear once per table; remove or rename the repeated one".into())
    } else if message.contains("string values must be quoted") {
        Some(
            "quote text values, e.g. name = \"fetch\"; use ''' ... ''' for multi-line scripts"
                .into(),
        )
    } else {
        None
    }
}

fn unknown_top_key(ctx: &Ctx<'_>, key: &str, offset: usize) -> ManifestError {
    let help = match key {
        "csv" | "column" | "columns" => Some(format!(
            "grit has no [[{key}]] tables; load data with a source step or `grit ingest FILE`"
        )),
        "steps" => Some("write each step as a [[step]] table".into()),
        _ if SHARED_KEYS.contains(&key) || STEP_ONLY_KEYS.contains(&key) => Some(format!(
            "`{key}` belongs inside a [[step]] table{}",
            if SHARED_KEYS.contains(&key) { " or the [pipeline] table" } else { "" }
        )),
        _ => closest(key, TOP_KEYS)
            .map(|c| format!("did you mean `{c}`? A manifest has [[step]] tables and an optional [pipeline] table")),
    };
    ctx.err(
        offset,
        format!("unknown top-level key `{key}`"),
        help.or_else(|| {
            Some("a manifest has [[step]] tables and an optional [pipeline] table".into())
        }),
    )
}

/// The tables of `step`: `[[step]]` headers or an inline array of tables.
fn step_tables<'t, 'i>(
    ctx: &Ctx<'_>,
    value: &'t Spanned<DeValue<'i>>,
) -> Res<Vec<(usize, &'t DeTable<'i>)>> {
    let DeValue::Array(items) = value.get_ref() else {
        return Err(ctx.err(
            value.span().start,
            format!(
                "`step` must be an array of tables, not {}",
                type_name(value.get_ref())
            ),
            Some("start each step with a [[step]] header (double brackets)".into()),
        ));
    };
    let mut out = Vec::new();
    for item in items.iter() {
        match item.get_ref() {
            DeValue::Table(t) => out.push((item.span().start, t)),
            other => {
                return Err(ctx.err(
                    item.span().start,
                    format!("each step must be a table, not {}", type_name(other)),
                    Some("start each step with a [[step]] header (double brackets)".into()),
                ));
            }
        }
    }
    Ok(out)
}

/// Keys shared by `[[step]]` and `[pipeline]`; `None` means "not given".
#[derive(Default, Clone)]
struct Settings {
    parallel: Option<usize>,
    timeout: Option<Duration>,
    retries: Option<u32>,
    env: Option<BTreeMap<String, String>>,
    shell: Option<Vec<String>>,
    sandbox: Option<SandboxMode>,
    network: Option<bool>,
    read_only: Option<Vec<PathBuf>>,
    read_write: Option<Vec<PathBuf>>,
    memory: Option<u64>,
    processes: Option<u64>,
    open_files: Option<u64>,
    cpu: Option<Duration>,
    max_output: Option<u64>,
}

/// `[pipeline]`: the defaults, the name and the declared parameters.
fn parse_pipeline(
    ctx: &Ctx<'_>,
    value: &Spanned<DeValue<'_>>,
) -> Res<(Settings, Option<String>, Vec<Param>)> {
    let DeValue::Table(table) = value.get_ref() else {
        let help = if matches!(value.get_ref(), DeValue::Array(_)) {
            "write a single [pipeline] table (single brackets)"
        } else {
            "write a [pipeline] table, e.g. [pipeline] then name = \"nightly\""
        };
        return Err(ctx.err(
            value.span().start,
            format!(
                "`pipeline` must be a table, not {}",
                type_name(value.get_ref())
            ),
            Some(help.into()),
        ));
    };
    let mut settings = Settings::default();
    let mut name = None;
    let mut declared = Vec::new();
    for (key, v) in entries_in_order(table) {
        let k: &str = key.get_ref();
        if k == "params" {
            declared = params::parse_declarations(ctx, v)?;
        } else if k == "name" {
            let s = expect_str(ctx, k, v)?;
            if s.trim().is_empty() {
                return Err(ctx.err(
                    v.span().start,
                    "the pipeline name is empty",
                    Some(example(k).into()),
                ));
            }
            name = Some(s.to_string());
        } else if !settings.set(ctx, k, v)? {
            let help = if STEP_ONLY_KEYS.contains(&k) {
                format!(
                    "`{k}` belongs in a [[step]]; [pipeline] holds defaults for: {}",
                    SHARED_KEYS[1..].join(", ")
                )
            } else {
                match closest(k, &[SHARED_KEYS, &["params"]].concat()) {
                    Some(c) => format!("did you mean `{c}`?"),
                    None => format!("[pipeline] accepts: {}, params", SHARED_KEYS.join(", ")),
                }
            };
            return Err(ctx.err(
                key.span().start,
                format!("unknown key `{k}` in [pipeline]"),
                Some(help),
            ));
        }
    }
    Ok((settings, name, declared))
}

/// A step as written, before pipeline defaults.
pub(super) struct RawStep {
    pub(super) header: usize,
    pub(super) name: String,
    name_offset: usize,
    pub(super) script: String,
    pub(super) inputs: Vec<(String, usize)>,
    pub(super) once: bool,
    min_interval: Option<Duration>,
    /// task-pipeline's `start = BOOL` and the key's offset (see [`dialect`]).
    pub(super) start: Option<(bool, usize)>,
    gather: bool,
    gather_partial: bool,
    keep: Keep,
    /// `files` entries with their offsets, and what they resolved to.
    files: Vec<(String, usize)>,
    file_hashes: BTreeMap<String, String>,
    /// `params` names with their offsets (checked against the declarations once all are read).
    params: Vec<(String, usize)>,
    /// `image` as written with its offset, and the image it names.
    image: Option<(String, usize)>,
    image_ref: Option<crate::image::Image>,
    /// `slurm = { … }`: the step's Slurm job resources.
    slurm: super::cluster::SlurmResources,
    settings: Settings,
}

impl RawStep {
    fn finish(self, text: &str, pipeline: &Settings) -> Step {
        let s = self.settings;
        let p = pipeline;
        let mut env = p.env.clone().unwrap_or_default();
        env.extend(s.env.unwrap_or_default());
        let mut image = self.image_ref;
        Step {
            name: self.name,
            script: self.script,
            inputs: self.inputs.iter().map(|(n, _)| n.clone()).collect(),
            input_positions: self
                .inputs
                .iter()
                .map(|(_, o)| Position::of(text, *o))
                .collect(),
            parallel: s.parallel.or(p.parallel),
            timeout: s.timeout.or(p.timeout),
            retries: s.retries.or(p.retries).unwrap_or(0),
            env,
            once: self.once,
            min_interval: self.min_interval,
            gather: self.gather,
            gather_partial: self.gather_partial,
            files: self.files.into_iter().map(|(f, _)| f).collect(),
            file_hashes: self.file_hashes,
            keep: self.keep,
            params: self.params.into_iter().map(|(n, _)| n).collect(),
            param_values: BTreeMap::new(),
            shell: match (s.shell.or_else(|| p.shell.clone()), &mut image) {
                (Some(shell), _) => shell,
                // bash if the image has it, else `sh -ec`: its content decides, and its digest
                // is in the version.
                (None, Some(image)) => super::image::default_shell(image),
                (None, None) => default_shell(),
            },
            image,
            slurm: self.slurm,
            policy: Policy {
                sandbox: s.sandbox.or(p.sandbox).unwrap_or_default(),
                network: s.network.or(p.network).unwrap_or(false),
                read_only: s
                    .read_only
                    .or_else(|| p.read_only.clone())
                    .unwrap_or_default(),
                read_write: s
                    .read_write
                    .or_else(|| p.read_write.clone())
                    .unwrap_or_default(),
                memory: s.memory.or(p.memory),
                processes: s.processes.or(p.processes),
                open_files: s.open_files.or(p.open_files),
                cpu: s.cpu.or(p.cpu),
                max_output: s.max_output.or(p.max_output),
            },
            line: Position::of(text, self.header).line,
        }
    }
}

/// `table_kind` is `step`, or `task` for task-pipeline's first form (for messages).
fn parse_step(ctx: &Ctx<'_>, header: usize, table: &DeTable<'_>, table_kind: &str) -> Res<RawStep> {
    let mut name: Option<(String, usize)> = None;
    let mut script: Option<String> = None;
    let mut inputs: Option<(Vec<(String, usize)>, &'static str)> = None;
    let mut once: Option<(bool, usize)> = None;
    let mut start: Option<(bool, usize)> = None;
    let mut min_interval: Option<(Duration, usize)> = None;
    let mut gather: Option<(bool, usize)> = None;
    let mut keep: Option<(Keep, usize)> = None;
    let mut gather_partial: Option<(bool, usize)> = None;
    let mut image: Option<(String, usize)> = None;
    let mut files: Vec<(String, usize)> = Vec::new();
    let mut step_params: Vec<(String, usize)> = Vec::new();
    let mut slurm = super::cluster::SlurmResources::default();
    let mut settings = Settings::default();
    for (key, v) in entries_in_order(table) {
        let k: &str = key.get_ref();
        let at = v.span().start;
        match k {
            "name" => {
                let s = expect_str(ctx, k, v)?;
                check_step_name(ctx, s, at)?;
                name = Some((s.to_string(), at));
            }
            "script" => {
                let s = expect_str(ctx, k, v)?;
                if s.trim().is_empty() {
                    return Err(ctx.err(
                        at,
                        "the script is empty",
                        Some("write the shell commands to run, e.g. script = \"echo hi > $OUTPUT_DIR/greeting\"".into()),
                    ));
                }
                if s.contains('\0') {
                    return Err(ctx.err(at, "the script contains a NUL character", None));
                }
                script = Some(s.to_string());
            }
            "inputs" | "input" => {
                if let Some((_, first)) = inputs {
                    return Err(ctx.err(
                        key.span().start,
                        format!("both `input` and `inputs` are given (`{first}` came first)"),
                        Some(
                            "keep one: `inputs = [\"a\", \"b\"]` (or GRIT's `input = \"a\"`)"
                                .into(),
                        ),
                    ));
                }
                let list = if k == "inputs" {
                    parse_inputs(ctx, v)?
                } else {
                    let s = expect_str(ctx, k, v)?;
                    // GRIT compatibility: an empty `input` marks a source (seed) step.
                    if s.is_empty() {
                        Vec::new()
                    } else {
                        check_input(ctx, s, v.span())?;
                        vec![(s.to_string(), at)]
                    }
                };
                inputs = Some((list, if k == "inputs" { "inputs" } else { "input" }));
            }
            "once" => once = Some((expect_bool(ctx, k, v)?, key.span().start)),
            "start" => start = Some((expect_bool(ctx, k, v)?, key.span().start)),
            "min_interval" => min_interval = Some((duration(ctx, k, v)?, key.span().start)),
            "gather" => gather = Some((expect_bool(ctx, k, v)?, key.span().start)),
            "files" => files = parse_files(ctx, v)?,
            "params" => step_params = params::parse_step_list(ctx, v)?,
            "image" => image = Some((expect_str(ctx, k, v)?.to_string(), v.span().start)),
            "slurm" => slurm = super::cluster::parse_step_resources(ctx, v)?,
            "gather_partial" => {
                gather_partial = Some((expect_bool(ctx, k, v)?, key.span().start));
            }
            "keep" => {
                let s = expect_str(ctx, k, v)?;
                let Some(mode) = Keep::parse(s) else {
                    return Err(ctx.err(
                        v.span().start,
                        format!("`keep` must be \"latest\", \"run\" or \"all\", not \"{s}\""),
                        Some("keep = \"latest\" (the default: a source's newest output of each name is live), \"run\" (exactly its last run's outputs) or \"all\" (every output stays live)".into()),
                    ));
                };
                keep = Some((mode, key.span().start));
            }
            _ => {
                if !settings.set(ctx, k, v)? {
                    return Err(unknown_step_key(ctx, k, key.span().start, table_kind));
                }
            }
        }
    }
    let Some((name, name_offset)) = name else {
        return Err(ctx.err(
            header,
            "this step has no `name`",
            Some("add a unique name, e.g. name = \"fetch\"".into()),
        ));
    };
    let Some(script) = script else {
        return Err(ctx.err(
            header,
            format!("step `{name}` has no `script`"),
            Some(
                "add the shell commands to run, e.g. script = \"echo hi > $OUTPUT_DIR/greeting\""
                    .into(),
            ),
        ));
    };
    let inputs = inputs.map(|(l, _)| l).unwrap_or_default();
    if let Some((true, at)) = gather
        && inputs.is_empty()
    {
        return Err(ctx.err(
            at,
            format!("step `{name}` has `gather = true` but no inputs"),
            Some("list the names or globs to gather, e.g. inputs = [\"item_*\"]".into()),
        ));
    }
    if let Some((true, at)) = once
        && !inputs.is_empty()
    {
        return Err(ctx.err(
            at,
            format!("step `{name}` has `once = true` but it has inputs; only a source (no inputs) can run once"),
            Some("remove `once`: a step with inputs already runs once per input".into()),
        ));
    }
    if let Some((_, at)) = gather_partial
        && gather.is_none_or(|(g, _)| !g)
    {
        return Err(ctx.err(
            at,
            format!("step `{name}` has `gather_partial` but is not a gather step"),
            Some("add `gather = true`, or remove `gather_partial`: only a gather step runs over a set".into()),
        ));
    }
    if let Some((_, at)) = keep
        && !inputs.is_empty()
    {
        return Err(ctx.err(
            at,
            format!("step `{name}` has `keep` but it has inputs; only a source (no inputs) chooses which outputs stay live"),
            Some("remove `keep`: a derived output is live while its input is live and its step is current".into()),
        ));
    }
    let file_source = inputs.is_empty() && !files.is_empty();
    if let Some((_, at)) = min_interval {
        if !inputs.is_empty() {
            return Err(ctx.err(
                at,
                format!("step `{name}` has `min_interval` but it has inputs; only a source (no inputs) is gated by time"),
                Some("remove `min_interval`: a step with inputs runs when a new input arrives".into()),
            ));
        }
        if once.map_or(file_source, |(b, _)| b) {
            return Err(ctx.err(
                at,
                format!("step `{name}` has `min_interval` but runs once per version (`once`, or `files` on a source)"),
                Some("remove `min_interval`, or set once = false so that the source runs every run, at most once per interval".into()),
            ));
        }
    }
    Ok(RawStep {
        header,
        name,
        name_offset,
        script,
        inputs,
        // A source with `files` runs when one of them changes (they are in its version) and
        // never otherwise, unless `once = false` says to run it every time.
        once: once.map_or(file_source, |(b, _)| b),
        min_interval: min_interval.map(|(d, _)| d),
        start,
        gather: gather.is_some_and(|(b, _)| b),
        keep: keep.map(|(k, _)| k).unwrap_or_default(),
        gather_partial: gather_partial.is_some_and(|(b, _)| b),
        files,
        file_hashes: BTreeMap::new(),
        params: step_params,
        image,
        image_ref: None,
        slurm,
        settings,
    })
}

fn unknown_step_key(ctx: &Ctx<'_>, key: &str, offset: usize, table_kind: &str) -> ManifestError {
    let help = match key {
        "seed" => "grit has no `seed`: a step without `inputs` is a source".to_string(),
        "command" | "cmd" | "run" | "exec" | "sh" => "did you mean `script`?".to_string(),
        "depends_on" | "deps" | "dependencies" | "after" | "needs" => {
            "steps are connected by resource names: list the names the upstream step writes in `inputs`".to_string()
        }
        "resource" | "columns" | "column" => format!("grit has no `{key}`; use `inputs`"),
        _ => {
            let mut all: Vec<&str> = SHARED_KEYS.to_vec();
            all.extend(STEP_ONLY_KEYS);
            match closest(key, &all) {
                Some(c) => format!("did you mean `{c}`?"),
                None => format!("a step accepts: {}", all.join(", ")),
            }
        }
    };
    ctx.err(
        offset,
        format!("unknown key `{key}` in [[{table_kind}]]"),
        Some(help),
    )
}

fn check_step_name(ctx: &Ctx<'_>, name: &str, at: usize) -> Res<()> {
    if name.is_empty() {
        return Err(ctx.err(
            at,
            "the step name is empty",
            Some("name = \"fetch\"".into()),
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(ctx.err(
            at,
            format!("step name `{name}` contains {bad:?}; names may only use letters, digits, `_`, `.` and `-`"),
            Some(format!("e.g. name = \"{}\"", sanitize_name(name))),
        ));
    }
    Ok(())
}

fn sanitize_name(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    s
}

fn parse_inputs(ctx: &Ctx<'_>, v: &Spanned<DeValue<'_>>) -> Res<Vec<(String, usize)>> {
    let DeValue::Array(items) = v.get_ref() else {
        return Err(type_error(ctx, "inputs", "an array of strings", v));
    };
    let mut out = Vec::new();
    for item in items.iter() {
        let DeValue::String(s) = item.get_ref() else {
            return Err(ctx.err(
                item.span().start,
                format!(
                    "each entry of `inputs` must be a string, not {}",
                    type_name(item.get_ref())
                ),
                Some(example("inputs").into()),
            ));
        };
        check_input(ctx, s, item.span())?;
        out.push((s.to_string(), item.span().start));
    }
    if !out.is_empty() && out.iter().all(|(p, _)| glob::exclusion(p).is_some()) {
        return Err(ctx.err(
            v.span().start,
            "`inputs` only excludes (every entry starts with `!`), so it selects nothing",
            Some(
                "add what to select before the exclusions, e.g. inputs = [\"*.csv\", \"!tmp_*\"]"
                    .into(),
            ),
        ));
    }
    Ok(out)
}

fn parse_files(ctx: &Ctx<'_>, v: &Spanned<DeValue<'_>>) -> Res<Vec<(String, usize)>> {
    let DeValue::Array(items) = v.get_ref() else {
        return Err(type_error(ctx, "files", "an array of strings", v));
    };
    let mut out = Vec::new();
    for item in items.iter() {
        let DeValue::String(s) = item.get_ref() else {
            return Err(ctx.err(
                item.span().start,
                format!(
                    "each entry of `files` must be a string, not {}",
                    type_name(item.get_ref())
                ),
                Some(example("files").into()),
            ));
        };
        out.push((s.to_string(), item.span().start));
    }
    Ok(out)
}

/// Resolve a step's `files` under the manifest's directory: every entry must match a file.
fn resolve_files(
    ctx: &Ctx<'_>,
    dir: &Path,
    step: &str,
    entries: &[(String, usize)],
) -> Res<BTreeMap<String, String>> {
    let mut all = BTreeMap::new();
    for (pattern, at) in entries {
        match super::files::resolve(dir, pattern) {
            Ok(found) => all.extend(found),
            Err(super::files::FilesError::Outside) => {
                return Err(ctx.err(
                    *at,
                    format!("step `{step}`: `files` entry \"{pattern}\" is outside the manifest's directory"),
                    Some("name files relative to the manifest's directory, without `..`; use `read_only` for other paths".into()),
                ));
            }
            Err(super::files::FilesError::Missing) => {
                return Err(ctx.err(
                    *at,
                    format!(
                        "step `{step}`: `files` entry \"{pattern}\" matches no file in {}",
                        dir.display()
                    ),
                    Some("create the file, or fix the path: `files` are relative to the manifest's directory".into()),
                ));
            }
            Err(super::files::FilesError::Unreadable(file, e)) => {
                return Err(ctx.err(
                    *at,
                    format!("step `{step}`: cannot read `{file}` (from `files`): {e}"),
                    None,
                ));
            }
        }
    }
    Ok(all)
}

fn check_input(ctx: &Ctx<'_>, written: &str, span: Range<usize>) -> Res<()> {
    // `!glob` excludes: check the glob after the `!`; `shift` keeps columns on the written text.
    let (s, shift) = match glob::exclusion(written) {
        Some("") => {
            return Err(ctx.err(
                span.start,
                "an input exclusion `!` names nothing",
                Some("write the glob to leave out after it, e.g. \"!tmp_*\"; a name that starts with `!` is written \"[!]name\"".into()),
            ));
        }
        Some(rest) => (rest, 1),
        None => (written, 0),
    };
    if s.is_empty() {
        return Err(ctx.err(
            span.start,
            "an input name is empty",
            Some("remove it; a step with no inputs is a source".into()),
        ));
    }
    if let Some(i) = s.find(['/', '\0']) {
        let ci = s[..i].chars().count();
        return Err(ctx.err(
            ctx.offset_in_string(&span, written, ci + shift),
            format!(
                "input `{written}` can never match: resource names are flat file names without `/`"
            ),
            Some(
                "use the file name the upstream step writes in $OUTPUT_DIR, e.g. \"report.csv\""
                    .into(),
            ),
        ));
    }
    if let Err(bad) = glob::tokenize(s) {
        return Err(ctx.err(
            ctx.offset_in_string(&span, written, bad.char_index + shift),
            format!("invalid glob `{written}`: `[` is never closed"),
            Some("close the set, e.g. \"item_[0-9]\", or match a literal `[` with \"[[]\"".into()),
        ));
    }
    Ok(())
}

fn check_unique_names(ctx: &Ctx<'_>, steps: &[RawStep]) -> Res<()> {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for s in steps {
        if let Some(&first) = seen.get(s.name.as_str()) {
            let first_line = Position::of(ctx.text, first).line;
            return Err(ctx.err(
                s.name_offset,
                format!(
                    "duplicate step name `{}` (first used on line {first_line})",
                    s.name
                ),
                Some("give every step a unique name".into()),
            ));
        }
        seen.insert(&s.name, s.name_offset);
    }
    Ok(())
}

fn type_error(ctx: &Ctx<'_>, key: &str, want: &str, v: &Spanned<DeValue<'_>>) -> ManifestError {
    let found = v.get_ref();
    let help = match found {
        DeValue::String(s) if want == "an integer" && s.trim().parse::<i64>().is_ok() => {
            format!("remove the quotes: {key} = {}", s.trim())
        }
        DeValue::String(s) if want == "a boolean" && matches!(s.trim(), "true" | "false") => {
            format!("remove the quotes: {key} = {}", s.trim())
        }
        DeValue::String(_) if key == "shell" => format!("e.g. {}", example(key)),
        DeValue::String(s) if want == "an array of strings" => {
            format!("use an array: {key} = [\"{s}\"]")
        }
        _ => format!("e.g. {}", example(key)),
    };
    ctx.err(
        v.span().start,
        format!("`{key}` must be {want}, not {}", type_name(found)),
        Some(help),
    )
}

pub(super) fn expect_str<'v>(
    ctx: &Ctx<'_>,
    key: &str,
    v: &'v Spanned<DeValue<'_>>,
) -> Res<&'v str> {
    match v.get_ref() {
        DeValue::String(s) => Ok(s),
        _ => Err(type_error(ctx, key, "a string", v)),
    }
}

fn expect_bool(ctx: &Ctx<'_>, key: &str, v: &Spanned<DeValue<'_>>) -> Res<bool> {
    match v.get_ref() {
        DeValue::Boolean(b) => Ok(*b),
        _ => Err(type_error(ctx, key, "a boolean", v)),
    }
}

fn expect_int(ctx: &Ctx<'_>, key: &str, v: &Spanned<DeValue<'_>>) -> Res<i128> {
    match v.get_ref() {
        DeValue::Integer(i) => i128::from_str_radix(i.as_str(), i.radix()).map_err(|_| {
            ctx.err(
                v.span().start,
                format!("`{key}` is out of range"),
                Some(format!("e.g. {}", example(key))),
            )
        }),
        _ => Err(type_error(ctx, key, "an integer", v)),
    }
}

/// An integer within `min..=max`.
pub(super) fn int_in<T: TryFrom<i128>>(
    ctx: &Ctx<'_>,
    key: &str,
    v: &Spanned<DeValue<'_>>,
    min: i128,
    max: i128,
) -> Res<T> {
    let n = expect_int(ctx, key, v)?;
    if n < min {
        let what = if min == 0 { "0 or more" } else { "at least 1" };
        return Err(ctx.err(
            v.span().start,
            format!("`{key}` must be {what}, not {n}"),
            Some(format!("e.g. {}", example(key))),
        ));
    }
    if n > max {
        return Err(ctx.err(
            v.span().start,
            format!("`{key}` is too large ({n}; the limit is {max})"),
            None,
        ));
    }
    T::try_from(n).map_err(|_| ctx.err(v.span().start, format!("`{key}` is out of range"), None))
}

pub(super) fn duration(ctx: &Ctx<'_>, key: &str, v: &Spanned<DeValue<'_>>) -> Res<Duration> {
    let at = v.span().start;
    let s = match v.get_ref() {
        DeValue::String(s) => s,
        DeValue::Integer(i) => {
            return Err(ctx.err(
                at,
                format!("`{key}` needs a unit"),
                Some(format!(
                    "write {key} = \"{}s\" for seconds; accepted: {DURATION_FORMS}",
                    i.as_str()
                )),
            ));
        }
        _ => return Err(type_error(ctx, key, "a duration string", v)),
    };
    let d = parse_duration(s).map_err(|why| {
        ctx.err(
            at,
            format!("invalid `{key}`: {why}"),
            Some(format!("use {DURATION_FORMS}")),
        )
    })?;
    if d.is_zero() {
        return Err(ctx.err(
            at,
            format!("`{key}` must be greater than zero"),
            Some(format!(
                "remove `{key}` for no limit, or e.g. {}",
                example(key)
            )),
        ));
    }
    Ok(d)
}

pub(super) fn size(ctx: &Ctx<'_>, key: &str, v: &Spanned<DeValue<'_>>) -> Res<u64> {
    let at = v.span().start;
    let n = match v.get_ref() {
        DeValue::String(s) => parse_size(s).map_err(|why| {
            ctx.err(
                at,
                format!("invalid `{key}`: {why}"),
                Some(format!("use {SIZE_FORMS}")),
            )
        })?,
        DeValue::Integer(_) => int_in::<u64>(ctx, key, v, 0, i128::from(u64::MAX))?,
        _ => return Err(type_error(ctx, key, "a size (\"512M\" or a byte count)", v)),
    };
    if n == 0 {
        return Err(ctx.err(
            at,
            format!("`{key}` must be greater than zero"),
            Some(format!(
                "remove `{key}` for no limit, or e.g. {}",
                example(key)
            )),
        ));
    }
    Ok(n)
}

pub(super) fn string_list(
    ctx: &Ctx<'_>,
    key: &str,
    v: &Spanned<DeValue<'_>>,
) -> Res<Vec<(String, Range<usize>)>> {
    let DeValue::Array(items) = v.get_ref() else {
        return Err(type_error(ctx, key, "an array of strings", v));
    };
    let mut out = Vec::new();
    for item in items.iter() {
        let DeValue::String(s) = item.get_ref() else {
            return Err(ctx.err(
                item.span().start,
                format!(
                    "each entry of `{key}` must be a string, not {}",
                    type_name(item.get_ref())
                ),
                Some(format!("e.g. {}", example(key))),
            ));
        };
        if s.contains('\0') {
            return Err(ctx.err(
                item.span().start,
                format!("an entry of `{key}` contains a NUL character"),
                None,
            ));
        }
        out.push((s.to_string(), item.span()));
    }
    Ok(out)
}

fn abs_paths(ctx: &Ctx<'_>, key: &str, v: &Spanned<DeValue<'_>>) -> Res<Vec<PathBuf>> {
    let mut out = Vec::new();
    for (s, span) in string_list(ctx, key, v)? {
        if !s.starts_with('/') {
            return Err(ctx.err(
                span.start,
                format!("`{key}` paths must be absolute, not `{s}`"),
                Some("write the full path, e.g. \"/srv/data\" (the scripts' directory is always readable)".into()),
            ));
        }
        out.push(PathBuf::from(s));
    }
    Ok(out)
}

fn env_table(ctx: &Ctx<'_>, v: &Spanned<DeValue<'_>>) -> Res<BTreeMap<String, String>> {
    let DeValue::Table(t) = v.get_ref() else {
        return Err(type_error(ctx, "env", "a table of strings", v));
    };
    let mut out = BTreeMap::new();
    for (key, val) in entries_in_order(t) {
        let k: &str = key.get_ref();
        if k.is_empty() || k.contains(['=', '\0']) {
            return Err(ctx.err(
                key.span().start,
                format!("`{k}` is not a valid environment variable name"),
                Some("use letters, digits and `_`, e.g. API_URL".into()),
            ));
        }
        if params::is_reserved_env(k) {
            return Err(ctx.err(
                key.span().start,
                format!("`{k}` is reserved for run parameters and cannot be set in `env`"),
                Some("declare a parameter under [pipeline.params] and list it in the step's `params`, or choose another name".into()),
            ));
        }
        if RESERVED_ENV.contains(&k) {
            return Err(ctx.err(
                key.span().start,
                format!("`{k}` is set by grit for every task and cannot be overridden in `env`"),
                Some("choose another name".into()),
            ));
        }
        let DeValue::String(s) = val.get_ref() else {
            let shown = ctx.text.get(val.span()).unwrap_or("...").trim();
            return Err(ctx.err(
                val.span().start,
                format!(
                    "env value `{k}` must be a string, not {}",
                    type_name(val.get_ref())
                ),
                Some(format!(
                    "quote it: {k} = \"{}\"",
                    shown.replace('"', "\\\"")
                )),
            ));
        };
        if s.contains('\0') {
            return Err(ctx.err(
                val.span().start,
                format!("env value `{k}` contains a NUL character"),
                None,
            ));
        }
        out.insert(k.to_string(), s.to_string());
    }
    Ok(out)
}

impl Settings {
    /// Take `key = v` if it is a shared setting; `Ok(false)` if the key is not one.
    fn set(&mut self, ctx: &Ctx<'_>, key: &str, v: &Spanned<DeValue<'_>>) -> Res<bool> {
        const MAX: i128 = u32::MAX as i128;
        match key {
            "parallel" => self.parallel = Some(int_in(ctx, key, v, 1, MAX)?),
            "timeout" => self.timeout = Some(duration(ctx, key, v)?),
            "cpu" => self.cpu = Some(duration(ctx, key, v)?),
            "retries" => self.retries = Some(int_in(ctx, key, v, 0, MAX)?),
            "env" => self.env = Some(env_table(ctx, v)?),
            "shell" => {
                let list = string_list(ctx, key, v)?;
                if list.is_empty() {
                    return Err(ctx.err(
                        v.span().start,
                        "`shell` is empty",
                        Some("name a program and its flags, e.g. shell = [\"bash\", \"-ec\"]; the script is added last".into()),
                    ));
                }
                if let Some((_, span)) = list.iter().find(|(s, _)| s.is_empty()) {
                    return Err(ctx.err(
                        span.start,
                        "`shell` has an empty entry",
                        Some(example(key).into()),
                    ));
                }
                self.shell = Some(list.into_iter().map(|(s, _)| s).collect());
            }
            "sandbox" => {
                let s = expect_str(ctx, key, v)?;
                self.sandbox = Some(match s {
                    "strict" => SandboxMode::Strict,
                    "off" => SandboxMode::Off,
                    other => {
                        return Err(ctx.err(
                            v.span().start,
                            format!("`sandbox` must be \"strict\" or \"off\", not \"{other}\""),
                            Some("sandbox = \"strict\" (the default) or sandbox = \"off\"".into()),
                        ));
                    }
                });
            }
            "network" => self.network = Some(expect_bool(ctx, key, v)?),
            "read_only" => self.read_only = Some(abs_paths(ctx, key, v)?),
            "read_write" => self.read_write = Some(abs_paths(ctx, key, v)?),
            "memory" => self.memory = Some(size(ctx, key, v)?),
            "max_output" => self.max_output = Some(size(ctx, key, v)?),
            "processes" => self.processes = Some(int_in(ctx, key, v, 1, i128::from(u64::MAX))?),
            "open_files" => self.open_files = Some(int_in(ctx, key, v, 1, i128::from(u64::MAX))?),
            _ => return Ok(false),
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use crate::manifest::{Keep, Position, SandboxMode, parse};

    const FULL: &str = r#"
[pipeline]
name = "nightly"
parallel = 3
timeout = "10m"
retries = 1
env = { REGION = "eu", LEVEL = "pipeline" }
shell = ["bash", "-ec"]
network = true
read_only = ["/srv/ref"]
memory = "1G"
processes = 32
open_files = 256
cpu = "1h30m"
max_output = 1048576

[[step]]
name = "fetch"
once = true
sandbox = "off"
env.LEVEL = "step"
script = "curl -o $OUTPUT_DIR/raw https://example.org"

[[step]]
name = "split"
input = "raw"
parallel = 1
timeout = "500ms"
retries = 0
shell = ["sh", "-c"]
network = false
read_write = ["/var/cache/x"]
memory = 1024
script = "split -l 1 $INPUT_FILE $OUTPUT_DIR/part_"

[[step]]
name = "all"
inputs = ["part_*", "raw"]
gather = true
script = "cat $INPUT_DIR/* > $OUTPUT_DIR/all"
"#;

    #[test]
    fn pipeline_defaults_apply_and_steps_override() {
        let m = parse(FULL, Path::new("dir/full.toml"))
            .expect("valid")
            .manifest;
        assert_eq!(m.pipeline_name.as_deref(), Some("nightly"));
        assert_eq!(m.text, FULL);
        assert!(m.dir.is_absolute() && m.dir.ends_with("dir"));
        let [fetch, split, all] = &m.steps[..] else {
            panic!("three steps")
        };

        assert_eq!(fetch.line, 17);
        assert!(fetch.is_source() && fetch.once && !fetch.gather);
        assert_eq!(fetch.parallel, Some(3));
        assert_eq!(fetch.timeout, Some(Duration::from_secs(600)));
        assert_eq!(fetch.retries, 1);
        assert_eq!(fetch.env.get("REGION").map(String::as_str), Some("eu"));
        assert_eq!(fetch.env.get("LEVEL").map(String::as_str), Some("step"));
        assert_eq!(fetch.shell, ["bash", "-ec"]);
        assert_eq!(fetch.policy.sandbox, SandboxMode::Off);
        assert!(fetch.policy.network);
        assert_eq!(fetch.policy.read_only, [Path::new("/srv/ref")]);
        assert_eq!(fetch.policy.memory, Some(1 << 30));
        assert_eq!(fetch.policy.processes, Some(32));
        assert_eq!(fetch.policy.open_files, Some(256));
        assert_eq!(fetch.policy.cpu, Some(Duration::from_secs(5400)));
        assert_eq!(fetch.policy.max_output, Some(1 << 20));

        assert_eq!(split.inputs, ["raw"]);
        assert_eq!(
            split.input_positions,
            [Position {
                line: 26,
                column: 9
            }]
        );
        assert_eq!(split.parallel, Some(1));
        assert_eq!(split.timeout, Some(Duration::from_millis(500)));
        assert_eq!(split.retries, 0);
        assert_eq!(split.shell, ["sh", "-c"]);
        assert_eq!(split.env.get("LEVEL").map(String::as_str), Some("pipeline"));
        assert_eq!(split.policy.sandbox, SandboxMode::Strict);
        assert!(!split.policy.network);
        assert_eq!(split.policy.read_write, [Path::new("/var/cache/x")]);
        assert_eq!(split.policy.memory, Some(1024));

        assert!(all.gather && !all.is_source());
        assert_eq!(all.inputs, ["part_*", "raw"]);
        assert!(all.matches("part_aa") && all.matches("raw") && !all.matches("rawx"));
        assert_eq!(m.step("split").map(|s| s.line), Some(24));
        assert!(m.step("nope").is_none());
    }

    #[test]
    fn bare_steps_get_builtin_defaults() {
        let text = "[[step]]\nname = \"a\"\nscript = \"true\"\n";
        let m = parse(text, Path::new("m.toml")).expect("valid").manifest;
        let s = &m.steps[0];
        assert_eq!(m.pipeline_name, None);
        assert_eq!((s.parallel, s.timeout, s.retries), (None, None, 0));
        assert_eq!(s.shell, crate::manifest::default_shell());
        assert!(s.env.is_empty() && !s.once && !s.gather && s.is_source());
        assert_eq!(s.policy, crate::manifest::Policy::default());
        assert_eq!(s.line, 1);
    }

    #[test]
    fn keep_is_a_source_key_with_three_values_and_no_version_effect() {
        let step = |keep: &str| format!("[[step]]\nname = \"a\"\nscript = \"true\"\n{keep}");
        let parsed = |t: &str| parse(t, Path::new("m.toml")).map(|l| l.manifest.steps[0].clone());
        assert_eq!(parsed(&step("")).expect("valid").keep, Keep::Latest);
        for mode in [Keep::Latest, Keep::Run, Keep::All] {
            let s = parsed(&step(&format!("keep = \"{}\"\n", mode.as_str()))).expect("valid");
            assert_eq!(s.keep, mode);
            assert_eq!(
                s.version_hash(),
                parsed(&step("")).expect("valid").version_hash()
            );
        }
        let err = parsed(&step("keep = \"newest\"\n")).expect_err("unknown value");
        let text = err.to_string();
        assert!(
            text.contains("m.toml:4:8") && text.contains("\"latest\", \"run\" or \"all\""),
            "{text}"
        );
        let err =
            parsed("[[step]]\nname = \"a\"\ninputs = [\"x\"]\nkeep = \"all\"\nscript = \"true\"\n")
                .expect_err("keep on a derived step");
        assert!(
            err.to_string().contains("m.toml:4:1") && err.to_string().contains("only a source"),
            "{err}"
        );
        let err = parsed("[pipeline]\nkeep = \"all\"\n[[step]]\nname = \"a\"\nscript = \"true\"\n")
            .expect_err("keep is per source");
        assert!(err.to_string().contains("belongs in a [[step]]"), "{err}");
    }

    #[test]
    fn grit_empty_input_is_a_source_and_inline_steps_work() {
        let text = "step = [\n  { name = \"a\", input = \"\", script = \"true\" },\n  { name = \"b\", inputs = [], script = \"true\" },\n]\n";
        let m = parse(text, Path::new("m.toml")).expect("valid").manifest;
        assert!(m.steps.iter().all(|s| s.is_source()));
        assert_eq!(m.steps.iter().map(|s| s.line).collect::<Vec<_>>(), [2, 3]);
    }

    #[test]
    fn version_hash_follows_the_text_and_pipeline_env() {
        let a = "[[step]]\nname = \"a\"\nscript = \"echo 1\"\n";
        let renamed = "# moved\n[[step]]\nname = \"b\"\nparallel = 2\nscript = \"echo 1\"\n";
        let edited = "[[step]]\nname = \"a\"\nscript = \"echo 2\"\n";
        let with_env =
            "[pipeline]\nenv = { X = \"1\" }\n[[step]]\nname = \"a\"\nscript = \"echo 1\"\n";
        let h = |t: &str| {
            parse(t, Path::new("m.toml")).expect("valid").manifest.steps[0].version_hash()
        };
        assert_eq!(h(a), h(renamed));
        assert_ne!(h(a), h(edited));
        assert_ne!(h(a), h(with_env));
    }

    #[test]
    fn closest_suggestions() {
        use super::{SHARED_KEYS, STEP_ONLY_KEYS, closest};
        let mut all = SHARED_KEYS.to_vec();
        all.extend(STEP_ONLY_KEYS);
        for (typo, want) in [
            ("scrpt", Some("script")),
            ("inptus", Some("inputs")),
            ("retry", Some("retries")),
            ("Timeout", Some("timeout")),
            ("readonly", Some("read_only")),
            ("zzzzzz", None),
        ] {
            assert_eq!(closest(typo, &all), want, "{typo}");
        }
    }
}
