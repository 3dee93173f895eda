//! The program table: what each known program does, by its arguments.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use sluice_core::{Class, Classification};

use super::{is_block_device, posix_sh_hazard, Arg, Call, Stdin, Walker};

use Class::{Admin as A, Destructive as D, Read as R, Unknown as U, Write as W};

/// One rule of the program table (also what users write in config, as TOML:
/// [[ssh.programs]] program = "mytool", args = ["purge*"], class = "destructive").
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgramRule {
    /// Program basename (or an absolute path, matched as written).
    pub program: String,
    /// Glob patterns (`*` and `?`) that must all match some argument; empty matches any invocation.
    #[serde(default)]
    pub args: Vec<String>,
    /// The class of a matching invocation.
    pub class: Class,
}

type SqlHook = Arc<dyn Fn(&str) -> Classification + Send + Sync>;

/// The known programs: built-in table plus the user's rules (user rules are consulted first; first match wins).
#[derive(Clone)]
pub struct Programs {
    rules: Vec<ProgramRule>,
    table: &'static HashMap<&'static str, Spec>,
    pub(super) sql: Option<SqlHook>,
}

impl std::fmt::Debug for Programs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Programs")
            .field("rules", &self.rules)
            .field("builtin", &self.table.len())
            .field("sql", &self.sql.is_some())
            .finish()
    }
}

impl Programs {
    /// The built-in table alone.
    pub fn builtin() -> Programs {
        static TABLE: OnceLock<HashMap<&'static str, Spec>> = OnceLock::new();
        Programs {
            rules: Vec::new(),
            table: TABLE.get_or_init(table),
            sql: None,
        }
    }

    /// The built-in table with the user's rules in front of it.
    pub fn with_rules(rules: Vec<ProgramRule>) -> Result<Programs, String> {
        for (i, rule) in rules.iter().enumerate() {
            let n = i + 1;
            let p = rule.program.as_str();
            if p.is_empty() {
                return Err(format!("ssh program rule {n}: the program is empty"));
            }
            if p.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(format!(
                    "ssh program rule {n}: the program \"{p}\" holds whitespace; name one program"
                ));
            }
            if p.contains('/') && !p.starts_with('/') {
                return Err(format!(
                    "ssh program rule {n}: \"{p}\" is a relative path; give a basename or an absolute path"
                ));
            }
            let base = p.rsplit('/').next().unwrap_or(p);
            if base.is_empty() {
                return Err(format!("ssh program rule {n}: \"{p}\" names no program"));
            }
            if RUNS_OTHERS.contains(&base) {
                return Err(format!(
                    "ssh program rule {n}: \"{base}\" runs other commands, which the gateway classifies itself; a rule cannot replace that"
                ));
            }
            if let Some(a) = rule.args.iter().find(|a| a.is_empty()) {
                let _ = a;
                return Err(format!(
                    "ssh program rule {n} (\"{p}\"): an argument pattern is empty"
                ));
            }
        }
        let mut programs = Programs::builtin();
        programs.rules = rules;
        Ok(programs)
    }

    /// Hook to classify SQL passed to database clients (`psql -c '...'`, `mysql -e '...'`); without it, such SQL is Unknown.
    pub fn with_sql(self, sql: Arc<dyn Fn(&str) -> Classification + Send + Sync>) -> Programs {
        Programs {
            sql: Some(sql),
            ..self
        }
    }

    pub(super) fn has_rule_for(&self, path: &str) -> bool {
        self.rules.iter().any(|r| r.program == path)
    }

    /// The first user rule matching the invocation.
    pub(super) fn rule(&self, name: &str, args: &[Arg]) -> Option<&ProgramRule> {
        self.rules.iter().find(|r| {
            r.program == name
                && r.args.iter().all(|pattern| {
                    args.iter()
                        .any(|a| !a.dynamic && sluice_core::masking::glob(pattern, &a.value))
                })
        })
    }

    pub(super) fn apply_builtin(&self, w: &mut Walker<'_>, call: &Call<'_>) {
        let name = call.name;
        let spec = self.table.get(name).or_else(|| {
            if name.starts_with("mkfs.") || name.starts_with("mke2fs") {
                self.table.get("mkfs")
            } else {
                None
            }
        });
        let Some(spec) = spec else {
            w.unknown(format!("program \"{name}\" is not in the program table"));
            return;
        };
        let (handler, ceiling, split_ceiling) = match spec {
            Spec::Fixed(class) => {
                w.effect(*class);
                return;
            }
            Spec::Files {
                class,
                value_opts,
                pattern,
            } => {
                files(w, call, *class, value_opts, *pattern);
                return;
            }
            Spec::Handler(f, ceiling, split) => (*f, *ceiling, *split),
        };
        // The run-time argument is named first: it is the cause.
        raise_for_dynamic(w, call, ceiling, split_ceiling);
        handler(w, call);
    }
}

fn raise_for_dynamic(w: &mut Walker<'_>, call: &Call<'_>, ceiling: Class, split_ceiling: Class) {
    let Some(dynamic) = call.args.iter().find(|a| a.dynamic) else {
        return;
    };
    let ceiling = if call.args.iter().any(|a| a.dynamic && a.splits) {
        split_ceiling
    } else {
        ceiling
    };
    if ceiling == U {
        w.unknown(format!(
            "an argument of \"{}\" (\"{}\") is only known when the command runs, and could make it run other commands",
            call.name, dynamic.value
        ));
    } else if ceiling > R {
        w.effect(ceiling);
    }
}

/// Programs whose job is to run other commands; user rules cannot name them.
const RUNS_OTHERS: &[&str] = &[
    "sudo", "doas", "su", "runuser", "env", "nohup", "timeout", "nice", "ionice", "stdbuf",
    "setsid", "time", "xargs", "exec", "command", "builtin", "watch", "busybox", "sh", "bash",
    "dash", "zsh", "ksh", "ash", "mksh", "eval", "source", ".", "trap",
];

/// How a built-in program is classified.
pub(super) enum Spec {
    /// The same class whatever the arguments.
    Fixed(Class),
    /// A fixed class; operands are paths. `value_opts` are the short
    /// options that take a value; `pattern` when the first operand is a
    /// pattern, not a file.
    Files {
        class: Class,
        value_opts: &'static str,
        pattern: bool,
    },
    /// Classified by its arguments. Then the most it could do when an
    /// argument is expanded at run time: as one word, and as several.
    Handler(Handler, Class, Class),
}

type Handler = fn(&mut Walker<'_>, &Call<'_>);

fn table() -> HashMap<&'static str, Spec> {
    let mut t: HashMap<&'static str, Spec> = HashMap::with_capacity(512);
    let fixed = |t: &mut HashMap<_, _>, class: Class, names: &[&'static str]| {
        for n in names {
            t.insert(*n, Spec::Fixed(class));
        }
    };
    fixed(
        &mut t,
        R,
        &[
            "true",
            "false",
            ":",
            "echo",
            "pwd",
            "whoami",
            "id",
            "groups",
            "users",
            "uname",
            "uptime",
            "free",
            "ps",
            "pgrep",
            "pidof",
            "env",
            "printenv",
            "tr",
            "seq",
            "yes",
            "sleep",
            "nproc",
            "lscpu",
            "lsmem",
            "lspci",
            "lsusb",
            "lsmod",
            "lsblk",
            "lsof",
            "netstat",
            "getent",
            "last",
            "lastb",
            "w",
            "who",
            "vmstat",
            "iostat",
            "mpstat",
            "pidstat",
            "findmnt",
            "mountpoint",
            "tty",
            "getconf",
            "locale",
            "arch",
            "cd",
            "pushd",
            "popd",
            "dirs",
            "times",
            "jobs",
            "help",
            "exit",
            "return",
            "shift",
            "break",
            "continue",
            "umask",
            "ulimit",
            "unalias",
            "disown",
            "bg",
            "fg",
            "caller",
            "type",
            "which",
            "whereis",
            "whatis",
            "apropos",
            "dpkg-query",
            "lsattr",
            "getfacl",
            "basename",
            "dirname",
            "id",
            "logname",
            "false",
            "expr",
            "bc",
            "column",
            "numfmt",
        ],
    );
    fixed(&mut t, W, &["logger", "sync"]);
    for n in [
        "ping",
        "ping6",
        "traceroute",
        "tracepath",
        "dig",
        "nslookup",
        "host",
    ] {
        t.insert(n, Spec::Handler(network_read, U, U));
    }
    t.insert("shopt", Spec::Handler(shopt, U, U));
    fixed(
        &mut t,
        A,
        &[
            "pkill",
            "killall",
            "killall5",
            "useradd",
            "userdel",
            "usermod",
            "passwd",
            "groupadd",
            "groupdel",
            "groupmod",
            "visudo",
            "chpasswd",
            "chage",
            "gpasswd",
            "adduser",
            "deluser",
            "addgroup",
            "delgroup",
            "vipw",
            "vigr",
            "newusers",
            "umount",
            "swapoff",
            "iptables-restore",
            "ip6tables-restore",
            "modprobe",
            "insmod",
            "rmmod",
            "depmod",
            "ldconfig",
            "chattr",
            "sysctl-write",
            "update-grub",
            "grub-install",
        ],
    );
    fixed(
        &mut t,
        D,
        &[
            "shutdown",
            "reboot",
            "poweroff",
            "halt",
            "wipefs",
            "mkswap",
            "fdisk",
            "sfdisk",
            "gdisk",
            "cfdisk",
            "parted",
            "sgdisk",
            "blkdiscard",
            "mkfs",
            "mke2fs",
            "mkfs.ext2",
            "mkfs.ext3",
            "mkfs.ext4",
            "mkfs.xfs",
            "mkfs.btrfs",
            "mkfs.vfat",
            "mkfs.fat",
            "mkfs.ntfs",
        ],
    );
    t.remove("sysctl-write");

    let files = |t: &mut HashMap<_, _>,
                 class: Class,
                 value_opts: &'static str,
                 pattern: bool,
                 names: &[&'static str]| {
        for n in names {
            t.insert(
                *n,
                Spec::Files {
                    class,
                    value_opts,
                    pattern,
                },
            );
        }
    };
    files(
        &mut t,
        R,
        "",
        false,
        &[
            "cat",
            "wc",
            "file",
            "comm",
            "md5sum",
            "sha1sum",
            "sha224sum",
            "sha256sum",
            "sha384sum",
            "sha512sum",
            "b2sum",
            "cksum",
            "sum",
            "hexdump",
            "rev",
            "tac",
            "realpath",
            "readlink",
            "zcat",
            "bzcat",
            "xzcat",
            "zstdcat",
            "expand",
            "unexpand",
            "diff3",
            "nl",
            "base32",
        ],
    );
    files(&mut t, R, "nc", false, &["head"]);
    files(&mut t, R, "ncsF", false, &["tail"]);
    files(
        &mut t,
        R,
        "efmABCDd",
        true,
        &["grep", "egrep", "fgrep", "zgrep"],
    );
    files(&mut t, R, "efgmABCtTMjE", true, &["rg"]);
    files(&mut t, R, "dBtX", false, &["du"]);
    files(&mut t, R, "tBx", false, &["df"]);
    files(&mut t, R, "cf", false, &["stat"]);
    files(&mut t, R, "IwT", false, &["ls", "dir", "vdir"]);
    files(&mut t, R, "LPIo", false, &["tree"]);
    files(&mut t, R, "bcdf", false, &["cut"]);
    files(&mut t, R, "w", false, &["fold", "fmt", "base64"]);
    files(&mut t, R, "AjNtw", false, &["od"]);
    files(&mut t, R, "nt", false, &["strings"]);
    files(&mut t, R, "d", false, &["paste"]);
    files(&mut t, R, "12jt", false, &["join"]);
    files(&mut t, R, "in", false, &["cmp"]);
    files(&mut t, R, "fL", true, &["jq"]);
    files(&mut t, W, "drt", false, &["touch"]);
    files(&mut t, W, "mZ", false, &["mkdir"]);
    files(&mut t, W, "tS", false, &["cp", "mv", "ln"]);
    files(&mut t, W, "gmotS", false, &["install"]);
    files(
        &mut t,
        W,
        "",
        false,
        &["rmdir", "unlink", "mkfifo", "setfacl"],
    );
    files(&mut t, W, "p", false, &["mktemp"]);
    files(&mut t, W, "lbna", false, &["split"]);
    files(&mut t, W, "pio", false, &["patch"]);
    files(&mut t, D, "nsu", false, &["shred"]);
    files(&mut t, D, "sr", false, &["truncate"]);
    files(&mut t, A, "", false, &["chown", "chgrp"]);

    let h = |t: &mut HashMap<_, _>,
             f: Handler,
             ceiling: Class,
             split: Class,
             names: &[&'static str]| {
        for n in names {
            t.insert(*n, Spec::Handler(f, ceiling, split));
        }
    };
    // Wrappers classify what they run; the run command carries the ceiling.
    h(&mut t, sudo, R, R, &["sudo", "doas"]);
    h(&mut t, su, R, R, &["su", "runuser"]);
    h(&mut t, env_cmd, R, R, &["env"]);
    h(
        &mut t,
        plain_wrapper,
        R,
        R,
        &["nohup", "setsid", "builtin", "exec"],
    );
    h(&mut t, nice, R, R, &["nice"]);
    h(&mut t, ionice, R, R, &["ionice"]);
    h(&mut t, timeout, R, R, &["timeout"]);
    h(&mut t, stdbuf, R, R, &["stdbuf"]);
    h(&mut t, time_cmd, R, R, &["time"]);
    h(&mut t, xargs, R, R, &["xargs"]);
    h(&mut t, command_cmd, R, R, &["command"]);
    h(&mut t, watch, R, R, &["watch"]);
    h(&mut t, busybox, R, R, &["busybox"]);
    h(
        &mut t,
        shell,
        U,
        U,
        &["sh", "bash", "dash", "zsh", "ksh", "ash", "mksh", "rbash"],
    );
    h(&mut t, trap, U, U, &["trap"]);
    h(
        &mut t,
        declare,
        R,
        R,
        &["export", "declare", "typeset", "local", "readonly"],
    );
    h(
        &mut t,
        not_inspectable,
        U,
        U,
        &[
            "eval", "source", ".", "alias", "enable", "fish", "csh", "tcsh",
        ],
    );
    h(
        &mut t,
        interpreter,
        U,
        U,
        &[
            "python",
            "python2",
            "python3",
            "perl",
            "ruby",
            "node",
            "nodejs",
            "php",
            "lua",
            "luajit",
            "tclsh",
            "wish",
            "Rscript",
            "R",
            "pwsh",
            "deno",
            "bun",
            "irb",
            "java",
            "jshell",
            "osascript",
            "expect",
            "gdb",
            "make",
            "npx",
            "vi",
            "vim",
            "nvim",
            "view",
            "nano",
            "emacs",
            "ed",
            "ex",
            "pico",
            "joe",
            "mc",
            "tmux",
            "screen",
            "at",
            "batch",
            "systemd-run",
            "nsenter",
            "chroot",
            "unshare",
            "strace",
            "ltrace",
            "script",
        ],
    );
    h(&mut t, printf, R, R, &["printf"]);
    h(&mut t, read, U, U, &["read"]);
    h(&mut t, mapfile, U, U, &["mapfile", "readarray"]);
    h(&mut t, getopts, U, U, &["getopts"]);
    h(&mut t, unset, U, U, &["unset"]);
    h(&mut t, wait, R, U, &["wait"]);
    h(&mut t, let_cmd, R, R, &["let"]);
    h(&mut t, set_cmd, U, U, &["set"]);
    h(&mut t, blkid, W, W, &["blkid"]);
    h(&mut t, ss, A, A, &["ss"]);
    h(&mut t, lastlog, A, A, &["lastlog"]);
    h(&mut t, sar, W, W, &["sar"]);
    h(
        &mut t,
        rules_save,
        W,
        W,
        &["iptables-save", "ip6tables-save"],
    );
    h(&mut t, apt_cache, U, U, &["apt-cache"]);
    h(&mut t, test, R, R, &["test", "["]);
    h(&mut t, hash, U, U, &["hash"]);
    h(
        &mut t,
        pager,
        U,
        U,
        &["less", "more", "zless", "zmore", "man", "most", "pg"],
    );
    h(&mut t, diff, R, R, &["diff"]);
    h(&mut t, diff, R, U, &["sdiff"]);
    h(&mut t, systemd_analyze, U, U, &["systemd-analyze"]);
    h(&mut t, find, D, U, &["find"]);
    h(&mut t, rm, D, D, &["rm"]);
    h(&mut t, chmod, A, D, &["chmod"]);
    h(&mut t, chown, D, D, &["chown", "chgrp"]);
    h(&mut t, dd, D, D, &["dd"]);
    h(&mut t, tee, W, D, &["tee"]);
    h(&mut t, sed, U, U, &["sed"]);
    h(&mut t, awk, U, U, &["awk", "gawk", "mawk", "nawk"]);
    h(&mut t, sort, W, W, &["sort"]);
    h(&mut t, uniq, W, W, &["uniq"]);
    h(&mut t, top, U, U, &["top"]);
    h(&mut t, hostname, A, A, &["hostname"]);
    h(&mut t, date, A, A, &["date"]);
    h(&mut t, dmesg, A, A, &["dmesg"]);
    h(&mut t, sysctl, A, A, &["sysctl"]);
    h(&mut t, ip, A, A, &["ip"]);
    h(&mut t, ifconfig, A, A, &["ifconfig"]);
    h(
        &mut t,
        ctl_status,
        A,
        A,
        &[
            "timedatectl",
            "hostnamectl",
            "loginctl",
            "localectl",
            "networkctl",
            "resolvectl",
        ],
    );
    h(&mut t, kill, A, A, &["kill"]);
    h(&mut t, init, D, D, &["init", "telinit"]);
    h(&mut t, systemctl, U, U, &["systemctl"]);
    h(&mut t, service, A, A, &["service"]);
    h(&mut t, journalctl, A, A, &["journalctl"]);
    h(&mut t, crontab, A, A, &["crontab"]);
    h(
        &mut t,
        iptables,
        A,
        A,
        &["iptables", "ip6tables", "iptables-legacy", "iptables-nft"],
    );
    h(&mut t, nft, A, A, &["nft"]);
    h(&mut t, ufw, A, A, &["ufw"]);
    h(&mut t, firewall_cmd, A, A, &["firewall-cmd"]);
    h(&mut t, mount, A, A, &["mount"]);
    h(&mut t, swapon, A, A, &["swapon"]);
    h(&mut t, apt, A, A, &["apt", "apt-get"]);
    h(&mut t, dpkg, A, A, &["dpkg"]);
    h(&mut t, rpm, A, A, &["rpm"]);
    h(&mut t, yum, A, A, &["yum", "dnf", "microdnf"]);
    h(&mut t, apk, A, A, &["apk"]);
    h(&mut t, pip, A, A, &["pip", "pip3"]);
    h(&mut t, npm, U, U, &["npm", "pnpm", "yarn"]);
    h(&mut t, gem, A, A, &["gem"]);
    h(&mut t, curl, U, U, &["curl"]);
    h(&mut t, wget, W, W, &["wget"]);
    h(&mut t, tar, U, U, &["tar"]);
    h(
        &mut t,
        compressor,
        W,
        W,
        &[
            "gzip", "gunzip", "bzip2", "bunzip2", "xz", "unxz", "zstd", "unzstd", "lz4", "pigz",
        ],
    );
    h(&mut t, zip, W, W, &["zip", "unzip"]);
    h(&mut t, rsync, U, U, &["rsync"]);
    h(&mut t, remote, U, U, &["ssh", "scp", "sftp"]);
    h(&mut t, psql, U, U, &["psql"]);
    h(&mut t, mysql, U, U, &["mysql", "mariadb"]);
    h(
        &mut t,
        dump,
        W,
        W,
        &["pg_dump", "pg_dumpall", "mysqldump", "mariadb-dump"],
    );
    h(&mut t, redis, U, U, &["redis-cli"]);
    h(&mut t, docker, U, U, &["docker", "podman"]);
    h(&mut t, compose, U, U, &["docker-compose", "podman-compose"]);
    h(&mut t, kubectl, U, U, &["kubectl", "oc"]);
    h(&mut t, git, U, U, &["git"]);
    t
}

