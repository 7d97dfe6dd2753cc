//! The toolbox expression language: [CEL] evaluated on one JSON message.
//!
//! An [`Expr`] is compiled once, when a flow is loaded, and evaluated per
//! message. Compiling checks the syntax and the function names, so a typo is
//! reported at load time with its column ([`ExprError`]); evaluating never
//! panics and reports what went wrong with the expression's text
//! ([`EvalError`]).
//!
//! # What an expression sees
//!
//! * Every top-level field of the message is a variable: `level != "debug"`,
//!   `status >= 500 && service == "api"`, `user.address.city` for nested
//!   objects.
//! * `this` is the whole message, for what a bare name cannot say: a field
//!   whose name is not an identifier (`this["user-agent"]`), a test for
//!   presence (`has(this.level)`), or a message that is not an object
//!   (`this.startsWith("GET")` on a string message).
//! * JSON maps to CEL types: `null` → `null`, booleans → `bool`, integers →
//!   `int` (or `uint` above `i64::MAX`), other numbers → `double`, strings →
//!   `string`, arrays → `list`, objects → `map`.
//!
//! A field that is not in the message is an error when it is read, not a
//! silent `null`: `level == "x"` on a message without `level` fails with
//! "field `level` is not in the message". Test for it with
//! `has(this.level)`, or read it with a default: `this.?level.orValue("info")`.
//!
//! [CEL]: https://github.com/google/cel-spec/blob/master/doc/langdef.md

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, RwLock};

use cel::common::ast::{EntryExpr, Expr as Node, IdedExpr, LiteralValue};
use cel::common::types::{
    CelBool, CelBytes, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelNull, CelOptional,
    CelString, CelType, CelUInt,
};
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;
use cel::{Context, Env, ExecutionError, ParseErrors, Program};
use regex::{Regex, RegexBuilder};
use serde_json::{Map, Number, Value};

/// The name bound to the whole message.
pub const THIS: &str = "this";

/// The longest expression accepted, in bytes.
pub const MAX_SOURCE_LEN: usize = 4096;

/// How deeply nested a message or a result may be (the same limit as
/// `serde_json`'s parser). Deeper values are an evaluation error.
pub const MAX_DEPTH: usize = 128;

/// How deeply brackets may nest: `(`, `[` and `{` together.
pub const MAX_BRACKETS: usize = 24;

/// How deep the syntax tree of an expression may be (operations inside
/// operations). It bounds the evaluator's recursion, which runs on the
/// caller's stack.
pub const MAX_NESTING: usize = 48;

/// Function namespaces (`math.greatest`), as opposed to a member call on a
/// field (`host.startsWith`).
const NAMESPACES: [&str; 3] = ["math", "strings", "optional"];

/// Stack of the thread that parses expressions.
const COMPILE_STACK: usize = 64 << 20;

/// The standard library plus the `strings` and `math` extensions, built once.
///
/// The `lists` extension is left out on purpose: its `lists.range(n)` builds a
/// list of any size, and expressions must stay bounded by the message size.
static ENV: LazyLock<Arc<Env>> = LazyLock::new(|| {
    let mut env = Env::stdlib();
    let strings = env.add_extension(cel::extensions::strings);
    let math = env.add_extension(cel::extensions::math);
    let regex = env.add_extension(regex_extension);
    debug_assert!(
        strings.is_ok() && math.is_ok() && regex.is_ok(),
        "CEL extensions clash"
    );
    Arc::new(env)
});

/// How many distinct `matches()` patterns are kept compiled. Patterns
/// written in expressions are compiled at load time; patterns computed per
/// message are compiled per call once the cache is full.
const MAX_CACHED_PATTERNS: usize = 1024;

/// Compiled size limit of one pattern.
const PATTERN_SIZE_LIMIT: usize = 1 << 20;

static PATTERNS: LazyLock<RwLock<HashMap<Box<str>, Regex>>> =
    LazyLock::new(|| RwLock::new(HashMap::new()));

/// `s.matches(re)` and `matches(s, re)`, as in CEL's standard library but
/// with each pattern compiled once (the `cel` crate compiles it per call).
fn regex_extension(env: &mut Env) -> Result<(), cel::DeclarationError> {
    cel::add_overload!(env, fn regex_matches: (CelString, CelString) -> Result<CelBool>,
        name = "matches", id = "matches")?;
    cel::add_member_overload!(env, fn regex_matches: (CelString, CelString) -> Result<CelBool>,
        name = "matches", id = "string.matches(string)")?;
    Ok(())
}

fn regex_matches(text: &CelString<'_>, pattern: &CelString<'_>) -> Result<CelBool, ExecutionError> {
    let is_match = with_pattern(pattern.inner(), |re| re.is_match(text.inner()))
        .map_err(|e| ExecutionError::function_error("matches", e))?;
    Ok(CelBool::from(is_match))
}

/// Runs `f` with the compiled `pattern`, compiling and caching it if needed.
fn with_pattern<R>(pattern: &str, f: impl FnOnce(&Regex) -> R) -> Result<R, String> {
    if let Ok(cache) = PATTERNS.read()
        && let Some(re) = cache.get(pattern)
    {
        return Ok(f(re));
    }
    let re = RegexBuilder::new(pattern)
        .size_limit(PATTERN_SIZE_LIMIT)
        .build()
        .map_err(|e| format!("`{pattern}` is not a valid regular expression: {e}"))?;
    let result = f(&re);
    if let Ok(mut cache) = PATTERNS.write()
        && cache.len() < MAX_CACHED_PATTERNS
    {
        cache.insert(Box::from(pattern), re);
    }
    Ok(result)
}

/// A compiled expression, cheap to clone and to share between threads.
#[derive(Clone)]
pub struct Expr {
    inner: Arc<Compiled>,
}

struct Compiled {
    source: Arc<str>,
    program: Program,
    /// Names the expression reads as variables: top-level fields, or `this`.
    variables: Box<[Box<str>]>,
    /// The root is a map literal with distinct constant string keys: built
    /// straight into a JSON object, entry by entry.
    object_literal: bool,
}

impl fmt::Debug for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Expr").field(&self.source()).finish()
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.source())
    }
}

impl Expr {
    /// Parses and checks `source`.
    ///
    /// Fails on a syntax error, an unknown function, a map literal that
    /// repeats a key, an empty expression, or one longer than
    /// [`MAX_SOURCE_LEN`]; the error has the byte offset and column of the
    /// problem and says how to fix it.
    ///
    /// ```
    /// use syncflow::toolbox::Expr;
    ///
    /// let keep = Expr::compile(r#"level != "debug""#).unwrap();
    /// assert!(keep.eval_bool(&serde_json::json!({"level": "info"})).unwrap());
    ///
    /// let err = Expr::compile(r#"level != "debug" &&"#).unwrap_err();
    /// assert_eq!(err.column(), 20);
    /// ```
    pub fn compile(source: &str) -> Result<Expr, ExprError> {
        if source.trim().is_empty() {
            return Err(ExprError::at(
                source,
                0,
                "the expression is empty: write one, such as `level != \"debug\"`".into(),
            ));
        }
        if source.len() > MAX_SOURCE_LEN {
            return Err(ExprError::at(
                source,
                floor_char_boundary(source, MAX_SOURCE_LEN),
                format!(
                    "the expression is {} bytes long, more than the {MAX_SOURCE_LEN} allowed: \
                     split it over several steps",
                    source.len()
                ),
            ));
        }
        check_brackets(source)?;
        // The generated parser recurses deeply per nesting level: parse on a
        // thread whose stack does not depend on the caller's (a tokio worker
        // has 2 MiB). This runs once per expression, at load time.
        std::thread::scope(|scope| {
            let parser = std::thread::Builder::new()
                .name("syncflow-expr-compile".into())
                .stack_size(COMPILE_STACK)
                .spawn_scoped(scope, || Expr::compile_here(source))
                .map_err(|e| {
                    ExprError::at(
                        source,
                        0,
                        format!("cannot start the expression compiler: {e}"),
                    )
                })?;
            parser.join().unwrap_or_else(|_| {
                Err(ExprError::at(
                    source,
                    0,
                    "the expression compiler failed (a bug in syncflow or cel: please report \
                     it with the expression)"
                        .into(),
                ))
            })
        })
    }

