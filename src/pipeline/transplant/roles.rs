//! What each native file of a release is to the transplant: a program of ERTS's `bin/` the
//! release runs, a development tool it can go without, or native code of an OTP application.

/// What a program of a release's `erts-<vsn>/bin/` is for, as far as a transplant cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Role {
    /// Run when a release starts, evaluates, is reached remotely or runs as a daemon, or by
    /// scripts around a release: refused when the OTP image lacks it.
    RunTime,
    /// Only for developing or building code: left out when the OTP image lacks it.
    Development,
    /// Not known to imgbuild: nothing says it is unused, so it is treated as run time.
    Unknown,
}

/// The ERTS programs a release runs. A release's `bin/<name>` script (Elixir's and relx's)
/// execs `releases/<vsn>/elixir` or `erts-<vsn>/bin/erl`, a shell script that execs `erlexec`.
const RUN_TIME: &[&str] = &[
    // erl's launcher: parses the arguments, then execs the emulator.
    "erlexec",
    // The emulator itself (beam.smp; other flavours are beam.<type>.smp and the like).
    "beam",
    // Forked by the emulator to spawn port programs (open_port/2, os:cmd/1).
    "erl_child_setup",
    // The native resolver (inet_gethost_native), a port program.
    "inet_gethost",
    // Started (`epmd -daemon`) by erlexec for a distributed node: start with a name, remote,
    // rpc.
    "epmd",
    // `-heart`: restarts the release when it hangs.
    "heart",
    // `daemon`/`daemon_iex` (Elixir's --pipe-to, relx's daemon) run under run_erl, and
    // to_erl attaches to it.
    "run_erl",
    "to_erl",
    // Not run by the release scripts, but by scripts and probes people put beside a release
    // (escripts, `erl_call` to a running node); dyn_erl is a relocatable erl front end.
    "escript",
    "erl_call",
    "dyn_erl",
];

/// The ERTS programs no release start, eval, rpc, remote or daemon runs: the tools of a full
/// Erlang/OTP (Phoenix's builder image, a Debian host with rebar3, which pulls in
/// erlang-dialyzer and erlang-common-test) that `mix release` copies with ERTS's `bin/`.
const DEVELOPMENT: &[&str] = &[
    // common_test's test runner (Debian: erlang-common-test).
    "ct_run",
    // The static analyser and its type annotator (Debian: erlang-dialyzer; typer is in
    // erlang-base too).
    "dialyzer",
    "typer",
    // The compiler's command line: code compiled at run time is compiled by the compiler
    // application inside the VM, never by this program.
    "erlc",
    // A C source transformer used to build ERTS and NIFs.
    "yielding_c_fun",
];

/// Erlang/OTP's applications with native code under `priv/` (OTP 25), so that one missing from
/// the OTP image is not taken for a dependency's NIF. Such an application's native code stays
/// refused when missing, development tool (wx) or not: the project put it in the release.
pub(super) const OTP_NATIVE_APPS: &[&str] = &[
    "asn1",
    "crypto",
    "megaco",
    "odbc",
    "os_mon",
    "runtime_tools",
    "wx",
];

/// The role of `rel` (release-relative) when it is a program of ERTS's `bin/`, else `None`.
pub(super) fn erts_role(rel: &str) -> Option<Role> {
    let parts: Vec<&str> = rel.split('/').collect();
    let [erts, "bin", name] = parts.as_slice() else {
        return None;
    };
    if !erts.starts_with("erts-") {
        return None;
    }
    let emulator = name == &"beam" || name.starts_with("beam.");
    Some(if emulator || RUN_TIME.contains(name) {
        Role::RunTime
    } else if DEVELOPMENT.contains(name) {
        Role::Development
    } else {
        Role::Unknown
    })
}

pub(super) fn is_erts(rel: &str) -> bool {
    rel.starts_with("erts-") && rel.split('/').nth(1) == Some("bin")
}

/// `lib/<app>-<vsn>/priv/...` → (app, vsn).
pub(super) fn app_of(rel: &str) -> Option<(String, String)> {
    let mut parts = rel.split('/');
    let (lib, dir, priv_) = (parts.next()?, parts.next()?, parts.next()?);
    if lib != "lib" || priv_ != "priv" {
        return None;
    }
    let (app, vsn) = dir.rsplit_once('-')?;
    Some((app.to_string(), vsn.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_paths() {
        assert_eq!(
            app_of("lib/crypto-5.1.4/priv/lib/crypto.so"),
            Some(("crypto".into(), "5.1.4".into()))
        );
        assert_eq!(app_of("lib/my_nif-0.1.0/native/x.so"), None);
        assert!(is_erts("erts-13.1.5/bin/beam.smp"));
        assert!(!is_erts("erts-13.1.5/lib/x.so"));
    }

    #[test]
    fn erts_programs_by_role() {
        for name in [
            "beam.smp",
            "beam.debug.smp",
            "erlexec",
            "erl_child_setup",
            "inet_gethost",
            "epmd",
            "heart",
            "run_erl",
            "to_erl",
            "escript",
            "erl_call",
        ] {
            assert_eq!(
                erts_role(&format!("erts-13.1.5/bin/{name}")),
                Some(Role::RunTime),
                "{name}"
            );
        }
        for name in ["ct_run", "dialyzer", "typer", "erlc", "yielding_c_fun"] {
            assert_eq!(
                erts_role(&format!("erts-13.1.5/bin/{name}")),
                Some(Role::Development),
                "{name}"
            );
        }
        assert_eq!(erts_role("erts-13.1.5/bin/my_tool"), Some(Role::Unknown));
        // Only programs directly in ERTS's bin/.
        assert_eq!(erts_role("erts-13.1.5/bin/sub/ct_run"), None);
        assert_eq!(erts_role("lib/common_test-1.24/priv/bin/ct_run"), None);
        assert_eq!(erts_role("bin/ct_run"), None);
    }
}
