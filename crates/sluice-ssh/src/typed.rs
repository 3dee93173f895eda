//! Rebuilds the lines typed in a terminal from its keystrokes, for the
//! record. It is a best effort (line editing, history and completion
//! happen on the target): the recording stays the source of truth.

/// Keystrokes in, finished lines out.
#[derive(Default)]
pub struct LineTracker {
    line: String,
    escape: Escape,
}

#[derive(Default, PartialEq)]
enum Escape {
    #[default]
    None,
    Started,
    Csi,
}

/// Longest line kept; the rest of a longer one is dropped from the record.
const MAX_LINE: usize = 4096;

impl LineTracker {
    /// Feeds keystrokes; returns the lines finished by Enter.
    pub fn feed(&mut self, data: &[u8]) -> Vec<String> {
        let mut done = Vec::new();
        for ch in String::from_utf8_lossy(data).chars() {
            match self.escape {
                Escape::Started => {
                    self.escape = if ch == '[' || ch == 'O' {
                        Escape::Csi
                    } else {
                        Escape::None
                    };
                    continue;
                }
                Escape::Csi => {
                    // Cursor keys and the like end with a letter or `~`.
                    if ch.is_ascii_alphabetic() || ch == '~' {
                        self.escape = Escape::None;
                    }
                    continue;
                }
                Escape::None => {}
            }
            match ch {
                '\r' | '\n' => {
                    let line = std::mem::take(&mut self.line);
                    if !line.trim().is_empty() {
                        done.push(line);
                    }
                }
                '\x1b' => self.escape = Escape::Started,
                '\x7f' | '\x08' => {
                    self.line.pop();
                }
                // Ctrl-U erases the line, Ctrl-C abandons it.
                '\x15' | '\x03' => self.line.clear(),
                // Ctrl-W erases a word.
                '\x17' => {
                    let kept = self.line.trim_end().rfind(' ').map(|i| i + 1).unwrap_or(0);
                    self.line.truncate(kept);
                }
                c if c.is_control() && c != '\t' => {}
                c => {
                    if self.line.len() < MAX_LINE {
                        self.line.push(c);
                    }
                }
            }
        }
        done
    }
}

/// Whether terminal output ends in a prompt for a secret, so that what is
/// typed next is kept out of the record.
pub fn asks_for_secret(recent_output: &str) -> bool {
    let tail = recent_output.trim_end().to_ascii_lowercase();
    let tail = &tail[tail.len().saturating_sub(120)..];
    let last = tail.rsplit('\n').next().unwrap_or("");
    last.ends_with(':')
        && [
            "password",
            "passphrase",
            "pin",
            "token",
            "secret",
            "passcode",
            "otp",
        ]
        .iter()
        .any(|w| last.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rebuilds_edited_lines() {
        let mut t = LineTracker::default();
        assert!(t.feed(b"ls -l").is_empty());
        assert_eq!(t.feed(b"a\x7f\r"), vec!["ls -l".to_string()]);
        assert_eq!(
            t.feed(b"rm x\x15echo hi\x1b[A\r"),
            vec!["echo hi".to_string()]
        );
        assert_eq!(t.feed(b"cat a b\x17c\n"), vec!["cat a c".to_string()]);
        assert!(t.feed(b"\r\r").is_empty());
    }

    #[test]
    fn recognises_secret_prompts() {
        assert!(asks_for_secret("[sudo] password for alice: "));
        assert!(asks_for_secret("Enter passphrase for key '/x':"));
        assert!(!asks_for_secret("alice@web-1:~$ "));
        assert!(!asks_for_secret("password changed\r\nalice@web-1:~$ "));
    }
}