    fn compile_here(source: &str) -> Result<Expr, ExprError> {
        let program = ENV
            .compile(source)
            .map_err(|errors| ExprError::from_parse(source, &errors))?;

        let mut calls = Vec::new();
        collect_calls(program.expression(), &mut calls);
        for (name, qualified) in &calls {
            if !is_known_function(name, qualified.as_deref()) {
                let shown = match qualified.as_deref() {
                    Some(q) if NAMESPACES.iter().any(|ns| q.starts_with(&format!("{ns}."))) => q,
                    _ => name,
                };
                let offset = find_call(source, name).unwrap_or(0);
                return Err(ExprError::at(
                    source,
                    offset,
                    format!(
                        "unknown function `{shown}`: check the spelling; the functions \
                         available are listed in the toolbox reference (book: toolbox.md)"
                    ),
                ));
            }
        }
        check_patterns(source, &program)?;
        let depth = depth_of(program.expression());
        if depth > MAX_NESTING {
            return Err(ExprError::at(
                source,
                0,
                format!(
                    "the expression nests {depth} operations deep, more than the {MAX_NESTING} \
                     allowed: split it over several steps or simplify it"
                ),
            ));
        }
        let object_literal = check_object_literal(source, &program)?;

        let references = program.references();
        let mut variables: Vec<Box<str>> =
            references.variables().into_iter().map(Box::from).collect();
        variables.sort();

        Ok(Expr {
            inner: Arc::new(Compiled {
                source: Arc::from(source),
                program,
                variables: variables.into_boxed_slice(),
                object_literal,
            }),
        })
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.inner.source
    }

    /// The names the expression reads as variables (top-level fields, or
    /// [`THIS`]), sorted. Comprehension variables (`x` in `tags.all(x, ...)`)
    /// are listed too.
    pub fn variables(&self) -> impl Iterator<Item = &str> {
        self.inner.variables.iter().map(|name| &**name)
    }

    /// Evaluates the expression on `message` and requires a boolean.
    ///
    /// Any other result is an error naming the type it got
    /// ([`EvalErrorKind::NotBool`]).
    pub fn eval_bool(&self, message: &Value) -> Result<bool, EvalError> {
        self.with_context(message, |ctx, resolver| {
            let result = cel::Value::resolve_val(self.inner.program.expression(), ctx);
            let value = self.check(result, resolver, message)?;
            match value.downcast_ref::<CelBool>() {
                Some(b) => Ok(*b.inner()),
                None => Err(self.error(
                    EvalErrorKind::NotBool {
                        got: value.get_type().name().to_owned(),
                    },
                    format!(
                        "the result is {} where true or false is needed: compare it, \
                         e.g. `x == \"...\"`, `x > 0` or `has(this.x)`",
                        with_article(value.get_type().name())
                    ),
                )),
            }
        })
    }

    /// Evaluates the expression on `message` and returns its result as JSON.
    ///
    /// A CEL map becomes an object (keys that are not strings are written as
    /// strings), a list an array. Results JSON cannot hold (bytes, NaN or
    /// infinite numbers, types) are an error ([`EvalErrorKind::NotJson`]).
    pub fn eval(&self, message: &Value) -> Result<Value, EvalError> {
        self.with_context(message, |ctx, resolver| {
            if self.inner.object_literal
                && let Node::Map(map) = &self.inner.program.expression().expr
            {
                let mut out = Map::new();
                for entry in &map.entries {
                    if let EntryExpr::MapEntry(entry) = &entry.expr
                        && let Node::Literal(LiteralValue::String(key)) = &entry.key.expr
                    {
                        let result = cel::Value::resolve_val(&entry.value, ctx);
                        let value = self.check(result, resolver, message)?;
                        let json = to_json(&*value, 0).map_err(|e| self.not_json(e))?;
                        out.insert(key.inner().to_owned(), json);
                    }
                }
                return Ok(Value::Object(out));
            }
            let result = cel::Value::resolve_val(self.inner.program.expression(), ctx);
            let value = self.check(result, resolver, message)?;
            to_json(&*value, 0).map_err(|e| self.not_json(e))
        })
    }