// ---------------------------------------------------------------------
// Option scanning

/// Options and operands of one invocation, read the way getopt reads them.
pub(super) struct Opts<'a> {
    pub short: Vec<(char, Option<&'a Arg>)>,
    pub long: Vec<(&'a str, Option<&'a str>)>,
    pub operands: Vec<&'a Arg>,
    /// With `stop`: where the first operand (the wrapped command) starts.
    pub rest: usize,
}

impl<'a> Opts<'a> {
    fn has(&self, c: char) -> bool {
        self.short.iter().any(|(s, _)| *s == c)
    }

    /// A long option given as `full` or as any prefix of it (getopt_long
    /// and git accept unambiguous prefixes).
    fn long(&self, full: &str) -> bool {
        self.long_value(full).is_some()
    }

    /// getopt_long takes any prefix of a long option, down to one letter;
    /// a prefix several options share is taken to mean each of them.
    fn long_value(&self, full: &str) -> Option<Option<&'a str>> {
        self.long
            .iter()
            .find(|(n, _)| long_matches(n, full))
            .map(|(_, v)| *v)
    }

    fn value(&self, c: char) -> Option<&'a Arg> {
        self.short
            .iter()
            .find(|(s, _)| *s == c)
            .and_then(|(_, v)| *v)
    }
}

/// Whether `--given` can mean the long option `full`: it is `full` or a
/// prefix of it (getopt_long's abbreviations, one letter or more).
pub(super) fn long_matches(given: &str, full: &str) -> bool {
    !given.is_empty() && full.starts_with(given)
}

/// Reads options. `short_val`: short options taking a value; `long_val`:
/// long options taking one; `stop`: options end at the first operand.
pub(super) fn opts<'a>(
    args: &'a [Arg],
    short_val: &str,
    long_val: &[&str],
    stop: bool,
) -> Opts<'a> {
    let mut o = Opts {
        short: Vec::new(),
        long: Vec::new(),
        operands: Vec::new(),
        rest: args.len(),
    };
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        let v = a.value.as_str();
        if v == "--" && !a.dynamic {
            o.operands.extend(args[i + 1..].iter());
            if stop {
                o.rest = i + 1;
            }
            return o;
        }
        if let Some(name) = v.strip_prefix("--") {
            match name.split_once('=') {
                Some((n, val)) => o.long.push((n, Some(val))),
                None => {
                    let takes = long_val.iter().any(|l| long_matches(name, l));
                    if takes && i + 1 < args.len() {
                        o.long.push((name, Some(args[i + 1].value.as_str())));
                        i += 1;
                    } else {
                        o.long.push((name, None));
                    }
                }
            }
        } else if v.len() > 1 && v.starts_with('-') {
            for (pos, c) in v.char_indices().skip(1) {
                if short_val.contains(c) {
                    let attached = &v[pos + c.len_utf8()..];
                    if attached.is_empty() {
                        o.short.push((c, args.get(i + 1)));
                        i += 1;
                    } else {
                        // The attached value is not a separate word; record the whole.
                        o.short.push((c, Some(a)));
                    }
                    break;
                }
                o.short.push((c, None));
            }
        } else {
            if stop {
                o.rest = i;
                return o;
            }
            o.operands.push(a);
        }
        i += 1;
    }
    o
}

/// Reads options against the complete list of a program's options, for
/// programs whose operands (a verb) decide the class: an option the list
/// does not hold may take a value, so which word is the verb is not known.
fn strict_opts<'a>(
    args: &'a [Arg],
    short_val: &str,
    short_flag: &str,
    long_val: &[&str],
    long_flag: &[&str],
) -> Result<Opts<'a>, String> {
    let mut o = Opts {
        short: Vec::new(),
        long: Vec::new(),
        operands: Vec::new(),
        rest: args.len(),
    };
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        let v = a.value.as_str();
        if a.dynamic {
            return Err(format!(
                "the argument \"{v}\" is only known when the command runs"
            ));
        }
        if v == "--" {
            o.operands.extend(args[i + 1..].iter());
            return Ok(o);
        }
        if let Some(name) = v.strip_prefix("--") {
            let (n, val) = match name.split_once('=') {
                Some((n, val)) => (n, Some(val)),
                None => (name, None),
            };
            let takes = long_val.iter().any(|l| long_matches(n, l));
            let flag = long_flag.iter().any(|l| long_matches(n, l));
            if !takes && !flag {
                return Err(format!("the option \"--{n}\" is not one the gateway knows"));
            }
            if val.is_none() && takes {
                i += 1;
                o.long
                    .push((n, Some(args.get(i).map_or("", |a| a.value.as_str()))));
            } else {
                o.long.push((n, val));
            }
        } else if v.len() > 1 && v.starts_with('-') {
            for (pos, c) in v.char_indices().skip(1) {
                if short_val.contains(c) {
                    if v[pos + c.len_utf8()..].is_empty() {
                        o.short.push((c, args.get(i + 1)));
                        i += 1;
                    } else {
                        o.short.push((c, Some(a)));
                    }
                    break;
                }
                if !short_flag.contains(c) {
                    return Err(format!("the option \"-{c}\" is not one the gateway knows"));
                }
                o.short.push((c, None));
            }
        } else {
            o.operands.push(a);
        }
        i += 1;
    }
    Ok(o)
}

/// The value of a short option, without the option letters when attached.
fn short_text<'a>(o: &Opts<'a>, c: char) -> Option<&'a str> {
    let a = o.value(c)?;
    let v = a.value.as_str();
    if let Some(rest) = v.strip_prefix('-') {
        if let Some(pos) = rest.find(c) {
            let after = &rest[pos + c.len_utf8()..];
            if !after.is_empty() {
                return Some(after);
            }
        }
    }
    Some(v)
}

fn join(args: &[Arg]) -> Option<String> {
    if args.iter().any(|a| a.dynamic) {
        return None;
    }
    Some(
        args.iter()
            .map(|a| a.value.as_str())
            .collect::<Vec<_>>()
            .join(" "),
    )
}

fn version_query(args: &[Arg]) -> bool {
    args.len() == 1
        && matches!(
            args[0].value.as_str(),
            "--version" | "-V" | "-v" | "--help" | "-h" | "version"
        )
}

fn files(w: &mut Walker<'_>, call: &Call<'_>, class: Class, value_opts: &str, pattern: bool) {
    let o = opts(call.args, value_opts, &[], false);
    if !file_options(w, call, &o) {
        return;
    }
    let skip =
        usize::from(pattern && !o.has('e') && !o.has('f') && o.long_value("regexp").is_none());
    for a in o.operands.iter().skip(skip) {
        if class == W || class == D {
            if a.value != "-" {
                w.path(&a.value);
                if is_block_device(&a.value) {
                    w.effect(D);
                }
            }
        } else if a.value != "-" {
            w.path(&a.value);
        }
    }
    w.effect(class);
}

/// Options of the plain file programs that do more than read or write
/// their operands: each program's options that run, load or write
/// something are refused or classified; for the decompressors, whose
/// option sets are large, only a few known options are accepted.
/// Returns false when the call is settled (unknown).
fn file_options(w: &mut Walker<'_>, call: &Call<'_>, o: &Opts<'_>) -> bool {
    let name = call.name;
    let long = |full: &str| o.long.iter().any(|(n, _)| long_matches(n, full));
    // ripgrep does not take abbreviations of long options.
    let exact = |full: &str| o.long.iter().any(|(n, _)| *n == full);
    let hazard: Option<String> = match name {
        "file" if o.has('C') || o.has('m') || long("compile") || long("magic-file") => {
            Some("\"file -C/-m\" compiles or loads a magic file".to_string())
        }
        "rg" if o.has('z')
            || ["pre", "pre-glob", "search-zip", "hostname-bin"]
                .iter()
                .any(|l| exact(l)) =>
        {
            Some("\"rg --pre/--search-zip/--hostname-bin\" runs other programs".to_string())
        }
        "diff3" if long("diff-program") => {
            Some("\"diff3 --diff-program\" runs another program".to_string())
        }
        "install" if long("strip-program") => {
            Some("\"install --strip-program\" runs another program".to_string())
        }
        "split" if long("filter") => Some("\"split --filter\" runs a shell command".to_string()),
        "zcat" | "bzcat" | "xzcat" | "zstdcat"
            if !o.long.is_empty() || o.short.iter().any(|(c, _)| !"qvfkcd".contains(*c)) =>
        {
            Some(format!(
                "\"{name}\" is given an option the gateway does not know to be harmless"
            ))
        }
        _ => None,
    };
    if let Some(reason) = hazard {
        w.unknown(reason);
        return false;
    }
    // A word expanded at run time could be any of those options.
    const HAZARDOUS: &[&str] = &[
        "file", "rg", "diff3", "install", "split", "zcat", "bzcat", "xzcat", "zstdcat", "tree",
    ];
    if HAZARDOUS.contains(&name) {
        if let Some(a) = call.args.iter().find(|a| {
            a.dynamic
                && !a
                    .value
                    .starts_with(|c: char| c != '-' && c != '$' && c != '`')
        }) {
            w.unknown(format!(
                "an argument of \"{name}\" (\"{}\") is only known when the command runs, and could be an option that runs or writes something",
                a.value
            ));
            return false;
        }
    }
    if name == "tree" {
        if let Some(p) = short_text(o, 'o') {
            w.write_path(&Arg::lit(p));
        }
        if o.has('R') {
            // -R writes 00Tree.html into every directory.
            w.effect(W);
        }
    }
    true
}

/// `blkid -c FILE` and `-g` write the cache.
fn blkid(w: &mut Walker<'_>, call: &Call<'_>) {
    let o = opts(call.args, "cosStLUnuOpw", &[], false);
    if let Some(p) = short_text(&o, 'c') {
        w.write_path(&Arg::lit(p));
    }
    if o.has('g') || o.has('w') {
        w.effect(W);
    }
    w.effect(R);
}

/// `ss -K` kills sockets; `-D FILE` dumps raw data to a file.
fn ss(w: &mut Walker<'_>, call: &Call<'_>) {
    let o = opts(
        call.args,
        "fADFN",
        &["family", "query", "diag", "filter", "net"],
        false,
    );
    if o.has('K') || o.long("kill") {
        w.effect(A);
    }
    if let Some(p) = short_text(&o, 'D').or_else(|| o.long_value("diag").flatten()) {
        w.write_path(&Arg::lit(p));
    } else if o.has('D') || o.long("diag") {
        w.effect(W);
    }
    w.effect(R);
}

/// `sar -o FILE` saves the samples to a file.
fn sar(w: &mut Walker<'_>, call: &Call<'_>) {
    let o = opts(call.args, "oefIinPms", &[], false);
    if let Some(p) = short_text(&o, 'o') {
        w.write_path(&Arg::lit(p));
    }
    w.effect(R);
}

/// `iptables-save -f FILE` writes the rules to a file.
fn rules_save(w: &mut Walker<'_>, call: &Call<'_>) {
    let o = opts(call.args, "tfM", &["table", "file", "modprobe"], false);
    if o.has('M')
        || o.long
            .iter()
            .any(|(n, _)| n.len() > 1 && long_matches(n, "modprobe"))
    {
        w.unknown("\"iptables-save --modprobe\" runs another program");
        return;
    }
    if let Some(p) = short_text(&o, 'f').or_else(|| o.long_value("file").flatten()) {
        w.write_path(&Arg::lit(p));
    }
    w.effect(R);
}

/// `lastlog -C/--clear` and `-S/--set` change the login records.
fn lastlog(w: &mut Walker<'_>, call: &Call<'_>) {
    let o = opts(
        call.args,
        "bRtu",
        &["before", "root", "time", "user"],
        false,
    );
    if o.has('C') || o.has('S') || o.long("clear") || o.long("set") {
        w.effect(A);
    } else {
        w.effect(R);
    }
}

// ---------------------------------------------------------------------
// Wrappers

fn sudo(w: &mut Walker<'_>, call: &Call<'_>) {
    let o = opts(
        call.args,
        "acCDgpRrtTuU",
        &[
            "user",
            "group",
            "close-from",
            "chdir",
            "prompt",
            "chroot",
            "role",
            "type",
            "command-timeout",
            "other-user",
            "host",
            "login-class",
            "auth-type",
        ],
        true,
    );
    let rest = &call.args[o.rest..];
    if o.has('l')
        || o.long("list")
        || o.has('v')
        || o.long("validate")
        || o.has('k') && rest.is_empty()
        || o.has('K')
        || o.has('V')
        || o.long("version")
        || o.has('h') && rest.is_empty()
    {
        w.effect(R);
        return;
    }
    if o.has('e') || o.long("edit") {
        w.effect(A);
        for a in rest {
            w.write_path(a);
        }
        return;
    }
    let shell = o.has('s') || o.long("shell") || o.has('i') || o.long("login");
    if rest.is_empty() {
        w.unknown(format!(
            "\"{}\" without a command opens an interactive root shell",
            call.name
        ));
        return;
    }
    let inner = w.capture(|w| {
        if shell {
            match join(rest) {
                // The shell is $SHELL or the target's login shell, which may be a POSIX sh.
                Some(text) => match posix_sh_hazard(&text) {
                    Some(reason) => w.unknown(format!(
                        "the text \"{} -s/-i\" hands to a shell {reason}",
                        call.name
                    )),
                    None => w.line(&text),
                },
                None => w.unknown(format!(
                    "\"{} -s\" runs text only known when the command runs",
                    call.name
                )),
            }
        } else {
            w.run(rest, call.stdin);
        }
    });
    elevate(w, &inner);
}

/// Running as another user keeps the inner effects; a change made as
/// root is also administration.
fn elevate(w: &mut Walker<'_>, inner: &Classification) {
    if inner.effects.iter().any(|c| *c > R) {
        w.effect(A);
    }
}

fn su(w: &mut Walker<'_>, call: &Call<'_>) {
    let o = opts(
        call.args,
        "csgGwu",
        &[
            "command",
            "session-command",
            "shell",
            "group",
            "supp-group",
            "whitelist-environment",
            "user",
        ],
        false,
    );
    // The shell that runs -c: given by -s, else the target's login shell.
    let shell = short_text(&o, 's').or_else(|| o.long_value("shell").flatten());
    let bash = match shell {
        None => false,
        Some(sh) => {
            let known = matches!(
                sh,
                "/bin/bash"
                    | "/usr/bin/bash"
                    | "/bin/sh"
                    | "/usr/bin/sh"
                    | "/bin/dash"
                    | "/usr/bin/dash"
            );
            if !known || o.value('s').is_some_and(|a| a.dynamic) {
                w.unknown(format!(
                    "\"{} -s {sh}\" runs the command with a shell the gateway does not parse",
                    call.name
                ));
                return;
            }
            sh.ends_with("/bash")
        }
    };
    if call.name == "runuser" && o.value('u').is_some() {
        let o = opts(
            call.args,
            "ugGw",
            &["user", "group", "supp-group", "whitelist-environment"],
            true,
        );
        let rest = &call.args[o.rest..];
        let inner = w.capture(|w| w.run(rest, call.stdin));
        elevate(w, &inner);
        return;
    }
    let command = short_text(&o, 'c')
        .or_else(|| o.long_value("command").flatten())
        .or_else(|| o.long_value("session-command").flatten());
    let dynamic = o.value('c').is_some_and(|a| a.dynamic);
    match command {
        Some(_) if dynamic => w.unknown(format!(
            "\"{} -c\" runs text only known when the command runs",
            call.name
        )),
        Some(text) => {
            let text = text.to_string();
            if !bash {
                // The login shell may be a POSIX sh (dash) that reads some text differently.
                if let Some(reason) = posix_sh_hazard(&text) {
                    w.unknown(format!("the text \"{} -c\" runs {reason}", call.name));
                    return;
                }
            }
            let inner = w.capture(|w| w.line(&text));
            elevate(w, &inner);
        }
        None => w.unknown(format!(
            "\"{}\" without -c opens an interactive shell",
            call.name
        )),
    }
}

