//! Starting a release without a shell. `mix release` starts through three `#!/bin/sh` scripts
//! (`bin/NAME`, `releases/VSN/elixir`, `erts-VSN/bin/erl`); an image with no `/bin/sh` (a
//! `deb:` base, a distroless or static one) gets imgbuild's launcher at `bin/NAME` instead: a
//! small static program (no libc; x86_64 and aarch64 are carried, see `launcher.c`) that sets
//! the same environment and execs `erlexec` with the same arguments the scripts would, for every
//! command of the script (start, eval, remote, rpc, …).
//!
//! What the scripts compute from files the image holds (the version, the ERTS path) is written
//! into the launcher's plan at build time; what a container changes at run time (`RELEASE_NODE`,
//! `RELEASE_DISTRIBUTION`, `RELEASE_COOKIE`, the runtime-config copy, a terminal) is decided at
//! start, as the scripts do. The scripts differ between Elixir versions ([`Cli`]); `env.sh` is
//! carried as its assignments ([`envsh`]) or the build is refused.

mod envsh;
mod plan;

use std::path::Path;

use crate::error::{Error, IoContext, Result};
use crate::release::Release;
use plan::{Block, Plan, Tmpl};

/// The launcher for each machine, built by `scripts/build-launcher` from `launcher.c`.
const LAUNCHER_X86_64: &[u8] = include_bytes!("bin/launcher-x86_64");
const LAUNCHER_AARCH64: &[u8] = include_bytes!("bin/launcher-aarch64");

/// A release's launcher, ready to be written for an architecture.
#[derive(Clone, Debug)]
pub(crate) struct Launcher {
    plan: Vec<u8>,
    /// Where it goes in the image (`/app/bin/NAME`, without the leading slash).
    pub(crate) path: String,
    /// The command a container runs when given none (`server` for Phoenix's overlay, else `start`).
    pub(crate) default_command: String,
    /// Other files the launcher needs, path (no leading slash) and content: the resolver's
    /// configuration (see [`INETRC`]).
    pub(crate) files: Vec<(String, Vec<u8>)>,
}

/// Erlang's own resolver for an image without a shell: the default (`native`) asks the
/// `inet_gethost` port program, which the VM spawns through `/bin/sh -c`. `file` then `dns`
/// read /etc/hosts and /etc/resolv.conf (which container runtimes provide) instead. Given as
/// `ERL_INETRC` unless the container sets its own.
const INETRC: &str =
    "%% imgbuild: no /bin/sh for the native resolver's port program\n{lookup, [file, dns]}.\n";

impl Launcher {
    /// The launcher's bytes for an OCI architecture (`amd64`, `arm64`).
    pub(crate) fn binary(&self, arch: &str) -> Result<Vec<u8>> {
        let launcher = match arch {
            "amd64" => LAUNCHER_X86_64,
            "arm64" => LAUNCHER_AARCH64,
            other => {
                return Err(Error::Input(format!(
                    "a shell-less start is carried for amd64 and arm64, not {other}: use a base with /bin/sh for {other}"
                )));
            }
        };
        plan::write_into(launcher, &self.plan)
    }
}

/// The shape of `releases/VSN/elixir` and `bin/iex`, by Elixir version (they decide the order
/// of erlexec's first arguments).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cli {
    /// 1.14: `erl $EEO [ansi] -noshell -s elixir start_cli …`; IEx as `-user Elixir.IEx.CLI`.
    V1_14,
    /// 1.15.0: `erl -noshell $EEO -s elixir start_cli [ansi] …`; IEx by `-e :elixir.start_iex()`.
    V1_15_0,
    /// 1.15.1–1.16: `erl -noshell $EEO -s elixir start_cli|start_iex [ansi] …`.
    V1_15,
    /// 1.17–1.18: `erl -noshell $EEO [ansi] [-s elixir start_cli] …` (IEx without `-s`).
    V1_17,
    /// 1.19 and later: as 1.17, never `-elixir ansi_enabled true` (the VM asks the terminal).
    V1_19,
}