    fn with_context<R>(
        &self,
        message: &Value,
        f: impl for<'a> FnOnce(&Context<'a, 'a>, &Resolver<'a>) -> R,
    ) -> R {
        let resolver = Resolver {
            root: message,
            too_deep: AtomicBool::new(false),
        };
        let root: &Context<'_, '_> = &ROOT;
        let mut ctx = root.new_inner_scope();
        ctx.set_variable_resolver(&resolver);
        f(&ctx, &resolver)
    }

    /// Turns an interpreter error into an [`EvalError`] that says which field
    /// or operation failed.
    fn check<'b, 'v>(
        &self,
        result: Result<CowVal<'b, 'v>, ExecutionError>,
        resolver: &Resolver<'_>,
        message: &Value,
    ) -> Result<CowVal<'b, 'v>, EvalError> {
        if resolver.too_deep.load(Ordering::Relaxed) {
            return Err(self.error(
                EvalErrorKind::Failed,
                format!("the message is nested deeper than {MAX_DEPTH} levels"),
            ));
        }
        result.map_err(|e| self.execution_error(e, message))
    }

    fn execution_error(&self, error: ExecutionError, message: &Value) -> EvalError {
        match error {
            ExecutionError::UndeclaredReference(name) => {
                let name = name.as_str();
                if name == THIS || !self.inner.variables.iter().any(|v| &**v == name) {
                    return self.error(EvalErrorKind::Failed, format!("unknown name `{name}`"));
                }
                if !message.is_object() {
                    return self.error(
                        EvalErrorKind::MissingField {
                            field: name.to_owned(),
                        },
                        format!(
                            "`{name}` is read as a field, but the message is {} and has no \
                             fields: use `this` for the whole message",
                            json_type_article(message)
                        ),
                    );
                }
                self.error(
                    EvalErrorKind::MissingField {
                        field: name.to_owned(),
                    },
                    format!(
                        "field `{name}` is not in the message: test for it with \
                         `has(this.{name})` or give a default with \
                         `this.?{name}.orValue(...)`"
                    ),
                )
            }
            ExecutionError::NoSuchKey(key) => {
                let parent = parent_of(&self.inner.source, &key).unwrap_or("x");
                let shown = if parent == "x" {
                    "the map it is read from".to_owned()
                } else {
                    format!("`{parent}`")
                };
                self.error(
                    EvalErrorKind::MissingField {
                        field: key.as_str().to_owned(),
                    },
                    format!(
                        "key `{key}` is not in {shown}: test for it with \
                         `has({parent}.{key})`, or read it with a default, \
                         `{parent}.?{key}.orValue(...)`"
                    ),
                )
            }
            ExecutionError::NoSuchOverload(overload) => {
                let function = overload.function();
                let types = overload.argument_types();
                let message = match operator_symbol(function) {
                    "." | "[]" => format!(
                        "cannot read a field or an item of {}: only maps (objects) and lists \
                         have them; check the path",
                        with_article(types.first().map_or("value", String::as_str))
                    ),
                    op if function.starts_with(|c: char| c.is_ascii_alphabetic()) => format!(
                        "`{op}` does not accept ({}): check the argument types in the toolbox \
                         reference, or convert with int(x), double(x) or string(x)",
                        types.join(", ")
                    ),
                    op => format!(
                        "`{op}` does not apply to ({}): use values of matching types, or \
                         convert with int(x), double(x) or string(x)",
                        types.join(", ")
                    ),
                };
                self.error(EvalErrorKind::TypeMismatch, message)
            }
            ExecutionError::UnsupportedBinaryOperator(op, a, b) => self.error(
                EvalErrorKind::TypeMismatch,
                format!(
                    "`{}` does not apply to ({}, {}): use values of matching types, or convert \
                     with int(x), double(x) or string(x)",
                    binary_symbol(op),
                    cel_value_type(&a),
                    cel_value_type(&b)
                ),
            ),
            ExecutionError::ValuesNotComparable(a, b) => self.error(
                EvalErrorKind::TypeMismatch,
                format!(
                    "{} cannot be compared with {}: convert one of them first",
                    with_article(cel_value_type(&a)),
                    with_article(cel_value_type(&b))
                ),
            ),
            ExecutionError::DivisionByZero(_) | ExecutionError::RemainderByZero(_) => self.error(
                EvalErrorKind::Failed,
                "division by zero: guard it, e.g. `d != 0 ? n / d : 0`".into(),
            ),
            ExecutionError::IndexOutOfBounds(index) => self.error(
                EvalErrorKind::Failed,
                format!(
                    "index {} is out of range: check size(list) first",
                    cel_display(&index)
                ),
            ),
            other => self.error(EvalErrorKind::Failed, other.to_string()),
        }
    }

    fn not_json(&self, reason: String) -> EvalError {
        self.error(EvalErrorKind::NotJson, reason)
    }

    fn error(&self, kind: EvalErrorKind, message: String) -> EvalError {
        EvalError {
            expr: Arc::clone(&self.inner.source),
            kind,
            message,
        }
    }
}

/// The root scope every evaluation starts from: the functions, no variables.
static ROOT: LazyLock<Context<'static, 'static>> =
    LazyLock::new(|| Context::with_env(Arc::clone(&ENV)));

/// An expression that does not compile: where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExprError {
    source: String,
    offset: usize,
    line: usize,
    column: usize,
    message: String,
}

impl ExprError {
    fn at(source: &str, offset: usize, message: String) -> ExprError {
        let offset = offset.min(source.len());
        let before = &source[..floor_char_boundary(source, offset)];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        ExprError {
            source: source.to_owned(),
            offset,
            line,
            column,
            message,
        }
    }

    fn from_parse(source: &str, errors: &ParseErrors) -> ExprError {
        let Some(first) = errors.errors.first() else {
            return ExprError::at(source, 0, "the expression does not parse".into());
        };
        let (line, column) = first.pos;
        let offset = offset_of(source, line, column);
        let message = explain_parse_error(&first.msg, source, offset);
        ExprError::at(source, offset, message)
    }

    /// The expression's text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Byte offset of the problem in [`ExprError::source`].
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Line of the problem, from 1.
    pub fn line(&self) -> usize {
        self.line
    }

    /// Column of the problem, from 1, counted in characters.
    pub fn column(&self) -> usize {
        self.column
    }

    /// What is wrong and what to do, without the position.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ExprError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 1 {
            write!(f, "line {} ", self.line)?;
        }
        write!(f, "column {}: {}", self.column, self.message)?;
        if let Some(text) = self.source.lines().nth(self.line - 1) {
            write!(f, "\n  | {text}\n  | {:>width$}", "^", width = self.column)?;
        }
        Ok(())
    }
}

impl std::error::Error for ExprError {}

/// What kind of evaluation error an [`EvalError`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EvalErrorKind {
    /// A field the expression reads is not in the message.
    MissingField {
        /// The field (or nested key) that is missing.
        field: String,
    },
    /// A condition evaluated to something other than a boolean.
    NotBool {
        /// The CEL type it evaluated to (`string`, `int`, `map`, ...).
        got: String,
    },
    /// An operator or function was applied to values of the wrong types.
    TypeMismatch,
    /// The result cannot be written as JSON.
    NotJson,
    /// Anything else: division by zero, overflow, index out of range, ...
    Failed,
}

/// An expression that failed on one message.
#[derive(Debug, Clone)]
pub struct EvalError {
    expr: Arc<str>,
    kind: EvalErrorKind,
    message: String,
}

impl EvalError {
    /// The expression that failed, as written.
    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> &EvalErrorKind {
        &self.kind
    }

    /// What went wrong and what to do, without the expression.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for EvalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "expression `{}`: {}", self.expr, self.message)
    }
}

impl std::error::Error for EvalError {}

/// Binds the message's top-level fields and `this`, converting only what the
/// expression reads. Strings are borrowed from the message, not copied.
struct Resolver<'a> {
    root: &'a Value,
    too_deep: AtomicBool,
}

impl VariableResolver for Resolver<'_> {
    fn resolve<'b>(&'b self, name: &str) -> Option<CowVal<'b, 'b>> {
        let value = if name == THIS {
            self.root
        } else if name.contains('.') {
            // The interpreter tries `a.b` as one qualified name before `a`
            // then `.b`: a top-level key "a.b" must not shadow the path.
            return None;
        } else {
            self.root.as_object()?.get(name)?
        };
        match to_val(value, 0) {
            Some(val) => Some(CowVal::from(val)),
            None => {
                self.too_deep.store(true, Ordering::Relaxed);
                None
            }
        }
    }
}

/// JSON → CEL, borrowing strings and keys. `None` when nested too deeply.
fn to_val(value: &Value, depth: usize) -> Option<Box<dyn Val + '_>> {
    if depth > MAX_DEPTH {
        return None;
    }
    Some(match value {
        Value::Null => Box::new(CelNull),
        Value::Bool(b) => Box::new(CelBool::from(*b)),
        Value::Number(n) => number_to_val(n),
        Value::String(s) => Box::new(CelString::from(s.as_str())),
        Value::Array(items) => {
            let mut list = Vec::with_capacity(items.len());
            for item in items {
                list.push(to_val(item, depth + 1)?);
            }
            Box::new(CelList::from(list))
        }
        Value::Object(fields) => {
            let mut map = HashMap::with_capacity(fields.len());
            for (key, item) in fields {
                map.insert(CelMapKey::from(key.as_str()), to_val(item, depth + 1)?);
            }
            Box::new(CelMap::from(map))
        }
    })
}

