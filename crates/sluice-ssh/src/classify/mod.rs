//! Classification of SSH exec command lines.
//!
//! The line is parsed the way the target's shell (bash, or a POSIX sh,
//! whose syntax bash's covers) would read it, every simple command in it
//! is found, including those inside command and process substitutions and
//! those run by wrappers (`sudo`, `env`, `sh -c`, `xargs`, `find -exec`,
//! ...), and each is classified against a table of known programs. The
//! line's classification is the union of what was found, so its class is
//! the most consequential one.
//!
//! Fail closed: whatever cannot be parsed, or whose effect depends on text
//! the gateway cannot see (`eval`, scripts, interpreters, a program name
//! computed at run time, a program that is not in the table), is
//! `Class::Unknown` with a reason.
//!
//! Choices worth knowing when writing policy:
//! - `sudo`, `doas`, `su -c` and `runuser` keep the inner command's effects
//!   and add `Admin` when the inner command changes anything; a read as
//!   root stays a read.
//! - `chown` and `chgrp` are `Admin` (ownership is privilege); `chmod` is
//!   `Write`, or `Admin` when it sets setuid/setgid/sticky bits; recursive
//!   ownership or mode changes on `/` or a top-level system directory add
//!   `Destructive`.
//! - `ssh` (and `scp`/`sftp`/`rsync -e`) from the target reaches hosts the
//!   gateway does not guard, so a remote command is `Unknown`.
//! - A program given by path is trusted only from the system directories
//!   (`/bin`, `/usr/bin`, `/sbin`, `/usr/sbin`, `/usr/local/bin`,
//!   `/usr/local/sbin`); `./ls` or `/tmp/x/ls` is `Unknown`.
//! - An argument expanded at run time (`rm "$F"`, `git $ARGS`) may be any
//!   option, so a program whose class depends on its arguments is raised to
//!   the most it could do with that argument (`Unknown` when it could run
//!   other programs). Glob patterns are taken as written.

mod programs;
#[cfg(test)]
mod tests;

pub use programs::{ProgramRule, Programs};

use brush_parser::ast;
use brush_parser::word::{self, Parameter, ParameterExpr, ParameterTransformOp, WordPiece};
use sluice_core::{Class, Classification};

/// Longer lines are refused rather than parsed.
const MAX_LINE: usize = 64 * 1024;
/// Shell text parsed inside shell text (`sh -c`, `$(...)`) this deep is refused.
const MAX_DEPTH: usize = 8;
/// Wrappers (`sudo env nice ...`) chained this deep are refused.
const MAX_WRAP: usize = 32;
/// The parser and the walk recurse once per nesting level, and quoting
/// cannot be judged before parsing, so nesting is bounded from above by
/// counting every bracket and compound keyword ("units"). Lines up to
/// `INLINE_UNITS` are classified on the caller's stack; larger ones on a
/// thread with a stack sized for them; beyond `MAX_UNITS` they are refused.
const INLINE_UNITS: usize = 32;
const MAX_UNITS: usize = 1024;
/// Stack reserved per unit on the classification thread (measured need
/// is well under a tenth of this in debug builds).
const STACK_PER_UNIT: usize = 48 * 1024;

/// Classifies one exec command line.
pub fn classify(line: &str, programs: &Programs) -> Classification {
    if line.len() > MAX_LINE {
        return Classification::unknown(format!(
            "the command line is {} bytes, over the {} KiB the gateway inspects",
            line.len(),
            MAX_LINE / 1024
        ));
    }
    if let Some(c) = line.chars().find(|c| hidden_char(*c)) {
        return Classification::unknown(format!(
            "the command line contains the control or invisible character U+{:04X}",
            c as u32
        ));
    }
    let units = nesting_units(line);
    if units <= INLINE_UNITS {
        // Shell text nested in the line (`sh -c '...'`) is charged again
        // on top of the line, hence twice the units.
        let mut w = Walker::new(programs, 2 * INLINE_UNITS);
        w.line(line);
        return w.finish();
    }
    if units > MAX_UNITS {
        return Classification::unknown(format!(
            "the command line nests too many brackets and compound commands to inspect ({units})"
        ));
    }
    let stack = (2 << 20) + 2 * units * STACK_PER_UNIT;
    std::thread::scope(|scope| {
        let worker = std::thread::Builder::new()
            .name("sluice-ssh-classify".to_string())
            .stack_size(stack)
            .spawn_scoped(scope, || {
                let mut w = Walker::new(programs, 2 * units);
                w.line(line);
                w.finish()
            });
        match worker.map(|h| h.join()) {
            Ok(Ok(c)) => c,
            _ => Classification::unknown("the classifier failed on the command line"),
        }
    })
}

/// An upper bound on how deep `text` can nest: every bracket, backtick
/// and compound-command keyword, quoted or not.
fn nesting_units(text: &str) -> usize {
    const KEYWORDS: &[&str] = &[
        "if", "then", "elif", "else", "while", "until", "for", "select", "case", "do", "function",
        "coproc",
    ];
    let bytes = text.as_bytes();
    // Brackets and backticks open a level; `!`, `&` and `|` can each add
    // one to an expression tree inside `[[ ]]` (`! ! a`, `a && b && c`),
    // so every one of them is counted too, quoted or not.
    let mut units = bytes
        .iter()
        .filter(|b| matches!(b, b'(' | b'{' | b'`' | b'[' | b'!' | b'&' | b'|'))
        .count();
    let word_char = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while i < bytes.len() {
        if word_char(bytes[i]) {
            let start = i;
            while i < bytes.len() && word_char(bytes[i]) {
                i += 1;
            }
            if i - start <= 8 && KEYWORDS.contains(&&text[start..i]) {
                units += 1;
            }
        } else {
            i += 1;
        }
    }
    units
}

/// Characters that have no business in a command line and can hide text
/// from a human reviewer (terminal controls, bidirectional overrides).
fn hidden_char(c: char) -> bool {
    match c {
        '\t' | '\n' => false,
        c if c.is_control() => true,
        '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' => true,
        '\u{FEFF}' => true,
        _ => false,
    }
}