fn env_cmd(w: &mut Walker<'_>, call: &Call<'_>) {
    let o = opts(call.args, "uCS", &["unset", "chdir", "split-string"], true);
    if o.has('S') || o.long("split-string") {
        w.unknown("\"env -S\" splits a string into a command with its own rules");
        return;
    }
    let mut rest = &call.args[o.rest..];
    while let Some(a) = rest.first() {
        match a.value.split_once('=') {
            Some((name, value)) if is_name(name) => {
                let v = Arg {
                    value: value.to_string(),
                    ..a.clone()
                };
                w.env_var(name, &v);
                if let Some(program) = call.args[o.rest..].iter().find(|a| !a.value.contains('=')) {
                    w.command_env(&program.value, name, &v);
                }
                rest = &rest[1..];
            }
            _ => break,
        }
    }
    if rest.is_empty() {
        w.effect(R);
    } else {
        w.run(rest, call.stdin);
    }
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

fn plain_wrapper(w: &mut Walker<'_>, call: &Call<'_>) {
    // `exec -a name -c -l cmd`; the others take no options worth reading.
    let o = opts(call.args, "a", &[], true);
    let rest = &call.args[o.rest..];
    if rest.is_empty() {
        w.effect(R);
    } else {
        w.run(rest, call.stdin);
    }
}

fn nice(w: &mut Walker<'_>, call: &Call<'_>) {
    let o = opts(call.args, "n", &["adjustment"], true);
    wrapped(w, call, o.rest);
}

fn wrapped(w: &mut Walker<'_>, call: &Call<'_>, rest: usize) {
    let rest = &call.args[rest.min(call.args.len())..];
    if rest.is_empty() {
        w.effect(R);
    } else {
        w.run(rest, call.stdin);
    }
}

fn ionice(w: &mut Walker<'_>, call: &Call<'_>) {
    let o = opts(
        call.args,
        "cnpPu",
        &["class", "classdata", "pid", "pgid", "uid"],
        true,
    );
    if o.has('p') || o.has('P') || o.has('u') || o.long("pid") || o.long("pgid") || o.long("uid") {
        if call.args.len() > 2 && o.short.iter().any(|(c, _)| *c == 'c' || *c == 'n') {
            w.effect(A);
        } else {
            w.effect(R);
        }
        return;
    }
    wrapped(w, call, o.rest);
}

fn timeout(w: &mut Walker<'_>, call: &Call<'_>) {
    let o = opts(call.args, "sk", &["signal", "kill-after"], true);
    // The first operand is the duration.
    wrapped(w, call, o.rest + 1);
}

fn stdbuf(w: &mut Walker<'_>, call: &Call<'_>) {
    let o = opts(call.args, "ioe", &["input", "output", "error"], true);
    wrapped(w, call, o.rest);
}

fn time_cmd(w: &mut Walker<'_>, call: &Call<'_>) {
    let o = opts(call.args, "fo", &["format", "output"], true);
    if let Some(out) = o.value('o') {
        if let Some(text) = short_text(&o, 'o') {
            w.write_path(&Arg {
                value: text.to_string(),
                ..out.clone()
            });
        }
    }
    if let Some(Some(out)) = o.long_value("output") {
        w.write_path(&Arg::lit(out));
    }
    wrapped(w, call, o.rest);
}

fn xargs(w: &mut Walker<'_>, call: &Call<'_>) {
    let o = opts(
        call.args,
        "adEILnPs",
        &[
            "arg-file",
            "delimiter",
            "eof",
            "replace",
            "max-lines",
            "max-args",
            "max-procs",
            "max-chars",
            "process-slot-var",
        ],
        true,
    );
    if let Some(text) = short_text(&o, 'a') {
        w.read_path(&Arg::lit(text));
    }
    let mut argv: Vec<Arg> = call.args[o.rest..].to_vec();
    if argv.is_empty() {
        argv.push(Arg::lit("echo"));
    }
    // The words xargs reads are only known when it runs.
    argv.push(Arg::unknown("{xargs input}"));
    w.run(&argv, &Stdin::Unseen);
}

fn command_cmd(w: &mut Walker<'_>, call: &Call<'_>) {
    let o = opts(call.args, "", &[], true);
    if o.has('v') || o.has('V') {
        w.effect(R);
        return;
    }
    wrapped(w, call, o.rest);
}

fn watch(w: &mut Walker<'_>, call: &Call<'_>) {
    let o = opts(call.args, "nq", &["interval", "equexit"], true);
    let rest = &call.args[o.rest..];
    if rest.is_empty() {
        w.effect(R);
    } else if o.has('x') || o.long("exec") {
        w.run(rest, &Stdin::Unseen);
    } else {
        // watch hands the words, joined, to `sh -c`.
        match join(rest) {
            Some(text) => match posix_sh_hazard(&text) {
                Some(reason) => w.unknown(format!("the text \"watch\" runs with sh {reason}")),
                None => w.line(&text),
            },
            None => w.unknown("\"watch\" runs text only known when the command runs"),
        }
    }
}

fn busybox(w: &mut Walker<'_>, call: &Call<'_>) {
    if call.args.is_empty() || call.args[0].value.starts_with('-') {
        w.effect(R);
    } else {
        w.run(call.args, call.stdin);
    }
}

fn shell(w: &mut Walker<'_>, call: &Call<'_>) {
    let name = call.name;
    // Shells other than bash (and zsh, close enough here) read `$'`, `$"`
    // and `((` differently from the bash grammar the gateway parses.
    let posix = !matches!(name, "bash" | "rbash" | "zsh");
    let line = |w: &mut Walker<'_>, text: &str| match posix_sh_hazard(text).filter(|_| posix) {
        Some(reason) => w.unknown(format!("the text \"{name}\" runs {reason}")),
        None => w.line(text),
    };
    let o = opts(call.args, "oO", &["rcfile", "init-file"], true);
    if o.long("rcfile") || o.long("init-file") {
        w.unknown(format!(
            "\"{name}\" reads a startup file the gateway cannot inspect"
        ));
        return;
    }
    let rest = &call.args[o.rest..];
    if o.has('c') {
        match rest.first() {
            Some(text) if text.dynamic => w.unknown(format!(
                "\"{name} -c\" runs text only known when the command runs"
            )),
            Some(text) => line(w, &text.value.clone()),
            None => w.unknown(format!("\"{name} -c\" without a command string")),
        }
        return;
    }
    if version_query(call.args) {
        w.effect(R);
        return;
    }
    if let Some(script) = rest.first().filter(|_| !o.has('s')) {
        w.path(&script.value);
        w.unknown(format!(
            "\"{name}\" runs the script \"{}\", which the gateway cannot inspect",
            script.value
        ));
        return;
    }
    match call.stdin {
        Stdin::Text {
            text,
            dynamic: false,
        } => {
            let text = text.clone();
            line(w, &text);
        }
        _ => w.unknown(format!(
            "\"{name}\" reads commands from its standard input, which the gateway cannot inspect"
        )),
    }
}

fn trap(w: &mut Walker<'_>, call: &Call<'_>) {
    let o = opts(call.args, "", &[], true);
    let rest = &call.args[o.rest..];
    if o.has('l') || o.has('p') || rest.len() < 2 {
        w.effect(R);
        return;
    }
    let action = &rest[0];
    if action.dynamic {
        w.unknown("\"trap\" sets an action only known when the command runs");
    } else if action.value != "-" && !action.value.is_empty() {
        let text = action.value.clone();
        w.line(&text);
    } else {
        w.effect(R);
    }
}

fn declare(w: &mut Walker<'_>, call: &Call<'_>) {
    let o = opts(call.args, "", &[], false);
    if o.has('n') {
        w.unknown(format!(
            "\"{} -n\" makes a name refer to another variable, so later assignments reach variables the gateway cannot follow",
            call.name
        ));
        return;
    }
    if o.has('i') {
        w.unknown(format!(
            "\"{} -i\" makes bash evaluate the variable's values as arithmetic, which can run commands",
            call.name
        ));
        return;
    }
    let exported = call.name == "export" || o.has('x');
    for a in &o.operands {
        let literal_name = a
            .value
            .split_once('=')
            .is_some_and(|(n, _)| is_name(n.split('[').next().unwrap_or(n).trim_end_matches('+')));
        if a.dynamic && !literal_name {
            w.unknown(format!(
                "\"{}\" sets a variable named only when the command runs (\"{}\")",
                call.name, a.value
            ));
        }
        if let Some((name, value)) = a.value.split_once('=') {
            if value.starts_with('(') && !plain_compound(a, value) {
                w.unknown(format!(
                    "\"{}\" is given the compound assignment \"{}\", which bash parses again and can run commands",
                    call.name, a.value
                ));
                return;
            }
            let name = name.trim_end_matches('+');
            let base = name.split('[').next().unwrap_or(name);
            let v = Arg {
                value: value.to_string(),
                ..(*a).clone()
            };
            w.shell_var_set(base, &v, exported);
            if base.len() != name.len() {
                w.arith_context();
                if !a.dynamic {
                    w.var_name(call.name, &Arg::lit(name), false);
                }
            }
            if is_name(base) {
                let v = Arg {
                    value: value.to_string(),
                    ..(*a).clone()
                };
                w.env_var(base, &v);
            }
        } else if a.value.contains('[') {
            w.arith_context();
            w.var_name(call.name, a, false);
        } else if exported {
            let v = if a.dynamic {
                (*a).clone()
            } else {
                Arg::lit("")
            };
            w.shell_var_set(&a.value, &v, true);
        }
    }
    w.effect(R);
}

/// `declare a=(1 2)`: a compound value with nothing bash could expand or
/// evaluate when it parses it again.
fn plain_compound(a: &Arg, value: &str) -> bool {
    let Some(inner) = value.strip_prefix('(').and_then(|v| v.strip_suffix(')')) else {
        return false;
    };
    !a.dynamic
        && inner
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || " _.,:/@%+=-".contains(c))
}

/// `set`: options that export every assignment (`-a`) or put assignments
/// among arguments into the environment (`-k`) change what later commands
/// see; the other options only affect how the shell reports.
fn set_cmd(w: &mut Walker<'_>, call: &Call<'_>) {
    const FLAGS: &str = "eEuxvfnCBhHPTbm";
    const NAMES: &[&str] = &[
        "errexit",
        "errtrace",
        "nounset",
        "xtrace",
        "verbose",
        "noglob",
        "noexec",
        "noclobber",
        "braceexpand",
        "hashall",
        "histexpand",
        "physical",
        "functrace",
        "notify",
        "monitor",
        "pipefail",
        "history",
        "ignoreeof",
        "posix",
    ];
    let mut i = 0;
    while i < call.args.len() {
        let a = &call.args[i];
        let v = a.value.as_str();
        if a.dynamic {
            w.unknown("an option of \"set\" is only known when the command runs");
            return;
        }
        if v == "--" || v == "-" || !(v.starts_with('-') || v.starts_with('+')) {
            break;
        }
        if v == "-o" || v == "+o" {
            match call.args.get(i + 1) {
                None => {}
                Some(n) if n.dynamic || !NAMES.contains(&n.value.as_str()) => {
                    w.unknown(format!(
                        "\"set -o {}\" is not a shell option the gateway accepts (allexport and keyword export variables)",
                        n.value
                    ));
                    return;
                }
                Some(_) => {}
            }
            i += 2;
            continue;
        }
        if let Some(c) = v[1..].chars().find(|c| !FLAGS.contains(*c)) {
            w.unknown(format!(
                "\"set {}{c}\" is not a shell option the gateway accepts (-a and -k export variables)",
                &v[..1]
            ));
            return;
        }
        i += 1;
    }
    w.effect(R);
}

// ---------------------------------------------------------------------
// Builtins that name variables

/// `printf [-v NAME] FORMAT ARGS...`: the output may go to a variable.
fn printf(w: &mut Walker<'_>, call: &Call<'_>) {
    let o = opts(call.args, "v", &[], true);
    if let Some(a) = o.value('v') {
        let name = short_text(&o, 'v').unwrap_or_default();
        w.var_name(
            "printf -v",
            &Arg {
                value: name.to_string(),
                ..a.clone()
            },
            true,
        );
    }
    if let Some(format) = call.args.get(o.rest) {
        if format.dynamic
            && !format
                .value
                .starts_with(|c: char| c != '-' && c != '$' && c != '`')
        {
            w.unknown("the first argument of \"printf\" is only known when the command runs, and could be -v NAME");
            return;
        }
    }
    w.effect(R);
}

/// `read [-a NAME] [-d D -i T -n N -N N -p P -t T -u FD] [NAME...]`.
fn read(w: &mut Walker<'_>, call: &Call<'_>) {
    let o = opts(call.args, "adinNptu", &[], false);
    if let Some(a) = o.value('a') {
        let name = short_text(&o, 'a').unwrap_or_default();
        w.var_name(
            "read -a",
            &Arg {
                value: name.to_string(),
                ..a.clone()
            },
            true,
        );
    }
    for a in &o.operands {
        w.var_name("read", a, true);
    }
    w.effect(R);
}

/// `mapfile [-C CALLBACK -c N -d D -n N -O N -s N -u FD -t] [ARRAY]`.
fn mapfile(w: &mut Walker<'_>, call: &Call<'_>) {
    let o = opts(call.args, "CcdnOsu", &[], false);
    if o.has('C') {
        w.unknown(format!(
            "\"{} -C\" runs a callback command the gateway cannot inspect",
            call.name
        ));
        return;
    }
    for a in &o.operands {
        w.var_name(call.name, a, true);
    }
    w.effect(R);
}

/// `getopts OPTSTRING NAME [ARGS...]`.
fn getopts(w: &mut Walker<'_>, call: &Call<'_>) {
    let o = opts(call.args, "", &[], true);
    if let Some(a) = call.args.get(o.rest + 1) {
        w.var_name("getopts", a, true);
    }
    w.effect(R);
}

fn unset(w: &mut Walker<'_>, call: &Call<'_>) {
    let o = opts(call.args, "", &[], false);
    for a in &o.operands {
        w.var_name("unset", a, false);
    }
    w.effect(R);
}

/// `wait [-fn] [-p NAME] [ID...]`.
fn wait(w: &mut Walker<'_>, call: &Call<'_>) {
    let o = opts(call.args, "p", &[], false);
    if let Some(a) = o.value('p') {
        let name = short_text(&o, 'p').unwrap_or_default();
        w.var_name(
            "wait -p",
            &Arg {
                value: name.to_string(),
                ..a.clone()
            },
            true,
        );
    }
    w.effect(R);
}

/// `let EXPR...`: each argument is arithmetic, where bash evaluates array
/// subscripts, which can hold command substitutions.
fn let_cmd(w: &mut Walker<'_>, call: &Call<'_>) {
    w.arith_context();
    for a in call.args {
        if a.dynamic || !super::arith_literal(&a.value) {
            w.unknown(format!(
                "\"let {}\" names a variable; bash evaluates a variable's text as arithmetic, which can run commands",
                a.value
            ));
            return;
        }
        if a.value.contains('[') && (a.value.contains("$(") || a.value.contains('`')) {
            w.unknown("\"let\" evaluates an array subscript holding a command substitution");
            return;
        }
    }
    w.effect(R);
}

/// `test`/`[`: `-v NAME` and `-R NAME` evaluate an array subscript in NAME.
fn test(w: &mut Walker<'_>, call: &Call<'_>) {
    let args = call.args;
    for (i, a) in args.iter().enumerate() {
        if a.dynamic {
            // It could become -v, and the next word a subscripted name.
            w.arith_context();
        } else if (a.is("-v") || a.is("-R")) && i + 1 < args.len() {
            w.var_name(call.name, &args[i + 1], false);
        }
    }
    w.effect(R);
}

/// `hash` alone lists the table; with names or `-p` it changes which
/// program a command name runs.
fn hash(w: &mut Walker<'_>, call: &Call<'_>) {
    if call.args.iter().all(|a| a.is("-l") || a.is("-r")) {
        w.effect(R);
    } else {
        w.unknown("\"hash\" with arguments can change which program a command name runs");
    }
}

/// Pagers and manual readers are interactive and have shell escapes (`!cmd`).
fn pager(w: &mut Walker<'_>, call: &Call<'_>) {
    if version_query(call.args) {
        w.effect(R);
        return;
    }
    w.unknown(format!(
        "\"{}\" is an interactive pager with shell escapes the gateway cannot inspect",
        call.name
    ));
}

/// `diff`/`sdiff`: files are read; `--diff-program` runs another program,
/// and `sdiff -o` merges interactively (its `e` command runs an editor).
fn diff(w: &mut Walker<'_>, call: &Call<'_>) {
    let short = if call.name == "sdiff" {
        "Iow"
    } else {
        "CDFILSUWXx"
    };
    let o = opts(
        call.args,
        short,
        &[
            "diff-program",
            "output",
            "label",
            "from-file",
            "to-file",
            "ignore-matching-lines",
            "exclude",
            "exclude-from",
            "starting-file",
            "width",
            "tabsize",
            "horizon-lines",
        ],
        false,
    );
    if o.long("diff-program") {
        w.unknown(format!(
            "\"{} --diff-program\" runs another program",
            call.name
        ));
        return;
    }
    if call.name == "sdiff" && (o.has('o') || o.long("output")) {
        w.unknown("\"sdiff -o\" merges interactively and can run an editor");
        return;
    }
    for a in &o.operands {
        w.path(&a.value);
    }
    w.effect(R);
}

fn not_inspectable(w: &mut Walker<'_>, call: &Call<'_>) {
    let reason = match call.name {
        "eval" => "\"eval\" runs text the gateway cannot inspect".to_string(),
        "source" | "." => format!(
            "\"{}\" runs a script file the gateway cannot inspect",
            call.name
        ),
        "alias" => "\"alias\" can change what a later command name runs".to_string(),
        "enable" => "\"enable\" can load or disable shell builtins".to_string(),
        other => format!("\"{other}\" is a shell whose syntax the gateway does not parse"),
    };
    w.unknown(reason);
}

fn interpreter(w: &mut Walker<'_>, call: &Call<'_>) {
    if version_query(call.args) {
        w.effect(R);
        return;
    }
    let name = call.name;
    let code_flag = call.args.iter().find(|a| {
        matches!(
            a.value.as_str(),
            "-c" | "-e" | "-r" | "-E" | "--eval" | "-m" | "-x"
        )
    });
    let reason = match code_flag {
        Some(flag) => format!(
            "\"{name} {}\" runs code the gateway cannot inspect",
            flag.value
        ),
        None => match call.args.iter().find(|a| !a.value.starts_with('-')) {
            Some(script) => format!(
                "\"{name}\" runs \"{}\", which the gateway cannot inspect",
                script.value
            ),
            None => format!("\"{name}\" runs a program or session the gateway cannot inspect"),
        },
    };
    w.unknown(reason);
}