fn number_to_val(n: &Number) -> Box<dyn Val + 'static> {
    if let Some(i) = n.as_i64() {
        Box::new(CelInt::from(i))
    } else if let Some(u) = n.as_u64() {
        Box::new(CelUInt::from(u))
    } else {
        Box::new(CelDouble::from(n.as_f64().unwrap_or(f64::NAN)))
    }
}

/// CEL → JSON. The error says what could not be converted.
fn to_json(val: &dyn Val, depth: usize) -> Result<Value, String> {
    if depth > MAX_DEPTH {
        return Err(format!(
            "the result is nested deeper than {MAX_DEPTH} levels"
        ));
    }
    if let Some(s) = val.downcast_ref::<CelString>() {
        return Ok(Value::String(s.inner().to_owned()));
    }
    if let Some(b) = val.downcast_ref::<CelBool>() {
        return Ok(Value::Bool(*b.inner()));
    }
    if let Some(i) = val.downcast_ref::<CelInt>() {
        return Ok(Value::from(*i.inner()));
    }
    if let Some(u) = val.downcast_ref::<CelUInt>() {
        return Ok(Value::from(*u.inner()));
    }
    if let Some(d) = val.downcast_ref::<CelDouble>() {
        return Number::from_f64(*d.inner())
            .map(Value::Number)
            .ok_or_else(|| {
                format!(
                    "the result {} is not a number JSON can hold: guard against it, \
                 e.g. with math.isFinite(x)",
                    d.inner()
                )
            });
    }
    if val.downcast_ref::<CelNull>().is_some() {
        return Ok(Value::Null);
    }
    if let Some(list) = val.downcast_ref::<CelList>() {
        let items = list.inner();
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            out.push(to_json(item.as_ref(), depth + 1)?);
        }
        return Ok(Value::Array(out));
    }
    if let Some(map) = val.downcast_ref::<CelMap>() {
        let mut out = Map::new();
        for (key, item) in map.inner() {
            let key = match key {
                CelMapKey::String(s) => s.inner().to_owned(),
                CelMapKey::Int(i) => i.inner().to_string(),
                CelMapKey::UInt(u) => u.inner().to_string(),
                CelMapKey::Bool(b) => b.inner().to_string(),
            };
            out.insert(key, to_json(item.as_ref(), depth + 1)?);
        }
        return Ok(Value::Object(out));
    }
    if let Some(optional) = val.downcast_ref::<CelOptional>() {
        return match optional.option() {
            Some(inner) => to_json(inner, depth + 1),
            None => Ok(Value::Null),
        };
    }
    if val.downcast_ref::<CelBytes>().is_some() {
        return Err("the result is bytes, which JSON cannot hold: convert with string(x)".into());
    }
    if let Some(t) = val.downcast_ref::<CelType>() {
        return Err(format!(
            "the result is the type `{}`, which JSON cannot hold: convert with string(type(x))",
            t.name()
        ));
    }
    Err(format!(
        "the result is a {}, which JSON cannot hold",
        val.get_type().name()
    ))
}

/// Every call in the tree: its function name and, for `a.b.f(...)` whose
/// target is a plain name, the qualified name `a.b.f`.
fn collect_calls(expr: &IdedExpr, out: &mut Vec<(String, Option<String>)>) {
    match &expr.expr {
        Node::Call(call) => {
            let qualified = call
                .target
                .as_deref()
                .and_then(|t| qualified_name(&t.expr))
                .map(|prefix| format!("{prefix}.{}", call.func_name));
            out.push((call.func_name.clone(), qualified));
            if let Some(target) = &call.target {
                collect_calls(target, out);
            }
            for arg in &call.args {
                collect_calls(arg, out);
            }
        }
        Node::Comprehension(c) => {
            for e in [
                &c.iter_range,
                &c.accu_init,
                &c.loop_cond,
                &c.loop_step,
                &c.result,
            ] {
                collect_calls(e, out);
            }
        }
        Node::List(list) => list.elements.iter().for_each(|e| collect_calls(e, out)),
        Node::Map(map) => map.entries.iter().for_each(|e| collect_entry(e, out)),
        Node::Struct(s) => s.entries.iter().for_each(|e| collect_entry(e, out)),
        Node::Select(select) => collect_calls(&select.operand, out),
        Node::Ident(_) | Node::Literal(_) | Node::Unspecified => {}
    }
}

fn collect_entry(entry: &cel::common::ast::IdedEntryExpr, out: &mut Vec<(String, Option<String>)>) {
    match &entry.expr {
        EntryExpr::MapEntry(e) => {
            collect_calls(&e.key, out);
            collect_calls(&e.value, out);
        }
        EntryExpr::StructField(f) => collect_calls(&f.value, out),
    }
}

fn qualified_name(expr: &Node) -> Option<String> {
    match expr {
        Node::Ident(name) => Some(name.clone()),
        Node::Select(select) if !select.test => Some(format!(
            "{}.{}",
            qualified_name(&select.operand.expr)?,
            select.field
        )),
        _ => None,
    }
}

/// Whether the environment declares `name` (or `qualified`, for a namespaced
/// call such as `math.greatest`). Operators (`_+_`, `@in`, ...) are built in.
fn is_known_function(name: &str, qualified: Option<&str>) -> bool {
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return true;
    }
    // `Context::add_function` refuses exactly the names the environment
    // declares as global or member overloads: a probe that needs no access to
    // the environment's private tables.
    let declared = |candidate: &str| {
        let mut probe = Context::with_env(Arc::clone(&ENV));
        probe.add_function(candidate, || 0i64).is_err()
    };
    declared(name) || qualified.is_some_and(declared)
}

/// Checks a map literal at the root for repeated keys (a load-time error
/// rather than a per-message one) and says whether it can be built straight
/// into a JSON object.
fn check_object_literal(source: &str, program: &Program) -> Result<bool, ExprError> {
    let Node::Map(map) = &program.expression().expr else {
        return Ok(false);
    };
    let mut seen: Vec<&str> = Vec::with_capacity(map.entries.len());
    let mut all_constant = true;
    for entry in &map.entries {
        let EntryExpr::MapEntry(entry) = &entry.expr else {
            return Ok(false);
        };
        match &entry.key.expr {
            Node::Literal(LiteralValue::String(key)) if !entry.optional => {
                let key = key.inner();
                if seen.contains(&key) {
                    // The parser's offsets count characters.
                    let at = program
                        .source_info()
                        .offset_for(entry.key.id)
                        .and_then(|(start, _)| source.char_indices().nth(start as usize))
                        .map_or(0, |(at, _)| at);
                    return Err(ExprError::at(
                        source,
                        at,
                        format!("key \"{key}\" appears twice in the object: keep one"),
                    ));
                }
                seen.push(key);
            }
            _ => all_constant = false,
        }
    }
    Ok(all_constant)
}

/// Compiles the literal patterns of `matches()` calls: an invalid one is a
/// load-time error, and valid ones are never compiled again.
fn check_patterns(source: &str, program: &Program) -> Result<(), ExprError> {
    let mut patterns = Vec::new();
    collect_patterns(program.expression(), &mut patterns);
    for (pattern, id) in patterns {
        if let Err(message) = with_pattern(pattern, |_| ()) {
            let at = program
                .source_info()
                .offset_for(id)
                .and_then(|(start, _)| source.char_indices().nth(start as usize))
                .map_or(0, |(at, _)| at);
            return Err(ExprError::at(source, at, message));
        }
    }
    Ok(())
}