impl Cli {
    fn of(elixir: &str) -> Option<Cli> {
        let mut parts = elixir.split(['.', '-']).map(|p| p.parse::<u32>().ok());
        let (major, minor, patch) = (parts.next()??, parts.next()??, parts.next().flatten());
        Some(match (major, minor) {
            (1, 14) => Cli::V1_14,
            (1, 15) if patch == Some(0) => Cli::V1_15_0,
            (1, 15 | 16) => Cli::V1_15,
            (1, 17 | 18) => Cli::V1_17,
            (1, m) if m >= 19 => Cli::V1_19,
            _ => return None,
        })
    }
}

/// What `bin/NAME` is made of, read from the release.
struct Script {
    cli: Cli,
    /// What `start` gives as `--erl`: `-mode $RELEASE_MODE`, or the reboot-mode flag.
    mode_flag: Tmpl,
    distribution_error: &'static str,
}

/// Everything a command's instructions are written from.
struct Ctx<'a> {
    root: &'a str,
    release: &'a Release,
    script: Script,
    env_sh: Vec<envsh::Export>,
    /// Whether `vm.args` / `remote.vm.args` leave epmd to the VM (no `-start_epmd false`).
    epmd: (bool, bool),
}

/// The launcher for `release`, installed at `root` in the image, or why it cannot start
/// without a shell (a release without ERTS, an env.sh that needs one, a start script imgbuild
/// does not know).
pub(crate) fn for_release(release: &Release, root: &str) -> Result<Launcher> {
    let root = root.trim_end_matches('/');
    if !release.includes_erts {
        return Err(Error::Input(format!(
            "{}: the release does not include ERTS (include_erts: false), so a shell-less start has no erlexec of its own: set include_erts: true in mix.exs, or use a base with /bin/sh",
            release.root.display()
        )));
    }
    let elixir = release
        .applications
        .iter()
        .find(|a| a.name == "elixir")
        .map(|a| a.version.clone())
        .unwrap_or_default();
    let cli = Cli::of(&elixir).ok_or_else(|| {
        Error::Input(format!(
            "{}: Elixir {elixir:?} is not one whose release scripts imgbuild reproduces (1.14 and later): use a base with /bin/sh",
            release.root.display()
        ))
    })?;
    let script_path = release.root.join("bin").join(&release.name);
    let text = read(&script_path)?;
    let script = read_script(&script_path, &text, cli)?;
    let env_path = release
        .root
        .join("releases")
        .join(&release.version)
        .join("env.sh");
    let env_sh = if env_path.exists() {
        envsh::parse(&read(&env_path)?).map_err(|r| {
            Error::Input(format!(
                "{}:{}: `{}`: {}. The image has no shell to run env.sh: set the variable in the image's environment (--env NAME=VALUE, or env in imgbuild.toml) or configure it in config/runtime.exs, and keep env.sh to `export NAME=VALUE` lines",
                env_path.display(),
                r.line,
                r.text,
                r.why
            ))
        })?
    } else {
        Vec::new()
    };
    let vsn_dir = release.root.join("releases").join(&release.version);
    let starts_epmd = |file: &str| {
        std::fs::read_to_string(vsn_dir.join(file)).map_or(true, |t| {
            !t.lines().any(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                w.first() == Some(&"-start_epmd") && w.get(1) == Some(&"false")
            })
        })
    };
    let cx = Ctx {
        root,
        release,
        script,
        env_sh,
        epmd: (starts_epmd("vm.args"), starts_epmd("remote.vm.args")),
    };
    let default_command = if release.has_server {
        "server"
    } else {
        "start"
    };
    let plan = Plan {
        default: default_command.to_string(),
        commands: commands(&cx),
    };
    let name = &release.name;
    let rel = root.trim_start_matches('/');
    Ok(Launcher {
        plan: plan.encode()?,
        path: format!("{rel}/bin/{name}"),
        default_command: default_command.into(),
        files: vec![(
            format!("{rel}/releases/erl_inetrc"),
            INETRC.as_bytes().to_vec(),
        )],
    })
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).ctx("read", path)
}