/// One word of a command after quote removal, as far as it can be known
/// before the command runs.
#[derive(Debug, Clone, Default)]
pub(crate) struct Arg {
    /// Quotes removed; expansions kept as written (`$HOME/x`).
    pub value: String,
    /// Holds an expansion whose result is only known at run time.
    pub dynamic: bool,
    /// Holds an unquoted expansion, so it may become several words.
    pub splits: bool,
    /// Holds unquoted glob characters.
    pub glob: bool,
}

impl Arg {
    /// A literal argument (tests and wrappers that synthesize words).
    pub fn lit(s: &str) -> Arg {
        Arg {
            value: s.to_string(),
            ..Arg::default()
        }
    }

    /// An argument only known at run time (what `xargs` appends).
    pub fn unknown(s: &str) -> Arg {
        Arg {
            value: s.to_string(),
            dynamic: true,
            splits: true,
            glob: false,
        }
    }

    pub fn is(&self, s: &str) -> bool {
        !self.dynamic && self.value == s
    }
}

/// What a command reads on its standard input, when the line shows it.
#[derive(Debug, Clone)]
pub(crate) enum Stdin {
    /// The session's own input, a pipe or a file: not visible here.
    Unseen,
    /// A here-document or here-string; `dynamic` when it holds expansions.
    Text { text: String, dynamic: bool },
}

/// One invocation of a program, as a handler sees it.
pub(crate) struct Call<'a> {
    pub name: &'a str,
    pub args: &'a [Arg],
    pub stdin: &'a Stdin,
}

/// Walks a parsed line and collects what it does.
pub(crate) struct Walker<'p> {
    programs: &'p Programs,
    /// Nesting units the stack has room for, and those in use.
    budget: usize,
    used: usize,
    out: Classification,
    depth: usize,
    wrap: usize,
    statements: u32,
    /// An arithmetic context was seen; bash evaluates array subscripts in
    /// it, and a subscript may hold a command substitution.
    arith: bool,
    /// Quoted text holding `$(` or a backtick, which a later arithmetic
    /// evaluation could run.
    stored_code: bool,
    /// The shell text being walked, innermost last (source spans index it).
    source: Vec<String>,
    /// A variable that may be in the environment of later commands was
    /// set (`export X=...`, `HOME=...;`), and is not a harmless one.
    /// With the number of commands seen when it was set.
    env_changed: Option<(String, u32)>,
}

impl<'p> Walker<'p> {
    fn new(programs: &'p Programs, budget: usize) -> Self {
        Walker {
            programs,
            budget,
            used: 0,
            out: Classification::default(),
            depth: 0,
            wrap: 0,
            statements: 0,
            arith: false,
            stored_code: false,
            source: Vec::new(),
            env_changed: None,
        }
    }

    fn finish(mut self) -> Classification {
        if self.arith && self.stored_code {
            self.unknown(
                "arithmetic evaluation could run command-substitution text quoted elsewhere in the line",
            );
        }
        if let Some((name, at)) = self.env_changed.take() {
            if self.statements > at {
                self.unknown(format!(
                    "{name} is set for the commands that follow, and changes how they behave"
                ));
            }
        }
        if self.out.effects.is_empty() {
            self.out.effects.insert(Class::Read);
        }
        self.out.flags.statements = self.statements;
        self.out.flags.multi_statement = self.statements > 1;
        self.out
    }

    /// Notes an arithmetic context (see `arith`).
    pub(crate) fn arith_context(&mut self) {
        self.arith = true;
    }

    /// Records an effect.
    pub(crate) fn effect(&mut self, class: Class) {
        self.out.effects.insert(class);
    }

    /// Records that something could not be understood, and why.
    pub(crate) fn unknown(&mut self, reason: impl Into<String>) {
        self.out.effects.insert(Class::Unknown);
        if self.out.unknown_reason.is_none() {
            self.out.unknown_reason = Some(reason.into());
        }
    }

    /// Records a path the command touches, without an effect of its own.
    pub(crate) fn path(&mut self, p: &str) {
        if !p.is_empty() {
            self.out.paths.insert(p.to_string());
        }
    }

    /// A file the command reads.
    pub(crate) fn read_path(&mut self, a: &Arg) {
        self.path(&a.value);
        if !a.dynamic && is_network_device(&a.value) {
            self.unknown(format!(
                "\"{}\" opens a network connection the gateway does not see",
                a.value
            ));
        }
        self.effect(Class::Read);
    }

    /// A file the command writes; a block device is destructive.
    pub(crate) fn write_path(&mut self, a: &Arg) {
        let v = a.value.as_str();
        if !a.dynamic && is_sink(v) {
            return;
        }
        self.path(v);
        if is_block_device(v) {
            self.effect(Class::Destructive);
        } else if is_network_device(v) {
            self.unknown(format!(
                "\"{v}\" opens a network connection the gateway does not see"
            ));
        } else {
            self.effect(Class::Write);
        }
    }

    /// Classifies SQL a database client runs.
    pub(crate) fn sql(&mut self, client: &str, text: &str) {
        match &self.programs.sql {
            Some(hook) => {
                let c = hook(text);
                let statements = self.out.flags.statements;
                self.out.merge(&c);
                self.out.flags.statements = statements;
                if c.effects.is_empty() {
                    self.effect(Class::Read);
                }
            }
            None => self.unknown(format!(
                "\"{client}\" runs SQL, and no SQL classifier is set up for SSH"
            )),
        }
    }

    /// Runs `f` and returns what it found separately, then adds it.
    pub(crate) fn capture(&mut self, f: impl FnOnce(&mut Self)) -> Classification {
        let saved = std::mem::take(&mut self.out);
        f(self);
        let found = std::mem::replace(&mut self.out, saved);
        let statements = self.out.flags.statements;
        self.out.merge(&found);
        self.out.flags.statements = statements;
        found
    }

    /// Classifies shell text run by a command (`sh -c`, `watch`, `trap`).
    pub(crate) fn line(&mut self, text: &str) {
        if self.depth >= MAX_DEPTH {
            self.unknown(format!("shell text nests deeper than {MAX_DEPTH} levels"));
            return;
        }
        if text.len() > MAX_LINE {
            self.unknown("nested shell text is over the size the gateway inspects");
            return;
        }
        let units = nesting_units(text);
        if self.used + units > self.budget {
            self.unknown("shell text nests too many brackets and compound commands to inspect");
            return;
        }
        self.used += units;
        self.depth += 1;
        self.source.push(text.to_string());
        match parse(text) {
            Ok(program) => {
                for list in &program.complete_commands {
                    self.list(list);
                }
            }
            Err(e) => self.unknown(format!("the shell cannot parse {}: {e}", excerpt(text))),
        }
        self.source.pop();
        self.depth -= 1;
        self.used -= units;
    }

