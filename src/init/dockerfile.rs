//! What the runner stage of a Dockerfile says, for `imgbuild init`: the shape
//! `mix phx.gen.release --docker` writes (a builder stage, then a runner stage `FROM
//! ${RUNNER_IMAGE}` that installs runtime packages with apt-get and copies the release in).
//! Only the last stage is read. `ARG` defaults are substituted, line continuations joined,
//! comments dropped; instructions imgbuild has no use for are ignored, not refused.

use std::collections::BTreeMap;

/// The runner stage, as imgbuild settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunnerStage {
    /// The stage's `FROM`, with `ARG` defaults substituted.
    pub from: Option<String>,
    /// Every package the stage's `apt-get install` (or `apt install`) lines name, in order.
    pub packages: Vec<String>,
    /// `ENV` settings, in order (a later one replaces an earlier one of the same name).
    pub env: Vec<(String, String)>,
    pub expose: Vec<String>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    pub cmd: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    /// The release the stage copies from the builder (`.../rel/NAME`), when it names one.
    pub release_name: Option<String>,
    /// The first stage's `FROM` (the image the release is built in), when there are several.
    pub builder: Option<String>,
}

/// Read the last stage of `text`.
pub(crate) fn runner_stage(text: &str) -> RunnerStage {
    let mut args: BTreeMap<String, String> = BTreeMap::new();
    let mut stage = RunnerStage::default();
    for line in logical_lines(text) {
        let (word, rest) = match line.split_once(char::is_whitespace) {
            Some((w, r)) => (w.to_ascii_uppercase(), r.trim().to_string()),
            None => (line.to_ascii_uppercase(), String::new()),
        };
        match word.as_str() {
            "ARG" => {
                // `ARG NAME=default` (quotes dropped); a later stage's ARG without a default
                // re-declares the global one, which keeps its value.
                let (name, value) = match rest.split_once('=') {
                    Some((n, v)) => (n.trim(), Some(unquote(v.trim()))),
                    None => (rest.trim(), None),
                };
                if let Some(v) = value {
                    let v = substitute(&v, &args);
                    args.insert(name.to_string(), v);
                }
            }
            "FROM" => {
                // A new stage: what came before belonged to another one.
                let image = rest
                    .split_whitespace()
                    .find(|w| !w.starts_with("--"))
                    .unwrap_or_default();
                let builder = stage.builder.take().or(stage.from.take());
                stage = RunnerStage {
                    from: Some(substitute(image, &args)),
                    builder,
                    ..RunnerStage::default()
                };
            }
            "RUN" => stage
                .packages
                .extend(apt_installs(&substitute(&rest, &args))),
            "ENV" => {
                for (k, v) in env_pairs(&rest) {
                    let v = substitute(&v, &args);
                    stage.env.retain(|(have, _)| *have != k);
                    stage.env.push((k, v));
                }
            }
            "EXPOSE" => stage.expose.extend(
                rest.split_whitespace()
                    .map(|p| substitute(&unquote(p), &args)),
            ),
            "USER" => stage.user = Some(substitute(&unquote(&rest), &args)),
            "WORKDIR" => stage.workdir = Some(substitute(&unquote(&rest), &args)),
            "CMD" => stage.cmd = Some(exec_form(&rest)),
            "ENTRYPOINT" => stage.entrypoint = Some(exec_form(&rest)),
            "COPY" => {
                if let Some(name) = copied_release(&substitute(&rest, &args)) {
                    stage.release_name = Some(name);
                }
            }
            _ => {}
        }
    }
    stage
}

/// The builder stage, as far as a CI job can replay it: the image, its `apt-get install`
/// packages, and its `mix` commands in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BuilderStage {
    /// The stage's `FROM`, with `ARG` defaults substituted.
    pub from: Option<String>,
    /// The packages its `apt-get install` lines name (`build-essential git`), in order.
    pub packages: Vec<String>,
    /// The stage's `ENV MIX_ENV`, when it sets one.
    pub mix_env: Option<String>,
    /// Every `mix ...` command of its `RUN` lines (`&&`- or `;`-joined ones split), in the
    /// Dockerfile's order, with `ARG` and `ENV` values (`--only $MIX_ENV`) substituted.
    pub mix: Vec<String>,
    /// The commands of its `RUN` lines that are neither `mix`, apt, nor making or removing
    /// files and directories (`mkdir config`, which a checkout does not need): a CI job does
    /// not replay them, so the user is told.
    pub other: Vec<String>,
}

