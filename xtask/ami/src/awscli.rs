//! Rendering of equivalent `aws` CLI commands, for `--dry-run` and for the hints printed after
//! publishing. Shell variables (`$SNAP`, `$AMI`) stand for ids known only at run time.

/// One word of a shell command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Word {
    /// Taken literally: quoted with single quotes when needed.
    Lit(String),
    /// Contains `$VAR` references the shell must expand: double-quoted.
    Expand(String),
}

pub fn lit(s: impl Into<String>) -> Word {
    Word::Lit(s.into())
}

pub fn expand(s: impl Into<String>) -> Word {
    Word::Expand(s.into())
}

fn is_plain(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@+%".contains(c))
}

/// Quotes a word for a POSIX shell.
pub fn quote(w: &Word) -> String {
    match w {
        Word::Lit(s) if is_plain(s) => s.clone(),
        Word::Lit(s) => format!("'{}'", s.replace('\'', r"'\''")),
        Word::Expand(s) => {
            let mut out = String::from("\"");
            for c in s.chars() {
                if matches!(c, '"' | '\\' | '`') {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('"');
            out
        }
    }
}

/// An `aws` command line, optionally capturing one output field into a shell variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub words: Vec<Word>,
    /// `(VAR, JMESPath query)`: render as `VAR=$(aws ... --query Q --output text)`.
    pub capture: Option<(String, String)>,
}

impl Command {
    /// `aws <service> <operation>` plus the region, when known.
    pub fn aws(service: &str, operation: &str, region: Option<&str>) -> Self {
        let mut words = vec![lit("aws"), lit(service), lit(operation)];
        if let Some(r) = region {
            words.push(lit("--region"));
            words.push(lit(r));
        }
        Command {
            words,
            capture: None,
        }
    }

    /// `aws ec2 wait <waiter>` plus the region, when known.
    pub fn ec2_wait(waiter: &str, region: Option<&str>) -> Self {
        let mut c = Command::aws("ec2", "wait", None);
        c.words.push(lit(waiter));
        if let Some(r) = region {
            c.words.push(lit("--region"));
            c.words.push(lit(r));
        }
        c
    }

    pub fn arg(mut self, flag: &str, value: Word) -> Self {
        self.words.push(lit(flag));
        self.words.push(value);
        self
    }

    pub fn flag(mut self, flag: &str) -> Self {
        self.words.push(lit(flag));
        self
    }

    pub fn capture(mut self, var: &str, query: &str) -> Self {
        self.capture = Some((var.to_string(), query.to_string()));
        self
    }

    pub fn render(&self) -> String {
        let mut line = self.words.iter().map(quote).collect::<Vec<_>>().join(" ");
        if let Some((var, query)) = &self.capture {
            line = format!(
                "{var}=$({line} --query {} --output text)",
                quote(&lit(query.as_str()))
            );
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote(&lit("gp3")), "gp3");
        assert_eq!(quote(&lit("a b")), "'a b'");
        assert_eq!(quote(&lit("it's")), r"'it'\''s'");
        assert_eq!(quote(&lit("")), "''");
        assert_eq!(
            quote(&expand("Ebs={SnapshotId=$SNAP}")),
            "\"Ebs={SnapshotId=$SNAP}\""
        );
        assert_eq!(quote(&expand("a\"b")), "\"a\\\"b\"");
    }

    #[test]
    fn command_with_capture() {
        let c = Command::aws("ec2", "describe-images", Some("eu-west-1"))
            .arg("--image-ids", expand("$AMI"))
            .capture("STATE", "Images[0].State");
        assert_eq!(
            c.render(),
            "STATE=$(aws ec2 describe-images --region eu-west-1 --image-ids \"$AMI\" --query 'Images[0].State' --output text)"
        );
    }
}
