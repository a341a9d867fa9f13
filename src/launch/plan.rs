//! The plan a launcher carries: per command, what to export and what to exec. A small program
//! of instructions (the byte codes of `launcher.c`), written by [`Block`]'s methods and laid out
//! by [`Plan::encode`].
//!
//! Layout: the marker `IMGBUILD-LAUNCH-PLAN-1`, a NUL, a u16 (LE) total length, then the default
//! command as a string, then each command as a string (its name), a u16 block length and the
//! block, ended by a zero u16. A string is a u16 length and its bytes.
//!
//! Templates: bytes as they are, `0x01 NAME 0x02` the value of an environment variable (empty
//! when unset), `0x03` four random hex digits (the scripts' `$(rand)`), `0x04` the date and time
//! as `%Y%m%d%H%M%S`.

use crate::error::{Error, Result};

pub(crate) const MARKER: &[u8] = b"IMGBUILD-LAUNCH-PLAN-1";
/// The size of the launcher's `plan` array (`PLAN_MAX` in launcher.c), marker included.
pub(crate) const PLAN_MAX: usize = 32768;

const OP_SETENV: u8 = 0x10;
const OP_DEFENV: u8 = 0x11;
const OP_DEFENV_FILE: u8 = 0x12;
const OP_ARG: u8 = 0x20;
const OP_SPLIT: u8 = 0x21;
const OP_USERARG: u8 = 0x22;
const OP_USERREST: u8 = 0x23;
const OP_IFEQ: u8 = 0x30;
const OP_IFTTY: u8 = 0x31;
const OP_IFEMPTY: u8 = 0x32;
const OP_JMP: u8 = 0x33;
const OP_IFARG: u8 = 0x34;
const OP_FAIL: u8 = 0x40;
const OP_PRINT: u8 = 0x41;
const OP_SYSCONF: u8 = 0x50;
const OP_EXEC: u8 = 0x60;
const OP_DAEMON: u8 = 0x61;
const OP_CHDIR: u8 = 0x62;

/// A string with expansions, as the launcher expands it at start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Tmpl(Vec<u8>);

impl Tmpl {
    /// Literal text. Control bytes 1–4 cannot be literal (they are the expansions); the callers
    /// give text from the release's own files, checked by [`Tmpl::check_literal`].
    pub(crate) fn lit(s: &str) -> Tmpl {
        Tmpl(s.as_bytes().to_vec())
    }
    pub(crate) fn var(name: &str) -> Tmpl {
        let mut b = vec![1];
        b.extend_from_slice(name.as_bytes());
        b.push(2);
        Tmpl(b)
    }
    pub(crate) fn rand() -> Tmpl {
        Tmpl(vec![3])
    }
    pub(crate) fn date() -> Tmpl {
        Tmpl(vec![4])
    }
    /// `self` followed by `other`.
    pub(crate) fn then(mut self, other: Tmpl) -> Tmpl {
        self.0.extend(other.0);
        self
    }
    pub(crate) fn check_literal(s: &str) -> std::result::Result<(), String> {
        match s.bytes().find(|b| (1..=4).contains(b) || *b == 0) {
            Some(b) => Err(format!("it holds the control byte {b:#04x}")),
            None => Ok(()),
        }
    }
}

/// Templates written the way the scripts read: `lit("a") + var("X")`.
impl std::ops::Add for Tmpl {
    type Output = Tmpl;
    fn add(self, rhs: Tmpl) -> Tmpl {
        self.then(rhs)
    }
}

/// One command's instructions.
#[derive(Clone, Debug, Default)]
pub(crate) struct Block(Vec<u8>);

impl Block {
    fn op(&mut self, op: u8) -> &mut Self {
        self.0.push(op);
        self
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        // Every string is far below 64 KiB: the whole plan must fit in PLAN_MAX, which
        // `Plan::encode` checks.
        let n = u16::try_from(b.len()).unwrap_or(u16::MAX);
        self.0.extend_from_slice(&n.to_le_bytes());
        self.0.extend_from_slice(&b[..usize::from(n)]);
        self
    }
    fn u16(&mut self, v: usize) -> &mut Self {
        let n = u16::try_from(v).unwrap_or(u16::MAX);
        self.0.extend_from_slice(&n.to_le_bytes());
        self
    }

