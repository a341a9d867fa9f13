//! The release's `releases/VSN/env.sh`, read as data: the scripts source it, a shell-less start
//! cannot. What it may hold is what the launcher can do the same way: comments, `export NAME=VALUE`
//! (VALUE quoted or not, with `$NAME` / `${NAME}` expansions) and `NAME=VALUE` of a variable the
//! start script exports. Anything else (conditions, command substitution, `${X:-…}` operators,
//! functions) is refused, naming the line and what to write instead.

use super::plan::Tmpl;

/// One assignment: the variable and its value as a template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Export {
    pub(crate) name: String,
    pub(crate) value: Tmpl,
}

/// Why a line cannot be started without a shell: its number (from 1), its text, the reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Refused {
    pub(crate) line: usize,
    pub(crate) text: String,
    pub(crate) why: String,
}

/// Variables the start script exports after env.sh: assigning them without `export` still
/// reaches the VM.
const EXPORTED_LATER: &[&str] = &[
    "RELEASE_COOKIE",
    "RELEASE_MODE",
    "RELEASE_NODE",
    "RELEASE_TMP",
    "RELEASE_VM_ARGS",
    "RELEASE_REMOTE_VM_ARGS",
    "RELEASE_DISTRIBUTION",
    "RELEASE_BOOT_SCRIPT",
    "RELEASE_BOOT_SCRIPT_CLEAN",
    "RELEASE_SYS_CONFIG",
    "RELEASE_ROOT",
    "RELEASE_NAME",
    "RELEASE_VSN",
    "RELEASE_COMMAND",
    "RELEASE_PROG",
];

fn is_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// The assignments of env.sh in order, or the first line a shell-less start cannot do.
pub(crate) fn parse(text: &str) -> Result<Vec<Export>, Refused> {
    let mut out: Vec<Export> = Vec::new();
    // `NAME=VALUE` without export: kept until an `export NAME` (or dropped as the shell would).
    let mut local: Vec<Export> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let refuse = |why: &str| Refused {
            line: i + 1,
            text: raw.trim().to_string(),
            why: why.to_string(),
        };
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (exported, rest) = match line.strip_prefix("export") {
            Some(r) if r.starts_with([' ', '\t']) => (true, r.trim_start()),
            _ => (false, line),
        };
        let Some((name, value)) = rest.split_once('=') else {
            // `export NAME` (of a variable assigned before).
            if exported && is_name(rest) {
                if let Some(pos) = local.iter().position(|e| e.name == rest) {
                    out.push(local.remove(pos));
                }
                continue;
            }
            return Err(refuse(
                "it runs a command, which needs a shell (only `export NAME=VALUE` lines can be done without one)",
            ));
        };
        if !is_name(name) {
            return Err(refuse(
                "it is not a plain assignment (only `export NAME=VALUE` lines can be done without a shell)",
            ));
        }
        let value = word(value).map_err(|why| refuse(&why))?;
        let e = Export {
            name: name.to_string(),
            value,
        };
        if exported || EXPORTED_LATER.contains(&name) {
            out.push(e);
        } else {
            local.retain(|l| l.name != e.name);
            local.push(e);
        }
    }
    if let Some(l) = local.first() {
        return Err(Refused {
            line: text
                .lines()
                .position(|t| t.trim().starts_with(&format!("{}=", l.name)))
                .map_or(0, |p| p + 1),
            text: format!("{}=…", l.name),
            why: format!(
                "{} is set but never exported, so only the shell would see it; write `export {}=…` if the release needs it",
                l.name, l.name
            ),
        });
    }
    Ok(out)
}

/// One shell word as an assignment's value: unquoted, 'single' or "double" quoted parts with
/// `$NAME` and `${NAME}` expansions, an optional ` # comment` after it.
fn word(s: &str) -> Result<Tmpl, String> {
    let b = s.as_bytes();
    let mut t = Tmpl::default();
    let mut lit = String::new();
    let mut i = 0;
    let mut quote: Option<u8> = None;
    let flush = |lit: &mut String, t: &mut Tmpl| {
        if !lit.is_empty() {
            *t = std::mem::take(t) + Tmpl::lit(lit);
            lit.clear();
        }
    };
    while i < b.len() {
        let c = b[i];
        match (quote, c) {
            (Some(b'\''), b'\'') | (Some(b'"'), b'"') => {
                quote = None;
                i += 1;
            }
            (Some(b'\''), _) => {
                let end = s[i..].find('\'').map_or(b.len(), |e| i + e);
                lit.push_str(&s[i..end]);
                i = end;
            }
            (None, b'\'') | (None, b'"') => {
                quote = Some(c);
                i += 1;
            }
            (_, b'$') => {
                let (name, next) = expansion(s, i)?;
                flush(&mut lit, &mut t);
                t = t + Tmpl::var(name);
                i = next;
            }
            (_, b'`') => {
                return Err("it substitutes a command's output, which needs a shell".into());
            }
            (_, b'\\') => {
                return Err("it escapes with a backslash, which only a shell reads".into());
            }
            (None, b' ' | b'\t') => {
                let rest = s[i..].trim_start();
                if rest.is_empty() || rest.starts_with('#') {
                    break;
                }
                return Err(
                    "its value is more than one word (quote it, or it runs a command)".into(),
                );
            }
            (None, b';' | b'&' | b'|' | b'<' | b'>' | b'(' | b')') => {
                return Err("it holds more than one command, which needs a shell".into());
            }
            (None, b'*' | b'?' | b'[' | b'~' | b'{' | b'}') => {
                return Err("its value holds a shell pattern (quote it)".into());
            }
            _ => {
                let ch = s[i..].chars().next().unwrap_or(' ');
                lit.push(ch);
                i += ch.len_utf8();
            }
        }
    }
    if quote.is_some() {
        return Err("a quote is not closed on this line".into());
    }
    Tmpl::check_literal(&lit).map_err(|e| format!("its value cannot be carried: {e}"))?;
    flush(&mut lit, &mut t);
    Ok(t)
}