/// The start script must be the one `mix release` writes: the launcher reproduces that one.
fn read_script(path: &Path, text: &str, cli: Cli) -> Result<Script> {
    let markers = [
        ". \"$REL_VSN_DIR/env.sh\"",
        "start \"elixir\" --no-halt",
        "--boot-var RELEASE_LIB \"$RELEASE_ROOT/lib\"",
        "RELEASE_BOOT_SCRIPT_CLEAN=\"${RELEASE_BOOT_SCRIPT_CLEAN:-\"start_clean\"}\"",
    ];
    if let Some(m) = markers.iter().find(|m| !text.contains(*m)) {
        return Err(Error::Input(format!(
            "{}: this is not the start script `mix release` writes (it lacks `{m}`): a shell-less start reproduces only that script; use a base with /bin/sh, or remove the overlay that replaces it",
            path.display()
        )));
    }
    let mode_flag = if text.contains("--erl \"-mode $RELEASE_MODE\"") {
        Tmpl::lit("-mode ") + Tmpl::var("RELEASE_MODE")
    } else if text.contains("--erl \"-elixir config_provider_reboot_mode $RELEASE_MODE\"") {
        Tmpl::lit("-elixir config_provider_reboot_mode ") + Tmpl::var("RELEASE_MODE")
    } else if text.contains("--erl \"-elixir -config_provider_reboot_mode $RELEASE_MODE\"") {
        Tmpl::lit("-elixir -config_provider_reboot_mode ") + Tmpl::var("RELEASE_MODE")
    } else {
        return Err(Error::Input(format!(
            "{}: its start command passes a mode imgbuild does not know: use a base with /bin/sh",
            path.display()
        )));
    };
    let distribution_error = if text.contains("Expected RELEASE_DISTRIBUTION to be") {
        "ERROR: Expected RELEASE_DISTRIBUTION to be sname, name, or none, got: "
    } else {
        "ERROR: Expected sname, name, or none in RELEASE_DISTRIBUTION, got: "
    };
    Ok(Script {
        cli,
        mode_flag,
        distribution_error,
    })
}

