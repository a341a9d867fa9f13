//! The lab: real peers started on demand for the end-to-end tests, and torn down at the end.
//! Registry (docker-registry), Docker Engine, a Debian minbase base image, and the sample
//! Elixir release built with Debian's Elixir. A test declares the tools it needs ([`Test::needs`]);
//! one whose tools are missing is reported ignored, or fails under CI (any non-empty `CI`),
//! naming each tool and the Debian package `scripts/test` installs for it.

use std::cell::RefCell;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use libtest_mimic::Trial;

pub type TestResult = Result<(), libtest_mimic::Failed>;

pub fn fail(msg: impl Into<String>) -> libtest_mimic::Failed {
    msg.into().into()
}

static CHILDREN: Mutex<Vec<Child>> = Mutex::new(Vec::new());

/// Stop every server the lab started.
pub fn shutdown() {
    if let Ok(mut children) = CHILDREN.lock() {
        for c in children.iter_mut() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
        }
        for c in children.iter_mut() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn spawn(cmd: &mut Command, log: &Path) -> Result<u32, libtest_mimic::Failed> {
    let log_file =
        std::fs::File::create(log).map_err(|e| fail(format!("create {}: {e}", log.display())))?;
    let child = cmd
        .stdout(log_file.try_clone().map_err(|e| fail(e.to_string()))?)
        .stderr(log_file)
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| fail(format!("spawn {cmd:?}: {e}")))?;
    let pid = child.id();
    CHILDREN
        .lock()
        .map_err(|_| fail("lab lock poisoned"))?
        .push(child);
    Ok(pid)
}

/// Whether the process `pid` still runs (not exited, not a zombie).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .is_some_and(|zombie| !zombie)
}

/// Start a docker-registry with `config` (a template whose `{port}` is filled in) on a free
/// loopback port, and make sure it is ours that listens there: a port handed out by the kernel
/// can be taken by another test between the choice and the bind, and then the registry exits
/// while the other listener answers. Tries again on a fresh port then.
pub fn start_registry_process(
    dir: &Path,
    config: impl Fn(u16) -> String,
) -> Result<u16, libtest_mimic::Failed> {
    for _ in 0..5 {
        let port = free_port();
        std::fs::write(dir.join("config.yml"), config(port)).map_err(|e| fail(e.to_string()))?;
        let pid = spawn(
            Command::new("docker-registry")
                .arg("serve")
                .arg(dir.join("config.yml")),
            &dir.join("registry.log"),
        )?;
        wait_for_port(port, "docker-registry")?;
        std::thread::sleep(Duration::from_millis(300));
        if alive(pid) {
            return Ok(port);
        }
    }
    Err(fail(format!(
        "docker-registry in {} would not start on a free port",
        dir.display()
    )))
}

/// Whether the tests run under CI: `CI` set to anything but empty (`true`, `1`, ...). There a
/// missing tool is a failure and no test may be ignored.
pub fn under_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

/// Whether `tools` are on PATH: the second guard inside a test, after the one its registration
/// declares ([`Test::needs`]). Missing under CI fails, naming each tool and its package. A tool
/// the running test did not declare fails too, present or not, so the declarations cannot fall
/// behind the tests. Elsewhere a missing tool of a test that declares none skips it (reported
/// passed, so the skip is counted and named at the end of the run, see [`conclude`]).
pub fn require(tools: &[&str]) -> Result<bool, libtest_mimic::Failed> {
    let (test, declared) = RUNNING
        .with_borrow(|r| r.clone())
        .unwrap_or(("(no test)", None));
    if let Some(declared) = &declared {
        let undeclared: Vec<&str> = tools
            .iter()
            .copied()
            .filter(|t| !declared.contains(t))
            .collect();
        if !undeclared.is_empty() {
            return Err(fail(format!(
                "{test} requires tools its registration does not declare ({}): add them to its \
                 .needs(...) in tests/e2e/main.rs",
                undeclared.join(", ")
            )));
        }
    }
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !on_path(t)).collect();
    if missing.is_empty() {
        return Ok(true);
    }
    if under_ci() || declared.is_some() {
        return Err(fail(missing_tools(&missing)));
    }
    eprintln!("SKIPPED {test}: {}", missing_tools(&missing));
    if let Ok(mut skipped) = SKIPPED.lock() {
        skipped.push(format!("{test} ({})", missing.join(", ")));
    }
    Ok(false)
}