/// The builder stage of `text`: the stage that runs `mix release`, else the first stage that
/// runs any `mix` command. `None` when no stage runs `mix`.
pub(crate) fn builder_stage(text: &str) -> Option<BuilderStage> {
    let mut args: BTreeMap<String, String> = BTreeMap::new();
    let mut stages: Vec<BuilderStage> = Vec::new();
    // ENV values of the current stage, substituted into its RUN lines as the shell would.
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for line in logical_lines(text) {
        let (word, rest) = match line.split_once(char::is_whitespace) {
            Some((w, r)) => (w.to_ascii_uppercase(), r.trim().to_string()),
            None => (line.to_ascii_uppercase(), String::new()),
        };
        match word.as_str() {
            "ARG" => {
                if let Some((name, value)) = rest.split_once('=') {
                    let v = substitute(&unquote(value.trim()), &args);
                    args.insert(name.trim().to_string(), v);
                }
            }
            "FROM" => {
                let image = rest
                    .split_whitespace()
                    .find(|w| !w.starts_with("--"))
                    .unwrap_or_default();
                env.clear();
                stages.push(BuilderStage {
                    from: Some(substitute(image, &args)),
                    ..BuilderStage::default()
                });
            }
            "ENV" => {
                let Some(stage) = stages.last_mut() else {
                    continue;
                };
                for (k, v) in env_pairs(&rest) {
                    let v = substitute(&substitute(&v, &args), &env);
                    if k == "MIX_ENV" {
                        stage.mix_env = Some(v.clone());
                    }
                    env.insert(k, v);
                }
            }
            "RUN" => {
                let Some(stage) = stages.last_mut() else {
                    continue;
                };
                let command = run_command(&rest);
                let mut known = args.clone();
                known.extend(env.iter().map(|(k, v)| (k.clone(), v.clone())));
                let command = substitute(&command, &known);
                stage.packages.extend(apt_installs(&command));
                for part in command.split("&&").flat_map(|p| p.split(';')) {
                    let part = part.split_whitespace().collect::<Vec<_>>().join(" ");
                    let first = part.split(' ').next().unwrap_or_default();
                    if first == "mix" {
                        stage.mix.push(part);
                    } else if !part.is_empty()
                        && !matches!(first, "apt-get" | "apt" | "rm" | "mkdir")
                    {
                        stage.other.push(part);
                    }
                }
            }
            _ => {}
        }
    }
    let releases = |s: &BuilderStage| s.mix.iter().any(|m| m.starts_with("mix release"));
    let at = stages
        .iter()
        .position(releases)
        .or_else(|| stages.iter().position(|s| !s.mix.is_empty()))?;
    Some(stages.swap_remove(at))
}

/// A `RUN` instruction's command: BuildKit's `--mount=...` options left out, the exec form
/// (`["mix", "compile"]`) as the words it runs.
fn run_command(rest: &str) -> String {
    let mut rest = rest.trim();
    while rest.starts_with("--") {
        rest = rest
            .split_once(char::is_whitespace)
            .map_or("", |(_, r)| r.trim_start());
    }
    match serde_json::from_str::<Vec<String>>(rest) {
        Ok(words) => words.join(" "),
        Err(_) => rest.to_string(),
    }
}

/// The instructions of `text`: continuations (`\` at the end of a line) joined, comment and
/// blank lines dropped.
fn logical_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for raw in text.lines() {
        let trimmed = raw.trim();
        if trimmed.starts_with('#') {
            // A comment inside a continued instruction does not end it.
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let done = std::mem::take(&mut current);
        if !done.trim().is_empty() {
            out.push(done.trim().to_string());
        }
    }
    if !current.trim().is_empty() {
        out.push(current.trim().to_string());
    }
    out
}

fn unquote(s: &str) -> String {
    let s = s.trim();
    for q in ['"', '\''] {
        if s.len() >= 2 && s.starts_with(q) && s.ends_with(q) {
            return s[1..s.len() - 1].to_string();
        }
    }
    s.to_string()
}