// ---------------------------------------------------------------------
// Files

fn find(w: &mut Walker<'_>, call: &Call<'_>) {
    let args = call.args;
    let mut i = 0;
    // Leading options (-H -L -P -D x -Ox), then starting points.
    while i < args.len() {
        let v = args[i].value.as_str();
        match v {
            "-H" | "-L" | "-P" => i += 1,
            "-D" => i += 2,
            _ if v.starts_with("-O") => i += 1,
            _ => break,
        }
    }
    while i < args.len() {
        let v = args[i].value.as_str();
        if v.starts_with('-') || v == "(" || v == "!" || v == "," {
            break;
        }
        w.path(v);
        i += 1;
    }
    w.effect(R);
    while i < args.len() {
        match args[i].value.as_str() {
            "-delete" => w.effect(D),
            "-exec" | "-execdir" | "-ok" | "-okdir" => {
                let start = i + 1;
                let end = args[start.min(args.len())..]
                    .iter()
                    .position(|a| a.is(";") || a.is("+"))
                    .map(|p| start + p);
                let Some(end) = end else {
                    w.unknown("\"find -exec\" has no terminating ';' or '+'");
                    return;
                };
                w.run(&args[start..end], &Stdin::Unseen);
                i = end;
            }
            "-fprint" | "-fprint0" | "-fls" => {
                if let Some(a) = args.get(i + 1) {
                    w.write_path(a);
                }
                i += 1;
            }
            "-fprintf" => {
                if let Some(a) = args.get(i + 1) {
                    w.write_path(a);
                }
                i += 2;
            }
            _ => {}
        }
        i += 1;
    }
}

/// Top-level system directories, where a recursive change ruins the host.
fn is_system_root(p: &str) -> bool {
    let p = p.trim_end_matches('/');
    let p = p.strip_suffix("/*").unwrap_or(p);
    matches!(
        p,
        "" | "/*"
            | "/etc"
            | "/usr"
            | "/bin"
            | "/sbin"
            | "/lib"
            | "/lib64"
            | "/boot"
            | "/var"
            | "/root"
            | "/home"
            | "/opt"
            | "/srv"
            | "/dev"
            | "/proc"
            | "/sys"
            | "~"
            | "/."
            | "/.."
    )
}

fn rm(w: &mut Walker<'_>, call: &Call<'_>) {
    let o = opts(call.args, "", &[], false);
    w.effect(W);
    let forceful = o.has('r')
        || o.has('R')
        || o.has('f')
        || o.long("recursive")
        || o.long("force")
        || o.long("no-preserve-root");
    if forceful {
        w.effect(D);
    }
    for a in &o.operands {
        w.path(&a.value);
        if is_system_root(&a.value) || a.value == "/" || a.value == "*" {
            w.effect(D);
        }
    }
}

fn chmod(w: &mut Walker<'_>, call: &Call<'_>) {
    // Modes like -w or -x look like options to getopt; chmod reads them as modes.
    let mut recursive = false;
    let mut operands: Vec<&Arg> = Vec::new();
    let mut reference = false;
    for a in call.args {
        let v = a.value.as_str();
        if v == "-R"
            || v == "--recursive"
            || (v.starts_with('-') && v[1..].chars().all(|c| "Rcfv".contains(c)) && v.contains('R'))
        {
            recursive = true;
        } else if v.starts_with("--reference") {
            reference = true;
        } else {
            let option = v.starts_with("--")
                || (v.len() > 1 && v.starts_with('-') && v[1..].chars().all(|c| "cfv".contains(c)));
            if !option {
                operands.push(a);
            }
        }
    }
    w.effect(W);
    let files = if reference {
        &operands[..]
    } else {
        operands.get(1..).unwrap_or(&[])
    };
    if !reference {
        if let Some(mode) = operands.first() {
            let m = mode.value.as_str();
            let special = if m.chars().all(|c| c.is_ascii_digit()) {
                m.len() >= 4 && m.chars().rev().nth(3).is_some_and(|c| c != '0')
            } else {
                m.contains(['s', 't'])
            };
            if special {
                w.effect(A);
            }
        }
    }
    for a in files {
        w.path(&a.value);
        if recursive && is_system_root(&a.value) || is_sensitive_file(&a.value) {
            w.effect(if recursive { D } else { A });
        }
    }
}

fn is_sensitive_file(p: &str) -> bool {
    matches!(
        p,
        "/etc/passwd" | "/etc/shadow" | "/etc/group" | "/etc/gshadow" | "/etc/sudoers"
    ) || p.starts_with("/etc/sudoers.d")
        || p.starts_with("/etc/ssh/")
        || p.contains("/.ssh/authorized_keys")
}

fn chown(w: &mut Walker<'_>, call: &Call<'_>) {
    let o = opts(call.args, "", &[], false);
    let recursive = o.has('R') || o.long("recursive");
    let skip = usize::from(o.long_value("reference").is_none());
    w.effect(A);
    for a in o.operands.iter().skip(skip) {
        w.path(&a.value);
        if recursive && is_system_root(&a.value) {
            w.effect(D);
        }
    }
}

fn dd(w: &mut Walker<'_>, call: &Call<'_>) {
    w.effect(R);
    for a in call.args {
        if let Some(p) = a.value.strip_prefix("if=") {
            w.read_path(&Arg {
                value: p.to_string(),
                ..a.clone()
            });
        } else if let Some(p) = a.value.strip_prefix("of=") {
            w.write_path(&Arg {
                value: p.to_string(),
                ..a.clone()
            });
        }
    }
}

fn tee(w: &mut Walker<'_>, call: &Call<'_>) {
    // --output-error takes its value only as --output-error=MODE.
    let o = opts(call.args, "", &[], false);
    w.effect(R);
    for a in &o.operands {
        w.write_path(a);
    }
}

fn sort(w: &mut Walker<'_>, call: &Call<'_>) {
    let o = opts(
        call.args,
        "kotST",
        &[
            "key",
            "output",
            "field-separator",
            "buffer-size",
            "temporary-directory",
            "files0-from",
            "compress-program",
            "random-source",
        ],
        false,
    );
    if o.long("compress-program") {
        w.unknown("\"sort --compress-program\" runs another program");
    }
    if let Some(out) = short_text(&o, 'o').or_else(|| o.long_value("output").flatten()) {
        w.write_path(&Arg::lit(out));
    }
    for a in &o.operands {
        w.path(&a.value);
    }
    w.effect(R);
}

fn uniq(w: &mut Walker<'_>, call: &Call<'_>) {
    let o = opts(
        call.args,
        "fsw",
        &["skip-fields", "skip-chars", "check-chars"],
        false,
    );
    if let Some(input) = o.operands.first() {
        w.path(&input.value);
    }
    if let Some(out) = o.operands.get(1) {
        w.write_path(out);
    }
    w.effect(R);
}

fn sed(w: &mut Walker<'_>, call: &Call<'_>) {
    let o = opts(
        call.args,
        "efl",
        &["expression", "file", "line-length"],
        false,
    );
    let in_place = o.has('i') || o.long("in-place");
    if o.has('f') || o.long("file") {
        w.unknown("\"sed -f\" runs a script file the gateway cannot inspect");
        return;
    }
    let mut scripts: Vec<&str> = Vec::new();
    let mut dynamic = false;
    for (c, v) in &o.short {
        if *c == 'e' {
            if let Some(a) = v {
                dynamic |= a.dynamic;
            }
        }
    }
    let explicit: Vec<&str> = o
        .short
        .iter()
        .filter(|(c, _)| *c == 'e')
        .filter_map(|(_, a)| a.map(|a| a.value.as_str()))
        .chain(
            o.long
                .iter()
                .filter(|(n, _)| long_matches(n, "expression"))
                .filter_map(|(_, v)| *v),
        )
        .collect();
    let mut operands = o.operands.iter();
    if explicit.is_empty() {
        match operands.next() {
            Some(a) => {
                dynamic |= a.dynamic;
                scripts.push(a.value.as_str());
            }
            None => {
                w.unknown("\"sed\" without a script");
                return;
            }
        }
    } else {
        scripts.extend(explicit.iter().map(|s| s.strip_prefix("-e").unwrap_or(s)));
    }
    if dynamic {
        w.unknown("the sed script is only known when the command runs");
        return;
    }
    for s in scripts {
        match sed_script(s) {
            Ok(writes) => {
                if writes {
                    w.effect(W);
                }
            }
            Err(reason) => {
                w.unknown(reason);
                return;
            }
        }
    }
    w.effect(R);
    for a in operands {
        if in_place {
            w.write_path(a);
        } else {
            w.path(&a.value);
        }
    }
}

/// Scans a sed script for commands that run programs (`e`, `s///e`) or
/// write files (`w`, `s///w`). Returns whether it writes.
fn sed_script(s: &str) -> Result<bool, String> {
    let unknown = |what: &str| Err(format!("the sed script {what}"));
    let b: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut writes = false;
    let skip_line = |i: &mut usize| {
        while *i < b.len() && b[*i] != '\n' {
            *i += 1;
        }
    };
    let delimited = |i: &mut usize, d: char| -> bool {
        while *i < b.len() {
            if b[*i] == '\\' {
                *i += 2;
                continue;
            }
            if b[*i] == d {
                *i += 1;
                return true;
            }
            if b[*i] == '\n' && d != '\n' {
                return false;
            }
            *i += 1;
        }
        false
    };
    while i < b.len() {
        let c = b[i];
        match c {
            ' ' | '\t' | '\n' | ';' | '{' | '}' | '!' | ',' | '$' | '~' | '+' => i += 1,
            '0'..='9' => i += 1,
            '/' => {
                i += 1;
                if !delimited(&mut i, '/') {
                    return unknown("has an unterminated address");
                }
                while i < b.len() && matches!(b[i], 'I' | 'M') {
                    i += 1;
                }
            }
            '\\' => {
                let Some(&d) = b.get(i + 1) else {
                    return unknown("ends in a backslash");
                };
                i += 2;
                if !delimited(&mut i, d) {
                    return unknown("has an unterminated address");
                }
            }
            '#' | ':' | 'b' | 't' | 'T' | 'a' | 'i' | 'c' | 'r' | 'R' | 'v' => {
                i += 1;
                if c == 'a' || c == 'i' || c == 'c' {
                    // Text runs to the end of the line, continued by backslashes.
                    while i < b.len() && b[i] != '\n' {
                        if b[i] == '\\' {
                            i += 1;
                        }
                        i += 1;
                    }
                } else if c == '#' || c == 'r' || c == 'R' {
                    skip_line(&mut i);
                } else {
                    while i < b.len() && !matches!(b[i], ';' | '\n' | '}') {
                        i += 1;
                    }
                }
            }
            'w' | 'W' => {
                writes = true;
                i += 1;
                skip_line(&mut i);
            }
            'e' => return unknown("runs a command (the e command)"),
            's' | 'y' => {
                let Some(&d) = b.get(i + 1) else {
                    return unknown("has an incomplete s command");
                };
                if d == '\n' || d == '\\' {
                    return unknown("uses an unusual delimiter");
                }
                i += 2;
                if !delimited(&mut i, d) || !delimited(&mut i, d) {
                    return unknown("has an incomplete s or y command");
                }
                if c == 's' {
                    while i < b.len() && !matches!(b[i], ';' | '\n' | '}') {
                        match b[i] {
                            'e' => return unknown("runs the replacement as a command (s///e)"),
                            'w' => {
                                writes = true;
                                skip_line(&mut i);
                                break;
                            }
                            'g' | 'p' | 'i' | 'I' | 'm' | 'M' | ' ' | '0'..='9' => i += 1,
                            _ => return unknown("has an s command flag the gateway does not know"),
                        }
                    }
                }
            }
            'p' | 'P' | 'd' | 'D' | 'n' | 'N' | 'g' | 'G' | 'h' | 'H' | 'x' | 'l' | 'q' | 'Q'
            | 'z' | '=' | 'F' => i += 1,
            other => {
                return Err(format!(
                    "the sed script uses '{other}', which the gateway does not understand"
                ))
            }
        }
    }
    Ok(writes)
}

fn awk(w: &mut Walker<'_>, call: &Call<'_>) {
    // -p/-d/-o/-D take their optional values attached, so not listed here.
    let o = opts(
        call.args,
        "FvfeiElW",
        &[
            "field-separator",
            "assign",
            "file",
            "source",
            "include",
            "exec",
            "load",
        ],
        true,
    );
    let long_any = |names: &[&str]| names.iter().any(|n| o.long(n));
    let w_version = o
        .value('W')
        .is_some_and(|_| short_text(&o, 'W') == Some("version"));
    if o.has('f')
        || o.has('i')
        || o.has('E')
        || o.has('l')
        || o.has('D')
        || (o.has('W') && !w_version)
        || long_any(&["file", "include", "exec", "load", "debug"])
    {
        w.unknown(format!(
            "\"{}\" loads program files or runs a debugger the gateway cannot inspect",
            call.name
        ));
        return;
    }
    // Profiles, variable dumps and pretty-printed programs go to files.
    if o.has('p')
        || o.has('d')
        || o.has('o')
        || long_any(&["profile", "dump-variables", "pretty-print"])
    {
        w.effect(W);
    }
    let rest = &call.args[o.rest..];
    let mut programs: Vec<Arg> = Vec::new();
    for (c, a) in &o.short {
        if *c == 'e' {
            if let Some(a) = a {
                programs.push(Arg {
                    value: short_text_of(a, 'e'),
                    ..(*a).clone()
                });
            }
        }
    }
    for (n, v) in &o.long {
        if long_matches(n, "source") {
            match v {
                Some(v) => programs.push(Arg {
                    value: (*v).to_string(),
                    dynamic: call.args.iter().any(|a| a.dynamic && a.value.contains(*v)),
                    ..Arg::default()
                }),
                None => programs.push(Arg::unknown("--source")),
            }
        }
    }
    let skip = usize::from(programs.is_empty());
    if programs.is_empty() {
        match rest.first() {
            Some(p) => programs.push(p.clone()),
            None => {
                w.unknown(format!("\"{}\" without a program", call.name));
                return;
            }
        }
    }
    for program in &programs {
        if program.dynamic {
            w.unknown("the awk program is only known when the command runs");
            return;
        }
        match awk_program(&program.value) {
            Err(reason) => {
                w.unknown(reason);
                return;
            }
            Ok(true) => w.effect(W),
            Ok(false) => {}
        }
    }
    w.effect(R);
    for a in rest.iter().skip(skip) {
        // gawk opens a socket for these operands as for the program's own
        // `getline < "/inet/..."`.
        if a.value.starts_with("/inet") {
            w.unknown(format!(
                "\"{}\" opens a network connection for {}",
                call.name, a.value
            ));
            return;
        }
        if !a.value.contains('=') {
            w.path(&a.value);
        }
    }
}

/// Programs that reach other hosts only to read (diagnostics): read, but a
/// value computed when the command runs could carry data out (in a DNS
/// name, say), so then unknown.
fn network_read(w: &mut Walker<'_>, _call: &Call<'_>) {
    w.effect(R);
}

/// `shopt` only to show options: `-s`, `-u` and `-o` change how the shell
/// reads what follows (`-o keyword` puts `NAME=value` words anywhere into
/// the environment), which the classifier cannot follow.
fn shopt(w: &mut Walker<'_>, call: &Call<'_>) {
    let changes = call.args.iter().any(|a| {
        a.dynamic
            || (a.value.starts_with('-') && a.value.chars().skip(1).any(|c| c != 'p' && c != 'q'))
    });
    if changes {
        w.unknown("\"shopt\" changes how the shell reads the rest of the line");
    } else {
        w.effect(R);
    }
}