/// `$NAME` or `${NAME}` at `i`: the name and where the text goes on.
fn expansion(s: &str, i: usize) -> Result<(&str, usize), String> {
    let rest = &s[i + 1..];
    if let Some(inner) = rest.strip_prefix('{') {
        let end = inner
            .find('}')
            .ok_or_else(|| "a ${ is not closed".to_string())?;
        let name = &inner[..end];
        if !is_name(name) {
            return Err(format!(
                "${{{name}}} uses a shell operator; a shell-less start expands only $NAME and ${{NAME}}"
            ));
        }
        return Ok((name, i + 2 + end + 1));
    }
    if rest.starts_with('(') {
        return Err("it substitutes a command's output ($(…)), which needs a shell".into());
    }
    let len = rest
        .bytes()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == b'_')
        .count();
    let name = &rest[..len];
    if !is_name(name) {
        return Err("it uses a special shell parameter ($1, $?, $$ …)".into());
    }
    Ok((name, i + 1 + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GENERATED: &str = r#"#!/bin/sh

# # Sets and enables heart (recommended only in daemon mode)
# case $RELEASE_COMMAND in
#   daemon*)
#     HEART_COMMAND="$RELEASE_ROOT/bin/$RELEASE_NAME $RELEASE_COMMAND"
#     export HEART_COMMAND
#     export ELIXIR_ERL_OPTIONS="-heart"
#     ;;
#   *)
#     ;;
# esac

# # Set the release to load code on demand (interactive) instead of preloading (embedded).
# export RELEASE_MODE=interactive
"#;

    #[test]
    fn the_generated_file_sets_nothing() {
        assert_eq!(parse(GENERATED), Ok(vec![]));
    }

    #[test]
    fn exports_with_quotes_and_expansions() {
        let got = parse(
            "export RELEASE_DISTRIBUTION=name\nexport RELEASE_NODE=\"${RELEASE_NAME}@$POD_IP\" # cluster\nRELEASE_MODE='interactive'\nFOO=bar\nexport FOO\nexport ECTO_IPV6=\"true\"\n",
        )
        .unwrap();
        let names: Vec<&str> = got.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "RELEASE_DISTRIBUTION",
                "RELEASE_NODE",
                "RELEASE_MODE",
                "FOO",
                "ECTO_IPV6"
            ]
        );
        assert_eq!(
            got[1].value,
            Tmpl::var("RELEASE_NAME") + Tmpl::lit("@") + Tmpl::var("POD_IP")
        );
        assert_eq!(got[2].value, Tmpl::lit("interactive"));
    }

    #[test]
    fn what_needs_a_shell_is_refused_by_line() {
        let cases = [
            ("export RELEASE_NODE=app@$(hostname -i)", "$(…)"),
            ("export IP=`hostname -i`", "command's output"),
            ("case $RELEASE_COMMAND in", "runs a command"),
            ("if [ -n \"$X\" ]; then", "runs a command"),
            ("export A=${FLY_IMAGE_REF##*-}", "shell operator"),
            ("export A=${B:-c}", "shell operator"),
            ("export A=b; export C=d", "more than one command"),
            ("export A=\"unclosed", "not closed"),
            ("ulimit -n 65536", "runs a command"),
        ];
        for (line, why) in cases {
            let text = format!("# header\n\n{line}\n");
            let r = parse(&text).expect_err(line);
            assert_eq!(r.line, 3, "{line}");
            assert_eq!(r.text, line);
            assert!(r.why.contains(why), "{line}: {}", r.why);
        }
    }

    #[test]
    fn a_shell_variable_never_exported_is_refused() {
        let r = parse("# x\nHELPER=1\n").expect_err("unexported");
        assert_eq!(r.line, 2);
        assert!(r.why.contains("never exported"), "{}", r.why);
    }
}