    /// Runs the program named by `argv[0]` with the rest as arguments.
    pub(crate) fn run(&mut self, argv: &[Arg], stdin: &Stdin) {
        let Some(first) = argv.first() else {
            return;
        };
        if self.wrap >= MAX_WRAP {
            self.unknown(format!(
                "commands wrap each other deeper than {MAX_WRAP} levels"
            ));
            return;
        }
        let name = match self.program_name(first) {
            Ok(name) => name,
            Err(reason) => {
                self.out.programs.insert(first.value.clone());
                self.unknown(reason);
                return;
            }
        };
        self.out.programs.insert(name.to_string());
        self.wrap += 1;
        self.invoke(name, &argv[1..], stdin);
        self.wrap -= 1;
    }

    fn program_name<'a>(&self, a: &'a Arg) -> Result<&'a str, String> {
        let v = a.value.as_str();
        if a.dynamic {
            return Err(format!(
                "the program name \"{v}\" is only known when the command runs"
            ));
        }
        if a.glob {
            return Err(format!(
                "the program name \"{v}\" is a glob pattern the shell expands"
            ));
        }
        if v.is_empty() {
            return Err("the program name is empty".to_string());
        }
        match v.rsplit_once('/') {
            None => Ok(v),
            Some((dir, base)) => {
                let dir = dir.trim_end_matches('/');
                if self.programs.has_rule_for(v) {
                    return Ok(v);
                }
                if base.is_empty() || !SYSTEM_DIRS.contains(&dir) {
                    return Err(format!(
                        "\"{v}\" runs a program outside the system directories"
                    ));
                }
                Ok(base)
            }
        }
    }

    fn invoke(&mut self, name: &str, args: &[Arg], stdin: &Stdin) {
        let call = Call { name, args, stdin };
        if let Some(rule) = self.programs.rule(name, args) {
            if rule.class == Class::Unknown {
                self.unknown(format!("a program rule marks \"{name}\" unknown"));
            } else {
                self.effect(rule.class);
            }
            return;
        }
        self.programs.apply_builtin(self, &call);
    }

    fn list(&mut self, list: &ast::CompoundList) {
        for item in &list.0 {
            let and_or = &item.0;
            self.pipeline(&and_or.first);
            for next in &and_or.additional {
                match next {
                    ast::AndOr::And(p) | ast::AndOr::Or(p) => self.pipeline(p),
                }
            }
        }
    }

    fn pipeline(&mut self, p: &ast::Pipeline) {
        for cmd in &p.seq {
            self.command(cmd);
        }
    }

    fn command(&mut self, cmd: &ast::Command) {
        match cmd {
            ast::Command::Simple(s) => self.simple(s),
            ast::Command::Compound(c, redirects) => {
                if let Some(r) = redirects {
                    let mut stdin = Stdin::Unseen;
                    for r in &r.0 {
                        self.redirect(r, &mut stdin);
                    }
                }
                self.compound(c);
            }
            ast::Command::Function(f) => {
                self.unknown(format!(
                    "the line defines the shell function \"{}\", which can shadow any program",
                    f.fname.value
                ));
                self.compound(&f.body.0);
            }
            ast::Command::ExtendedTest(t, redirects) => {
                if let Some(r) = redirects {
                    let mut stdin = Stdin::Unseen;
                    for r in &r.0 {
                        self.redirect(r, &mut stdin);
                    }
                }
                self.statements += 1;
                self.effect(Class::Read);
                self.ext_test(&t.expr);
            }
        }
    }

    fn compound(&mut self, c: &ast::CompoundCommand) {
        match c {
            ast::CompoundCommand::Arithmetic(a) => {
                // bash reads `((x) )` as nested subshells, not arithmetic;
                // only text that can be nothing but an expression is read.
                self.arith = true;
                let raw = self
                    .source
                    .last()
                    .and_then(|t| t.get(a.loc.start.index..a.loc.end.index))
                    .unwrap_or("");
                match plain_arithmetic(&a.expr.value).and_then(|()| closes_as_arithmetic(raw)) {
                    Ok(()) => self.effect(Class::Read),
                    Err(reason) => self.unknown(format!(
                        "the (( )) command {}: {reason}",
                        excerpt(&a.expr.value)
                    )),
                }
            }
            ast::CompoundCommand::ArithmeticForClause(f) => {
                self.arith = true;
                for e in [&f.initializer, &f.condition, &f.updater]
                    .into_iter()
                    .flatten()
                {
                    self.arith_text(&e.value);
                }
                self.list(&f.body.list);
            }
            ast::CompoundCommand::BraceGroup(b) => self.list(&b.list),
            ast::CompoundCommand::Subshell(s) => self.list(&s.list),
            ast::CompoundCommand::ForClause(f) => {
                self.shell_var_set(&f.variable_name, &Arg::unknown("{value}"), false);
                for w in f.values.iter().flatten() {
                    self.word(&w.value);
                }
                self.list(&f.body.list);
            }
            ast::CompoundCommand::CaseClause(c) => {
                self.word(&c.value.value);
                for item in &c.cases {
                    for p in &item.patterns {
                        self.word(&p.value);
                    }
                    if let Some(body) = &item.cmd {
                        self.list(body);
                    }
                }
            }
            ast::CompoundCommand::IfClause(i) => {
                self.list(&i.condition);
                self.list(&i.then);
                for e in i.elses.iter().flatten() {
                    if let Some(cond) = &e.condition {
                        self.list(cond);
                    }
                    self.list(&e.body);
                }
            }
            ast::CompoundCommand::WhileClause(w) | ast::CompoundCommand::UntilClause(w) => {
                self.list(&w.0);
                self.list(&w.1.list);
            }
            ast::CompoundCommand::Coprocess(c) => self.command(&c.body),
        }
    }

    fn ext_test(&mut self, e: &ast::ExtendedTestExpr) {
        match e {
            ast::ExtendedTestExpr::And(a, b) | ast::ExtendedTestExpr::Or(a, b) => {
                self.ext_test(a);
                self.ext_test(b);
            }
            ast::ExtendedTestExpr::Not(a) | ast::ExtendedTestExpr::Parenthesized(a) => {
                self.ext_test(a)
            }
            ast::ExtendedTestExpr::UnaryTest(op, w) => {
                let a = self.word(&w.value);
                if matches!(
                    op,
                    ast::UnaryPredicate::ShellVariableIsSetAndAssigned
                        | ast::UnaryPredicate::ShellVariableIsSetAndNameRef
                ) {
                    self.var_name("[[ -v ]]", &a, false);
                }
            }
            ast::ExtendedTestExpr::BinaryTest(op, a, b) => {
                use ast::BinaryPredicate as B;
                if matches!(
                    op,
                    B::ArithmeticEqualTo
                        | B::ArithmeticNotEqualTo
                        | B::ArithmeticLessThan
                        | B::ArithmeticLessThanOrEqualTo
                        | B::ArithmeticGreaterThan
                        | B::ArithmeticGreaterThanOrEqualTo
                ) {
                    self.arith = true;
                    for raw in [&a.value, &b.value] {
                        let w = self.word(raw);
                        self.arith_operand(&w, raw);
                    }
                    return;
                }
                self.word(&a.value);
                self.word(&b.value);
            }
        }
    }

    fn simple(&mut self, cmd: &ast::SimpleCommand) {
        self.statements += 1;
        let mut stdin = Stdin::Unseen;
        let mut argv: Vec<Arg> = Vec::new();
        let mut assigned: Vec<(String, Arg)> = Vec::new();
        if let Some(prefix) = &cmd.prefix {
            for item in &prefix.0 {
                match item {
                    ast::CommandPrefixOrSuffixItem::AssignmentWord(a, _) => {
                        assigned.push(self.assignment(a));
                    }
                    other => self.item(other, &mut argv, &mut stdin),
                }
            }
        }
        if let Some(name) = &cmd.word_or_name {
            let a = self.word(&name.value);
            argv.insert(0, a);
        }
        if let Some(suffix) = &cmd.suffix {
            for item in &suffix.0 {
                self.item(item, &mut argv, &mut stdin);
            }
        }
        if argv.is_empty() {
            // Only assignments and redirections: they act on the shell.
            for (name, value) in &assigned {
                self.shell_var_set(name, value, false);
            }
            self.effect(Class::Read);
            return;
        }
        for (name, value) in &assigned {
            self.command_env(&argv[0].value, name, value);
        }
        self.run(&argv, &stdin);
    }

    fn item(
        &mut self,
        item: &ast::CommandPrefixOrSuffixItem,
        argv: &mut Vec<Arg>,
        stdin: &mut Stdin,
    ) {
        match item {
            ast::CommandPrefixOrSuffixItem::IoRedirect(r) => self.redirect(r, stdin),
            ast::CommandPrefixOrSuffixItem::Word(w) => {
                let a = self.word(&w.value);
                argv.push(a);
            }
            ast::CommandPrefixOrSuffixItem::AssignmentWord(_, w) => {
                let a = self.word(&w.value);
                argv.push(a);
            }
            ast::CommandPrefixOrSuffixItem::ProcessSubstitution(_, sub) => {
                self.nested_list(&sub.list);
                argv.push(Arg::unknown("/dev/fd/63"));
            }
        }
    }

    fn nested_list(&mut self, list: &ast::CompoundList) {
        if self.depth >= MAX_DEPTH {
            self.unknown(format!("shell text nests deeper than {MAX_DEPTH} levels"));
            return;
        }
        self.depth += 1;
        self.list(list);
        self.depth -= 1;
    }

    /// Reads an assignment; returns the variable and its value.
    fn assignment(&mut self, a: &ast::Assignment) -> (String, Arg) {
        let name = match &a.name {
            ast::AssignmentName::VariableName(n) => n.as_str(),
            ast::AssignmentName::ArrayElementName(n, index) => {
                self.arith = true;
                self.subscript(index);
                n.as_str()
            }
        };
        match &a.value {
            ast::AssignmentValue::Scalar(w) => {
                let v = self.word(&w.value);
                self.env_var(name, &v);
                (name.to_string(), v)
            }
            ast::AssignmentValue::Array(items) => {
                for (key, value) in items {
                    if let Some(k) = key {
                        self.arith = true;
                        self.subscript(&k.value);
                    }
                    self.word(&value.value);
                }
                let v = Arg::unknown("(...)");
                self.env_var(name, &v);
                (name.to_string(), v)
            }
        }
    }

    /// An array subscript: bash evaluates it as arithmetic (for indexed
    /// arrays), where a variable's text can run commands.
    fn subscript(&mut self, raw: &str) {
        let a = self.word(raw);
        if a.is("@") || a.is("*") {
            return;
        }
        self.arith_operand(&a, raw);
    }

    /// A word bash evaluates as arithmetic after expanding it.
    pub(crate) fn arith_operand(&mut self, a: &Arg, raw: &str) {
        let ok = if a.dynamic {
            !raw.contains(['\\', '\'']) && arith_literal(&raw.replace('"', ""))
        } else {
            arith_literal(&a.value)
        };
        if !ok {
            self.unknown(format!(
                "bash evaluates {} as arithmetic, and a variable's text there can run commands",
                excerpt(&a.value)
            ));
        }
    }

    /// A variable set for one command (`VAR=x cmd`, `env VAR=x cmd`):
    /// only harmless ones are accepted.
    pub(crate) fn command_env(&mut self, program: &str, name: &str, value: &Arg) {
        if !harmless_env(name, value) {
            self.unknown(format!(
                "{name} changes how \"{program}\" behaves, and is not one of the variables the gateway accepts"
            ));
        }
    }

    /// A shell variable set for the rest of the line: when it is or may be
    /// exported, the commands after it run with it.
    pub(crate) fn shell_var_set(&mut self, name: &str, value: &Arg, exported: bool) {
        if harmless_env(name, value) {
            return;
        }
        if (exported || may_be_exported(name)) && self.env_changed.is_none() {
            self.env_changed = Some((name.to_string(), self.statements));
        }
    }

    /// Checks a variable set for a command or the shell: some name the
    /// programs that run, or the code that is loaded.
    pub(crate) fn env_var(&mut self, name: &str, value: &Arg) {
        if COMMAND_VARS.contains(&name) {
            if value.dynamic {
                self.unknown(format!(
                    "{name} names a program to run, and its value is only known when the command runs"
                ));
            } else if !value.value.is_empty() {
                self.line(&value.value.clone());
            }
        } else if CODE_VARS.contains(&name)
            || name.starts_with("LD_")
            || name.starts_with("DYLD_")
            || name.starts_with("BASH_FUNC_")
        {
            self.unknown(format!("setting {name} changes which code runs"));
        }
    }

    fn redirect(&mut self, r: &ast::IoRedirect, stdin: &mut Stdin) {
        use ast::{IoFileRedirectKind as K, IoFileRedirectTarget as T};
        match r {
            ast::IoRedirect::File(fd, kind, target) => {
                let input = matches!(kind, K::Read | K::DuplicateInput);
                match target {
                    T::Filename(w) => {
                        let a = self.word(&w.value);
                        match kind {
                            K::Read | K::DuplicateInput => self.read_path(&a),
                            K::ReadAndWrite => {
                                self.read_path(&a);
                                self.write_path(&a);
                            }
                            _ => self.write_path(&a),
                        }
                    }
                    T::Fd(_) => {}
                    T::ProcessSubstitution(_, sub) => self.nested_list(&sub.list),
                    T::Duplicate(w) => {
                        let a = self.word(&w.value);
                        let v = a.value.trim_end_matches('-');
                        let fd_like = !a.dynamic && v.chars().all(|c| c.is_ascii_digit());
                        if !fd_like {
                            // `>& file` writes to the file; `<& $X` may name any fd.
                            if input {
                                self.read_path(&a);
                            } else {
                                self.write_path(&a);
                            }
                        }
                    }
                }
                if input && matches!(fd, None | Some(0)) {
                    *stdin = Stdin::Unseen;
                }
            }
            ast::IoRedirect::HereDocument(fd, doc) => {
                let (text, dynamic) = if doc.requires_expansion {
                    match word::parse_heredoc(&doc.doc.value, &parser_options()) {
                        Ok(pieces) => {
                            let mut a = Arg::default();
                            let mut lit = String::new();
                            self.pieces(&doc.doc.value, &pieces, true, &mut a, &mut lit);
                            (a.value, a.dynamic)
                        }
                        Err(_) => {
                            self.unknown("a here-document does not parse");
                            (doc.doc.value.clone(), true)
                        }
                    }
                } else {
                    (doc.doc.value.clone(), false)
                };
                if matches!(fd, None | Some(0)) {
                    *stdin = Stdin::Text { text, dynamic };
                }
            }
            ast::IoRedirect::HereString(fd, w) => {
                let a = self.word(&w.value);
                if matches!(fd, None | Some(0)) {
                    let mut text = a.value;
                    text.push('\n');
                    *stdin = Stdin::Text {
                        text,
                        dynamic: a.dynamic,
                    };
                }
            }
            ast::IoRedirect::OutputAndError(w, _) => {
                let a = self.word(&w.value);
                self.write_path(&a);
            }
        }
    }

    /// Reads one word: removes quotes, and classifies every substitution in it.
    pub(crate) fn word(&mut self, raw: &str) -> Arg {
        let mut a = Arg::default();
        if raw.is_empty() {
            return a;
        }
        if let Some(reason) = parser_hazard(raw) {
            self.unknown(reason);
            return Arg::unknown(raw);
        }
        let parsed = std::panic::catch_unwind(|| word::parse(raw, &parser_options()));
        let pieces = match parsed {
            Ok(Ok(p)) => p,
            _ => {
                self.unknown(format!("the shell cannot parse the word {}", excerpt(raw)));
                return Arg::unknown(raw);
            }
        };
        let mut lit = String::new();
        self.pieces(raw, &pieces, false, &mut a, &mut lit);
        if lit.contains("$(") || lit.contains('`') {
            self.stored_code = true;
        }
        a
    }

    fn pieces(
        &mut self,
        raw: &str,
        pieces: &[word::WordPieceWithSource],
        quoted: bool,
        a: &mut Arg,
        lit: &mut String,
    ) {
        for p in pieces {
            let source = raw.get(p.start_index..p.end_index).unwrap_or("");
            match &p.piece {
                WordPiece::Text(t) => {
                    if !quoted {
                        let bracket = t.find('[').is_some_and(|i| t[i..].contains(']'));
                        if t.contains(['*', '?']) || bracket {
                            a.glob = true;
                        }
                        if has_brace_expansion(t) {
                            a.dynamic = true;
                            a.splits = true;
                        }
                    }
                    a.value.push_str(t);
                    lit.push_str(t);
                }
                WordPiece::SingleQuotedText(t) => {
                    a.value.push_str(t);
                    lit.push_str(t);
                }
                WordPiece::AnsiCQuotedText(t) => {
                    let t = ansi_c(t);
                    a.value.push_str(&t);
                    lit.push_str(&t);
                }
                WordPiece::EscapeSequence(s) => {
                    let mut chars = s.chars();
                    chars.next();
                    let rest = chars.as_str();
                    if rest != "\n" {
                        a.value.push_str(rest);
                        lit.push_str(rest);
                    }
                }
                WordPiece::DoubleQuotedSequence(inner) => {
                    self.pieces(raw, inner, true, a, lit);
                }
                WordPiece::GettextDoubleQuotedSequence(inner) => {
                    // A message catalog chosen by the environment can replace the text.
                    self.unknown(
                        "a $\"...\" string is translated through a message catalog at run time",
                    );
                    self.pieces(raw, inner, true, a, lit);
                }
                WordPiece::TildeExpansion(_) => {
                    a.value.push_str(source);
                    lit.push('\0');
                }
                WordPiece::ParameterExpansion(e) => {
                    self.dynamic_piece(a, lit, source, quoted);
                    self.parameter(e);
                }
                WordPiece::CommandSubstitution(s) => {
                    self.dynamic_piece(a, lit, source, quoted);
                    self.line(s);
                }
                WordPiece::BackquotedCommandSubstitution(s) => {
                    self.dynamic_piece(a, lit, source, quoted);
                    self.line(&s.replace("\\$", "$").replace("\\\\", "\\"));
                }
                WordPiece::ArithmeticExpression(e) => {
                    self.dynamic_piece(a, lit, source, quoted);
                    self.arith = true;
                    self.arith_text(&e.value);
                }
            }
        }
    }

    fn dynamic_piece(&mut self, a: &mut Arg, lit: &mut String, source: &str, quoted: bool) {
        a.dynamic = true;
        if !quoted {
            a.splits = true;
        }
        a.value.push_str(source);
        lit.push('\0');
    }

    /// Parameter expansions can hold words of their own (defaults,
    /// patterns, subscripts) with substitutions in them.
    fn parameter(&mut self, e: &ParameterExpr) {
        if self.depth >= MAX_DEPTH {
            self.unknown(format!("expansions nest deeper than {MAX_DEPTH} levels"));
            return;
        }
        self.depth += 1;
        let (parameter, indirect, texts): (Option<&Parameter>, bool, Vec<&str>) = match e {
            ParameterExpr::Parameter {
                parameter,
                indirect,
            }
            | ParameterExpr::ParameterLength {
                parameter,
                indirect,
            } => (Some(parameter), *indirect, vec![]),
            ParameterExpr::UseDefaultValues {
                parameter,
                indirect,
                default_value: v,
                ..
            }
            | ParameterExpr::AssignDefaultValues {
                parameter,
                indirect,
                default_value: v,
                ..
            }
            | ParameterExpr::IndicateErrorIfNullOrUnset {
                parameter,
                indirect,
                error_message: v,
                ..
            }
            | ParameterExpr::UseAlternativeValue {
                parameter,
                indirect,
                alternative_value: v,
                ..
            }
            | ParameterExpr::RemoveSmallestSuffixPattern {
                parameter,
                indirect,
                pattern: v,
            }
            | ParameterExpr::RemoveLargestSuffixPattern {
                parameter,
                indirect,
                pattern: v,
            }
            | ParameterExpr::RemoveSmallestPrefixPattern {
                parameter,
                indirect,
                pattern: v,
            }
            | ParameterExpr::RemoveLargestPrefixPattern {
                parameter,
                indirect,
                pattern: v,
            }
            | ParameterExpr::UppercaseFirstChar {
                parameter,
                indirect,
                pattern: v,
            }
            | ParameterExpr::UppercasePattern {
                parameter,
                indirect,
                pattern: v,
            }
            | ParameterExpr::LowercaseFirstChar {
                parameter,
                indirect,
                pattern: v,
            }
            | ParameterExpr::LowercasePattern {
                parameter,
                indirect,
                pattern: v,
            } => (
                Some(parameter),
                *indirect,
                v.iter().map(String::as_str).collect(),
            ),
            ParameterExpr::Substring {
                parameter,
                indirect,
                offset,
                length,
            } => {
                self.arith = true;
                let mut t = vec![offset.value.as_str()];
                if let Some(l) = length {
                    t.push(l.value.as_str());
                }
                for raw in &t {
                    let a = self.word(raw);
                    self.arith_operand(&a, raw);
                }
                (Some(parameter), *indirect, vec![])
            }
            ParameterExpr::Transform {
                parameter,
                indirect,
                op,
            } => {
                if matches!(op, ParameterTransformOp::PromptExpand) {
                    self.unknown("a ${...@P} expansion runs the variable's text as a prompt, which can run commands");
                }
                (Some(parameter), *indirect, vec![])
            }
            ParameterExpr::ReplaceSubstring {
                parameter,
                indirect,
                pattern,
                replacement,
                ..
            } => {
                let mut t = vec![pattern.as_str()];
                if let Some(r) = replacement {
                    t.push(r.as_str());
                }
                (Some(parameter), *indirect, t)
            }
            ParameterExpr::VariableNames { .. } | ParameterExpr::MemberKeys { .. } => {
                (None, false, vec![])
            }
        };
        if indirect {
            self.unknown("an indirect expansion ${!name} reads a variable named at run time, which can run commands through array subscripts");
        }
        if let Some(Parameter::NamedWithIndex { index, .. }) = parameter {
            self.arith = true;
            self.subscript(index);
        }
        if let ParameterExpr::AssignDefaultValues {
            parameter: Parameter::Named(name),
            ..
        } = e
        {
            self.shell_var_set(name, &Arg::unknown("{value}"), false);
        }
        for t in texts {
            self.word(t);
        }
        self.depth -= 1;
    }

    fn arith_text(&mut self, text: &str) {
        if text.contains('[') && (text.contains("$(") || text.contains('`')) {
            self.unknown(
                "an array subscript in arithmetic holds a command substitution, which bash runs when it evaluates it",
            );
        }
        if !arith_literal(text) {
            self.unknown(format!(
                "the arithmetic {} names a variable; bash evaluates a variable's text as arithmetic, which can run commands",
                excerpt(text)
            ));
        }
        if text.contains(['$', '`']) {
            self.word(text);
        }
    }

    /// Checks a variable name a builtin assigns or inspects at run time
    /// (`read NAME`, `printf -v NAME`, `test -v NAME`): bash evaluates an
    /// array subscript in it, which can run commands, and some variables
    /// change which code runs. `assigns`: the builtin gives it a value
    /// only known at run time.
    pub(crate) fn var_name(&mut self, builtin: &str, a: &Arg, assigns: bool) {
        let v = a.value.as_str();
        if a.dynamic {
            self.unknown(format!(
                "\"{builtin}\" names a variable only known when the command runs (\"{v}\")"
            ));
            return;
        }
        let base = match v.split_once('[') {
            Some((base, rest)) => {
                let index = rest.strip_suffix(']').unwrap_or("");
                let plain = !index.is_empty()
                    && (index.chars().all(|c| c.is_ascii_digit()) || index == "@" || index == "*");
                if !plain {
                    self.unknown(format!(
                        "\"{builtin}\" names the array element \"{v}\", whose subscript bash evaluates and which can run commands"
                    ));
                    return;
                }
                base
            }
            None => v,
        };
        if assigns {
            self.env_var(base, &Arg::unknown("{value}"));
            self.shell_var_set(base, &Arg::unknown("{value}"), false);
        }
    }
}