/// Scans an awk program as a whole: anything that can run a command is an
/// error; returns whether it can write a file (`print > "file"`).
fn awk_program(p: &str) -> Result<bool, String> {
    let without_or = p.replace("||", "");
    if p.contains("system") || p.contains('@') || p.contains("/inet") {
        return Err(
            "the awk program runs commands or loads code (system, @-calls, @load, /inet)"
                .to_string(),
        );
    }
    if without_or.contains('|') {
        return Err(
            "the awk program pipes to a command or reads from one (|, |&, | getline)".to_string(),
        );
    }
    let without_ge = p.replace(">=", "");
    if !without_ge.contains('>') {
        return Ok(false);
    }
    if !p.contains("print") {
        return Ok(false);
    }
    if p.contains('/') {
        // A regular expression can hold quotes and braces; do not try to
        // find where statements end.
        return Ok(true);
    }
    // Outside strings and comments, a `>` inside a print statement redirects it.
    let b: Vec<char> = p.chars().collect();
    let mut i = 0;
    let mut in_print = false;
    let mut depth = 0usize;
    while i < b.len() {
        let c = b[i];
        match c {
            '"' => {
                i += 1;
                while i < b.len() && b[i] != '"' {
                    if b[i] == '\\' {
                        i += 1;
                    }
                    i += 1;
                }
                if i >= b.len() {
                    return Ok(true);
                }
            }
            '#' => {
                while i < b.len() && b[i] != '\n' {
                    i += 1;
                }
                continue;
            }
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            // A newline may continue a print (after `,`, `&&`, `\`): not an end.
            ';' | '}' | '{' if depth == 0 => in_print = false,
            '>' if in_print => return Ok(true),
            c if c.is_ascii_alphabetic() => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == '_') {
                    i += 1;
                }
                let word: String = b[start..i].iter().collect();
                if word == "print" || word == "printf" {
                    in_print = true;
                    depth = 0;
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    Ok(false)
}

// ---------------------------------------------------------------------
// System

fn top(w: &mut Walker<'_>, call: &Call<'_>) {
    let o = opts(call.args, "dnpuUoOwEe", &[], false);
    if o.has('b') {
        w.effect(R);
    } else {
        w.unknown("\"top\" without -b is interactive and can signal processes");
    }
}

fn hostname(w: &mut Walker<'_>, call: &Call<'_>) {
    let o = opts(call.args, "F", &["file"], false);
    if o.operands.is_empty() && o.value('F').is_none() && !o.long("file") {
        w.effect(R);
    } else {
        w.effect(A);
    }
}

fn date(w: &mut Walker<'_>, call: &Call<'_>) {
    let o = opts(
        call.args,
        "dfrsI",
        &["date", "file", "reference", "set"],
        false,
    );
    if o.has('s') || o.long("set") || o.operands.iter().any(|a| !a.value.starts_with('+')) {
        w.effect(A);
    } else {
        w.effect(R);
    }
}

fn dmesg(w: &mut Walker<'_>, call: &Call<'_>) {
    let o = opts(call.args, "fFlns", &[], false);
    if o.has('c')
        || o.has('C')
        || o.has('D')
        || o.has('E')
        || o.has('n')
        || o.long("clear")
        || o.long("read-clear")
        || o.long("console-off")
        || o.long("console-on")
        || o.long("console-level")
    {
        w.effect(A);
    } else {
        w.effect(R);
    }
}

fn sysctl(w: &mut Walker<'_>, call: &Call<'_>) {
    let o = opts(call.args, "p", &["load"], false);
    if o.has('w')
        || o.has('p')
        || o.long("write")
        || o.long("load")
        || o.long("system")
        || o.operands.iter().any(|a| a.value.contains('='))
    {
        w.effect(A);
    } else {
        w.effect(R);
    }
}

/// iproute2's global options, in the order `ip` tries them: an option
/// given as any prefix of one is that one (`-b` is `-batch`), so the
/// first match wins. `true`: it takes a value.
const IP_OPTIONS: &[(&str, bool)] = &[
    ("-loops", true),
    ("-family", true),
    ("-4", false),
    ("-6", false),
    ("-0", false),
    ("-M", false),
    ("-B", false),
    ("-I", false),
    ("-D", false),
    ("-human", false),
    ("-human-readable", false),
    ("-iec", false),
    ("-stats", false),
    ("-statistics", false),
    ("-details", false),
    ("-resolve", false),
    ("-oneline", false),
    ("-timestamp", false),
    ("-tshort", false),
    ("-Version", false),
    ("-force", false),
    ("-batch", true),
    ("-brief", false),
    ("-json", false),
    ("-pretty", false),
    ("-rcvbuf", true),
    ("-color", false),
    ("-netns", true),
    ("-Numeric", false),
    ("-all", false),
];

fn ip(w: &mut Walker<'_>, call: &Call<'_>) {
    let args = call.args;
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if a.dynamic {
            w.unknown(format!(
                "an argument of \"ip\" (\"{}\") is only known when the command runs",
                a.value
            ));
            return;
        }
        let v = a.value.as_str();
        if v == "--" {
            i += 1;
            break;
        }
        if !v.starts_with('-') {
            break;
        }
        // `--opt` is read as `-opt`; `-color=auto` takes its value attached.
        let opt = v
            .strip_prefix('-')
            .filter(|o| o.starts_with('-'))
            .unwrap_or(v);
        let opt = if opt.starts_with("-c") {
            opt.split('=').next().unwrap_or(opt)
        } else {
            opt
        };
        let matched = if opt.len() < 2 {
            None
        } else {
            IP_OPTIONS.iter().find(|(full, _)| full.starts_with(opt))
        };
        match matched {
            Some(("-batch" | "-force", _)) => {
                w.unknown("\"ip -batch\" reads commands from a file");
                return;
            }
            Some((_, true)) => i += 2,
            Some((_, false)) => i += 1,
            None => {
                w.unknown(format!("\"ip {v}\" is not an option the gateway knows"));
                return;
            }
        }
    }
    let rest = &args[i.min(args.len())..];
    let object = rest.first().map(|a| a.value.as_str());
    let verb = rest.get(1).map(|a| a.value.as_str());
    if object == Some("netns") && verb.is_some_and(|v| "exec".starts_with(v)) {
        w.unknown("\"ip netns exec\" runs another program");
        return;
    }
    // Only the full words and the prefixes that mean "show" for every
    // object: iproute2 resolves prefixes in each object's own order
    // (`ip link s` is `set`), so shorter ones are not taken as reads.
    match verb {
        None => w.effect(R),
        Some("show" | "sho" | "sh" | "list" | "lst" | "ls" | "get" | "help") => w.effect(R),
        Some(_) if object == Some("help") => w.effect(R),
        Some(_) => w.effect(A),
    }
}

fn ifconfig(w: &mut Walker<'_>, call: &Call<'_>) {
    let operands = call
        .args
        .iter()
        .filter(|a| !a.value.starts_with('-'))
        .count();
    w.effect(if operands <= 1 { R } else { A });
}

fn ctl_status(w: &mut Walker<'_>, call: &Call<'_>) {
    let o = opts(call.args, "HMpP", &["host", "machine", "property"], true);
    if o.has('H') || o.long("host") || o.has('M') || o.long("machine") {
        w.unknown(format!("\"{} -H/-M\" acts on another machine", call.name));
        return;
    }
    let verb = call
        .args
        .get(o.rest)
        .map(|a| a.value.as_str())
        .unwrap_or("status");
    let read = verb == "status"
        || verb == "show"
        || verb.starts_with("list")
        || verb.starts_with("show-")
        || verb == "help"
        || verb == "timesync-status";
    w.effect(if read { R } else { A });
}

fn kill(w: &mut Walker<'_>, call: &Call<'_>) {
    let o = opts(call.args, "sn", &["signal"], false);
    if o.has('l') || o.has('L') || o.long("list") || o.long("table") {
        w.effect(R);
    } else {
        w.effect(A);
    }
}

fn init(w: &mut Walker<'_>, call: &Call<'_>) {
    let destroys = call
        .args
        .iter()
        .any(|a| matches!(a.value.as_str(), "0" | "6"));
    w.effect(if destroys { D } else { A });
}

fn systemctl(w: &mut Walker<'_>, call: &Call<'_>) {
    let o = match strict_opts(
        call.args,
        "HMtpPsnoC",
        "hValrTiqf",
        &[
            "host",
            "machine",
            "type",
            "state",
            "property",
            "job-mode",
            "check-inhibitors",
            "kill-whom",
            "kill-value",
            "signal",
            "what",
            "legend",
            "preset-mode",
            "root",
            "image",
            "image-policy",
            "lines",
            "output",
            "boot-loader-menu",
            "boot-loader-entry",
            "reboot-argument",
            "timestamp",
            "message",
            "when",
            "drop-in",
            "capsule",
        ],
        &[
            "help",
            "version",
            "system",
            "user",
            "failed",
            "all",
            "full",
            "recursive",
            "reverse",
            "with-dependencies",
            "show-transaction",
            "show-types",
            "value",
            "now",
            "dry-run",
            "quiet",
            "wait",
            "no-block",
            "no-wall",
            "no-reload",
            "no-pager",
            "no-ask-password",
            "global",
            "runtime",
            "force",
            "firmware-setup",
            "plain",
            "read-only",
            "mkdir",
            "marked",
            "no-warn",
            "stdin",
        ],
    ) {
        Ok(o) => o,
        Err(reason) => {
            w.unknown(format!("\"systemctl\": {reason}"));
            return;
        }
    };
    if o.has('H') || o.long("host") || o.has('M') || o.long("machine") {
        w.unknown("\"systemctl -H/-M\" acts on another machine");
        return;
    }
    let verb = o
        .operands
        .first()
        .map(|a| a.value.as_str())
        .unwrap_or("list-units");
    const READ: &[&str] = &[
        "status",
        "show",
        "cat",
        "is-active",
        "is-enabled",
        "is-failed",
        "is-system-running",
        "list-units",
        "list-unit-files",
        "list-sockets",
        "list-timers",
        "list-jobs",
        "list-dependencies",
        "list-machines",
        "list-automounts",
        "list-paths",
        "get-default",
        "show-environment",
    ];
    const ADMIN: &[&str] = &[
        "start",
        "stop",
        "restart",
        "reload",
        "try-restart",
        "reload-or-restart",
        "try-reload-or-restart",
        "condrestart",
        "force-reload",
        "enable",
        "disable",
        "reenable",
        "mask",
        "unmask",
        "daemon-reload",
        "daemon-reexec",
        "kill",
        "clean",
        "freeze",
        "thaw",
        "reset-failed",
        "set-property",
        "isolate",
        "set-default",
        "preset",
        "preset-all",
        "link",
        "revert",
        "set-environment",
        "unset-environment",
        "import-environment",
        "add-wants",
        "add-requires",
        "bind",
        "mount-image",
        "default",
        "edit",
        "log-level",
        "log-target",
        "service-log-level",
        "service-log-target",
    ];
    const DESTROY: &[&str] = &[
        "poweroff",
        "reboot",
        "halt",
        "kexec",
        "soft-reboot",
        "suspend",
        "hibernate",
        "hybrid-sleep",
        "suspend-then-hibernate",
        "emergency",
        "rescue",
        "switch-root",
        "exit",
    ];
    if READ.contains(&verb) {
        w.effect(R);
    } else if verb == "edit" {
        w.unknown("\"systemctl edit\" opens an editor");
    } else if ADMIN.contains(&verb) {
        w.effect(A);
    } else if DESTROY.contains(&verb) {
        w.effect(D);
    } else {
        w.unknown(format!(
            "\"systemctl {verb}\" is not a known systemctl command"
        ));
    }
}

fn systemd_analyze(w: &mut Walker<'_>, call: &Call<'_>) {
    let o = match strict_opts(
        call.args,
        "HM",
        "hq",
        &[
            "recursive-errors",
            "offline",
            "threshold",
            "security-policy",
            "json",
            "host",
            "machine",
            "from-pattern",
            "to-pattern",
            "fuzz",
            "iterations",
            "base-time",
            "profile",
            "root",
            "image",
            "image-policy",
            "unit",
            "table",
            "scale-svg",
            "tldr",
        ],
        &[
            "no-pager",
            "system",
            "user",
            "global",
            "order",
            "require",
            "man",
            "generators",
            "help",
            "version",
            "quiet",
            "detailed",
            "no-legend",
        ],
    ) {
        Ok(o) => o,
        Err(reason) => {
            w.unknown(format!("\"systemd-analyze\": {reason}"));
            return;
        }
    };
    if o.has('H') || o.long("host") || o.has('M') || o.long("machine") {
        w.unknown("\"systemd-analyze -H/-M\" acts on another machine");
        return;
    }
    if o.long
        .iter()
        .any(|(n, v)| long_matches(n, "generators") && !matches!(v, Some("no" | "false" | "0")))
    {
        w.unknown("\"systemd-analyze --generators\" runs unit generators");
        return;
    }
    let verb = o
        .operands
        .first()
        .map(|a| a.value.as_str())
        .unwrap_or("time");
    let args = o.operands.len().saturating_sub(1);
    const READ: &[&str] = &[
        "time",
        "blame",
        "critical-chain",
        "plot",
        "dot",
        "dump",
        "cat-config",
        "unit-files",
        "unit-paths",
        "exit-status",
        "capability",
        "syscall-filter",
        "filesystems",
        "condition",
        "compare-versions",
        "calendar",
        "timestamp",
        "timespan",
        "security",
        "inspect-elf",
        "fdstore",
        "image-policy",
        "pcrs",
        "architectures",
        "smbios11",
        "get-log-level",
        "get-log-target",
    ];
    match verb {
        v if READ.contains(&v) => w.effect(R),
        "log-level" | "log-target" | "service-watchdogs" if args == 0 => w.effect(R),
        "log-level" | "log-target" | "service-watchdogs" | "set-log-level" | "set-log-target" => {
            w.effect(A)
        }
        other => w.unknown(format!(
            "\"systemd-analyze {other}\" is not a known read-only systemd-analyze command"
        )),
    }
}

fn service(w: &mut Walker<'_>, call: &Call<'_>) {
    let operands: Vec<&str> = call.args.iter().map(|a| a.value.as_str()).collect();
    match operands.as_slice() {
        ["--status-all"] | ["--help"] | ["--version"] | [] => w.effect(R),
        [_, "status"] => w.effect(R),
        _ => w.effect(A),
    }
}

fn journalctl(w: &mut Walker<'_>, call: &Call<'_>) {
    let o = opts(call.args, "bnpuUtSoFIDMcm", &[], false);
    if o.long.iter().any(|(n, _)| n.starts_with("cursor-")) {
        w.effect(W);
    }
    let admin = o.long.iter().any(|(n, _)| {
        n.starts_with("vacuum")
            || [
                "vacuum-size",
                "vacuum-files",
                "vacuum-time",
                "rotate",
                "flush",
                "sync",
                "relinquish-var",
                "smart-relinquish-var",
                "setup-keys",
                "update-catalog",
            ]
            .iter()
            .any(|f| long_matches(n, f))
    });
    if o.long("file") || o.long("directory") || o.long("root") || o.has('D') {
        // Reading journals from elsewhere is still a read.
    }
    w.effect(if admin { A } else { R });
}

fn crontab(w: &mut Walker<'_>, call: &Call<'_>) {
    let o = opts(call.args, "uc", &[], false);
    if o.has('l') && !o.has('e') && !o.has('r') && o.operands.is_empty() {
        w.effect(R);
    } else {
        w.effect(A);
    }
}

fn iptables(w: &mut Walker<'_>, call: &Call<'_>) {
    let o = opts(
        call.args,
        "tjgpsdioWmwM",
        &[
            "table",
            "jump",
            "goto",
            "protocol",
            "source",
            "destination",
            "in-interface",
            "out-interface",
            "match",
            "wait",
            "wait-interval",
            "modprobe",
        ],
        false,
    );
    if o.has('M')
        || o.long
            .iter()
            .any(|(n, _)| n.len() > 1 && long_matches(n, "modprobe"))
    {
        w.unknown("\"iptables --modprobe\" runs another program");
        return;
    }
    const CHANGE: &str = "AIDRFXPNZE";
    const CHANGE_LONG: &[&str] = &[
        "append",
        "insert",
        "delete",
        "replace",
        "flush",
        "delete-chain",
        "policy",
        "new-chain",
        "zero",
        "rename-chain",
    ];
    let changes =
        o.short.iter().any(|(c, _)| CHANGE.contains(*c)) || CHANGE_LONG.iter().any(|l| o.long(l));
    let lists = o.has('L')
        || o.has('S')
        || o.long("list")
        || o.long("list-rules")
        || o.has('h')
        || o.long("help")
        || o.has('V')
        || o.long("version");
    w.effect(if !changes && lists { R } else { A });
}

fn nft(w: &mut Walker<'_>, call: &Call<'_>) {
    let o = opts(call.args, "fIT", &["file", "includepath"], true);
    if o.has('f') || o.long("file") {
        w.effect(A);
        return;
    }
    // Every option must be a known output option; `-i` is interactive.
    let known = o
        .short
        .iter()
        .all(|(c, _)| "ansjtyNSecvhdIT".contains(*c) && *c != 'd')
        && o.long.iter().all(|(n, _)| {
            [
                "handle",
                "numeric",
                "stateless",
                "json",
                "terse",
                "guid",
                "numeric-priority",
                "numeric-protocol",
                "numeric-time",
                "service",
                "reversedns",
                "echo",
                "check",
                "version",
                "help",
                "includepath",
            ]
            .iter()
            .any(|l| long_matches(n, l))
        });
    let rest = &call.args[o.rest..];
    if rest.is_empty() {
        let info = o.has('v') || o.has('h') || o.long("version") || o.long("help");
        if info && known {
            w.effect(R);
        } else {
            w.unknown("\"nft\" without a command reads commands the gateway cannot see");
        }
        return;
    }
    // nft joins its arguments and reads them as a script: `;` (or a
    // newline) starts another command, whatever word it is in.
    let several = rest.iter().any(|a| {
        a.dynamic || a.value.starts_with('-') || a.value.contains([';', '\n', '\r', '{', '}', '#'])
    });
    if !known || several {
        w.unknown(
            "the nft arguments hold more than one command or options the gateway does not know",
        );
        return;
    }
    let first = rest[0].value.split_whitespace().next();
    w.effect(match first {
        Some("list" | "describe") => R,
        _ => A,
    });
}

fn ufw(w: &mut Walker<'_>, call: &Call<'_>) {
    let mut dry = false;
    let mut ops: Vec<&str> = Vec::new();
    for a in call.args {
        if a.dynamic {
            w.unknown("an argument of \"ufw\" is only known when the command runs");
            return;
        }
        match a.value.as_str() {
            "--dry-run" => dry = true,
            "--version" | "--help" | "-h" if ops.is_empty() => {}
            v if v.starts_with('-') && ops.is_empty() => {
                w.unknown(format!("\"ufw {v}\" is not an option the gateway knows"));
                return;
            }
            v => ops.push(v),
        }
    }
    let read = matches!(
        ops.as_slice(),
        [] | ["status"]
            | ["status", "verbose" | "numbered"]
            | ["version"]
            | ["help"]
            | ["app", "list"]
            | ["app", "info", _]
            | [
                "show",
                "raw"
                    | "builtins"
                    | "before-rules"
                    | "user-rules"
                    | "after-rules"
                    | "logging-rules"
                    | "listening"
                    | "added",
            ]
    );
    let _ = dry;
    w.effect(if read { R } else { A });
}

fn firewall_cmd(w: &mut Walker<'_>, call: &Call<'_>) {
    let read = !call.args.is_empty()
        && call.args.iter().all(|a| {
            let v = a.value.as_str();
            v.starts_with("--list")
                || v.starts_with("--get")
                || v.starts_with("--query")
                || v == "--state"
                || v.starts_with("--zone")
                || v == "--permanent"
                || v.starts_with("--info")
                || v == "--help"
                || v == "--version"
        });
    w.effect(if read { R } else { A });
}

fn mount(w: &mut Walker<'_>, call: &Call<'_>) {
    let o = opts(
        call.args,
        "tOoLUTNB",
        &["types", "test-opts", "options"],
        false,
    );
    let list = o.operands.is_empty() && !o.has('a') && !o.long("all") && !o.has('o');
    w.effect(if list { R } else { A });
}

fn swapon(w: &mut Walker<'_>, call: &Call<'_>) {
    let o = opts(call.args, "", &[], false);
    let list = o.operands.is_empty() && !o.has('a') && !o.long("all");
    w.effect(if list { R } else { A });
}

// ---------------------------------------------------------------------
// Packages

/// The first operand, for tools of the form `tool [options] verb ...`.
fn first_operand<'a>(args: &'a [Arg], short_val: &str, long_val: &[&str]) -> Option<&'a str> {
    let o = opts(args, short_val, long_val, true);
    args.get(o.rest).map(|a| a.value.as_str())
}