impl Ctx<'_> {
    fn lit(&self, s: &str) -> Tmpl {
        Tmpl::lit(&format!("{}{s}", self.root))
    }
    /// `$REL_VSN_DIR/…`
    fn vsn_dir(&self, s: &str) -> Tmpl {
        self.lit("/releases/") + Tmpl::var("RELEASE_VSN") + Tmpl::lit(s)
    }

    /// What `bin/NAME` sets before its `case`, for `command`.
    fn prelude(&self, b: &mut Block, command: &str) {
        let r = self.release;
        b.default_env("ERL_INETRC", self.lit("/releases/erl_inetrc"))
            .set_env("RELEASE_ROOT", Tmpl::lit(self.root))
            .default_env("RELEASE_NAME", Tmpl::lit(&r.name))
            .default_env("RELEASE_VSN", Tmpl::lit(&r.version))
            .set_env("RELEASE_COMMAND", Tmpl::lit(command))
            .default_env("RELEASE_PROG", Tmpl::lit(&r.name));
        for e in &self.env_sh {
            b.set_env(&e.name, e.value.clone());
        }
        b.default_env_from_file("RELEASE_COOKIE", self.lit("/releases/COOKIE"))
            .default_env("RELEASE_MODE", Tmpl::lit("embedded"))
            .default_env("RELEASE_NODE", Tmpl::var("RELEASE_NAME"))
            .default_env("RELEASE_TMP", self.lit("/tmp"))
            .default_env("RELEASE_VM_ARGS", self.vsn_dir("/vm.args"))
            .default_env("RELEASE_REMOTE_VM_ARGS", self.vsn_dir("/remote.vm.args"))
            .default_env("RELEASE_DISTRIBUTION", Tmpl::lit("sname"))
            .default_env("RELEASE_BOOT_SCRIPT", Tmpl::lit("start"))
            .default_env("RELEASE_BOOT_SCRIPT_CLEAN", Tmpl::lit("start_clean"));
    }

    /// `export_release_sys_config`
    fn sys_config(&self, b: &mut Block) {
        b.sys_config(
            self.vsn_dir("/sys"),
            Tmpl::var("RELEASE_TMP")
                + Tmpl::lit("/")
                + Tmpl::var("RELEASE_NAME")
                + Tmpl::lit("-")
                + Tmpl::var("RELEASE_VSN")
                + Tmpl::lit("-")
                + Tmpl::date()
                + Tmpl::lit("-")
                + Tmpl::rand()
                + Tmpl::lit(".runtime"),
            Tmpl::var("RELEASE_TMP"),
        );
    }

    /// `$(release_distribution NODE)`
    fn distribution(&self, b: &mut Block, node: Tmpl) {
        let err = Tmpl::lit(self.script.distribution_error) + Tmpl::var("RELEASE_DISTRIBUTION");
        let (n1, n2) = (node.clone(), node);
        b.if_eq(
            "RELEASE_DISTRIBUTION",
            "none",
            |_| {},
            |b| {
                b.if_eq(
                    "RELEASE_DISTRIBUTION",
                    "name",
                    |b| {
                        b.arg(Tmpl::lit("-name")).arg(n1);
                    },
                    |b| {
                        b.if_eq(
                            "RELEASE_DISTRIBUTION",
                            "sname",
                            |b| {
                                b.arg(Tmpl::lit("-sname")).arg(n2);
                            },
                            |b| {
                                b.fail(err);
                            },
                        );
                    },
                );
            },
        );
    }

    /// The `erl` script's environment (`erts-VSN/bin/erl`).
    fn erl_env(&self, b: &mut Block) {
        let bindir = self.lit(&format!("/erts-{}/bin", self.release.erts_version));
        let root = Tmpl::lit(self.root);
        b.set_env("BINDIR", bindir)
            .if_empty(
                "ERL_ROOTDIR",
                |b| {
                    b.set_env("ROOTDIR", root);
                },
                |b| {
                    b.set_env("ROOTDIR", Tmpl::var("ERL_ROOTDIR"));
                },
            )
            .set_env("EMU", Tmpl::lit("beam"))
            .set_env("PROGNAME", Tmpl::lit("erl"));
    }

    /// erlexec as argv[0], then what `releases/VSN/elixir` puts before the release's own
    /// arguments: `erl_words` is its `$ERL` (the `--erl` values and `-hidden`).
    fn head(&self, b: &mut Block, iex: bool, erl_words: Tmpl) {
        let erlexec = self.lit(&format!("/erts-{}/bin/erlexec", self.release.erts_version));
        b.arg(erlexec);
        let eeo = Tmpl::var("ELIXIR_ERL_OPTIONS");
        let ansi = |b: &mut Block| {
            b.if_empty(
                "NO_COLOR",
                |b| {
                    b.if_tty(|b| {
                        b.args(&["-elixir", "ansi_enabled", "true"]);
                    });
                },
                |_| {},
            );
        };
        match self.script.cli {
            Cli::V1_14 => {
                b.split(eeo);
                ansi(b);
                if iex {
                    b.split(Tmpl::lit("-noshell -user Elixir.IEx.CLI ") + erl_words);
                } else {
                    b.split(Tmpl::lit("-noshell -s elixir start_cli ") + erl_words);
                }
            }
            Cli::V1_15_0 | Cli::V1_15 => {
                b.arg(Tmpl::lit("-noshell")).split(eeo);
                let start = if iex && self.script.cli == Cli::V1_15 {
                    "start_iex"
                } else {
                    "start_cli"
                };
                b.args(&["-s", "elixir", start]);
                ansi(b);
                if iex {
                    b.split(Tmpl::lit("-user elixir ") + erl_words);
                } else {
                    b.split(erl_words);
                }
            }
            Cli::V1_17 | Cli::V1_19 => {
                b.arg(Tmpl::lit("-noshell")).split(eeo);
                if self.script.cli == Cli::V1_17 {
                    ansi(b);
                }
                if iex {
                    b.split(Tmpl::lit("-user elixir ") + erl_words);
                } else {
                    b.args(&["-s", "elixir", "start_cli"]).split(erl_words);
                }
            }
        }
    }

    /// `-config … -boot … -boot_var … -args_file …` as `start` and `eval` give them.
    fn boot_args(&self, b: &mut Block, config: bool, boot: &str, vm_args: &str) {
        if config {
            b.arg(Tmpl::lit("-config"))
                .arg(Tmpl::var("RELEASE_SYS_CONFIG"));
        }
        b.arg(Tmpl::lit("-boot"))
            .arg(self.vsn_dir("/") + Tmpl::var(boot))
            .args(&["-boot_var", "RELEASE_LIB"])
            .arg(self.lit("/lib"))
            .arg(Tmpl::lit("-args_file"))
            .arg(Tmpl::var(vm_args));
    }

    /// After `-extra`, the IEx start of this Elixir (`+iex`, or 1.15.0's `-e`).
    fn iex_extra(&self, b: &mut Block) {
        b.arg(Tmpl::lit("--no-halt"));
        if self.script.cli == Cli::V1_15_0 {
            b.args(&["-e", ":elixir.start_iex()"]);
        }
        b.arg(Tmpl::lit("+iex"));
    }

    /// erlexec starts epmd for a distributed node through system(3), which needs /bin/sh: the
    /// launcher starts it (`epmd -daemon`) first, unless vm.args says `-start_epmd false`.
    fn epmd(&self, b: &mut Block, vm_args_starts_it: bool) {
        if !vm_args_starts_it {
            return;
        }
        let epmd = self.lit(&format!("/erts-{}/bin/epmd", self.release.erts_version));
        b.if_eq(
            "RELEASE_DISTRIBUTION",
            "none",
            |_| {},
            |b| {
                b.daemon(epmd);
            },
        );
    }

    fn exec(&self, b: &mut Block) {
        self.erl_env(b);
        b.exec(self.lit(&format!("/erts-{}/bin/erlexec", self.release.erts_version)));
    }

    /// `start "elixir" --no-halt` / `start "iex" --werl`
    fn start(&self, iex: bool) -> Block {
        let mut b = Block::default();
        self.sys_config(&mut b);
        self.head(&mut b, iex, self.script.mode_flag.clone());
        b.arg(Tmpl::lit("-setcookie"))
            .arg(Tmpl::var("RELEASE_COOKIE"));
        self.distribution(&mut b, Tmpl::var("RELEASE_NODE"));
        self.boot_args(&mut b, true, "RELEASE_BOOT_SCRIPT", "RELEASE_VM_ARGS");
        b.arg(Tmpl::lit("-extra"));
        if iex {
            self.iex_extra(&mut b);
        } else {
            b.arg(Tmpl::lit("--no-halt"));
        }
        self.epmd(&mut b, self.epmd.0);
        self.exec(&mut b);
        b
    }

    fn eval(&self) -> Block {
        let mut b = Block::default();
        b.if_arg(
            2,
            |_| {},
            |b| {
                b.fail(Tmpl::lit("ERROR: EVAL expects an expression as argument"));
            },
        );
        self.sys_config(&mut b);
        self.head(&mut b, false, Tmpl::default());
        b.arg(Tmpl::lit("-setcookie"))
            .arg(Tmpl::var("RELEASE_COOKIE"));
        self.boot_args(&mut b, true, "RELEASE_BOOT_SCRIPT_CLEAN", "RELEASE_VM_ARGS");
        b.arg(Tmpl::lit("-extra"))
            .arg(Tmpl::lit("--eval"))
            .user_arg(2);
        if self.script.cli != Cli::V1_14 {
            b.arg(Tmpl::lit("--")).user_rest(3);
        }
        self.exec(&mut b);
        b
    }

    fn remote(&self) -> Block {
        let mut b = Block::default();
        self.head(&mut b, true, Tmpl::lit("-hidden"));
        b.arg(Tmpl::lit("-setcookie"))
            .arg(Tmpl::var("RELEASE_COOKIE"));
        self.distribution(
            &mut b,
            Tmpl::lit("rem-") + Tmpl::rand() + Tmpl::lit("-") + Tmpl::var("RELEASE_NODE"),
        );
        self.boot_args(
            &mut b,
            false,
            "RELEASE_BOOT_SCRIPT_CLEAN",
            "RELEASE_REMOTE_VM_ARGS",
        );
        b.arg(Tmpl::lit("-extra"));
        self.iex_extra(&mut b);
        b.arg(Tmpl::lit("--remsh")).arg(Tmpl::var("RELEASE_NODE"));
        self.epmd(&mut b, self.epmd.1);
        self.exec(&mut b);
        b
    }

    /// `rpc EXPR`, or `stop`/`restart`/`pid` with their fixed expression.
    fn rpc(&self, expr: Option<&str>) -> Block {
        let mut b = Block::default();
        if expr.is_none() {
            b.if_arg(
                2,
                |_| {},
                |b| {
                    b.fail(Tmpl::lit("ERROR: RPC expects an expression as argument"));
                },
            );
        }
        self.head(&mut b, false, Tmpl::lit("-hidden"));
        b.arg(Tmpl::lit("-setcookie"))
            .arg(Tmpl::var("RELEASE_COOKIE"));
        self.distribution(
            &mut b,
            Tmpl::lit("rpc-") + Tmpl::rand() + Tmpl::lit("-") + Tmpl::var("RELEASE_NODE"),
        );
        self.boot_args(
            &mut b,
            false,
            "RELEASE_BOOT_SCRIPT_CLEAN",
            "RELEASE_REMOTE_VM_ARGS",
        );
        b.arg(Tmpl::lit("-extra"))
            .arg(Tmpl::lit("--rpc-eval"))
            .arg(Tmpl::var("RELEASE_NODE"));
        match expr {
            Some(e) => {
                b.arg(Tmpl::lit(e));
            }
            None => {
                b.user_arg(2);
            }
        }
        self.epmd(&mut b, self.epmd.1);
        self.exec(&mut b);
        b
    }
}