/// `$NAME`, `${NAME}` and `${NAME:-default}` replaced by the ARG values known so far; an
/// unknown one is left as written.
fn substitute(s: &str, args: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(body) = after.strip_prefix('{')
            && let Some(end) = body.find('}')
        {
            let inner = &body[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            match (args.get(name), default) {
                (Some(v), _) => out.push_str(v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => out.push_str(&rest[at..at + 2 + end + 1]),
            }
            rest = &body[end + 1..];
            continue;
        }
        let len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        match args.get(&after[..len]) {
            Some(v) if len > 0 => out.push_str(v),
            _ => out.push_str(&rest[at..at + 1 + len]),
        }
        rest = &after[len..];
    }
    out.push_str(rest);
    out
}

/// The packages `apt-get install` (or `apt install`) names in a shell command line; options
/// and everything after the command (`&&`, `;`, `|`) are left out.
fn apt_installs(command: &str) -> Vec<String> {
    let mut out = Vec::new();
    for part in command.split(['&', ';', '|']) {
        let words: Vec<&str> = part.split_whitespace().collect();
        let Some(at) = words
            .windows(2)
            .position(|w| matches!(w[0], "apt-get" | "apt") && w[1] == "install")
        else {
            // `apt-get -y install`: options before the verb.
            if let Some(start) = words.iter().position(|w| *w == "apt-get")
                && let Some(verb) = words[start..].iter().position(|w| *w == "install")
                && words[start + 1..start + verb]
                    .iter()
                    .all(|w| w.starts_with('-'))
            {
                out.extend(package_words(&words[start + verb + 1..]));
            }
            continue;
        };
        out.extend(package_words(&words[at + 2..]));
    }
    out
}

fn package_words(words: &[&str]) -> Vec<String> {
    words
        .iter()
        .filter(|w| !w.starts_with('-') && !w.contains('$') && !w.contains('*'))
        .map(|w| unquote(w))
        .filter(|w| !w.is_empty())
        .collect()
}

/// `ENV A=1 B="two words"` or the old `ENV A value with spaces`.
fn env_pairs(rest: &str) -> Vec<(String, String)> {
    let first = rest.split_whitespace().next().unwrap_or_default();
    if !first.contains('=') {
        return match rest.split_once(char::is_whitespace) {
            Some((k, v)) => vec![(k.to_string(), unquote(v))],
            None => vec![],
        };
    }
    let mut out = Vec::new();
    for word in shell_words(rest) {
        if let Some((k, v)) = word.split_once('=') {
            out.push((k.to_string(), v.to_string()));
        }
    }
    out
}

/// Split on whitespace outside quotes, dropping the quotes.
fn shell_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    for c in s.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                any = true;
            }
            (None, c) if c.is_whitespace() => {
                if any || !word.is_empty() {
                    out.push(std::mem::take(&mut word));
                }
                any = false;
            }
            (None, c) => word.push(c),
        }
    }
    if any || !word.is_empty() {
        out.push(word);
    }
    out
}

/// `CMD ["a", "b"]` as is; the shell form `CMD a b` as Docker runs it, through `/bin/sh -c`.
fn exec_form(rest: &str) -> Vec<String> {
    match serde_json::from_str::<Vec<String>>(rest) {
        Ok(v) => v,
        Err(_) => vec!["/bin/sh".into(), "-c".into(), rest.to_string()],
    }
}

/// `COPY --from=builder ... /app/_build/prod/rel/NAME ./`: the release's name.
fn copied_release(rest: &str) -> Option<String> {
    if !rest.split_whitespace().any(|w| w.starts_with("--from")) {
        return None;
    }
    let sources: Vec<&str> = rest
        .split_whitespace()
        .filter(|w| !w.starts_with("--"))
        .collect();
    let (_, sources) = sources.split_last()?;
    sources.iter().find_map(|s| {
        let (_, name) = s.trim_end_matches('/').split_once("/rel/")?;
        (!name.is_empty() && !name.contains('/') && !name.contains('$')).then(|| name.to_string())
    })
}