    /// `export NAME=VALUE`
    pub(crate) fn set_env(&mut self, name: &str, value: Tmpl) -> &mut Self {
        self.op(OP_SETENV).bytes(name.as_bytes()).bytes(&value.0)
    }
    /// `NAME="${NAME:-VALUE}"; export NAME`
    pub(crate) fn default_env(&mut self, name: &str, value: Tmpl) -> &mut Self {
        self.op(OP_DEFENV).bytes(name.as_bytes()).bytes(&value.0)
    }
    /// `NAME="${NAME:-"$(cat FILE)"}"; export NAME`; an unreadable file stops the start.
    pub(crate) fn default_env_from_file(&mut self, name: &str, file: Tmpl) -> &mut Self {
        self.op(OP_DEFENV_FILE)
            .bytes(name.as_bytes())
            .bytes(&file.0)
    }
    pub(crate) fn arg(&mut self, t: Tmpl) -> &mut Self {
        self.op(OP_ARG).bytes(&t.0)
    }
    pub(crate) fn args(&mut self, words: &[&str]) -> &mut Self {
        for w in words {
            self.arg(Tmpl::lit(w));
        }
        self
    }
    /// An unquoted expansion: split into words on spaces, tabs and newlines.
    pub(crate) fn split(&mut self, t: Tmpl) -> &mut Self {
        self.op(OP_SPLIT).bytes(&t.0)
    }
    /// The launcher's own argument `i` (1 is the command), when given.
    pub(crate) fn user_arg(&mut self, i: u8) -> &mut Self {
        self.op(OP_USERARG).0.push(i);
        self
    }
    /// The launcher's own arguments from `i` on.
    pub(crate) fn user_rest(&mut self, i: u8) -> &mut Self {
        self.op(OP_USERREST).0.push(i);
        self
    }
    pub(crate) fn fail(&mut self, t: Tmpl) -> &mut Self {
        self.op(OP_FAIL).bytes(&t.0)
    }
    pub(crate) fn print(&mut self, t: Tmpl) -> &mut Self {
        self.op(OP_PRINT).bytes(&t.0)
    }
    /// `export_release_sys_config`: `RELEASE_SYS_CONFIG` (or `default`) is used as is, or, when
    /// its `.config` holds `RUNTIME_CONFIG=true`, copied to `copy`.config in `dir` first.
    pub(crate) fn sys_config(&mut self, default: Tmpl, copy: Tmpl, dir: Tmpl) -> &mut Self {
        self.op(OP_SYSCONF)
            .bytes(&default.0)
            .bytes(&copy.0)
            .bytes(&dir.0)
    }
    /// Run `PATH -daemon` and wait for it (epmd detaches itself).
    pub(crate) fn daemon(&mut self, path: Tmpl) -> &mut Self {
        self.op(OP_DAEMON).bytes(&path.0)
    }
    /// `cd -P DIR`
    pub(crate) fn chdir(&mut self, dir: Tmpl) -> &mut Self {
        self.op(OP_CHDIR).bytes(&dir.0)
    }
    pub(crate) fn exec(&mut self, path: Tmpl) -> &mut Self {
        self.op(OP_EXEC).bytes(&path.0)
    }

    /// `then` when the variable equals `value`, else `otherwise`.
    pub(crate) fn if_eq(
        &mut self,
        name: &str,
        value: &str,
        then: impl FnOnce(&mut Block),
        otherwise: impl FnOnce(&mut Block),
    ) -> &mut Self {
        let (t, o) = (Self::sub(then), Self::sub(otherwise));
        self.op(OP_IFEQ)
            .bytes(name.as_bytes())
            .bytes(value.as_bytes());
        self.branches(t, o)
    }
    /// `then` when stdout and stderr are both terminals (`test -t 1 -a -t 2`).
    pub(crate) fn if_tty(&mut self, then: impl FnOnce(&mut Block)) -> &mut Self {
        let t = Self::sub(then);
        self.op(OP_IFTTY);
        self.branches(t, Block::default())
    }
    /// `then` when the variable is unset or empty (`[ -z "$NAME" ]`), else `otherwise`.
    pub(crate) fn if_empty(
        &mut self,
        name: &str,
        then: impl FnOnce(&mut Block),
        otherwise: impl FnOnce(&mut Block),
    ) -> &mut Self {
        let (t, o) = (Self::sub(then), Self::sub(otherwise));
        self.op(OP_IFEMPTY).bytes(name.as_bytes());
        self.branches(t, o)
    }
    /// `then` when the launcher's argument `i` is given and not empty, else `otherwise`.
    pub(crate) fn if_arg(
        &mut self,
        i: u8,
        then: impl FnOnce(&mut Block),
        otherwise: impl FnOnce(&mut Block),
    ) -> &mut Self {
        let (t, o) = (Self::sub(then), Self::sub(otherwise));
        self.op(OP_IFARG).0.push(i);
        self.branches(t, o)
    }
    fn sub(f: impl FnOnce(&mut Block)) -> Block {
        let mut b = Block::default();
        f(&mut b);
        b
    }
    /// The skip offset (past `then` and its jump over `otherwise`), `then`, the jump, `otherwise`.
    fn branches(&mut self, then: Block, otherwise: Block) -> &mut Self {
        if otherwise.0.is_empty() {
            self.u16(then.0.len());
            self.0.extend(then.0);
        } else {
            self.u16(then.0.len() + 3);
            self.0.extend(then.0);
            self.op(OP_JMP).u16(otherwise.0.len());
            self.0.extend(otherwise.0);
        }
        self
    }
    /// Append another block's instructions.
    pub(crate) fn extend(&mut self, other: &Block) -> &mut Self {
        self.0.extend_from_slice(&other.0);
        self
    }
}