fn apt(w: &mut Walker<'_>, call: &Call<'_>) {
    let verb = first_operand(
        call.args,
        "coqt",
        &["config-file", "option", "target-release"],
    );
    const READ: &[&str] = &[
        "list",
        "search",
        "show",
        "showsrc",
        "policy",
        "depends",
        "rdepends",
        "madison",
        "changelog",
        "help",
        "moo",
        "--version",
        "-v",
    ];
    match verb {
        Some(v) if READ.contains(&v) => w.effect(R),
        None if version_query(call.args) => w.effect(R),
        _ => w.effect(A),
    }
}

fn dpkg(w: &mut Walker<'_>, call: &Call<'_>) {
    let o = opts(call.args, "", &[], false);
    const READ_SHORT: &str = "lLsSpcIW";
    const READ_LONG: &[&str] = &[
        "list",
        "listfiles",
        "status",
        "search",
        "print-avail",
        "contents",
        "info",
        "get-selections",
        "print-architecture",
        "print-foreign-architectures",
        "audit",
        "verify",
        "help",
        "version",
        "show",
        "field",
        "compare-versions",
    ];
    const CHANGE_SHORT: &str = "irPaC";
    let changes = o.short.iter().any(|(c, _)| CHANGE_SHORT.contains(*c))
        || [
            "install",
            "remove",
            "purge",
            "configure",
            "unpack",
            "set-selections",
            "clear-selections",
            "add-architecture",
            "remove-architecture",
            "update-avail",
            "merge-avail",
            "triggers-only",
        ]
        .iter()
        .any(|l| o.long(l));
    let reads =
        o.short.iter().any(|(c, _)| READ_SHORT.contains(*c)) || READ_LONG.iter().any(|l| o.long(l));
    w.effect(if reads && !changes { R } else { A });
}

fn rpm(w: &mut Walker<'_>, call: &Call<'_>) {
    let o = opts(
        call.args,
        "DE",
        &[
            "root",
            "dbpath",
            "define",
            "eval",
            "macros",
            "rcfile",
            "qf",
            "queryformat",
            "pipe",
            "load",
        ],
        false,
    );
    // Macros are expanded with shell escapes (`%(cmd)`, `%{lua:...}`).
    let evaluates = o.has('D')
        || o.has('E')
        || [
            "define", "eval", "macros", "rcfile", "root", "dbpath", "pipe", "load", "specfile",
            "showrc",
        ]
        .iter()
        .any(|l| o.long(l));
    let qf = o
        .long
        .iter()
        .filter(|(n, _)| long_matches(n, "queryformat") || *n == "qf")
        .any(|(_, v)| {
            v.is_none_or(|f| {
                f.contains("%(")
                    || f.contains("%{lua")
                    || f.contains("%{expand")
                    || f.contains("%{shell")
            })
        });
    if evaluates || qf || call.args.iter().any(|a| a.dynamic) {
        w.unknown(
            "the rpm options evaluate macros, which can run commands, or use another database",
        );
        return;
    }
    let changes = o.has('i') && !o.has('q')
        || o.has('U')
        || o.has('F')
        || o.has('e')
        || [
            "install",
            "upgrade",
            "freshen",
            "erase",
            "import",
            "rebuilddb",
            "initdb",
            "setperms",
            "setugids",
            "restore",
        ]
        .iter()
        .any(|l| o.long(l));
    if changes {
        w.effect(A);
        return;
    }
    const QUERY_SHORT: &str = "qalicdfpRsvg";
    const QUERY_LONG: &[&str] = &[
        "query",
        "all",
        "list",
        "info",
        "configfiles",
        "docfiles",
        "file",
        "package",
        "requires",
        "provides",
        "whatprovides",
        "whatrequires",
        "changelog",
        "changes",
        "last",
        "state",
        "scripts",
        "triggers",
        "triggerscripts",
        "filesbypkg",
        "dump",
        "qf",
        "queryformat",
        "nodigest",
        "nosignature",
        "quiet",
        "verbose",
        "conflicts",
        "obsoletes",
        "recommends",
        "suggests",
        "supplements",
        "enhances",
        "xml",
        "licensefiles",
        "artifactfiles",
        "fileprovide",
        "filerequire",
        "filecaps",
        "fileclass",
        "filecolor",
        "noartifact",
        "noghost",
        "noconfig",
    ];
    let query = (o.has('q') || o.long("query"))
        && o.short.iter().all(|(c, _)| QUERY_SHORT.contains(*c))
        && o.long.iter().all(|(n, _)| QUERY_LONG.contains(n));
    let version =
        call.args.len() == 1 && matches!(call.args[0].value.as_str(), "--version" | "--help");
    if query || version {
        w.effect(R);
    } else {
        w.unknown("not an rpm query the gateway knows to be a read");
    }
}

fn yum(w: &mut Walker<'_>, call: &Call<'_>) {
    let verb = first_operand(
        call.args,
        "cdexR",
        &[
            "config",
            "setopt",
            "exclude",
            "releasever",
            "installroot",
            "enablerepo",
            "disablerepo",
            "repo",
            "repoid",
        ],
    );
    const READ: &[&str] = &[
        "list",
        "info",
        "search",
        "provides",
        "whatprovides",
        "repolist",
        "repoinfo",
        "check-update",
        "deplist",
        "repoquery",
        "help",
        "updateinfo",
        "version",
    ];
    match verb {
        Some(v) if READ.contains(&v) => w.effect(R),
        Some("history")
            if call
                .args
                .iter()
                .all(|a| !["undo", "redo", "rollback"].contains(&a.value.as_str())) =>
        {
            w.effect(R)
        }
        None if version_query(call.args) => w.effect(R),
        _ => w.effect(A),
    }
}

fn apk(w: &mut Walker<'_>, call: &Call<'_>) {
    let verb = first_operand(
        call.args,
        "pX",
        &["root", "repository", "keys-dir", "repositories-file"],
    );
    const READ: &[&str] = &[
        "info",
        "search",
        "list",
        "policy",
        "stats",
        "dot",
        "version",
        "audit",
        "verify",
        "--version",
        "--help",
    ];
    match verb {
        Some(v) if READ.contains(&v) => w.effect(R),
        _ => w.effect(A),
    }
}

/// `apt-cache`: known read verbs with known options; `-o`/`-c` set any
/// APT option (some name programs to run).
fn apt_cache(w: &mut Walker<'_>, call: &Call<'_>) {
    let o = match strict_opts(
        call.args,
        "",
        "nfaiqhv",
        &[],
        &[
            "names-only",
            "full",
            "all-versions",
            "no-all-versions",
            "important",
            "installed",
            "recurse",
            "no-pre-depends",
            "no-depends",
            "no-recommends",
            "no-suggests",
            "no-conflicts",
            "no-breaks",
            "no-replaces",
            "no-enhances",
            "all-names",
            "quiet",
            "help",
            "version",
        ],
    ) {
        Ok(o) => o,
        Err(e) => {
            w.unknown(format!("apt-cache: {e}"));
            return;
        }
    };
    match o.operands.first().map(|a| a.value.as_str()) {
        None if o.has('v') || o.has('h') || o.long("version") || o.long("help") => w.effect(R),
        Some(
            "show" | "showsrc" | "policy" | "search" | "depends" | "rdepends" | "showpkg"
            | "madison" | "stats" | "pkgnames" | "dump" | "dumpavail" | "unmet" | "xvcg" | "dotty",
        ) => w.effect(R),
        Some("gencaches") => w.effect(W),
        _ => w.unknown("not an apt-cache command the gateway knows to be a read"),
    }
}

/// `pip`: only the listing commands, with known options. Anything else
/// can install code, run a build or load another interpreter.
fn pip(w: &mut Walker<'_>, call: &Call<'_>) {
    let o = match strict_opts(
        call.args,
        "",
        "olvqfuaeV",
        &["format", "exclude", "path"],
        &[
            "outdated",
            "uptodate",
            "local",
            "user",
            "verbose",
            "quiet",
            "not-required",
            "editable",
            "exclude-editable",
            "include-editable",
            "files",
            "all",
            "version",
            "disable-pip-version-check",
            "no-color",
            "no-input",
            "pre",
        ],
    ) {
        Ok(o) => o,
        Err(e) => {
            w.unknown(format!("{}: {e}", call.name));
            return;
        }
    };
    if o.long("path") {
        w.unknown(format!(
            "\"{} --path\" reads packages from another directory",
            call.name
        ));
        return;
    }
    match o.operands.first().map(|a| a.value.as_str()) {
        Some("list" | "show" | "freeze" | "check") => w.effect(R),
        None if o.has('V') || o.long("version") => w.effect(R),
        Some("install" | "uninstall" | "download" | "wheel") => w.effect(A),
        _ => w.unknown(format!(
            "not a {} command the gateway knows to be a read",
            call.name
        )),
    }
}

fn npm(w: &mut Walker<'_>, call: &Call<'_>) {
    let verb = first_operand(
        call.args,
        "",
        &["prefix", "registry", "userconfig", "cache", "workspace"],
    );
    // Reads: only a few commands, each with known options (others set
    // config such as script-shell or node-options, or reach another registry).
    if matches!(verb, Some("ls" | "list" | "view" | "outdated")) || verb.is_none() {
        const FLAGS: &[&str] = &[
            "json",
            "all",
            "long",
            "parseable",
            "global",
            "prod",
            "production",
            "dev",
            "link",
            "unicode",
            "no-unicode",
            "color",
            "no-color",
            "version",
        ];
        let ok = call.args.iter().all(|a| {
            let v = a.value.as_str();
            if a.dynamic {
                return false;
            }
            match v.strip_prefix("--") {
                Some(l) => {
                    let n = l.split_once('=').map_or(l, |(n, _)| n);
                    FLAGS.contains(&n)
                        || matches!(n, "depth" | "omit" | "include") && l.contains('=')
                }
                None => !v.starts_with('-') || matches!(v, "-a" | "-l" | "-p" | "-g" | "-v"),
            }
        });
        let version = verb.is_none()
            && call.args.len() == 1
            && matches!(call.args[0].value.as_str(), "--version" | "-v");
        if ok && (verb.is_some() || version) {
            w.effect(R);
        } else {
            w.unknown(format!(
                "\"{}\" is given an option the gateway does not know to be harmless",
                call.name
            ));
        }
        return;
    }
    const READ: &[&str] = &[];
    const INSTALL: &[&str] = &[
        "install",
        "i",
        "add",
        "ci",
        "uninstall",
        "remove",
        "rm",
        "un",
        "r",
        "update",
        "up",
        "upgrade",
        "link",
        "ln",
        "rebuild",
        "dedupe",
        "prune",
        "publish",
        "unpublish",
        "deprecate",
        "dist-tag",
        "owner",
        "audit",
        "install-test",
        "it",
    ];
    match verb {
        Some(v) if READ.contains(&v) => w.effect(R),
        // Installing runs the packages' lifecycle scripts.
        Some(v) if INSTALL.contains(&v) => w.effect(A),
        Some(v) => w.unknown(format!(
            "\"{} {v}\" can run package scripts the gateway cannot inspect",
            call.name
        )),
        None => w.unknown(format!("\"{}\" without a command", call.name)),
    }
}

fn gem(w: &mut Walker<'_>, call: &Call<'_>) {
    let verb = first_operand(call.args, "", &[]);
    const READ: &[&str] = &[
        "list",
        "search",
        "info",
        "query",
        "contents",
        "environment",
        "which",
        "specification",
        "dependency",
        "help",
        "outdated",
        "--version",
        "-v",
    ];
    match verb {
        Some(v) if READ.contains(&v) => w.effect(R),
        _ => w.effect(A),
    }
}

// ---------------------------------------------------------------------
// Network and archives

fn curl(w: &mut Walker<'_>, call: &Call<'_>) {
    // curl has many options taking a value; those that matter are listed.
    let o = opts(
        call.args,
        // The short options that take a value (curl --help all).
        "ECKbcdDFPHmoUQreXYytzTuAwx",
        &[
            "output",
            "request",
            "data",
            "data-raw",
            "data-binary",
            "data-urlencode",
            "data-ascii",
            "json",
            "form",
            "form-string",
            "upload-file",
            "dump-header",
            "cookie-jar",
            "cookie",
            "user",
            "header",
            "user-agent",
            "referer",
            "config",
            "quote",
            "url",
            "output-dir",
            "proxy",
            "max-time",
            "connect-timeout",
            "write-out",
            "range",
            "cert",
            "key",
            "cacert",
            "resolve",
            "connect-to",
            "retry",
            "limit-rate",
            "stderr",
            "trace",
            "trace-ascii",
            "libcurl",
            "etag-save",
            "hsts",
            "alt-svc",
            "create-dirs",
            "ftp-port",
            "variable",
        ],
        false,
    );
    if o.has('K') || o.long("config") || o.long("variable") {
        w.unknown("\"curl -K\" reads options from a file the gateway cannot inspect");
        return;
    }
    w.effect(R);
    let write = |w: &mut Walker<'_>, p: &str| {
        if p != "-" {
            w.write_path(&Arg::lit(p));
        }
    };
    for c in ['o', 'D', 'c'] {
        if let Some(p) = short_text(&o, c) {
            write(w, p);
        }
    }
    // Any other option naming an output, a dump or a trace writes a file;
    // `-w '%output{file}'` too.
    for (n, v) in &o.long {
        let writes = [
            "output", "dump", "jar", "save", "trace", "stderr", "libcurl", "upload",
        ]
        .iter()
        .any(|k| n.contains(k));
        if writes {
            match v {
                Some(p) => write(w, p),
                None => w.effect(W),
            }
        }
    }
    let write_out = short_text(&o, 'w').or_else(|| o.long_value("write-out").flatten());
    if write_out.is_some_and(|f| f.contains("%output{") || f.starts_with('@')) {
        w.effect(W);
    }
    for l in [
        "output",
        "dump-header",
        "cookie-jar",
        "stderr",
        "trace",
        "trace-ascii",
        "libcurl",
        "etag-save",
        "hsts",
        "alt-svc",
    ] {
        if let Some(Some(p)) = o.long_value(l) {
            write(w, p);
        }
    }
    if o.has('O')
        || o.long("remote-name")
        || o.long("remote-name-all")
        || o.has('J')
        || o.long("output-dir")
    {
        w.effect(W);
    }
    let sends = o.has('d')
        || o.has('F')
        || o.has('T')
        || o.has('Q')
        || [
            "data",
            "data-raw",
            "data-binary",
            "data-urlencode",
            "data-ascii",
            "json",
            "form",
            "form-string",
            "upload-file",
            "quote",
            "ftp-port",
        ]
        .iter()
        .any(|l| o.long(l));
    let method = short_text(&o, 'X').or_else(|| o.long_value("request").flatten());
    let safe_method = method
        .is_none_or(|m| matches!(m.to_ascii_uppercase().as_str(), "GET" | "HEAD" | "OPTIONS"));
    if sends || !safe_method {
        w.effect(W);
    }
    let mut urls: Vec<&str> = o.operands.iter().map(|a| a.value.as_str()).collect();
    urls.extend(
        o.long
            .iter()
            .filter(|(n, _)| long_matches(n, "url") && n.len() > 1)
            .filter_map(|(_, v)| *v),
    );
    for u in urls {
        if let Err(reason) = url_scheme(u, !sends && safe_method, true) {
            w.unknown(format!("curl: {reason}"));
            return;
        }
    }
}

/// Checks the scheme of a URL a download tool is given: http(s), and
/// ftp(s) for plain downloads; the others (file, dict, gopher, telnet,
/// ldap, smb, scp, ...) read local files, speak raw protocols or reach
/// hosts the gateway does not guard. `guess`: curl guesses the protocol
/// from the host name (`dict.example`).
fn url_scheme(u: &str, download: bool, guess: bool) -> Result<(), String> {
    let scheme_len = u.find(':').filter(|&i| {
        i > 0
            && u[..i]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
            && u[i + 1..].starts_with('/')
    });
    let scheme = match scheme_len {
        Some(i) => u[..i].to_ascii_lowercase(),
        None => {
            let host = u.to_ascii_lowercase();
            let guessed = [
                "dict.", "ldap.", "imap.", "pop3.", "smtp.", "gopher.", "telnet.",
            ]
            .iter()
            .find(|p| host.starts_with(**p));
            match guessed {
                Some(p) if guess => p.trim_end_matches('.').to_string(),
                _ if host.starts_with("ftp.") => "ftp".to_string(),
                _ => "http".to_string(),
            }
        }
    };
    match scheme.as_str() {
        "http" | "https" => Ok(()),
        "ftp" | "ftps" if download => Ok(()),
        other => Err(format!(
            "the URL \"{u}\" uses the {other} scheme, which the gateway does not accept here"
        )),
    }
}

fn wget(w: &mut Walker<'_>, call: &Call<'_>) {
    let o = opts(
        call.args,
        "OoaPeiBtTUwQ",
        &[
            "output-document",
            "output-file",
            "append-output",
            "directory-prefix",
            "execute",
            "input-file",
            "base",
            "tries",
            "timeout",
            "user-agent",
            "wait",
            "quota",
            "post-data",
            "post-file",
            "method",
            "body-data",
            "body-file",
            "header",
            "user",
            "password",
            "load-cookies",
            "save-cookies",
            "config",
            "warc-file",
            "rejected-log",
            "use-askpass",
        ],
        false,
    );
    if o.long("config") || o.has('e') || o.long("execute") {
        w.unknown("\"wget -e/--config\" runs settings the gateway cannot inspect");
        return;
    }
    let doc = short_text(&o, 'O').or_else(|| o.long_value("output-document").flatten());
    let to_stdout = doc == Some("-");
    let spider = o.long("spider");
    match doc {
        Some(p) if p != "-" => w.write_path(&Arg::lit(p)),
        _ => {}
    }
    if let Some(p) = short_text(&o, 'o').or_else(|| short_text(&o, 'a')) {
        w.write_path(&Arg::lit(p));
    }
    if o.long.iter().any(|(n, _)| n.contains("askpass")) {
        w.unknown("\"wget --use-askpass\" runs another program");
        return;
    }
    // Logs, cookies, WARC files and the like go to files.
    for (n, v) in &o.long {
        let writes = [
            "output",
            "append",
            "save",
            "warc",
            "rejected-log",
            "directory-prefix",
        ]
        .iter()
        .any(|k| n.contains(k) || long_matches(n, k));
        let document_only = long_matches(n, "output-document") && !long_matches(n, "output-file");
        if writes && !document_only {
            match v {
                Some(p) if *p != "-" => w.write_path(&Arg::lit(p)),
                _ => w.effect(W),
            }
        }
    }
    let sends = ["post-data", "post-file", "method", "body-data", "body-file"]
        .iter()
        .any(|l| o.long(l));
    for a in &o.operands {
        if let Err(reason) = url_scheme(&a.value, !sends, false) {
            w.unknown(format!("wget: {reason}"));
            return;
        }
    }
    if sends || !(to_stdout || spider) {
        w.effect(W);
    }
    w.effect(R);
}