fn collect_patterns<'e>(expr: &'e IdedExpr, out: &mut Vec<(&'e str, u64)>) {
    if let Node::Call(call) = &expr.expr
        && call.func_name == "matches"
    {
        let pattern = if call.target.is_some() {
            call.args.first()
        } else {
            call.args.get(1)
        };
        if let Some(arg) = pattern
            && let Node::Literal(LiteralValue::String(text)) = &arg.expr
        {
            out.push((text.inner(), arg.id));
        }
    }
    match &expr.expr {
        Node::Call(call) => {
            call.target.iter().for_each(|t| collect_patterns(t, out));
            call.args.iter().for_each(|a| collect_patterns(a, out));
        }
        Node::Comprehension(c) => {
            for e in [
                &c.iter_range,
                &c.accu_init,
                &c.loop_cond,
                &c.loop_step,
                &c.result,
            ] {
                collect_patterns(e, out);
            }
        }
        Node::List(list) => list.elements.iter().for_each(|e| collect_patterns(e, out)),
        Node::Map(map) => map.entries.iter().for_each(|e| match &e.expr {
            EntryExpr::MapEntry(entry) => {
                collect_patterns(&entry.key, out);
                collect_patterns(&entry.value, out);
            }
            EntryExpr::StructField(field) => collect_patterns(&field.value, out),
        }),
        Node::Struct(s) => s.entries.iter().for_each(|e| match &e.expr {
            EntryExpr::MapEntry(entry) => collect_patterns(&entry.value, out),
            EntryExpr::StructField(field) => collect_patterns(&field.value, out),
        }),
        Node::Select(select) => collect_patterns(&select.operand, out),
        Node::Ident(_) | Node::Literal(_) | Node::Unspecified => {}
    }
}

/// Depth of the syntax tree.
fn depth_of(expr: &IdedExpr) -> usize {
    let children = match &expr.expr {
        Node::Call(call) => call
            .target
            .iter()
            .map(|t| depth_of(t))
            .chain(call.args.iter().map(depth_of))
            .max(),
        Node::Comprehension(c) => [
            &c.iter_range,
            &c.accu_init,
            &c.loop_cond,
            &c.loop_step,
            &c.result,
        ]
        .into_iter()
        .map(depth_of)
        .max(),
        Node::List(list) => list.elements.iter().map(depth_of).max(),
        Node::Map(map) => map.entries.iter().map(entry_depth).max(),
        Node::Struct(s) => s.entries.iter().map(entry_depth).max(),
        Node::Select(select) => Some(depth_of(&select.operand)),
        Node::Ident(_) | Node::Literal(_) | Node::Unspecified => None,
    };
    1 + children.unwrap_or(0)
}

fn entry_depth(entry: &cel::common::ast::IdedEntryExpr) -> usize {
    match &entry.expr {
        EntryExpr::MapEntry(e) => depth_of(&e.key).max(depth_of(&e.value)),
        EntryExpr::StructField(f) => depth_of(&f.value),
    }
}

/// Rejects brackets nested more than [`MAX_BRACKETS`] deep before the parser
/// sees them, skipping string literals.
fn check_brackets(source: &str) -> Result<(), ExprError> {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (at, c) in source.char_indices() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' => quote = Some(c),
            '(' | '[' | '{' => {
                depth += 1;
                if depth > MAX_BRACKETS {
                    return Err(ExprError::at(
                        source,
                        at,
                        format!(
                            "brackets nest more than {MAX_BRACKETS} deep here: split the \
                             expression over several steps or simplify it"
                        ),
                    ));
                }
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// The path written before `.key` in `source` (`user.address` for
/// `user.address.city` and key `city`), if there is one.
fn parent_of<'s>(source: &'s str, key: &str) -> Option<&'s str> {
    let bytes = source.as_bytes();
    source.match_indices(key).find_map(|(at, _)| {
        let end = at.checked_sub(1)?;
        let after = bytes.get(at + key.len()).copied();
        if bytes[end] != b'.' || after.is_some_and(is_ident_byte) {
            return None;
        }
        let start = source[..end]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
            .map_or(0, |i| i + 1);
        let parent = &source[start..end];
        (!parent.is_empty() && !parent.starts_with('.')).then_some(parent)
    })
}