/// Every command the launcher knows, and the one it runs when given none.
#[derive(Clone, Debug, Default)]
pub(crate) struct Plan {
    pub(crate) default: String,
    pub(crate) commands: Vec<(String, Block)>,
}

impl Plan {
    /// The bytes written over the launcher's `plan` array, marker included.
    pub(crate) fn encode(&self) -> Result<Vec<u8>> {
        let mut body = Block::default();
        body.bytes(self.default.as_bytes());
        for (name, block) in &self.commands {
            body.bytes(name.as_bytes());
            body.u16(block.0.len());
            body.0.extend_from_slice(&block.0);
        }
        body.u16(0);
        let mut out = MARKER.to_vec();
        out.push(0);
        let total = body.0.len();
        out.extend_from_slice(&(total.min(usize::from(u16::MAX)) as u16).to_le_bytes());
        out.extend(body.0);
        if out.len() > PLAN_MAX || total > usize::from(u16::MAX) {
            return Err(Error::Input(format!(
                "the release's start-up plan takes {} bytes, more than the launcher's {PLAN_MAX}: its env.sh is too long for a shell-less start; move its settings to the image's environment (--env)",
                out.len()
            )));
        }
        Ok(out)
    }
}

/// A launcher binary with `plan` written into it.
pub(crate) fn write_into(launcher: &[u8], plan: &[u8]) -> Result<Vec<u8>> {
    let at = launcher
        .windows(MARKER.len())
        .position(|w| w == MARKER)
        .ok_or_else(|| {
            Error::from(crate::error::ImageError::Internal(
                "the carried launcher has no plan marker".into(),
            ))
        })?;
    let mut out = launcher.to_vec();
    let room = out.len().saturating_sub(at).min(PLAN_MAX);
    if plan.len() > room {
        return Err(Error::from(crate::error::ImageError::Internal(
            "the launcher's plan array is smaller than the plan".into(),
        )));
    }
    out[at..at + plan.len()].copy_from_slice(plan);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branches_skip_exactly_their_bodies() {
        let mut b = Block::default();
        b.if_eq(
            "D",
            "x",
            |t| {
                t.arg(Tmpl::lit("yes"));
            },
            |o| {
                o.arg(Tmpl::lit("no"));
            },
        );
        // IFEQ str(D) str(x) u16(skip) ARG str(yes) JMP u16 ARG str(no)
        let then_len = 1 + 2 + 3;
        let bytes = &b.0;
        assert_eq!(bytes[0], OP_IFEQ);
        let skip = u16::from_le_bytes([bytes[7], bytes[8]]) as usize;
        assert_eq!(skip, then_len + 3);
        assert_eq!(bytes[9], OP_ARG);
        assert_eq!(bytes[9 + then_len], OP_JMP);
        let jmp = u16::from_le_bytes([bytes[10 + then_len], bytes[11 + then_len]]) as usize;
        assert_eq!(jmp, 1 + 2 + 2);
        assert_eq!(bytes.len(), 9 + then_len + 3 + jmp);
    }

    #[test]
    fn encode_and_write_into_a_launcher() {
        let mut start = Block::default();
        start.exec(Tmpl::lit("/bin/true"));
        let plan = Plan {
            default: "start".into(),
            commands: vec![("start".into(), start)],
        };
        let bytes = plan.encode().unwrap();
        assert!(bytes.starts_with(MARKER));
        let mut fake = b"ELF....".to_vec();
        fake.extend_from_slice(MARKER);
        fake.resize(fake.len() + PLAN_MAX, 0);
        fake.extend_from_slice(b"tail");
        let out = write_into(&fake, &bytes).unwrap();
        assert_eq!(out.len(), fake.len());
        assert!(out.ends_with(b"tail"));
        assert_eq!(&out[7..7 + bytes.len()], &bytes[..]);
        assert!(write_into(b"no marker here", &bytes).is_err());
    }

    #[test]
    fn templates_keep_literals_and_expansions_apart() {
        let t = Tmpl::lit("rem-") + Tmpl::rand() + Tmpl::lit("-") + Tmpl::var("RELEASE_NODE");
        assert_eq!(t.0, b"rem-\x03-\x01RELEASE_NODE\x02");
        assert!(Tmpl::check_literal("plain").is_ok());
        assert!(Tmpl::check_literal("a\x01b").is_err());
    }
}