/// Whether arithmetic text holds only numbers, operators and expansions
/// that are numbers (`$#`, `$?`, `$$`, `$!`, `${#name}`): nothing whose
/// text bash would evaluate in turn.
pub(crate) fn arith_literal(text: &str) -> bool {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b' ' | b'\t' | b'\n' => i += 1,
            b'+' | b'-' | b'*' | b'/' | b'%' | b'<' | b'>' | b'=' | b'!' | b'&' | b'|' | b'^'
            | b'~' | b'?' | b':' | b',' | b'(' | b')' => i += 1,
            b'0'..=b'9' => {
                // 10, 0x1f, 8#17, 36#zz: a number, whatever the base.
                while i < b.len()
                    && (b[i].is_ascii_alphanumeric() || matches!(b[i], b'#' | b'_' | b'@'))
                {
                    i += 1;
                }
            }
            b'$' => {
                let rest = &text[i + 1..];
                if rest.starts_with(['#', '?', '$', '!']) {
                    i += 2;
                } else if let Some(inner) = rest.strip_prefix("{#") {
                    let Some(end) = inner.find('}') else {
                        return false;
                    };
                    let name = &inner[..end];
                    let name = name
                        .strip_suffix("[@]")
                        .or_else(|| name.strip_suffix("[*]"))
                        .unwrap_or(name);
                    if !name.is_empty()
                        && !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    {
                        return false;
                    }
                    i += 3 + end + 1;
                } else {
                    return false;
                }
            }
            _ => return false,
        }
    }
    true
}