fn tar(w: &mut Walker<'_>, call: &Call<'_>) {
    let args = call.args;
    let mut letters = String::new();
    let mut long: Vec<(&str, Option<&str>)> = Vec::new();
    let mut archives: Vec<&str> = Vec::new();
    let mut dirs: Vec<&str> = Vec::new();
    let mut written: Vec<&str> = Vec::new();
    let mut operands: Vec<&Arg> = Vec::new();
    const VALUE: &str = "fCITXbgHKLMNVF";
    // Long options that take a value in the next word when not given `=`.
    const LONG_VALUE: &[&str] = &[
        "file",
        "directory",
        "index-file",
        "rsh-command",
        "rmt-command",
        "use-compress-program",
        "to-command",
        "info-script",
        "new-volume-script",
        "checkpoint-action",
        "listed-incremental",
        "files-from",
        "exclude-from",
        "exclude",
        "exclude-tag",
        "exclude-tag-all",
        "exclude-tag-under",
        "transform",
        "xform",
        "owner",
        "group",
        "owner-map",
        "group-map",
        "mode",
        "mtime",
        "label",
        "volno-file",
        "tape-length",
        "blocking-factor",
        "record-size",
        "format",
        "suffix",
        "newer",
        "after-date",
        "newer-mtime",
        "starting-file",
        "strip-components",
        "quoting-style",
        "quote-chars",
        "no-quote-chars",
        "sort",
        "warning",
        "hole-detection",
        "pax-option",
        "clamp-mtime",
    ];
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        let v = a.value.as_str();
        let bundle = i == 0 && !v.starts_with('-');
        if v == "--" && !a.dynamic {
            operands.extend(args[i + 1..].iter());
            break;
        }
        if let Some(l) = v.strip_prefix("--") {
            let (n, val) = match l.split_once('=') {
                Some((n, val)) => (n, Some(val)),
                None if LONG_VALUE.iter().any(|f| long_matches(l, f)) => {
                    i += 1;
                    (l, args.get(i).map(|a| a.value.as_str()))
                }
                None => (l, None),
            };
            long.push((n, val));
            if let Some(val) = val {
                if long_matches(n, "file") {
                    archives.push(val);
                }
                if long_matches(n, "directory") {
                    dirs.push(val);
                }
                if ["index-file", "listed-incremental", "volno-file"]
                    .iter()
                    .any(|f| long_matches(n, f))
                {
                    written.push(val);
                }
            }
        } else if bundle || (v.starts_with('-') && v.len() > 1) {
            // Old-style bundles take their values from the following words, in order.
            let body = v.strip_prefix('-').unwrap_or(v);
            let mut takes = 0;
            for (pos, c) in body.char_indices() {
                letters.push(c);
                if VALUE.contains(c) {
                    let value = if bundle {
                        takes += 1;
                        args.get(i + takes).map(|a| a.value.as_str())
                    } else {
                        let attached = &body[pos + c.len_utf8()..];
                        if attached.is_empty() {
                            takes = 1;
                            args.get(i + 1).map(|a| a.value.as_str())
                        } else {
                            Some(attached)
                        }
                    };
                    if let Some(value) = value {
                        match c {
                            'f' => archives.push(value),
                            'C' => dirs.push(value),
                            'g' => written.push(value),
                            _ => {}
                        }
                    }
                    if !bundle {
                        break;
                    }
                }
            }
            i += takes;
        } else {
            operands.push(a);
        }
        i += 1;
    }
    let has_long = |name: &str| long.iter().any(|(n, _)| long_matches(n, name));
    const RUNS: &[&str] = &[
        "use-compress-program",
        "to-command",
        "checkpoint-action",
        "info-script",
        "new-volume-script",
        "rsh-command",
        "rmt-command",
    ];
    let runs_named = long.iter().any(|(n, _)| {
        ["command", "script", "program", "action", "exec"]
            .iter()
            .any(|k| n.contains(k))
    });
    if letters.contains(['I', 'F']) || runs_named || RUNS.iter().any(|r| has_long(r)) {
        w.unknown("tar is asked to run another program");
        return;
    }
    // An archive named host:path is opened on another host through rsh/ssh.
    let remote = archives.iter().any(|a| {
        a.split_once(':')
            .is_some_and(|(host, _)| !host.is_empty() && !host.contains('/'))
    });
    if remote && !has_long("force-local") {
        w.unknown(
            "the tar archive names another host (host:path), which tar reaches through rsh/ssh",
        );
        return;
    }
    let create = letters.contains(['c', 'r', 'u', 'A'])
        || has_long("create")
        || has_long("append")
        || has_long("update")
        || has_long("concatenate")
        || has_long("delete");
    let extract = letters.contains('x') || has_long("extract") || has_long("get");
    let list = letters.contains('t')
        || has_long("list")
        || letters.contains('d')
        || has_long("diff")
        || has_long("compare");
    for a in archives {
        if create {
            w.write_path(&Arg::lit(a));
        } else {
            w.path(a);
        }
    }
    for p in written {
        w.write_path(&Arg::lit(p));
    }
    for d in dirs {
        w.path(d);
    }
    for a in operands {
        w.path(&a.value);
    }
    if create || extract {
        w.effect(W);
        if has_long("remove-files") || has_long("recursive-unlink") || has_long("unlink-first") {
            w.effect(D);
        }
    } else if list {
        w.effect(R);
    } else {
        w.unknown("tar is given no known operation (c, x, t)");
    }
}

fn compressor(w: &mut Walker<'_>, call: &Call<'_>) {
    let o = opts(call.args, "bSo", &["suffix", "output"], false);
    let read_only = o.has('c')
        || o.has('l')
        || o.has('t')
        || o.long("stdout")
        || o.long("to-stdout")
        || o.long("list")
        || o.long("test");
    for a in &o.operands {
        if read_only {
            w.path(&a.value)
        } else {
            w.write_path(a)
        }
    }
    if o.operands.is_empty() && !read_only {
        // A filter from stdin to stdout.
        w.effect(R);
        return;
    }
    w.effect(if read_only { R } else { W });
}

fn zip(w: &mut Walker<'_>, call: &Call<'_>) {
    let o = opts(call.args, "dxiPb", &[], false);
    let read_only = call.name == "unzip"
        && (o.has('l') || o.has('p') || o.has('t') || o.has('v') || o.has('Z'));
    for a in &o.operands {
        w.path(&a.value);
    }
    if call.name == "zip" && (o.has('T') && o.short.iter().any(|(c, _)| *c == 'T')) {
        // zip -T -TT cmd runs a test command.
        if call
            .args
            .iter()
            .any(|a| a.value.starts_with("-TT") || a.value.starts_with("--unzip-command"))
        {
            w.unknown("\"zip -TT\" runs another program");
            return;
        }
    }
    w.effect(if read_only { R } else { W });
    if call.name == "zip" && (o.has('m') || o.long("move")) {
        w.effect(D);
    }
}

fn rsync(w: &mut Walker<'_>, call: &Call<'_>) {
    let o = opts(
        call.args,
        "eBfT",
        &[
            "rsh",
            "rsync-path",
            "filter",
            "exclude",
            "include",
            "temp-dir",
            "backup-dir",
            "log-file",
            "password-file",
            "files-from",
            "exclude-from",
            "include-from",
            "partial-dir",
            "compare-dest",
            "copy-dest",
            "link-dest",
            "chmod",
            "chown",
            "usermap",
            "groupmap",
            "out-format",
            "port",
            "sockopts",
            "bwlimit",
            "timeout",
            "suffix",
        ],
        false,
    );
    if o.has('e') || o.long("rsh") || o.long("rsync-path") {
        w.unknown("\"rsync -e/--rsync-path\" runs another program");
        return;
    }
    if o.operands.iter().any(|a| is_remote_spec(&a.value)) {
        w.unknown("rsync reaches another host, which the gateway does not guard");
        return;
    }
    for a in &o.operands {
        w.path(&a.value);
    }
    w.effect(W);
    if o.long
        .iter()
        .any(|(n, _)| n.starts_with("del") || n.starts_with("remove-source"))
    {
        w.effect(D);
    }
}

fn is_remote_spec(v: &str) -> bool {
    if v.starts_with('/') || v.starts_with('.') {
        return false;
    }
    v.contains("::")
        || v.starts_with("rsync://")
        || v.split('/').next().is_some_and(|h| h.contains(':'))
}

fn remote(w: &mut Walker<'_>, call: &Call<'_>) {
    if version_query(call.args) {
        w.effect(R);
        return;
    }
    w.unknown(format!(
        "\"{}\" reaches another host, which the gateway does not guard",
        call.name
    ));
}

// ---------------------------------------------------------------------
// Databases

fn psql(w: &mut Walker<'_>, call: &Call<'_>) {
    let o = opts(
        call.args,
        "cdfhpUvPoLTFRW",
        &[
            "command",
            "dbname",
            "file",
            "host",
            "port",
            "username",
            "set",
            "variable",
            "pset",
            "output",
            "log-file",
            "table-attr",
            "field-separator",
            "record-separator",
        ],
        false,
    );
    if o.has('f') || o.long("file") {
        w.unknown("\"psql -f\" runs a SQL file the gateway cannot inspect");
        return;
    }
    if let Some(p) = short_text(&o, 'o').or_else(|| o.long_value("output").flatten()) {
        w.write_path(&Arg::lit(p));
    }
    if let Some(p) = short_text(&o, 'L').or_else(|| o.long_value("log-file").flatten()) {
        w.write_path(&Arg::lit(p));
    }
    let mut texts: Vec<(String, bool)> = Vec::new();
    for (c, v) in &o.short {
        if *c == 'c' {
            if let Some(a) = v {
                let t = short_text_of(a, 'c');
                texts.push((t, a.dynamic));
            }
        }
    }
    for (n, v) in &o.long {
        if long_matches(n, "command") {
            if let Some(v) = v {
                texts.push((
                    (*v).to_string(),
                    call.args.iter().any(|a| a.dynamic && a.value.contains(*v)),
                ));
            }
        }
    }
    if o.has('l') || o.long("list") || version_query(call.args) {
        w.effect(R);
        return;
    }
    if texts.is_empty() {
        match call.stdin {
            Stdin::Text {
                text,
                dynamic: false,
            } => texts.push((text.clone(), false)),
            _ => {
                w.unknown("\"psql\" without -c reads SQL from its input, which the gateway cannot inspect");
                return;
            }
        }
    }
    for (text, dynamic) in texts {
        db_text(w, "psql", &text, dynamic);
    }
}

fn short_text_of(a: &Arg, c: char) -> String {
    let v = a.value.as_str();
    if let Some(rest) = v.strip_prefix('-') {
        if !rest.starts_with('-') {
            if let Some(pos) = rest.find(c) {
                return rest[pos + c.len_utf8()..].to_string();
            }
        }
    }
    v.to_string()
}

fn db_text(w: &mut Walker<'_>, client: &str, text: &str, dynamic: bool) {
    if dynamic {
        w.unknown(format!(
            "the SQL given to \"{client}\" is only known when the command runs"
        ));
        return;
    }
    if text.contains('\\') {
        w.unknown(format!(
            "the text given to \"{client}\" holds backslash commands, which run outside SQL (\\! runs a shell)"
        ));
        return;
    }
    if client != "psql" {
        let client_command = text.split([';', '\n']).any(|stmt| {
            let first = stmt
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_ascii_lowercase();
            matches!(
                first.as_str(),
                "system"
                    | "source"
                    | "tee"
                    | "pager"
                    | "edit"
                    | "connect"
                    | "delimiter"
                    | "prompt"
                    | "charset"
                    | "notee"
                    | "nopager"
                    | "warnings"
                    | "rehash"
                    | "ego"
                    | "go"
            )
        });
        if client_command {
            w.unknown(format!(
                "the text given to \"{client}\" holds client commands (system, source, tee, pager), which run outside SQL"
            ));
            return;
        }
    }
    w.sql(client, text);
}

fn mysql(w: &mut Walker<'_>, call: &Call<'_>) {
    let o = opts(
        call.args,
        "ehPuDSO",
        &[
            "execute",
            "host",
            "port",
            "user",
            "database",
            "socket",
            "defaults-file",
            "defaults-extra-file",
            "init-command",
            "pager",
            "tee",
            "plugin-dir",
            "default-auth",
        ],
        false,
    );
    if o.long("defaults-file")
        || o.long("defaults-extra-file")
        || o.long("init-command")
        || o.long("pager")
        || o.long("plugin-dir")
        || o.long("default-auth")
    {
        w.unknown(format!(
            "\"{}\" is given options that load files or run programs",
            call.name
        ));
        return;
    }
    if let Some(Some(p)) = o.long_value("tee") {
        w.write_path(&Arg::lit(p));
    }
    let mut texts: Vec<(String, bool)> = Vec::new();
    for (c, v) in &o.short {
        if *c == 'e' {
            if let Some(a) = v {
                texts.push((short_text_of(a, 'e'), a.dynamic));
            }
        }
    }
    for (n, v) in &o.long {
        if long_matches(n, "execute") {
            if let Some(v) = v {
                texts.push((
                    (*v).to_string(),
                    call.args.iter().any(|a| a.dynamic && a.value.contains(*v)),
                ));
            }
        }
    }
    if version_query(call.args) {
        w.effect(R);
        return;
    }
    if texts.is_empty() {
        match call.stdin {
            Stdin::Text {
                text,
                dynamic: false,
            } => texts.push((text.clone(), false)),
            _ => {
                w.unknown(format!(
                    "\"{}\" without -e reads SQL from its input, which the gateway cannot inspect",
                    call.name
                ));
                return;
            }
        }
    }
    for (text, dynamic) in texts {
        db_text(w, call.name, &text, dynamic);
    }
}

fn dump(w: &mut Walker<'_>, call: &Call<'_>) {
    let o = opts(
        call.args,
        "fhpUdnNtTrSZ",
        &[
            "file",
            "host",
            "port",
            "username",
            "dbname",
            "result-file",
            "schema",
            "table",
        ],
        false,
    );
    let out = if call.name.starts_with("pg_") {
        short_text(&o, 'f').or_else(|| o.long_value("file").flatten())
    } else {
        short_text(&o, 'r').or_else(|| o.long_value("result-file").flatten())
    };
    if let Some(p) = out {
        w.write_path(&Arg::lit(p));
    }
    w.effect(R);
}

fn redis(w: &mut Walker<'_>, call: &Call<'_>) {
    let o = opts(
        call.args,
        "hpsanuiRdDrc",
        &[
            "user",
            "pass",
            "askpass",
            "cacert",
            "cacertdir",
            "cert",
            "key",
            "tls-ciphers",
            "sni",
            "eval",
            "pattern",
            "count",
            "quoted-pattern",
            "memkeys-samples",
            "functions",
            "rdb",
            "functions-rdb",
            "pipe-timeout",
            "replica",
        ],
        true,
    );
    if o.long("eval") || o.long("functions") {
        w.unknown("\"redis-cli --eval\" runs a Lua script");
        return;
    }
    if o.long("rdb") || o.long("functions-rdb") {
        w.effect(W);
        return;
    }
    if o.long("pipe") || o.has('x') {
        w.unknown("\"redis-cli\" reads commands or values from its input");
        return;
    }
    if o.long("bigkeys")
        || o.long("memkeys")
        || o.long("hotkeys")
        || o.long("scan")
        || o.long("stat")
        || o.long("latency")
        || o.long("version")
        || o.long("help")
        || o.long("intrinsic-latency")
    {
        w.effect(R);
        return;
    }
    let Some(cmd) = call.args.get(o.rest) else {
        w.unknown("\"redis-cli\" without a command reads commands from its input");
        return;
    };
    if cmd.dynamic {
        w.unknown("the redis command is only known when the command runs");
        return;
    }
    let verb = cmd.value.to_ascii_uppercase();
    let sub = call
        .args
        .get(o.rest + 1)
        .map(|a| a.value.to_ascii_uppercase())
        .unwrap_or_default();
    const READ: &[&str] = &[
        "GET",
        "MGET",
        "KEYS",
        "SCAN",
        "INFO",
        "PING",
        "TTL",
        "PTTL",
        "TYPE",
        "EXISTS",
        "STRLEN",
        "HGET",
        "HGETALL",
        "HKEYS",
        "HVALS",
        "HLEN",
        "HMGET",
        "HEXISTS",
        "HSCAN",
        "HSTRLEN",
        "LRANGE",
        "LLEN",
        "LINDEX",
        "LPOS",
        "SMEMBERS",
        "SCARD",
        "SISMEMBER",
        "SMISMEMBER",
        "SSCAN",
        "SRANDMEMBER",
        "SINTER",
        "SUNION",
        "SDIFF",
        "ZRANGE",
        "ZCARD",
        "ZSCORE",
        "ZMSCORE",
        "ZRANK",
        "ZREVRANK",
        "ZREVRANGE",
        "ZRANGEBYSCORE",
        "ZREVRANGEBYSCORE",
        "ZRANGEBYLEX",
        "ZCOUNT",
        "ZLEXCOUNT",
        "ZSCAN",
        "DBSIZE",
        "TIME",
        "LASTSAVE",
        "ROLE",
        "OBJECT",
        "DUMP",
        "XRANGE",
        "XREVRANGE",
        "XLEN",
        "XREAD",
        "XINFO",
        "XPENDING",
        "PFCOUNT",
        "GETRANGE",
        "BITCOUNT",
        "BITPOS",
        "GETBIT",
        "GEOPOS",
        "GEODIST",
        "GEOHASH",
        "GEOSEARCH",
        "GEORADIUS_RO",
        "GEORADIUSBYMEMBER_RO",
        "ECHO",
        "COMMAND",
        "RANDOMKEY",
        "TOUCH",
        "SUBSCRIBE",
        "PSUBSCRIBE",
        "SSUBSCRIBE",
        "PUBSUB",
        "LOLWUT",
        "HELLO",
        "AUTH",
        "SELECT",
        "READONLY",
        "WAIT",
        "SUBSTR",
        "SORT_RO",
        "ZRANDMEMBER",
        "HRANDFIELD",
        "EXPIRETIME",
        "PEXPIRETIME",
        "LCS",
        "STRALGO",
    ];
    const DESTROY: &[&str] = &["FLUSHALL", "FLUSHDB", "SWAPDB"];
    const ADMIN: &[&str] = &[
        "CONFIG",
        "SHUTDOWN",
        "DEBUG",
        "SLAVEOF",
        "REPLICAOF",
        "MODULE",
        "ACL",
        "BGSAVE",
        "SAVE",
        "BGREWRITEAOF",
        "FAILOVER",
        "CLUSTER",
        "MONITOR",
        "MIGRATE",
        "SYNC",
        "PSYNC",
        "REPLCONF",
        "RESET",
        "LATENCY",
    ];
    const CODE: &[&str] = &[
        "EVAL",
        "EVALSHA",
        "EVAL_RO",
        "EVALSHA_RO",
        "FCALL",
        "FCALL_RO",
        "FUNCTION",
        "SCRIPT",
    ];
    let v = verb.as_str();
    if READ.contains(&v) {
        w.effect(R);
    } else if DESTROY.contains(&v) {
        w.effect(D);
    } else if CODE.contains(&v) {
        w.unknown(format!(
            "redis {v} runs a script the gateway cannot inspect"
        ));
    } else if v == "CLIENT" {
        let read = matches!(
            sub.as_str(),
            "LIST" | "INFO" | "GETNAME" | "ID" | "GETREDIR" | "TRACKINGINFO"
        );
        w.effect(if read { R } else { A });
    } else if v == "SLOWLOG" || v == "MEMORY" {
        let read = !matches!(sub.as_str(), "RESET" | "PURGE");
        w.effect(if read { R } else { A });
    } else if ADMIN.contains(&v) {
        w.effect(A);
    } else {
        w.effect(W);
    }
}