/// Byte offset of the first `name(` call in `source` (spaces allowed before
/// the parenthesis), skipping matches inside longer names.
fn find_call(source: &str, name: &str) -> Option<usize> {
    let bytes = source.as_bytes();
    source.match_indices(name).map(|(i, _)| i).find(|&i| {
        let before_ok = i == 0 || !is_ident_byte(bytes[i - 1]);
        let rest = source[i + name.len()..].trim_start();
        before_ok && rest.starts_with('(')
    })
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Byte offset of a 1-based (line, character column) position.
fn offset_of(source: &str, line: isize, column: isize) -> usize {
    let line = usize::try_from(line).unwrap_or(1).max(1);
    let column = usize::try_from(column).unwrap_or(1).max(1);
    let mut start = 0;
    for (i, text) in source.split_inclusive('\n').enumerate() {
        if i + 1 == line {
            return start
                + text
                    .char_indices()
                    .nth(column - 1)
                    .map_or(text.len(), |(at, _)| at);
        }
        start += text.len();
    }
    source.len()
}

fn floor_char_boundary(s: &str, mut at: usize) -> usize {
    at = at.min(s.len());
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// Rewrites the parser's (ANTLR's) message into one that says what to do.
fn explain_parse_error(raw: &str, source: &str, offset: usize) -> String {
    let msg = raw.strip_prefix("Syntax error: ").unwrap_or(raw);
    let at_end = source[offset.min(source.len())..].trim().is_empty();
    if msg.contains("Recursion limit") {
        return "the expression nests too deeply: split it over several steps or simplify it"
            .into();
    }
    if let Some(rest) = msg.strip_prefix("token recognition error at: '") {
        let token = rest.strip_suffix('\'').unwrap_or(rest);
        return match token.chars().next() {
            Some('\'' | '"') => {
                format!("unterminated string starting with {token}: close it with the same quote")
            }
            Some('=') => "`=` alone is not an operator: compare with `==`".into(),
            Some('&') => "`&` alone is not an operator: use `&&` for \"and\"".into(),
            Some('|') => "`|` alone is not an operator: use `||` for \"or\"".into(),
            _ => format!("unexpected character `{token}`: remove it or quote it in a string"),
        };
    }
    if let Some(rest) = msg.strip_prefix("mismatched input '") {
        let token = rest.split('\'').next().unwrap_or("");
        if token == "<EOF>" || at_end {
            return "the expression ends too early: a value or operand is missing here".into();
        }
        return unexpected(token, rest.contains("expecting <EOF>"));
    }
    if let Some(rest) = msg.strip_prefix("extraneous input '") {
        let token = rest.split('\'').next().unwrap_or("");
        return unexpected(token, rest.contains("expecting <EOF>"));
    }
    if let Some(rest) = msg.strip_prefix("missing '") {
        let mut parts = rest.splitn(2, "' at '");
        let wanted = parts.next().unwrap_or("");
        let found = parts.next().unwrap_or("").trim_end_matches('\'');
        if found == "<EOF>" {
            return format!("`{wanted}` is missing at the end of the expression: add it");
        }
        return format!("`{wanted}` is missing before `{found}`: add it");
    }
    if let Some(rest) = msg.strip_prefix("no viable alternative at input '") {
        let token = rest.trim_end_matches('\'');
        if at_end {
            return "the expression ends too early: a value or operand is missing here".into();
        }
        return format!("cannot make sense of `{token}` here: check the operators and brackets");
    }
    if let Some(rest) = msg.strip_prefix("reserved identifier: ") {
        return format!("`{rest}` is a reserved word: read such a field as this[\"{rest}\"]");
    }
    format!("{msg}: check the syntax against the toolbox reference")
}

fn unexpected(token: &str, after_complete: bool) -> String {
    let hint = match token {
        "and" => " (use `&&` for \"and\")",
        "or" => " (use `||` for \"or\")",
        "not" => " (use `!` for \"not\")",
        "=" => " (compare with `==`)",
        _ => "",
    };
    if after_complete {
        format!(
            "unexpected `{token}` after a complete expression{hint}: join the two parts with \
             an operator such as `&&` or `==`, or remove it"
        )
    } else {
        format!(
            "unexpected `{token}`{hint}: check what comes before it (a missing operator, `,` \
             or bracket?)"
        )
    }
}

/// `_>_` → `>`, `_[_]` → `[]`, `size` → `size`.
fn operator_symbol(function: &str) -> &str {
    match function {
        "_[_]" => "[]",
        "@in" => "in",
        "_?_:_" => "?:",
        "!_" => "!",
        "-_" => "-",
        f => f.trim_matches('_'),
    }
}

fn binary_symbol(op: &str) -> &str {
    match op {
        "add" => "+",
        "sub" => "-",
        "mul" => "*",
        "div" => "/",
        "rem" => "%",
        other => other,
    }
}

fn cel_display(value: &cel::Value) -> String {
    match value {
        cel::Value::Int(i) => i.to_string(),
        cel::Value::UInt(u) => u.to_string(),
        cel::Value::Float(f) => f.to_string(),
        cel::Value::String(s) => format!("{s:?}"),
        other => format!("{other:?}"),
    }
}

/// "an int", "a string".
fn with_article(type_name: &str) -> String {
    let article = if type_name.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {type_name}")
}

fn cel_value_type(value: &cel::Value) -> &'static str {
    match value {
        cel::Value::List(_) => "list",
        cel::Value::Map(_) => "map",
        cel::Value::Int(_) => "int",
        cel::Value::UInt(_) => "uint",
        cel::Value::Float(_) => "double",
        cel::Value::String(_) => "string",
        cel::Value::Bytes(_) => "bytes",
        cel::Value::Bool(_) => "bool",
        cel::Value::Null => "null",
        _ => "value",
    }
}

/// "a string", "an array", ... for messages.
pub(crate) fn json_type_article(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn log() -> Value {
        json!({
            "ts": "2024-01-01T00:00:00Z", "level": "info", "host": "web-1", "status": 200,
            "ratio": 0.5, "big": u64::MAX, "user-agent": "curl/8",
            "user": {"name": "ann", "address": {"city": "Paris"}, "tags": ["a", "b"]}
        })
    }

    fn compile_err(src: &str) -> ExprError {
        match Expr::compile(src) {
            Ok(_) => panic!("`{src}` compiled but should not"),
            Err(e) => e,
        }
    }

    fn eval_err(src: &str, msg: &Value) -> EvalError {
        let expr = Expr::compile(src).unwrap_or_else(|e| panic!("{src}: {e}"));
        match expr.eval(msg) {
            Ok(v) => panic!("`{src}` evaluated to {v} but should fail"),
            Err(e) => e,
        }
    }

    fn eval(src: &str, msg: &Value) -> Value {
        let expr = Expr::compile(src).unwrap_or_else(|e| panic!("{src}: {e}"));
        expr.eval(msg).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn syntax_errors_give_the_column_and_what_to_do() {
        let cases = [
            (r#"level != "debug" &&"#, 20, "ends too early"),
            (
                r#"{"ts": ts, "level" level}"#,
                20,
                "`:` is missing before `level`",
            ),
            (r#"level == 'debug"#, 10, "unterminated string"),
            (r#"status > 2OO"#, 11, "after a complete expression"),
            (r#"level = "x""#, 7, "compare with `==`"),
            (r#"level == "a" and status > 1"#, 14, "use `&&`"),
            (r#"level == "a" || (status > 1"#, 28, "`)` is missing"),
        ];
        for (src, column, words) in cases {
            let err = compile_err(src);
            assert_eq!(err.column(), column, "column of `{src}`: {err}");
            assert_eq!(err.line(), 1);
            assert_eq!(err.offset(), column - 1, "ASCII: offset = column - 1");
            assert!(err.message().contains(words), "`{src}`: {err}");
            let shown = err.to_string();
            assert!(shown.starts_with(&format!("column {column}: ")), "{shown}");
            assert!(shown.contains(src), "the source is shown: {shown}");
            assert!(
                shown.ends_with(&format!("{:>column$}", "^")),
                "caret: {shown}"
            );
        }
    }

    #[test]
    fn positions_count_characters_and_lines() {
        let err = compile_err("msg == \"héllo\" &&");
        assert_eq!(err.column(), 18, "{err}");
        assert_eq!(err.offset(), 18, "é is two bytes: {err}");
        let err = compile_err("level ==\n  \"x\" &&");
        assert_eq!((err.line(), err.column()), (2, 9), "{err}");
        assert_eq!(
            &"level ==\n  \"x\" &&"[..err.offset()],
            "level ==\n  \"x\" &&"
        );
        assert!(err.to_string().starts_with("line 2 column 9:"), "{err}");
    }

    #[test]
    fn unknown_functions_are_load_time_errors() {
        let err = compile_err("size(host) > 0 && lenght(level) > 2");
        assert_eq!(err.column(), 19, "{err}");
        assert!(err.message().contains("unknown function `lenght`"), "{err}");
        let err = compile_err("math.nope(1) > 0");
        assert!(err.message().contains("`math.nope`"), "{err}");
        let err = compile_err("host.shout()");
        assert!(err.message().contains("`shout`"), "{err}");
        // Operators, macros and the documented functions are known.
        for src in [
            "!has(this.level) || -status < 0",
            "user.tags.exists(t, t == 'b') && user.tags.all(t, size(t) == 1)",
            "user.tags.exists_one(t, t == 'a') && user.tags.map(t, t + '!').size() == 2",
            "user.tags.filter(t, t == 'a') == ['a']",
            "level.matches('^in') && level.startsWith('i') && level.endsWith('o')",
            "level.contains('nf') && level.lowerAscii() == level.upperAscii().lowerAscii()",
            "level.replace('i', 'o') == 'onfo' && level.split('n') == ['i', 'fo']",
            "level.substring(1) == 'nfo' && level.trim() == 'info' && level.charAt(0) == 'i'",
            "host.indexOf('-') == 3 && host.lastIndexOf('-') == 3 && ['a','b'].join('-') == 'a-b'",
            "int(status) == 200 && uint(status) == 200u && double(status) == 200.0",
            "string(status) == '200' && type(status) == int && dyn(status) == 200",
            "math.greatest(1, 2) == 2 && math.least(1, 2) == 1 && math.abs(-1) == 1",
            "math.ceil(0.5) == 1.0 && math.floor(0.5) == 0.0 && math.isFinite(ratio)",
            "this.?nope.orValue(1) == 1 && status in [200, 201] && 'level' in this",
            "status > 100 ? 'big' : 'small'",
        ] {
            let expr = Expr::compile(src).unwrap_or_else(|e| panic!("{src}: {e}"));
            let value = expr.eval(&log()).unwrap_or_else(|e| panic!("{e}"));
            assert!(value != json!(false), "{src} evaluated to false");
        }
    }

    /// What book/src/toolbox.md documents about the language, checked.
    #[test]
    fn documented_language_features() {
        let msg = json!({
            "level": "warn", "none": null, "status": 200, "ratio": 0.5, "code": "503",
            "tags": ["vip", "eu"], "items": [{"qty": 2}, {"qty": 3}], "a.b": 1,
            "host": "web-1", "msg": "GET /orders/7"
        });
        let cases = [
            ("7 / 2", json!(3)),
            ("-7 % 3", json!(-1)),
            ("'ab' + 'cd'", json!("abcd")),
            ("tags + ['x']", json!(["vip", "eu", "x"])),
            ("none == null", json!(true)),
            ("has(this.none)", json!(true)),
            ("this['a.b']", json!(1)),
            ("msg.size()", json!(13)),
            ("size(tags)", json!(2)),
            ("'vip' in tags", json!(true)),
            ("int(code) >= 500", json!(true)),
            ("string(status) + '!'", json!("200!")),
            ("type(level) == string", json!(true)),
            ("uint(status) == 200u", json!(true)),
            ("double(status) / 2.0", json!(100.0)),
            ("host.split('-')[0]", json!("web")),
            ("level.upperAscii()", json!("WARN")),
            ("'  x '.trim()", json!("x")),
            ("msg.indexOf('/')", json!(4)),
            ("msg.lastIndexOf('/')", json!(11)),
            ("msg.substring(4, 11)", json!("/orders")),
            ("msg.charAt(0)", json!("G")),
            ("msg.replace('GET', 'PUT')", json!("PUT /orders/7")),
            ("tags.join(',')", json!("vip,eu")),
            (
                "msg.contains('orders') && msg.startsWith('GET') && msg.endsWith('7')",
                json!(true),
            ),
            ("tags.exists(t, t == 'vip')", json!(true)),
            ("tags.all(t, size(t) == 2)", json!(false)),
            ("tags.exists_one(t, t.startsWith('e'))", json!(true)),
            ("items.map(i, i.qty)", json!([2, 3])),
            ("items.filter(i, i.qty > 2)", json!([{"qty": 3}])),
            ("math.greatest(1, 5, 3)", json!(5)),
            ("math.least([4, 2])", json!(2)),
            ("math.abs(-2)", json!(2)),
            ("math.round(2.5)", json!(3.0)),
            ("math.trunc(-2.7)", json!(-2.0)),
            ("math.sign(-3)", json!(-1)),
            ("math.sqrt(16)", json!(4.0)),
            ("math.isNaN(ratio) || math.isInf(ratio)", json!(false)),
            ("math.bitAnd(6, 3)", json!(2)),
            ("optional.of(1).hasValue()", json!(true)),
            ("optional.none().orValue(2)", json!(2)),
            ("this.?level.value()", json!("warn")),
            ("this[?'nope'].orValue('d')", json!("d")),
            ("status > 100 ? 'big' : 'small'", json!("big")),
            ("dyn(status) == 200.0", json!(true)),
        ];
        for (src, expected) in cases {
            assert_eq!(eval(src, &msg), expected, "{src}");
        }
        for src in ["9223372036854775807 + 1", "1 / 0", "tags[2]"] {
            assert_eq!(eval_err(src, &msg).kind(), &EvalErrorKind::Failed, "{src}");
        }
        for unknown in [
            "timestamp('2024-01-01T00:00:00Z')",
            "lists.range(3)",
            "base64.encode(b'a')",
        ] {
            assert!(
                compile_err(unknown).message().contains("unknown function"),
                "{unknown}"
            );
        }
    }

    #[test]
    fn regular_expressions_are_checked_at_load_time() {
        let err = compile_err(r#"host.startsWith("w") && msg.matches("GET (/orders")"#);
        assert_eq!(err.column(), 37, "at the pattern: {err}");
        assert!(
            err.message().contains("not a valid regular expression"),
            "{err}"
        );
        let err = compile_err(r#"matches(msg, "[z-a]")"#);
        assert_eq!(err.column(), 14, "{err}");

        let msg = json!({"msg": "GET /orders/12", "re": "^POST"});
        assert_eq!(
            eval(r#"msg.matches("^GET /orders/[0-9]+$")"#, &msg),
            json!(true)
        );
        assert_eq!(eval(r#"matches(msg, "^GET")"#, &msg), json!(true));
        // A pattern computed per message is compiled then.
        assert_eq!(eval("msg.matches(re)", &msg), json!(false));
        let bad = json!({"msg": "x", "re": "("});
        let err = eval_err("msg.matches(re)", &bad);
        assert!(
            err.message().contains("not a valid regular expression"),
            "{err}"
        );
    }

    #[test]
    fn limits_are_load_time_errors_not_crashes() {
        assert!(compile_err("  ").message().contains("empty"));
        let long = format!("level == \"{}\"", "x".repeat(MAX_SOURCE_LEN));
        let err = compile_err(&long);
        assert!(
            err.message().contains("more than the 4096 allowed"),
            "{err}"
        );

        let deep = format!(
            "{}1{}",
            "(".repeat(MAX_BRACKETS + 1),
            ")".repeat(MAX_BRACKETS + 1)
        );
        let err = compile_err(&deep);
        assert_eq!(
            err.offset(),
            MAX_BRACKETS,
            "points at the first bracket too many"
        );
        // Brackets inside strings do not count.
        Expr::compile(&format!("level == \"{}\"", "(".repeat(100))).unwrap();

        let chain = vec!["1"; MAX_NESTING + 10].join(" + ");
        assert!(compile_err(&chain).message().contains("operations deep"));
    }

    #[test]
    fn the_deepest_accepted_expression_evaluates_on_a_small_stack() {
        let chain = vec!["status"; MAX_NESTING].join(" + ");
        let parens = format!(
            "{}status{}",
            "(".repeat(MAX_BRACKETS),
            ")".repeat(MAX_BRACKETS)
        );
        for src in [chain, parens] {
            let expr = Expr::compile(&src).unwrap_or_else(|e| panic!("{e}"));
            // Debug builds use the most stack; tokio workers have 2 MiB.
            let result = std::thread::Builder::new()
                .stack_size(2 << 20)
                .spawn(move || expr.eval(&log()).map_err(|e| e.to_string()))
                .unwrap()
                .join()
                .unwrap();
            assert!(result.is_ok(), "{result:?}");
        }
    }

    #[test]
    fn fields_nested_fields_and_this() {
        let msg = log();
        assert_eq!(eval("user.address.city", &msg), json!("Paris"));
        assert_eq!(eval("user.tags[1]", &msg), json!("b"));
        assert_eq!(eval(r#"this["user-agent"]"#, &msg), json!("curl/8"));
        assert_eq!(eval("this.user.name", &msg), json!("ann"));
        assert_eq!(eval("this", &msg), msg, "this is the whole message");
        let dotted = json!({"a.b": 1, "a": {"b": 2}});
        assert_eq!(
            eval("a.b", &dotted),
            json!(2),
            "a path, not the key \"a.b\""
        );
        assert_eq!(eval("this['a.b']", &dotted), json!(1));
        let shadowing = json!({"math": 1, "level": "L", "tags": ["a"]});
        assert_eq!(eval("math.greatest(1, 2)", &shadowing), json!(2));
        assert_eq!(
            eval("tags.map(level, level + '!')", &shadowing),
            json!(["a!"])
        );
        assert_eq!(eval("big", &msg), json!(u64::MAX), "beyond i64: uint");
        let expr = Expr::compile("user.name == 'ann' && status >= 200").unwrap();
        assert_eq!(expr.variables().collect::<Vec<_>>(), ["status", "user"]);
    }

    #[test]
    fn numbers_compare_across_int_and_double() {
        let msg = log();
        for src in ["status == 200.0", "ratio < 1", "status > 199.5", "big > 1"] {
            assert_eq!(eval(src, &msg), json!(true), "{src}");
        }
        assert_eq!(
            eval("status / 3", &msg),
            json!(66),
            "int division stays int"
        );
        // Arithmetic does not mix int and double (comparisons do): convert.
        assert_eq!(
            eval_err("status / 3.0", &msg).kind(),
            &EvalErrorKind::TypeMismatch
        );
        assert_eq!(eval("double(status) / 4.0", &msg), json!(50.0));
    }

    #[test]
    fn missing_fields_are_errors_that_say_how_to_test_for_them() {
        let msg = log();
        let err = eval_err("region == 'eu'", &msg);
        assert_eq!(
            err.kind(),
            &EvalErrorKind::MissingField {
                field: "region".into()
            }
        );
        assert!(err.message().contains("has(this.region)"), "{err}");
        assert!(
            err.to_string().starts_with("expression `region == 'eu'`: "),
            "{err}"
        );
        let err = eval_err("region.name == 'eu'", &msg);
        assert_eq!(
            err.kind(),
            &EvalErrorKind::MissingField {
                field: "region".into()
            },
            "{err}"
        );

        let err = eval_err("user.address.zip", &msg);
        assert_eq!(
            err.kind(),
            &EvalErrorKind::MissingField {
                field: "zip".into()
            }
        );
        assert!(
            err.message().starts_with(
                "key `zip` is not in `user.address`: test for it with `has(user.address.zip)`"
            ),
            "{err}"
        );

        assert_eq!(eval("has(this.region)", &msg), json!(false));
        assert_eq!(eval("has(user.address.zip)", &msg), json!(false));
        assert_eq!(eval("this.?region.orValue('none')", &msg), json!("none"));
        assert_eq!(
            eval("user.address.?city.orValue('none')", &msg),
            json!("Paris")
        );
        // `&&` and `||` short-circuit past the missing field.
        assert_eq!(
            eval("has(this.region) && region == 'eu'", &msg),
            json!(false)
        );
    }

    #[test]
    fn messages_that_are_not_objects() {
        let line = json!("GET /index.html");
        assert_eq!(eval("this.startsWith('GET')", &line), json!(true));
        let err = eval_err("level == 'x'", &line);
        assert!(err.message().contains("the message is a string"), "{err}");
        assert_eq!(eval("this * 2", &json!(21)), json!(42));
    }

    #[test]
    fn conditions_must_be_booleans() {
        let msg = log();
        for (src, got) in [
            ("level", "string"),
            ("status", "int"),
            ("user", "map"),
            ("null", "null_type"),
        ] {
            let err = Expr::compile(src).unwrap().eval_bool(&msg).unwrap_err();
            assert_eq!(
                err.kind(),
                &EvalErrorKind::NotBool { got: got.into() },
                "{src}"
            );
            assert!(err.message().contains(got), "{err}");
        }
        assert!(
            Expr::compile("level != 'debug'")
                .unwrap()
                .eval_bool(&msg)
                .unwrap()
        );
        assert!(
            !Expr::compile("level == 'debug'")
                .unwrap()
                .eval_bool(&msg)
                .unwrap()
        );
    }

    #[test]
    fn type_errors_name_the_operator_and_types() {
        let msg = log();
        let err = eval_err("level > 1", &msg);
        assert_eq!(err.kind(), &EvalErrorKind::TypeMismatch);
        assert!(
            err.message().contains("`>`") && err.message().contains("(string, int)"),
            "{err}"
        );
        let err = eval_err("level + 1", &msg);
        assert_eq!(err.kind(), &EvalErrorKind::TypeMismatch, "{err}");
        assert!(err.message().contains("`+`"), "{err}");
        let err = eval_err("status.code", &msg);
        assert!(err.message().contains("an int"), "{err}");
        let err = eval_err("size(status)", &msg);
        assert!(
            err.message().contains("`size` does not accept (int)"),
            "{err}"
        );
        let err = eval_err("status / (ratio > 1 ? 1 : 0)", &msg);
        assert!(err.message().contains("division by zero"), "{err}");
        let err = eval_err("user.tags[5]", &msg);
        assert!(err.message().contains("index 5 is out of range"), "{err}");
    }

    #[test]
    fn results_convert_to_json() {
        let msg = log();
        let literal = eval(
            "{'host': host, 'ok': status < 300, 'tags': user.tags}",
            &msg,
        );
        assert_eq!(
            literal,
            json!({"host": "web-1", "ok": true, "tags": ["a", "b"]})
        );
        // A computed key takes the general path: same result.
        let general = eval(
            "{'ho' + 'st': host, 'ok': status < 300, 'tags': user.tags}",
            &msg,
        );
        assert_eq!(general, literal);
        assert_eq!(
            eval("{1: 'one', true: 'yes'}", &msg),
            json!({"1": "one", "true": "yes"})
        );
        assert_eq!(
            eval("[1, 2.5, 'x', null, [true]]", &msg),
            json!([1, 2.5, "x", null, [true]])
        );
        for src in ["0.0 / 0.0", "b'abc'", "type(status)"] {
            assert_eq!(eval_err(src, &msg).kind(), &EvalErrorKind::NotJson, "{src}");
        }
        let err = compile_err("{'a': status, 'a': 1}");
        assert!(err.message().contains("\"a\" appears twice"), "{err}");
        assert_eq!(err.column(), 15, "at the second key's quote: {err}");
    }

    #[test]
    fn too_deep_messages_are_errors() {
        let mut deep = json!(1);
        for _ in 0..(MAX_DEPTH + 5) {
            deep = json!({ "a": deep });
        }
        let msg = json!({ "a": deep });
        let err = eval_err("has(this.a)", &msg);
        assert!(err.message().contains("nested deeper"), "{err}");
        // Fields that are not read are not converted, so not checked.
        let msg = json!({ "a": deep, "b": 1 });
        assert_eq!(eval("b", &msg), json!(1));
    }

    #[test]
    fn expressions_are_shared_between_threads() {
        fn assert_send_sync<T: Send + Sync + Clone>() {}
        assert_send_sync::<Expr>();
        assert_send_sync::<EvalError>();
    }
}