/// Environment variables a command may be given without changing what it
/// does beyond its output's language, time zone or layout.
pub(crate) fn harmless_env(name: &str, value: &Arg) -> bool {
    if value.dynamic {
        return false;
    }
    let v = value.value.as_str();
    let plain = !v.contains(['/', '\\', '$', '`']) && !v.contains("..");
    match name {
        "LANG" | "LANGUAGE" | "TERM" | "COLUMNS" | "LINES" => plain,
        n if n.starts_with("LC_") && is_env_name(n) => plain,
        "TZ" => !v.contains("..") && !v.contains(['$', '`']),
        "NO_COLOR" | "CLICOLOR" | "CLICOLOR_FORCE" | "FORCE_COLOR" => plain,
        "PAGER" | "GIT_PAGER" | "SYSTEMD_PAGER" | "MANPAGER" => matches!(v, "" | "cat"),
        _ => false,
    }
}

fn is_env_name(n: &str) -> bool {
    n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Whether a shell variable may already be in the environment, so that
/// setting it changes what later commands see: environment variables are
/// upper case by convention (and the proxy settings are lower case).
fn may_be_exported(name: &str) -> bool {
    let upper = name.chars().any(|c| c.is_ascii_uppercase())
        && !name.chars().any(|c| c.is_ascii_lowercase());
    upper || name.ends_with("_proxy") || name.ends_with("_PROXY")
}

/// Directories a program given by path is trusted from.
const SYSTEM_DIRS: &[&str] = &[
    "/bin",
    "/sbin",
    "/usr/bin",
    "/usr/sbin",
    "/usr/local/bin",
    "/usr/local/sbin",
];

/// Variables whose value is a command line some program runs.
const COMMAND_VARS: &[&str] = &[
    "PAGER",
    "EDITOR",
    "VISUAL",
    "GIT_PAGER",
    "GIT_EDITOR",
    "GIT_SSH_COMMAND",
    "GIT_SEQUENCE_EDITOR",
    "SYSTEMD_PAGER",
    "MANPAGER",
    "PSQL_PAGER",
    "LESSOPEN",
    "LESSCLOSE",
    "KUBE_EDITOR",
    "SUDO_EDITOR",
];

/// Variables that change which code a program or the shell loads.
const CODE_VARS: &[&str] = &[
    "PATH",
    "BASH_ENV",
    "ENV",
    "IFS",
    "PS4",
    "SHELLOPTS",
    "BASHOPTS",
    "PROMPT_COMMAND",
    "GLOBIGNORE",
    "CDPATH",
    "PYTHONPATH",
    "PYTHONSTARTUP",
    "PYTHONHOME",
    "PERL5OPT",
    "PERL5LIB",
    "PERLLIB",
    "RUBYOPT",
    "RUBYLIB",
    "NODE_OPTIONS",
    "NODE_PATH",
    "GIT_SSH",
    "GIT_EXEC_PATH",
    "GIT_EXTERNAL_DIFF",
    "GIT_CONFIG",
    "GIT_CONFIG_GLOBAL",
    "GIT_CONFIG_SYSTEM",
    "GIT_CONFIG_PARAMETERS",
    "GIT_CONFIG_COUNT",
    "GIT_ASKPASS",
    "SSH_ASKPASS",
    "SUDO_ASKPASS",
    "GCONV_PATH",
    "HOSTALIASES",
    "RESOLV_HOST_CONF",
    "TMPDIR",
    "BROWSER",
    "SHELL",
];

/// Targets that discard output or hand it back to the client.
fn is_sink(v: &str) -> bool {
    matches!(
        v,
        "/dev/null" | "/dev/stdout" | "/dev/stderr" | "/dev/tty" | "/dev/fd/1" | "/dev/fd/2"
    )
}

/// Disks and raw memory: writing them destroys data wholesale.
pub(crate) fn is_block_device(v: &str) -> bool {
    let Some(dev) = v.strip_prefix("/dev/") else {
        return false;
    };
    const PREFIXES: &[&str] = &[
        "sd", "hd", "vd", "xvd", "nvme", "mmcblk", "md", "dm-", "loop", "mapper/", "disk/", "nbd",
        "rbd", "zd", "sr", "bcache",
    ];
    PREFIXES.iter().any(|p| dev.starts_with(p)) || matches!(dev, "mem" | "kmem" | "port")
}

/// bash opens a socket for these paths.
fn is_network_device(v: &str) -> bool {
    v.starts_with("/dev/tcp/") || v.starts_with("/dev/udp/")
}

/// Unquoted `{a,b}` or `{1..3}`: the shell turns the word into several.
fn has_brace_expansion(t: &str) -> bool {
    let Some(open) = t.find('{') else {
        return false;
    };
    let rest = &t[open..];
    match rest.find('}') {
        Some(close) => {
            let inner = &rest[..close];
            inner.contains(',') || inner.contains("..")
        }
        None => false,
    }
}

/// Decodes the escapes of `$'...'`, so options spelled with them are seen.
fn ansi_c(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let Some(e) = chars.next() else {
            out.push('\\');
            break;
        };
        let simple = match e {
            'a' => Some('\u{7}'),
            'b' => Some('\u{8}'),
            'e' | 'E' => Some('\u{1b}'),
            'f' => Some('\u{c}'),
            'n' => Some('\n'),
            'r' => Some('\r'),
            't' => Some('\t'),
            'v' => Some('\u{b}'),
            '\\' | '\'' | '"' | '?' => Some(e),
            _ => None,
        };
        if let Some(c) = simple {
            out.push(c);
            continue;
        }
        let (radix, max) = match e {
            '0'..='7' => (8, 2),
            'x' => (16, 2),
            'u' => (16, 4),
            'U' => (16, 8),
            'c' => {
                if let Some(x) = chars.next() {
                    out.push(char::from((x as u32 & 0x1f) as u8));
                }
                continue;
            }
            _ => {
                out.push('\\');
                out.push(e);
                continue;
            }
        };
        let mut n: u32 = if radix == 8 {
            e.to_digit(8).unwrap_or(0)
        } else {
            0
        };
        let mut digits = 0;
        while digits < max {
            match chars.peek().and_then(|d| d.to_digit(radix)) {
                Some(d) => {
                    n = n.saturating_mul(radix).saturating_add(d);
                    chars.next();
                    digits += 1;
                }
                None => break,
            }
        }
        if radix == 16 && digits == 0 {
            out.push('\\');
            out.push(e);
            continue;
        }
        if radix == 8 || e == 'x' {
            // bash emits these as raw bytes; a byte above 0x7f is not text.
            out.push(char::from_u32(n & 0xff).unwrap_or('\u{fffd}'));
        } else {
            out.push(char::from_u32(n).unwrap_or('\u{fffd}'));
        }
    }
    out
}