/// The tests that skipped themselves at run time (see [`require`]).
static SKIPPED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// `tools missing: mix (Debian package elixir), ...`, each tool with where `scripts/test` gets
/// it (its `PROVIDES` table is read, so the two cannot disagree).
pub fn missing_tools(missing: &[&str]) -> String {
    let named: Vec<String> = missing
        .iter()
        .map(|t| match package_of(t) {
            Some(p) => format!("{t} (Debian package {p})"),
            None if *t == "crane" => format!("{t} (scripts/newer-peers crane)"),
            None => format!("{t} (no package for it in scripts/test's PROVIDES)"),
        })
        .collect();
    format!(
        "tools missing: {}; scripts/test installs them",
        named.join(", ")
    )
}

/// The Debian package `scripts/test` installs for `tool`.
pub fn package_of(tool: &str) -> Option<String> {
    const SCRIPT: &str = include_str!("../../scripts/test");
    let table = SCRIPT
        .split("declare -A PROVIDES=(")
        .nth(1)?
        .split(')')
        .next()?;
    table.split_whitespace().find_map(|pair| {
        let (t, p) = pair.strip_prefix('[')?.split_once("]=")?;
        (t == tool).then(|| p.to_string())
    })
}

pub fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join(tool).is_file()))
        || Path::new(tool).is_file()
}