/// Every command of `bin/NAME`, each with the script's prelude.
fn commands(cx: &Ctx<'_>) -> Vec<(String, Block)> {
    let mut out = Vec::new();
    let mut add = |name: &str, body: Block, as_command: &str| {
        let mut b = Block::default();
        cx.prelude(&mut b, as_command);
        b.extend(&body);
        out.push((name.to_string(), b));
    };
    add("start", cx.start(false), "start");
    add("start_iex", cx.start(true), "start_iex");
    add("eval", cx.eval(), "eval");
    add("remote", cx.remote(), "remote");
    add("rpc", cx.rpc(None), "rpc");
    add("stop", cx.rpc(Some("System.stop()")), "stop");
    add("restart", cx.rpc(Some("System.restart()")), "restart");
    add("pid", cx.rpc(Some("IO.puts System.pid()")), "pid");
    let mut version = Block::default();
    version.print(Tmpl::var("RELEASE_NAME") + Tmpl::lit(" ") + Tmpl::var("RELEASE_VSN"));
    add("version", version, "version");
    for daemon in ["daemon", "daemon_iex"] {
        let mut b = Block::default();
        b.fail(Tmpl::lit(&format!(
            "ERROR: {daemon} detaches the release under run_erl, which a container does not need (and this image has no shell for): run `start` and let the container runtime keep it"
        )));
        add(daemon, b, daemon);
    }
    if cx.release.has_server {
        // Phoenix's bin/server: `cd -P -- "$(dirname -- "$0")"`, then
        // `PHX_SERVER=true exec ./NAME start`.
        let mut b = Block::default();
        b.chdir(cx.lit("/bin"))
            .set_env("PHX_SERVER", Tmpl::lit("true"));
        b.extend(&cx.start(false));
        add("server", b, "start");
    }
    out
}

#[cfg(test)]
mod tests;