fn parser_options() -> brush_parser::ParserOptions {
    brush_parser::ParserOptions::default()
}

/// Parses shell text, refusing input known to crash the parser.
fn parse(text: &str) -> Result<ast::Program, String> {
    if let Some(reason) = parser_hazard(text) {
        return Err(reason);
    }
    let options = parser_options();
    let result = std::panic::catch_unwind(|| {
        let mut parser = brush_parser::Parser::new(text.as_bytes(), &options);
        parser.parse_program()
    });
    match result {
        Ok(Ok(program)) => Ok(program),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the parser failed on it".to_string()),
    }
}

/// Text run by a POSIX `sh` (dash on Debian), which the bash grammar used
/// here reads differently: dash has no `$'...'` or `$"..."` quoting, and
/// reads `((` as two subshells.
pub(crate) fn posix_sh_hazard(text: &str) -> Option<&'static str> {
    if text.contains("$'") || text.contains("$\"") {
        Some("holds $'...' or $\"...\" quoting, which a POSIX sh such as dash does not have")
    } else if text.contains("((") {
        Some("holds \"((\", which a POSIX sh such as dash reads as nested subshells")
    } else {
        None
    }
}

/// bash reads `((` as arithmetic only when the parenthesis matching the
/// second `(` is directly followed by `)` ending the command; `((a) )` is
/// two subshells.
fn closes_as_arithmetic(raw: &str) -> Result<(), &'static str> {
    const NOT: &str = "bash reads it as nested subshells, not arithmetic";
    let inner = raw.strip_prefix("((").ok_or(NOT)?;
    let mut depth = 0usize;
    for (i, c) in inner.char_indices() {
        match c {
            '(' => depth += 1,
            ')' if depth > 0 => depth -= 1,
            ')' => {
                return if &inner[i..] == "))" {
                    Ok(())
                } else {
                    Err(NOT)
                };
            }
            _ => {}
        }
    }
    Err(NOT)
}