/// Run a command; fail with its output unless it exits 0.
pub fn run(cmd: &mut Command) -> Result<Output, libtest_mimic::Failed> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| fail(format!("run {cmd:?}: {e}")))?;
    if !out.status.success() {
        return Err(fail(format!(
            "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(out)
}

/// A command's `--json` output.
pub fn json_of(out: &Output) -> Result<serde_json::Value, libtest_mimic::Failed> {
    serde_json::from_slice(&out.stdout)
        .map_err(|e| fail(format!("--json output is not JSON: {e}: {}", stdout(out))))
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// GET http://127.0.0.1:PORT/PATH until it answers (or 60 s pass); returns (status line, body).
pub fn http_get(port: u16, path: &str) -> Result<(String, String), libtest_mimic::Failed> {
    use std::io::{Read, Write};
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    while Instant::now() < deadline {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(mut s) => {
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let req = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
                if s.write_all(req.as_bytes()).is_ok() {
                    let mut buf = String::new();
                    if s.read_to_string(&mut buf).is_ok() && !buf.is_empty() {
                        let (head, body) = buf.split_once("\r\n\r\n").unwrap_or((&buf, ""));
                        return Ok((
                            head.lines().next().unwrap_or("").to_string(),
                            body.to_string(),
                        ));
                    }
                }
            }
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    Err(fail(format!(
        "no HTTP answer on port {port} within 60 s ({last})"
    )))
}

pub fn wait_for_port(port: u16, what: &str) -> Result<(), libtest_mimic::Failed> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(fail(format!("{what} did not listen on port {port}")))
}

pub fn workdir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("e2e");
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// The pid a lab directory belongs to: the last number of its name, or for a registry's
/// storage (`registry-<name>-<pid>-<port>`) the one before it.
fn owner_pid(name: &str, registry_storage: bool) -> Option<u32> {
    let mut parts = name.rsplit('-');
    if registry_storage {
        parts.next()?;
    }
    parts.next()?.parse::<u32>().ok()
}

/// Remove what earlier runs of the harness left when they were killed: scratch directories
/// of their tests, their registries' storage, and the daemons' state directories in /tmp
/// (unmounting what dockerd left mounted there). Only directories whose owning process is
/// gone are touched, so two harnesses may run at once.
pub fn sweep_stale() {
    let gone = |pid: u32| pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists();
    let mut stale = Vec::new();
    for dir in [workdir().join("runs"), workdir(), PathBuf::from("/tmp")] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let in_runs = dir.ends_with("runs");
            let storage = !in_runs && dir == workdir() && name.starts_with("registry-");
            let ours = in_runs || storage || name.starts_with("imgbuild-e2e-");
            if ours && owner_pid(&name, storage).is_some_and(gone) {
                stale.push(e.path());
            }
        }
    }
    if stale.is_empty() {
        return;
    }
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    for dir in stale {
        // Innermost first.
        let mut inside: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(1))
            .filter(|m| Path::new(m).starts_with(&dir))
            .collect();
        inside.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in inside {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

thread_local! {
    /// The scratch directories the test running on this thread made.
    static MADE: RefCell<Vec<PathBuf>> = const { RefCell::new(Vec::new()) };
}

/// A fresh directory for one test, removed when the test ends (see [`trial`]). A fixture that
/// several tests share takes a [`fixture_dir`] instead.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = fixture_dir(name);
    MADE.with_borrow_mut(|made| made.push(dir.clone()));
    dir
}

/// A fresh directory that lives for the whole run (a later run's [`sweep_stale`] removes it).
pub fn fixture_dir(name: &str) -> PathBuf {
    let dir = workdir()
        .join("runs")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// A test's name and the tools it declared (`None`: it declares none).
type Running = (&'static str, Option<Vec<&'static str>>);

thread_local! {
    /// The test running on this thread.
    static RUNNING: RefCell<Option<Running>> = const { RefCell::new(None) };
}

/// One test of the suite, made by [`trial`]; [`trials`] turns the list into libtest-mimic's.
pub struct Test {
    name: &'static str,
    tools: Option<Vec<&'static str>>,
    test: fn() -> TestResult,
}

/// One test of the suite. Declare the tools it needs with [`Test::needs`]: without them on
/// PATH it is reported ignored (a failure under CI). A test that declares none still runs,
/// guarded by its own [`require`].
pub fn trial(name: &'static str, test: fn() -> TestResult) -> Test {
    Test {
        name,
        tools: None,
        test,
    }
}

impl Test {
    /// The tools (commands on PATH) the test needs.
    pub fn needs(mut self, tools: &[&'static str]) -> Test {
        self.tools.get_or_insert_default().extend_from_slice(tools);
        self
    }

    /// Its declared tools missing here.
    fn missing(&self) -> Vec<&'static str> {
        let tools = self.tools.iter().flatten().copied();
        tools.filter(|t| !on_path(t)).collect()
    }
}

/// The tests as libtest-mimic trials. Outside CI a test whose declared tools are missing is
/// ignored (libtest-mimic says so, and [`conclude`] counts it); under CI it is not, and fails
/// naming the tools.
///
/// What the test made with [`scratch_dir`] is removed when it ends: always under `CI` (the
/// machine is thrown away after the run), else when it passed, so that a failure can be looked
/// at. The tests' directories of one run add up to over 7 GB, more than a CI machine may have
/// free. A failure is printed the moment it happens, so a log that is cut short still says
/// which test failed and why.
pub fn trials(tests: Vec<Test>) -> Vec<Trial> {
    let ci = under_ci();
    let mut ignored = Vec::new();
    let trials = tests
        .into_iter()
        .map(|t| {
            let missing = t.missing();
            let ignore = !missing.is_empty() && !ci;
            if ignore {
                ignored.push((t.name, missing.clone()));
            }
            let Test { name, tools, test } = t;
            Trial::test(name, move || {
                if !missing.is_empty() {
                    // Under CI, or run although ignored (--include-ignored).
                    return Err(fail(format!("{name}: {}", missing_tools(&missing))));
                }
                run_one(name, tools, test)
            })
            .with_ignored_flag(ignore)
        })
        .collect();
    let _ = IGNORED.set(ignored);
    trials
}

/// The tests [`trials`] marked ignored, with their missing tools.
static IGNORED: OnceLock<Vec<(&'static str, Vec<&'static str>)>> = OnceLock::new();

fn run_one(
    name: &'static str,
    tools: Option<Vec<&'static str>>,
    test: fn() -> TestResult,
) -> TestResult {
    MADE.with_borrow_mut(Vec::clear);
    RUNNING.set(Some((name, tools)));
    let result = std::panic::catch_unwind(test);
    RUNNING.set(None);
    let made = MADE.with_borrow_mut(std::mem::take);
    let passed = matches!(result, Ok(Ok(())));
    if passed || under_ci() {
        for dir in made {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    match result {
        Ok(Err(e)) => {
            eprintln!("FAILED {name}: {}", e.message().unwrap_or("(no message)"));
            Err(e)
        }
        Ok(Ok(())) => Ok(()),
        Err(panic) => {
            eprintln!("FAILED {name}: panicked (its message is above)");
            std::panic::resume_unwind(panic)
        }
    }
}

/// After the run: how many tests were ignored (and which tools they lack) and which skipped
/// themselves at run time. Under CI nothing may be ignored: a run that ignored any fails.
pub fn conclude(args: &libtest_mimic::Arguments, conclusion: &libtest_mimic::Conclusion) {
    if args.list {
        return;
    }
    let ignored = conclusion.num_ignored;
    eprintln!("e2e: {ignored} test(s) ignored");
    // The tools of the ignored tests this run selected (libtest-mimic's filter and --skip).
    let selected = |name: &str| {
        let matches = |pattern: &str| {
            if args.exact {
                name == pattern
            } else {
                name.contains(pattern)
            }
        };
        args.filter.as_deref().is_none_or(matches) && !args.skip.iter().any(|s| matches(s))
    };
    let mut tools: Vec<&str> = IGNORED
        .get()
        .into_iter()
        .flatten()
        .filter(|(name, _)| ignored > 0 && selected(name))
        .flat_map(|(_, missing)| missing.iter().copied())
        .collect();
    tools.sort_unstable();
    tools.dedup();
    if !tools.is_empty() {
        eprintln!("e2e: the ignored tests need {}", missing_tools(&tools));
    }
    let skipped = SKIPPED.lock().map(|s| s.clone()).unwrap_or_default();
    if !skipped.is_empty() {
        eprintln!(
            "e2e: {} test(s) skipped themselves, reported passed (declare their tools with \
             .needs(...) to have them reported ignored): {}",
            skipped.len(),
            skipped.join("; ")
        );
    }
    if under_ci() && ignored > 0 {
        eprintln!("e2e: under CI no test may be ignored: failing the run");
        std::process::exit(101);
    }
}

pub fn imgbuild() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_imgbuild"));
    c.env("IMGBUILD_CACHE", workdir().join("cache"));
    c.env_remove("SOURCE_DATE_EPOCH");
    // No credentials but those a test gives: never the developer's own logins.
    let no_auth = workdir().join("no-credentials");
    c.env("DOCKER_CONFIG", &no_auth)
        .env("REGISTRY_AUTH_FILE", no_auth.join("auth.json"))
        .env("HOME", &no_auth);
    for v in [
        "IMGBUILD_USERNAME",
        "IMGBUILD_PASSWORD",
        "IMGBUILD_REGISTRY",
        "DOCKER_AUTH_CONFIG",
        "XDG_RUNTIME_DIR",
        "HTTPS_PROXY",
        "HTTP_PROXY",
        "https_proxy",
        "http_proxy",
        "ALL_PROXY",
    ] {
        c.env_remove(v);
    }
    c
}

type Shared<T> = OnceLock<Result<T, String>>;

fn shared<T: Clone>(
    cell: &Shared<T>,
    make: impl FnOnce() -> Result<T, libtest_mimic::Failed>,
) -> Result<T, libtest_mimic::Failed> {
    cell.get_or_init(|| {
        make().map_err(|e| {
            e.message()
                .map(str::to_string)
                .unwrap_or_else(|| "fixture failed".into())
        })
    })
    .clone()
    .map_err(|m| fail(format!("shared fixture failed: {m}")))
}

// ---------- registry ----------

#[derive(Clone, Debug)]
pub struct Registry {
    pub port: u16,
    pub dir: PathBuf,
}

impl Registry {
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// Start a plain-HTTP registry on a free loopback port.
pub fn start_registry(name: &str) -> Result<Registry, libtest_mimic::Failed> {
    let dir = workdir().join(format!(
        "registry-{name}-{}-{}",
        std::process::id(),
        free_port()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| fail(e.to_string()))?;
    let data = dir.join("data");
    let port = start_registry_process(&dir, |port| {
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            data.display()
        )
    })?;
    Ok(Registry { port, dir })
}

static REGISTRY: Shared<Registry> = OnceLock::new();

pub fn registry() -> Result<Registry, libtest_mimic::Failed> {
    shared(&REGISTRY, || start_registry("main"))
}

// ---------- base image ----------

/// A Debian `suite` minbase root filesystem as a tar (made once, kept in target/).
fn rootfs_tar(suite: &str) -> Result<PathBuf, libtest_mimic::Failed> {
    rootfs_tar_usr(suite, true)
}

/// As `rootfs_tar`, merged-/usr (`/lib -> usr/lib`, as Docker's official bookworm and trixie
/// images are) or not (as Docker's official bullseye images are).
fn rootfs_tar_usr(suite: &str, merged_usr: bool) -> Result<PathBuf, libtest_mimic::Failed> {
    let name = if merged_usr {
        format!("{suite}-minbase")
    } else {
        format!("{suite}-minbase-split-usr")
    };
    let tar = workdir().join(format!("{name}.tar"));
    if tar.is_file() {
        return Ok(tar);
    }
    let root = workdir().join(&name);
    let _ = std::fs::remove_dir_all(&root);
    let sources =
        std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources").unwrap_or_default();
    let mirror = sources
        .lines()
        .find_map(|l| l.strip_prefix("URIs:"))
        .and_then(|u| u.split_whitespace().next())
        .ok_or_else(|| fail("no URIs: line in /etc/apt/sources.list.d/debian.sources to take the Debian mirror from"))?
        .to_string();
    run(Command::new("debootstrap")
        .arg("--variant=minbase")
        .args((!merged_usr).then_some("--no-merged-usr"))
        .arg(suite)
        .arg(&root)
        .arg(&mirror))?;
    // Leave out what debootstrap caches: it is not part of a base image.
    let _ = run(Command::new("sh").arg("-c").arg(format!(
        "rm -rf {0}/var/cache/apt/archives/*.deb {0}/var/lib/apt/lists/* {0}/var/log/*",
        root.display()
    )));
    let tmp = tar.with_extension("tmp");
    run(Command::new("tar")
        .args(["--numeric-owner", "--sort=name", "-C"])
        .arg(&root)
        .args(["-cf"])
        .arg(&tmp)
        .arg("."))?;
    std::fs::rename(&tmp, &tar).map_err(|e| fail(e.to_string()))?;
    let _ = std::fs::remove_dir_all(&root);
    Ok(tar)
}

pub fn minbase_rootfs_tar() -> Result<PathBuf, libtest_mimic::Failed> {
    static TAR: Shared<PathBuf> = OnceLock::new();
    shared(&TAR, || rootfs_tar("bookworm"))
}

/// An OCI layout at `layout` holding `tar` as one layer, tagged `tag` (made with umoci).
fn layout_of(tar: &Path, layout: &Path, tag: &str) -> Result<PathBuf, libtest_mimic::Failed> {
    layout_of_arch(tar, layout, tag, "amd64")
}

/// An OCI layout at `layout` holding one image, tagged `tag`, of the root file system `tar`,
/// for the architecture `arch`.
pub fn layout_of_arch(
    tar: &Path,
    layout: &Path,
    tag: &str,
    arch: &str,
) -> Result<PathBuf, libtest_mimic::Failed> {
    let _ = std::fs::remove_dir_all(layout);
    let img = format!("{}:{tag}", layout.display());
    run(Command::new("umoci").args(["init", "--layout"]).arg(layout))?;
    run(Command::new("umoci").args(["new", "--image", &img]))?;
    run(Command::new("umoci")
        .args(["raw", "add-layer", "--image", &img])
        .arg(tar))?;
    run(Command::new("umoci").args([
        "config",
        "--image",
        &img,
        "--config.env",
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "--config.cmd",
        "bash",
        "--os",
        "linux",
        "--architecture",
        arch,
    ]))?;
    Ok(layout.to_path_buf())
}

/// A copy of the layout `from` at `dest` whose image `tag`, as `new_tag`, has one more layer:
/// the files under `root`, owned by root. Returns `dest`.
pub fn layout_plus_layer(
    from: &Path,
    tag: &str,
    dest: &Path,
    root: &Path,
    new_tag: &str,
) -> Result<PathBuf, libtest_mimic::Failed> {
    let _ = std::fs::remove_dir_all(dest);
    run(Command::new("cp").arg("-a").arg(from).arg(dest))?;
    let mut names: Vec<std::ffi::OsString> = std::fs::read_dir(root)
        .map_err(|e| fail(e.to_string()))?
        .flatten()
        .map(|e| e.file_name())
        .collect();
    names.sort();
    let tar = dest.with_extension("layer.tar");
    run(Command::new("tar")
        .args(["--numeric-owner", "--owner=0", "--group=0", "-C"])
        .arg(root)
        .arg("-cf")
        .arg(&tar)
        .args(&names))?;
    if tag != new_tag {
        run(Command::new("umoci").args([
            "tag",
            "--image",
            &format!("{}:{tag}", dest.display()),
            new_tag,
        ]))?;
    }
    run(Command::new("umoci")
        .args([
            "raw",
            "add-layer",
            "--image",
            &format!("{}:{new_tag}", dest.display()),
        ])
        .arg(&tar))?;
    Ok(dest.to_path_buf())
}

/// An OCI layout holding the bookworm minbase image, tagged `bookworm`.
pub fn base_layout() -> Result<PathBuf, libtest_mimic::Failed> {
    static LAYOUT: Shared<PathBuf> = OnceLock::new();
    shared(&LAYOUT, || {
        layout_of(
            &minbase_rootfs_tar()?,
            &workdir().join("base-layout"),
            "bookworm",
        )
    })
}

/// An OCI layout holding a bullseye minbase image (glibc 2.31), tagged `bullseye`.
pub fn bullseye_layout() -> Result<PathBuf, libtest_mimic::Failed> {
    static LAYOUT: Shared<PathBuf> = OnceLock::new();
    shared(&LAYOUT, || {
        layout_of(
            &rootfs_tar("bullseye")?,
            &workdir().join("bullseye-layout"),
            "bullseye",
        )
    })
}

/// An OCI layout holding a `suite` minbase image, merged-/usr or not, tagged `suite`; each
/// made once and shared by the tests that ask for it.
pub fn suite_layout(suite: &str, merged_usr: bool) -> Result<PathBuf, libtest_mimic::Failed> {
    type Layouts = Mutex<std::collections::HashMap<(String, bool), Arc<Shared<PathBuf>>>>;
    static LAYOUTS: OnceLock<Layouts> = OnceLock::new();
    if suite == "bookworm" && merged_usr {
        return base_layout();
    }
    let cell = {
        let mut map = LAYOUTS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        map.entry((suite.to_string(), merged_usr))
            .or_default()
            .clone()
    };
    let usr = if merged_usr { "merged" } else { "split" };
    shared(&cell, || {
        layout_of(
            &rootfs_tar_usr(suite, merged_usr)?,
            &workdir().join(format!("{suite}-{usr}-usr-layout")),
            suite,
        )
    })
}

/// The base pushed to the shared registry; returns its reference.
pub fn base_in_registry() -> Result<String, libtest_mimic::Failed> {
    static BASE: Shared<String> = OnceLock::new();
    shared(&BASE, || {
        let reg = registry()?;
        let layout = base_layout()?;
        let reference = format!("{}/base/debian:bookworm-minbase", reg.host());
        run(Command::new("skopeo")
            .args(["copy", "--quiet", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:bookworm", layout.display()))
            .arg(format!("docker://{reference}")))?;
        Ok(reference)
    })
}

// ---------- Elixir release ----------

/// Build the sample release from testdata/hello into `dest` (a copy of the project).
pub fn build_release(
    dest: &Path,
    greeting: Option<&str>,
) -> Result<PathBuf, libtest_mimic::Failed> {
    build_release_env(dest, greeting, &[])
}

/// As `build_release`, with extra environment for mix (`HELLO_WITH_CRYPTO=1`).
pub fn build_release_env(
    dest: &Path,
    greeting: Option<&str>,
    env: &[(&str, &str)],
) -> Result<PathBuf, libtest_mimic::Failed> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join("hello");
    let _ = std::fs::remove_dir_all(dest);
    std::fs::create_dir_all(dest).map_err(|e| fail(e.to_string()))?;
    run(Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", src.display()))
        .arg(dest))?;
    let _ = std::fs::remove_dir_all(dest.join("_build"));
    if let Some(g) = greeting {
        let lib = dest.join("lib").join("hello.ex");
        let text = std::fs::read_to_string(&lib).map_err(|e| fail(e.to_string()))?;
        std::fs::write(&lib, text.replace("hello from imgbuild", g))
            .map_err(|e| fail(e.to_string()))?;
    }
    run(Command::new("mix")
        .args(["release", "--overwrite", "--quiet"])
        .current_dir(dest)
        .envs(env.iter().copied())
        .env("MIX_ENV", "prod"))?;
    Ok(dest.join("_build").join("prod").join("rel").join("hello"))
}

/// The variant whose boot loads :crypto (so it needs libcrypto.so.3), built once.
pub fn crypto_release() -> Result<PathBuf, libtest_mimic::Failed> {
    static REL: Shared<PathBuf> = OnceLock::new();
    shared(&REL, || {
        build_release_env(
            &workdir().join("hello-crypto"),
            None,
            &[("HELLO_WITH_CRYPTO", "1")],
        )
    })
}

/// The variant that uses :ssl (and so :crypto and :public_key), built once.
pub fn ssl_release() -> Result<PathBuf, libtest_mimic::Failed> {
    static REL: Shared<PathBuf> = OnceLock::new();
    shared(&REL, || {
        build_release_env(
            &workdir().join("hello-ssl"),
            None,
            &[("HELLO_WITH_SSL", "1")],
        )
    })
}

/// The sample release, built once.
pub fn release() -> Result<PathBuf, libtest_mimic::Failed> {
    static REL: Shared<PathBuf> = OnceLock::new();
    shared(&REL, || build_release(&workdir().join("hello-v1"), None))
}

// ---------- Docker Engine ----------

#[derive(Clone, Debug)]
pub struct Docker {
    pub host: String,
    pub containerd_socket: PathBuf,
}

impl Docker {
    pub fn cmd(&self) -> Command {
        let mut c = Command::new("docker");
        c.env("DOCKER_HOST", &self.host);
        c
    }
}

pub fn docker() -> Result<Docker, libtest_mimic::Failed> {
    static DOCKER: Shared<Docker> = OnceLock::new();
    shared(&DOCKER, || {
        // Short paths: unix socket names are limited to 108 bytes.
        let dir = PathBuf::from(format!("/tmp/imgbuild-e2e-docker-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let sock = dir.join("docker.sock");
        spawn(
            Command::new("dockerd")
                .args(["--iptables=false", "--ip-forward=false", "--bridge=none"])
                .arg(format!("--host=unix://{}", sock.display()))
                .arg(format!("--data-root={}", dir.join("data").display()))
                .arg(format!("--exec-root={}", dir.join("exec").display()))
                .arg(format!("--pidfile={}", dir.join("dockerd.pid").display())),
            &workdir().join("dockerd.log"),
        )?;
        let docker = Docker {
            host: format!("unix://{}", sock.display()),
            containerd_socket: dir.join("exec/containerd/containerd.sock"),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if docker
                .cmd()
                .arg("info")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
            {
                return Ok(docker);
            }
            if Instant::now() > deadline {
                let log =
                    std::fs::read_to_string(workdir().join("dockerd.log")).unwrap_or_default();
                return Err(fail(format!("dockerd did not start:\n{log}")));
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    })
}

/// Run `image` detached on a free port, GET `/` from it, then remove the container.
/// Returns (status line, body); a failure carries the container's logs.
pub fn run_and_get(
    docker: &Docker,
    image: &str,
) -> Result<(String, String), libtest_mimic::Failed> {
    run_and_get_path(docker, image, "/")
}

/// As `run_and_get`, for another path.
pub fn run_and_get_path(
    docker: &Docker,
    image: &str,
    path: &str,
) -> Result<(String, String), libtest_mimic::Failed> {
    run_and_get_with(docker, image, path, &[])
}

/// As `run_and_get_path`, with more environment for the container.
pub fn run_and_get_with(
    docker: &Docker,
    image: &str,
    path: &str,
    env: &[(&str, &str)],
) -> Result<(String, String), libtest_mimic::Failed> {
    let port = free_port();
    let name = format!("imgbuild-e2e-{port}");
    let mut cmd = docker.cmd();
    cmd.args(["run", "-d", "--name", &name, "--network=host", "-e"])
        .arg(format!("PORT={port}"))
        .args(["-e", "RELEASE_DISTRIBUTION=none"]);
    for (k, v) in env {
        cmd.arg("-e").arg(format!("{k}={v}"));
    }
    run(cmd.arg(image))?;
    let answer = http_get(port, path);
    let logs = docker
        .cmd()
        .args(["logs", &name])
        .output()
        .map(|o| format!("{}{}", stdout(&o), String::from_utf8_lossy(&o.stderr)))
        .unwrap_or_default();
    let _ = docker.cmd().args(["rm", "-f", &name]).output();
    answer.map_err(|e| {
        fail(format!(
            "{}; container logs:\n{logs}",
            e.message().unwrap_or("")
        ))
    })
}

pub fn podman() -> Command {
    let mut c = Command::new("podman");
    c.args(["--runtime", "/usr/sbin/runc", "--cgroup-manager=cgroupfs"]);
    c
}