// ---------------------------------------------------------------------
// Containers, clusters, repositories

fn docker(w: &mut Walker<'_>, call: &Call<'_>) {
    let o = opts(
        call.args,
        "Hcl",
        &[
            "host",
            "context",
            "config",
            "log-level",
            "tlscacert",
            "tlscert",
            "tlskey",
        ],
        true,
    );
    if o.has('H') || o.long("host") {
        w.unknown(format!("\"{} -H\" acts on another host", call.name));
        return;
    }
    // Global options: only the log ones are known to be harmless; others
    // pick another daemon, configuration, runtime or storage.
    let globals_ok = o
        .short
        .iter()
        .all(|(c, _)| matches!(c, 'D' | 'l' | 'v' | 'h'))
        && o.long.iter().all(|(n, _)| {
            ["debug", "log-level", "version", "help"]
                .iter()
                .any(|l| long_matches(n, l))
        });
    if !globals_ok || call.args[..o.rest].iter().any(|a| a.dynamic) {
        w.unknown(format!(
            "a global option of \"{}\" chooses another daemon, configuration or runtime",
            call.name
        ));
        return;
    }
    let rest = &call.args[o.rest..];
    if matches!(
        rest.first().map(|a| a.value.as_str()),
        Some("buildx" | "context" | "machine" | "plugin" | "builder" | "build")
    ) {
        w.unknown(format!(
            "\"{} {}\" can run builders or plugins, or switch daemons",
            call.name, rest[0].value
        ));
        return;
    }
    let verb = rest.first().map(|a| a.value.as_str());
    let sub = rest.get(1).map(|a| a.value.as_str());
    const READ: &[&str] = &[
        "ps", "logs", "inspect", "images", "version", "info", "stats", "top", "history", "events",
        "search", "port", "diff", "help",
    ];
    const DESTROY: &[&str] = &["rm", "rmi", "prune"];
    const GROUPS: &[&str] = &[
        "container",
        "image",
        "volume",
        "network",
        "system",
        "builder",
        "buildx",
        "plugin",
        "secret",
        "config",
        "node",
        "service",
        "stack",
        "context",
        "manifest",
        "trust",
        "swarm",
        "pod",
        "machine",
    ];
    match verb {
        None => w.effect(R),
        Some(v) if READ.contains(&v) => w.effect(R),
        Some(v) if DESTROY.contains(&v) => w.effect(D),
        Some("compose") => compose_verb(w, &rest[1..]),
        Some(g) if GROUPS.contains(&g) => {
            let s = sub.unwrap_or("ls");
            if matches!(
                s,
                "ls" | "list"
                    | "inspect"
                    | "logs"
                    | "ps"
                    | "df"
                    | "info"
                    | "history"
                    | "events"
                    | "top"
                    | "port"
                    | "diff"
                    | "stats"
                    | "show"
                    | "--help"
            ) {
                w.effect(R);
            } else if matches!(s, "rm" | "remove" | "prune" | "rmi") {
                w.effect(D);
            } else {
                w.effect(A);
            }
        }
        Some(_) if version_query(rest) => w.effect(R),
        Some(
            "run" | "exec" | "start" | "stop" | "restart" | "kill" | "pull" | "push" | "create"
            | "cp" | "commit" | "tag" | "login" | "logout" | "load" | "save" | "import" | "export"
            | "rename" | "update" | "pause" | "unpause" | "attach" | "wait",
        ) => w.effect(A),
        Some(v) => w.unknown(format!(
            "\"{} {v}\" is not a known command (CLI plugins run other programs)",
            call.name
        )),
    }
}

fn compose(w: &mut Walker<'_>, call: &Call<'_>) {
    compose_verb(w, call.args);
}

fn compose_verb(w: &mut Walker<'_>, args: &[Arg]) {
    let o = opts(
        args,
        "fpH",
        &[
            "file",
            "project-name",
            "project-directory",
            "env-file",
            "profile",
            "ansi",
            "parallel",
            "progress",
        ],
        true,
    );
    let rest = &args[o.rest..];
    let verb = rest.first().map(|a| a.value.as_str());
    match verb {
        Some(
            "ps" | "logs" | "config" | "ls" | "images" | "top" | "version" | "port" | "events",
        ) => w.effect(R),
        Some("down") => {
            let volumes = rest.iter().any(|a| {
                a.value == "-v" || a.value.starts_with("--vol") || a.value.starts_with("--rmi")
            });
            w.effect(if volumes { D } else { A });
        }
        Some("rm") => w.effect(D),
        None => w.effect(R),
        Some(_) => w.effect(A),
    }
}

fn kubectl(w: &mut Walker<'_>, call: &Call<'_>) {
    let o = opts(
        call.args,
        "nslcfoLL",
        &[
            "namespace",
            "context",
            "cluster",
            "user",
            "server",
            "kubeconfig",
            "token",
            "as",
            "as-group",
            "as-uid",
            "request-timeout",
            "selector",
            "container",
            "filename",
            "output",
            "field-selector",
            "sort-by",
            "template",
            "certificate-authority",
            "client-certificate",
            "client-key",
            "password",
            "username",
            "tls-server-name",
            "cache-dir",
            "log-file",
            "profile",
            "profile-output",
            "v",
            "vmodule",
            "label-columns",
            "chunk-size",
            "type",
            "image",
            "replicas",
            "port",
            "since",
            "tail",
            "limit-bytes",
            "timeout",
            "grace-period",
            "prune-allowlist",
            "field-manager",
            "subresource",
            "raw",
        ],
        false,
    );
    if o.long("kubeconfig") || o.long.iter().any(|(n, _)| n.starts_with("exec")) {
        w.unknown("\"kubectl --kubeconfig\" loads a configuration that can name programs to run");
        return;
    }
    for l in ["log-file", "profile-output"] {
        if let Some(v) = o.long_value(l) {
            match v {
                Some(p) => w.write_path(&Arg::lit(p)),
                None => w.effect(W),
            }
        }
    }
    let ops: Vec<&str> = o.operands.iter().map(|a| a.value.as_str()).collect();
    let verb = ops.first().copied();
    if verb == Some("kustomize") {
        w.unknown("\"kubectl kustomize\" can run generator plugins and reach other hosts");
        return;
    }
    let sub = ops.get(1).copied();
    const READ: &[&str] = &[
        "get",
        "describe",
        "logs",
        "top",
        "explain",
        "version",
        "api-resources",
        "api-versions",
        "cluster-info",
        "diff",
        "wait",
        "events",
        "completion",
        "help",
        "options",
    ];
    const WRITE: &[&str] = &[
        "apply",
        "create",
        "patch",
        "edit",
        "scale",
        "label",
        "annotate",
        "set",
        "autoscale",
        "expose",
        "replace",
    ];
    const DESTROY: &[&str] = &["delete", "drain"];
    const ADMIN: &[&str] = &[
        "exec",
        "cp",
        "port-forward",
        "proxy",
        "attach",
        "run",
        "debug",
        "cordon",
        "uncordon",
        "taint",
        "certificate",
    ];
    let force = o.long("force")
        || o.long("prune")
        || o.long("grace-period") && call.args.iter().any(|a| a.value.ends_with("=0"));
    match verb {
        None => w.effect(R),
        Some(v) if READ.contains(&v) => w.effect(R),
        Some("edit") => w.unknown("\"kubectl edit\" opens an editor"),
        Some(v) if WRITE.contains(&v) => w.effect(if force { D } else { W }),
        Some(v) if DESTROY.contains(&v) => w.effect(D),
        Some(v) if ADMIN.contains(&v) => w.effect(A),
        Some("rollout") => {
            let read = matches!(sub, Some("status" | "history"));
            w.effect(if read { R } else { W });
        }
        Some("config") => {
            let read = matches!(
                sub,
                Some("view" | "get-contexts" | "current-context" | "get-clusters" | "get-users")
            );
            w.effect(if read { R } else { W });
        }
        Some("auth") => {
            let read = matches!(sub, Some("can-i" | "whoami"));
            w.effect(if read { R } else { W });
        }
        Some("plugin") if sub == Some("list") => w.effect(R),
        Some(v) => w.unknown(format!(
            "\"kubectl {v}\" is not a known kubectl command (plugins run other programs)"
        )),
    }
}

fn git(w: &mut Walker<'_>, call: &Call<'_>) {
    let o = opts(
        call.args,
        "Cc",
        &[
            "git-dir",
            "work-tree",
            "namespace",
            "exec-path",
            "config-env",
            "super-prefix",
            "list-cmds",
            "attr-source",
        ],
        true,
    );
    if o.has('c') || o.long("config-env") || o.long("exec-path") {
        w.unknown("\"git -c/--config-env/--exec-path\" can set options that run other programs");
        return;
    }
    let rest = &call.args[o.rest..];
    let Some(verb) = rest.first() else {
        w.effect(R);
        return;
    };
    let sub = &rest[1..];
    // `<transport>::<address>` runs git-remote-<transport>; `ext::` runs a command.
    if let Some(a) = sub.iter().find(|a| {
        a.value.split_once("::").is_some_and(|(t, _)| {
            !t.is_empty()
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.' | '_'))
        })
    }) {
        w.unknown(format!(
            "\"{}\" names a git transport helper, which runs other programs",
            a.value
        ));
        return;
    }
    let so = opts(sub, "", &[], false);
    let has = |s: &str| sub.iter().any(|a| a.value == s);
    let starts = |p: &str| sub.iter().any(|a| a.value.starts_with(p));
    // Long options of the subcommand, before any `--`. git's option parser
    // takes unique prefixes, so `--up` may be `--upload-pack`.
    let long: Vec<(&str, Option<&str>)> = sub
        .iter()
        .take_while(|a| !a.is("--"))
        .filter_map(|a| a.value.strip_prefix("--"))
        .map(|l| match l.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (l, None),
        })
        .collect();
    const RUNS: &[&str] = &[
        "upload-pack",
        "receive-pack",
        "exec",
        "config",
        "open-files-in-pager",
    ];
    const RUNS_WORDS: &[&str] = &[
        "pager",
        "program",
        "command",
        "cmd",
        "exec",
        "editor",
        "hook",
        "tool",
        "script",
        "upload-pack",
        "receive-pack",
    ];
    let runs = long.iter().any(|(n, _)| {
        RUNS.iter().any(|r| long_matches(n, r) || n.starts_with(r))
            || RUNS_WORDS.iter().any(|k| n.contains(k))
            || (verb.value == "archive" && long_matches(n, "remote"))
    });
    if runs
        || (verb.value == "clone" && (so.has('u') || so.has('c')))
        || (verb.value == "grep" && so.has('O'))
    {
        w.unknown("the git options name programs to run or another host to reach");
        return;
    }
    // Read-class subcommands that write a file when asked to.
    for (n, v) in &long {
        let output = (long_matches(n, "output") || n.starts_with("output"))
            && !n.starts_with("output-indicator");
        if output {
            match v {
                Some(p) => w.write_path(&Arg::lit(p)),
                None => w.effect(W),
            }
        }
    }
    if verb.value == "archive" {
        let ao = opts(
            sub,
            "o",
            &["output", "format", "prefix", "remote", "exec"],
            false,
        );
        if let Some(p) = short_text(&ao, 'o') {
            w.write_path(&Arg::lit(p));
        }
    }
    if verb.value == "help" && !sub.is_empty() {
        w.unknown("\"git help\" with a topic runs a manual reader or a browser");
        return;
    }
    let first_op = so.operands.first().map(|a| a.value.as_str());
    let class = match verb.value.as_str() {
        "ls-remote" => {
            // Only an explicit web URL: a remote's name or an ssh URL may
            // reach a host the gateway does not guard.
            let web = so.operands.first().is_some_and(|a| {
                !a.dynamic && (a.value.starts_with("https://") || a.value.starts_with("http://"))
            });
            if !web {
                w.unknown("\"git ls-remote\" reaches a remote that is not an http(s) URL");
                return;
            }
            R
        }
        "status" | "log" | "diff" | "show" | "blame" | "grep" | "ls-files" | "ls-tree"
        | "rev-parse" | "rev-list" | "describe" | "shortlog" | "cat-file" | "show-ref"
        | "for-each-ref" | "whatchanged" | "cherry" | "count-objects" | "fsck" | "merge-base"
        | "name-rev" | "var" | "version" | "help" | "check-ignore" | "diff-tree" | "diff-files"
        | "diff-index" | "show-branch" | "verify-commit" | "verify-tag" | "archive" => R,
        "branch" => {
            if so.has('D') || (so.has('d') && so.has('f')) {
                D
            } else if so.has('d')
                || so.has('m')
                || so.has('M')
                || so.has('c')
                || so.has('C')
                || so.long("delete")
                || so.long("move")
                || so.long("copy")
                || so.long("set-upstream-to")
                || so.long("unset-upstream")
                || so.long("edit-description")
                || (!so.operands.is_empty()
                    && !so.has('l')
                    && !so.long("list")
                    && !so.long("contains")
                    && !so.long("merged")
                    && !so.long("no-merged")
                    && !so.long("points-at"))
            {
                W
            } else {
                R
            }
        }
        "tag" => {
            if so.has('d') || so.long("delete") {
                W
            } else if so.operands.is_empty() || so.has('l') || so.long("list") {
                R
            } else {
                W
            }
        }
        "remote" => match first_op {
            None | Some("show" | "get-url") => R,
            _ if so.has('v') && so.operands.is_empty() => R,
            _ => W,
        },
        "config" => {
            let read = so.has('l')
                || so.long("list")
                || so.long("get")
                || so.long("get-all")
                || so.long("get-regexp")
                || so.long("show-origin")
                || matches!(first_op, Some("get" | "list"))
                || (so.operands.len() == 1 && !so.long("unset") && !so.long("add"));
            // Config can name programs git runs later (core.pager, aliases, hooks).
            if read {
                R
            } else {
                A
            }
        }
        "stash" => match first_op {
            Some("list" | "show") => R,
            Some("drop" | "clear") => D,
            _ => W,
        },
        "reflog" => match first_op {
            Some("expire" | "delete") => D,
            _ => R,
        },
        "push" => {
            let force = so.has('f')
                || so.has('d')
                || so.long("force")
                || so.long("force-with-lease")
                || so.long("delete")
                || so.long("mirror")
                || so.long("prune")
                || so
                    .operands
                    .iter()
                    .skip(1)
                    .any(|a| a.value.starts_with('+') || a.value.starts_with(':'));
            if force {
                D
            } else {
                W
            }
        }
        "reset" => {
            if so.long("hard") || so.long("merge") || so.long("keep") {
                D
            } else {
                W
            }
        }
        "clean" => {
            if so.has('n') || so.long("dry-run") {
                R
            } else if so.has('f') || so.long("force") {
                D
            } else {
                W
            }
        }
        "checkout" | "switch" => {
            if so.has('f')
                || so.long("force")
                || so.long("discard-changes")
                || has("--")
                || has(".")
            {
                D
            } else {
                W
            }
        }
        "restore" => D,
        "filter-branch" | "filter-repo" | "prune" | "gc" | "update-ref" | "replace" => {
            if verb.value == "gc" && !starts("--prune") {
                W
            } else {
                D
            }
        }
        "add" | "commit" | "merge" | "rebase" | "pull" | "fetch" | "clone" | "init" | "mv"
        | "rm" | "am" | "apply" | "cherry-pick" | "revert" | "notes" | "worktree"
        | "sparse-checkout" | "submodule" | "bisect" | "format-patch" | "bundle" | "repack"
        | "pack-refs" | "maintenance" | "mergetool" | "difftool" | "rerere" | "lfs" => {
            let runs = match verb.value.as_str() {
                "rebase" => so.has('x') || so.long("exec"),
                "submodule" => first_op == Some("foreach"),
                "bisect" => first_op == Some("run"),
                "mergetool" | "difftool" => true,
                _ => false,
            };
            if runs {
                w.unknown(format!("\"git {}\" runs other programs", verb.value));
                return;
            }
            W
        }
        other => {
            w.unknown(format!(
                "\"git {other}\" is not a known git command (aliases and extensions run other programs)"
            ));
            return;
        }
    };
    w.effect(class);
}