/// Whether `(( text ))` is certainly an arithmetic expression: operators,
/// names and numbers only, balanced parentheses, no two operands in a
/// row, nothing that expands.
fn plain_arithmetic(text: &str) -> Result<(), &'static str> {
    let mut depth = 0usize;
    let mut last_operand = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => {}
            '(' => {
                depth += 1;
                last_operand = false;
            }
            ')' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or("its parentheses do not balance, so bash may read it as subshells")?;
                last_operand = true;
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                return Err("it names a variable; bash evaluates a variable's text as arithmetic, which can run commands");
            }
            c if c.is_ascii_digit() => {
                if last_operand {
                    return Err("it is not a plain expression (bash may read it as commands)");
                }
                while chars
                    .peek()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
                {
                    chars.next();
                }
                last_operand = true;
            }
            '+' | '-' | '*' | '/' | '%' | '<' | '>' | '=' | '!' | '&' | '|' | '^' | '~' | '?'
            | ':' | ',' => last_operand = false,
            _ => {
                return Err(
                    "it holds expansions, subscripts or quoting the gateway does not evaluate",
                )
            }
        }
    }
    if depth != 0 {
        return Err("its parentheses do not balance, so bash may read it as subshells");
    }
    Ok(())
}

/// Input the parser would panic on: numbers too large for its integer types.
fn parser_hazard(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    // Long digit runs: the parser reads redirection fds and `~N` as machine integers.
    let mut run = 0usize;
    for (i, &b) in bytes.iter().enumerate() {
        if b.is_ascii_digit() {
            run += 1;
            continue;
        }
        if run > 9 && matches!(b, b'<' | b'>') {
            return Some("a redirection names a file descriptor too large to be real".to_string());
        }
        if run > 18 {
            let start = i - run;
            let before = &bytes[..start];
            let tilde =
                before.ends_with(b"~") || before.ends_with(b"~+") || before.ends_with(b"~-");
            if tilde {
                return Some("a ~N directory-stack reference is too large to be real".to_string());
            }
        }
        run = 0;
    }
    if run > 18 {
        let start = bytes.len() - run;
        let before = &bytes[..start];
        if before.ends_with(b"~") || before.ends_with(b"~+") || before.ends_with(b"~-") {
            return Some("a ~N directory-stack reference is too large to be real".to_string());
        }
    }
    None
}

/// A short, single-line rendering of text for reasons.
pub(crate) fn excerpt(text: &str) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(60)
        .collect();
    if text.chars().count() > 60 {
        format!("\"{one_line}...\"")
    } else {
        format!("\"{one_line}\"")
    }
}