/// Builder stages in the shapes `mix phx.gen.release --docker` writes for Phoenix 1.6, 1.7 and
/// 1.8 (written here from their documented steps, for the tests of the CI recipes).
#[cfg(test)]
pub(crate) mod shapes {
    const HEAD: &str = r#"ARG ELIXIR_VERSION=1.17.3
ARG OTP_VERSION=27.1.2
ARG DEBIAN_VERSION=bookworm-20241016-slim

ARG BUILDER_IMAGE="hexpm/elixir:${ELIXIR_VERSION}-erlang-${OTP_VERSION}-debian-${DEBIAN_VERSION}"
ARG RUNNER_IMAGE="debian:${DEBIAN_VERSION}"

FROM ${BUILDER_IMAGE} as builder

# build tools
RUN apt-get update -y && apt-get install -y build-essential git \
    && apt-get clean && rm -f /var/lib/apt/lists/*_*

WORKDIR /app

# Hex and rebar
RUN mix local.hex --force && \
    mix local.rebar --force

ENV MIX_ENV="prod"

COPY mix.exs mix.lock ./
RUN mix deps.get --only $MIX_ENV
RUN mkdir config

COPY config/config.exs config/${MIX_ENV}.exs config/
RUN mix deps.compile
"#;

    const TAIL: &str = r#"
COPY config/runtime.exs config/
COPY rel rel
RUN mix release

FROM ${RUNNER_IMAGE}
RUN apt-get update -y && apt-get install -y libstdc++6 openssl libncurses5 locales \
  && apt-get clean && rm -f /var/lib/apt/lists/*_*
WORKDIR "/app"
ENV MIX_ENV="prod"
COPY --from=builder --chown=nobody:root /app/_build/${MIX_ENV}/rel/shop ./
USER nobody
CMD ["/app/bin/server"]
"#;

    /// 1.6: priv, assets and the asset build before lib and `mix compile`.
    pub(crate) fn v1_6() -> String {
        format!(
            "{HEAD}\nCOPY priv priv\nCOPY assets assets\n\n# compile assets\nRUN mix assets.deploy\n\nCOPY lib lib\nRUN mix compile\n{TAIL}"
        )
    }

    /// 1.7: lib copied before assets, the asset build still before `mix compile`.
    pub(crate) fn v1_7() -> String {
        format!(
            "{HEAD}\nCOPY priv priv\nCOPY lib lib\nCOPY assets assets\n\nRUN mix assets.deploy\n\nRUN mix compile\n{TAIL}"
        )
    }

    /// 1.8: the asset tools installed after the dependencies, the asset build after `mix
    /// compile` (colocated hooks need the compiled code).
    pub(crate) fn v1_8() -> String {
        format!(
            "{HEAD}\nRUN mix assets.setup\n\nCOPY priv priv\nCOPY lib lib\n\nRUN mix compile\n\nCOPY assets assets\nRUN mix assets.deploy\n{TAIL}"
        )
    }

    /// Each shape with the `mix` steps its builder stage runs, in order, before `mix release`.
    pub(crate) fn with_mix_steps() -> [(String, Vec<&'static str>); 3] {
        let head = [
            "mix local.hex --force",
            "mix local.rebar --force",
            "mix deps.get --only prod",
            "mix deps.compile",
        ];
        let steps = |middle: &[&'static str]| head.iter().chain(middle).copied().collect();
        [
            (v1_6(), steps(&["mix assets.deploy", "mix compile"])),
            (v1_7(), steps(&["mix assets.deploy", "mix compile"])),
            (
                v1_8(),
                steps(&["mix assets.setup", "mix compile", "mix assets.deploy"]),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape `mix phx.gen.release --docker` writes (written here for the test).
    const PHOENIX: &str = r#"
ARG ELIXIR_VERSION=1.15.7
ARG OTP_VERSION=26.1.2
ARG DEBIAN_VERSION=bookworm-20231009-slim

ARG BUILDER_IMAGE="hexpm/elixir:${ELIXIR_VERSION}-erlang-${OTP_VERSION}-debian-${DEBIAN_VERSION}"
ARG RUNNER_IMAGE="debian:${DEBIAN_VERSION}"

FROM ${BUILDER_IMAGE} as builder
RUN apt-get update -y && apt-get install -y build-essential git \
    && apt-get clean && rm -f /var/lib/apt/lists/*_*
WORKDIR /app
ENV MIX_ENV="prod"
RUN mix release

# start a new build stage so that the final image will only contain
# the compiled release and other runtime necessities
FROM ${RUNNER_IMAGE}

RUN apt-get update -y && \
  apt-get install -y libstdc++6 openssl libncurses5 locales ca-certificates \
  && apt-get clean && rm -f /var/lib/apt/lists/*_*

# Set the locale
RUN sed -i '/en_US.UTF-8/s/^# //g' /etc/locale.gen && locale-gen

ENV LANG en_US.UTF-8
ENV LANGUAGE en_US:en
ENV LC_ALL en_US.UTF-8

WORKDIR "/app"
RUN chown nobody /app

# set runner ENV
ENV MIX_ENV="prod"
ENV ECTO_IPV6=true ERL_AFLAGS="-proto_dist inet6_tcp"

# Only copy the final release from the build stage
COPY --from=builder --chown=nobody:root /app/_build/${MIX_ENV}/rel/my_app ./

USER nobody
EXPOSE 4000/tcp

CMD ["/app/bin/server"]
"#;

    #[test]
    fn reads_the_phoenix_runner_stage() {
        let s = runner_stage(PHOENIX);
        assert_eq!(s.from.as_deref(), Some("debian:bookworm-20231009-slim"));
        assert_eq!(
            s.packages,
            [
                "libstdc++6",
                "openssl",
                "libncurses5",
                "locales",
                "ca-certificates"
            ]
        );
        assert_eq!(
            s.env,
            [
                ("LANG".to_string(), "en_US.UTF-8".to_string()),
                ("LANGUAGE".into(), "en_US:en".into()),
                ("LC_ALL".into(), "en_US.UTF-8".into()),
                ("MIX_ENV".into(), "prod".into()),
                ("ECTO_IPV6".into(), "true".into()),
                ("ERL_AFLAGS".into(), "-proto_dist inet6_tcp".into()),
            ]
        );
        assert_eq!(s.user.as_deref(), Some("nobody"));
        assert_eq!(s.workdir.as_deref(), Some("/app"));
        assert_eq!(s.expose, ["4000/tcp"]);
        assert_eq!(s.cmd, Some(vec!["/app/bin/server".to_string()]));
        assert_eq!(s.release_name.as_deref(), Some("my_app"));
        assert_eq!(
            s.builder.as_deref(),
            Some("hexpm/elixir:1.15.7-erlang-26.1.2-debian-bookworm-20231009-slim")
        );
    }

    #[test]
    fn shell_forms_options_and_unknown_args() {
        let s = runner_stage(
            "FROM --platform=$BUILDPLATFORM $BASE\nRUN apt-get -y --no-install-recommends install curl tini=0.19* ; echo done\nCMD bin/app start\nENTRYPOINT [\"/usr/bin/tini\", \"--\"]\n",
        );
        assert_eq!(s.from.as_deref(), Some("$BASE"));
        assert_eq!(s.builder, None);
        assert_eq!(s.packages, ["curl"]);
        assert_eq!(
            s.cmd,
            Some(vec!["/bin/sh".into(), "-c".into(), "bin/app start".into()])
        );
        assert_eq!(
            s.entrypoint,
            Some(vec!["/usr/bin/tini".to_string(), "--".into()])
        );
        assert_eq!(substitute("${X:-d}/$Y", &BTreeMap::new()), "d/$Y");
        assert_eq!(runner_stage(""), RunnerStage::default());
    }

    #[test]
    fn reads_the_builder_stage_of_each_phoenix_shape() {
        for (text, steps) in shapes::with_mix_steps() {
            let b = builder_stage(&text).unwrap();
            let want: Vec<&str> = steps.into_iter().chain(["mix release"]).collect();
            assert_eq!(b.mix, want, "{text}");
            assert_eq!(b.mix_env.as_deref(), Some("prod"));
            assert_eq!(b.packages, ["build-essential", "git"]);
            assert!(b.other.is_empty(), "{:?}", b.other);
            assert_eq!(
                b.from.as_deref(),
                Some("hexpm/elixir:1.17.3-erlang-27.1.2-debian-bookworm-20241016-slim")
            );
        }
    }

    #[test]
    fn builder_stage_forms() {
        // BuildKit mounts, the exec form, `;`, ENV from ARG, and the stage that releases
        // chosen over an earlier one that only runs mix.
        let b = builder_stage(
            "ARG E=staging\nFROM elixir AS deps\nRUN mix deps.get\nFROM elixir AS build\nENV MIX_ENV=$E\nRUN --mount=type=cache,target=/root/.hex mix deps.get --only ${MIX_ENV}; mix compile\nRUN cd assets && npm ci\nRUN [\"mix\", \"release\"]\nFROM debian\n",
        )
        .unwrap();
        assert_eq!(
            b.mix,
            ["mix deps.get --only staging", "mix compile", "mix release"]
        );
        assert_eq!(b.mix_env.as_deref(), Some("staging"));
        assert_eq!(b.other, ["cd assets", "npm ci"]);
        assert_eq!(builder_stage("FROM debian\nRUN echo hi\n"), None);
        assert_eq!(builder_stage(""), None);
    }
}
