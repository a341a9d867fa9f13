//! The one guard every network request goes through, for registries and apt mirrors alike:
//! which failures are worth another try, how long to wait (exponential backoff with jitter,
//! or the server's own `Retry-After`, within a cap), and the idle timeout that catches a
//! transfer that starts and then stops, without limiting how long a large transfer may take.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{Stream, StreamExt};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;

use crate::error::{Error, ImageError, Result};
pub use crate::error::{Failure, NetError};

/// How requests are retried and watched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Further attempts after the first.
    pub retries: u32,
    /// The longest `Retry-After` slept through; a server asking for more fails the command at
    /// once, saying how long it asked for.
    pub max_retry_after: Duration,
    /// How long a request may go without a byte moving either way before it counts as stalled.
    pub idle: Duration,
}

pub const DEFAULT_RETRIES: u32 = 4;
pub const DEFAULT_MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
pub const DEFAULT_IDLE: Duration = Duration::from_secs(30);

impl Default for Policy {
    fn default() -> Self {
        Policy {
            retries: DEFAULT_RETRIES,
            max_retry_after: DEFAULT_MAX_RETRY_AFTER,
            idle: DEFAULT_IDLE,
        }
    }
}

/// Statuses a server (or the proxy or load balancer in front of it) uses for "try again":
/// 408, 429 and every 5xx.
pub(crate) fn retryable_status(s: StatusCode) -> bool {
    matches!(s.as_u16(), 408 | 429 | 500..=599)
}

impl Failure {
    pub(crate) fn retryable(&self) -> bool {
        match self {
            Failure::Transport(_) | Failure::Stalled(_) => true,
            Failure::Status { status, .. } => retryable_status(*status),
        }
    }
}

impl Policy {
    /// Exponential backoff with jitter: about 250 ms, 500 ms, 1 s, 2 s, ... capped at 8 s, each
    /// scaled by a random factor in [0.5, 1) so parallel clients do not retry in step.
    pub(crate) fn backoff(attempt: u32) -> Duration {
        use std::hash::{BuildHasher, Hasher};
        let base = 250u64.saturating_mul(1 << attempt.min(5)).min(8_000);
        // RandomState is seeded randomly per instance: enough jitter without a rand crate.
        let noise = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let factor = 0.5 + (noise % 1000) as f64 / 2000.0;
        Duration::from_millis((base as f64 * factor) as u64)
    }

    /// After `attempts` tries ended in `failure`: how long to wait before the next, `None`
    /// when there is to be no next. A `Retry-After` over the cap is an error at once, naming
    /// `who` (the server) and the wait it asked for.
    pub(crate) fn next_try(
        &self,
        attempts: u32,
        failure: &Failure,
        who: &str,
    ) -> Result<Option<Duration>> {
        if !failure.retryable() || attempts > self.retries {
            return Ok(None);
        }
        if let Failure::Status {
            retry_after: Some(wait),
            status,
            ..
        } = failure
        {
            if *wait > self.max_retry_after {
                return Err(NetError::WaitTooLong {
                    who: who.to_string(),
                    status: *status,
                    wait: *wait,
                    cap: self.max_retry_after,
                }
                .into());
            }
            return Ok(Some(*wait));
        }
        Ok(Some(Self::backoff(attempts - 1)))
    }
}

/// `Retry-After` as seconds or as an HTTP date (RFC 9110), relative to now.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get("retry-after")?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = http_date(v)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs();
    Some(Duration::from_secs(at.saturating_sub(now)))
}

/// Seconds since the epoch of an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn http_date(s: &str) -> Option<u64> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| m == month)? as u32
        + 1;
    let hms: Vec<u64> = time
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let [h, m, sec] = hms.as_slice() else {
        return None;
    };
    let days = days_from_civil(year.parse().ok()?, month, day.parse().ok()?)?;
    Some(days * 86_400 + h * 3600 + m * 60 + sec)
}

/// Seconds since the epoch of an RFC 3339 time (`2026-12-01T10:00:00Z`, offsets and fractions
/// allowed), as token services send in `issued_at`.
pub(crate) fn rfc3339_seconds(s: &str) -> Option<u64> {
    let (date, rest) = s.split_once(['T', 't', ' '])?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, mo, da) = (d.next()??, d.next()??, d.next()??);
    let (time, offset) = match rest.find(['Z', 'z', '+', '-']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "Z"),
    };
    let time = time.split('.').next()?;
    let mut t = time.split(':').map(|x| x.parse::<i64>().ok());
    let (h, mi, se) = (t.next()??, t.next()??, t.next()??);
    let off = match offset.chars().next()? {
        'Z' | 'z' => 0,
        sign => {
            let (oh, om) = offset[1..].split_once(':')?;
            let v = oh.parse::<i64>().ok()? * 3600 + om.parse::<i64>().ok()? * 60;
            if sign == '-' { -v } else { v }
        }
    };
    let days = days_from_civil(y, u32::try_from(mo).ok()?, u32::try_from(da).ok()?)? as i64;
    u64::try_from(days * 86_400 + h * 3600 + mi * 60 + se - off).ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> Option<u64> {
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    u64::try_from(era * 146_097 + doe - 719_468).ok()
}

/// When bytes last moved in a transfer: touched by whoever moves them (an upload body as it
/// is read, a download as it arrives), read by the watchdog.
#[derive(Clone)]
pub struct Activity {
    start: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            start: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl Activity {
    pub(crate) fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn quiet_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// Run `fut`, failing with [`Failure::Stalled`] once `activity` has been quiet for `idle`. A
/// transfer that keeps moving may take as long as it needs.
pub(crate) async fn watched<T>(
    fut: impl Future<Output = T>,
    activity: &Activity,
    idle: Duration,
) -> std::result::Result<T, Failure> {
    activity.touch();
    let tick = (idle / 4).max(Duration::from_millis(50));
    tokio::pin!(fut);
    loop {
        tokio::select! {
            out = &mut fut => return Ok(out),
            () = tokio::time::sleep(tick) => {
                if activity.quiet_for() >= idle {
                    return Err(Failure::Stalled(idle));
                }
            }
        }
    }
}

/// The next chunk of a body, or a failure when it broke off or stalled for `idle`.
pub(crate) async fn next_chunk<S, B, E>(
    body: &mut S,
    idle: Duration,
) -> std::result::Result<Option<B>, Failure>
where
    S: Stream<Item = std::result::Result<B, E>> + Unpin,
    E: std::error::Error,
{
    match tokio::time::timeout(idle, body.next()).await {
        Err(_) => Err(Failure::Stalled(idle)),
        Ok(None) => Ok(None),
        Ok(Some(Ok(b))) => Ok(Some(b)),
        Ok(Some(Err(e))) => Err(Failure::Transport(format!(
            "the transfer broke off: {}",
            error_chain(&e)
        ))),
    }
}

/// One attempt at a request: its response, or why there is none (a failure worth another
/// try, or an error that ends the command).
pub enum Attempt {
    Failed(Failure),
    Fatal(Error),
}

/// What one attempt under [`retry`] came to. An error that ends the command at once is the
/// attempt's `Err`, never tried again.
pub(crate) enum Step<T, F = Failure> {
    /// It worked: [`retry`] returns this.
    Done(T),
    /// It failed: tried again after the policy's wait when the policy allows another try (the
    /// failure is one it retries and attempts remain), given up otherwise.
    Failed(F),
    /// It failed in a way the next attempt works around by sending differently (smaller
    /// upload bodies, another method): tried again at once without asking the policy, while
    /// the attempts stay within `retries + 2`.
    Again(F),
}

/// A failure [`retry`] can weigh: the network failure in it that [`Policy::next_try`] judges,
/// or `None` for one no retry mends.
pub(crate) trait Retryable {
    fn failure(&self) -> Option<&Failure>;
}

impl Retryable for Failure {
    fn failure(&self) -> Option<&Failure> {
        Some(self)
    }
}

/// A failure with what the error that gives up on it needs to say (the request, the bytes
/// that arrived).
impl<C> Retryable for (Failure, C) {
    fn failure(&self) -> Option<&Failure> {
        Some(&self.0)
    }
}

/// Make attempts under `policy` until one is done: `attempt(n)` makes the `n`th (from 1).
/// After a [`Step::Failed`], the policy's wait (backoff or `Retry-After`) is slept through
/// before the next attempt; when the policy allows no next, `give_up(failure, attempts)` is the
/// error. A `Retry-After` over the policy's cap is an error at once, naming `who`. An attempt's
/// `Err` is returned as it is. Dropping the future (an interrupt) cancels the attempt or the
/// wait under way.
///
/// `attempt` returns a future that owns what it uses (references copied in, `async move`): an
/// attempt that carries state to the next (a resumed download, a changed upload mode) keeps it
/// behind a lock the closure holds a reference to. (An `AsyncFnMut` closure could borrow it,
/// but its futures cannot yet be proven `Send`, which the sinks' futures must be.)
pub(crate) async fn retry<T, F, A, Fut>(
    policy: &Policy,
    who: &str,
    mut attempt: A,
    give_up: impl FnOnce(F, u32) -> Error,
) -> Result<T>
where
    F: Retryable,
    A: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<Step<T, F>>>,
{
    let mut attempts = 0;
    loop {
        attempts += 1;
        let (failure, wait) = match attempt(attempts).await? {
            Step::Done(v) => return Ok(v),
            Step::Failed(f) => {
                let wait = match f.failure() {
                    Some(net) => policy.next_try(attempts, net, who)?,
                    None => None,
                };
                (f, wait)
            }
            Step::Again(f) => {
                let wait = (attempts <= policy.retries + 2).then_some(Duration::ZERO);
                (f, wait)
            }
        };
        match wait {
            Some(wait) => tokio::time::sleep(wait).await,
            None => return Err(give_up(failure, attempts)),
        }
    }
}

/// Download a blob into `cache` as `digest`, hashing it as it arrives, and resuming where it
/// broke off: `get(offset)` sends the request (with `Range: bytes=offset-` when offset > 0;
/// it retries the request itself). A `206` continues the file; a `200` to a ranged request
/// (a server without ranges) starts it over. The blob becomes visible only when it matches.
/// `progress` advances by the bytes as they arrive (several downloads may share one: a start
/// over does not rewind it, so it may run past the total once in a while).
pub(crate) async fn download<F, Fut>(
    policy: &Policy,
    who: &str,
    what: &str,
    cache: &crate::cache::Cache,
    digest: &oci_spec::image::Digest,
    progress: &crate::report::Transfer,
    get: F,
) -> Result<Resumes>
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = Result<reqwest::Response>>,
{
    use sha2::Digest as _;
    use tokio::io::{AsyncSeekExt, AsyncWriteExt};
    let tmp = cache.temp_file()?;
    let file = tmp.reopen().map_err(|e| Error::io("open", tmp.path(), e))?;
    let out = tokio::io::BufWriter::with_capacity(1 << 20, tokio::fs::File::from_std(file));
    let io = &|e| Error::io("write", tmp.path(), e);
    /// What one attempt leaves the next: the file so far, its hash, and how it went.
    struct Partial<F> {
        get: F,
        out: tokio::io::BufWriter<tokio::fs::File>,
        hasher: sha2::Sha256,
        written: u64,
        report: Resumes,
    }
    let partial = tokio::sync::Mutex::new(Partial {
        get,
        out,
        hasher: sha2::Sha256::new(),
        written: 0,
        report: Resumes::default(),
    });
    let shared = &partial;
    retry(
        policy,
        who,
        move |_| async move {
            let mut guard = shared.lock().await;
            let p = &mut *guard;
            let resp = (p.get)(p.written).await?;
            let status = resp.status();
            if p.written > 0 {
                if status == StatusCode::PARTIAL_CONTENT
                    && content_range_start(resp.headers()) == Some(p.written)
                {
                    p.report.resumed += 1;
                } else if status.is_success() {
                    // No ranges here: start over, cleanly.
                    p.out.flush().await.map_err(io)?;
                    p.out.get_mut().set_len(0).await.map_err(io)?;
                    p.out.seek(std::io::SeekFrom::Start(0)).await.map_err(io)?;
                    p.hasher = sha2::Sha256::new();
                    p.written = 0;
                    p.report.restarted += 1;
                }
            }
            if !status.is_success() {
                return Err(NetError::Refused {
                    who: who.to_string(),
                    request: format!("GET {what}"),
                    status,
                    text: String::new(),
                    hint: String::new(),
                }
                .into());
            }
            let mut body = resp.bytes_stream();
            loop {
                match next_chunk(&mut body, policy.idle).await {
                    Ok(Some(chunk)) => {
                        p.hasher.update(&chunk);
                        p.out.write_all(&chunk).await.map_err(io)?;
                        p.written += chunk.len() as u64;
                        progress.advance(chunk.len() as u64);
                    }
                    Ok(None) => return Ok(Step::Done(())),
                    Err(f) => return Ok(Step::Failed((f, p.written))),
                }
            }
        },
        |(failure, written), attempts| {
            NetError::GaveUp {
                who: who.to_string(),
                request: format!("the download of {what} ({written} bytes arrived)"),
                hint: NetError::hint_for(&failure).into(),
                failure,
                attempts,
            }
            .into()
        },
    )
    .await?;
    let Partial {
        mut out,
        hasher,
        report,
        ..
    } = partial.into_inner();
    out.flush().await.map_err(io)?;
    crate::oci::digest::verify(what, digest, &crate::oci::digest::from_hasher(hasher))?;
    cache.commit(tmp, digest)?;
    Ok(report)
}

/// How a download went: how often it resumed with a range, and how often it started over.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resumes {
    pub resumed: u32,
    pub restarted: u32,
}

/// The first byte of a `Content-Range: bytes FIRST-LAST/SIZE` answer.
fn content_range_start(headers: &HeaderMap) -> Option<u64> {
    let v = headers.get("content-range")?.to_str().ok()?;
    let range = v.trim().strip_prefix("bytes ")?;
    range.split('-').next()?.trim().parse().ok()
}

/// A GET of a plain URL (apt mirrors), retried and watched by `policy`; `offset` > 0 asks for
/// the rest of a file. Returns the response of the first attempt that is not a retryable
/// failure.
pub(crate) async fn get_url(
    http: &reqwest::Client,
    policy: &Policy,
    url: &str,
    offset: u64,
) -> Result<reqwest::Response> {
    retry(
        policy,
        url,
        move |_| async move {
            let mut rb = http.get(url);
            if offset > 0 {
                rb = rb.header("Range", format!("bytes={offset}-"));
            }
            let activity = Activity::default();
            let failure = match watched(rb.send(), &activity, policy.idle).await {
                Err(stalled) => stalled,
                Ok(Err(e)) => Failure::Transport(error_chain(&e)),
                Ok(Ok(resp)) if retryable_status(resp.status()) => Failure::Status {
                    status: resp.status(),
                    retry_after: retry_after(resp.headers()),
                    text: String::new(),
                },
                Ok(Ok(resp)) => return Ok(Step::Done(resp)),
            };
            Ok(Step::Failed(failure))
        },
        |failure, attempts| gave_up_get(url, failure, attempts),
    )
    .await
}

/// A GET of `url` that kept failing until the retries ran out.
fn gave_up_get(url: &str, failure: Failure, attempts: u32) -> Error {
    NetError::GaveUp {
        who: url.to_string(),
        request: "GET".into(),
        hint: NetError::hint_for(&failure).into(),
        failure,
        attempts,
    }
    .into()
}

/// A small document (an apt index) read whole within `cap` bytes, the request and its body
/// retried together.
pub(crate) async fn get_small(
    http: &reqwest::Client,
    policy: &Policy,
    url: &str,
    cap: u64,
) -> Result<Vec<u8>> {
    retry(
        policy,
        url,
        move |_| async move {
            let resp = get_url(http, policy, url, 0).await?;
            if !resp.status().is_success() {
                return Err(NetError::Refused {
                    who: url.to_string(),
                    request: "GET".into(),
                    status: resp.status(),
                    text: String::new(),
                    hint: String::new(),
                }
                .into());
            }
            let mut body = resp.bytes_stream();
            let mut out = Vec::new();
            loop {
                match next_chunk(&mut body, policy.idle).await {
                    Ok(Some(c)) => {
                        if out.len() as u64 + c.len() as u64 > cap {
                            return Err(Error::from(ImageError::Invalid(format!(
                                "{url} is larger than {cap} bytes: refusing it"
                            ))));
                        }
                        out.extend_from_slice(&c);
                    }
                    Ok(None) => return Ok(Step::Done(out)),
                    Err(f) => return Ok(Step::Failed(f)),
                }
            }
        },
        |failure, attempts| gave_up_get(url, failure, attempts),
    )
    .await
}

/// An error and its causes on one line (reqwest hides the useful part in the chain).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let s = cause.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            "retry-after",
            "Sun, 06 Nov 1994 08:49:37 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO), "a date in the past");
        assert_eq!(
            http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        h.insert("retry-after", "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn rfc3339_times() {
        assert_eq!(rfc3339_seconds("1994-11-06T08:49:37Z"), Some(784_111_777));
        assert_eq!(
            rfc3339_seconds("1994-11-06T09:49:37.123+01:00"),
            Some(784_111_777)
        );
        assert_eq!(rfc3339_seconds("nonsense"), None);
    }

    #[test]
    fn what_is_retried_and_how_long_it_waits() {
        let p = Policy::default();
        let status = |s: u16, after: Option<u64>| Failure::Status {
            status: StatusCode::from_u16(s).unwrap(),
            retry_after: after.map(Duration::from_secs),
            text: String::new(),
        };
        for s in [408, 429, 500, 502, 503, 504, 599] {
            assert!(
                p.next_try(1, &status(s, None), "r").unwrap().is_some(),
                "{s}"
            );
        }
        for s in [400, 401, 403, 404, 413] {
            assert!(
                p.next_try(1, &status(s, None), "r").unwrap().is_none(),
                "{s}"
            );
        }
        assert_eq!(
            p.next_try(1, &status(429, Some(3)), "r").unwrap(),
            Some(Duration::from_secs(3))
        );
        let err = p
            .next_try(1, &status(503, Some(3600)), "registry r")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("registry r")
                && err.contains("1 h 0 min")
                && err.contains("--max-retry-wait"),
            "{err}"
        );
        assert!(
            p.next_try(5, &Failure::Transport("reset".into()), "r")
                .unwrap()
                .is_none()
        );
        assert!(
            p.next_try(4, &Failure::Stalled(p.idle), "r")
                .unwrap()
                .is_some()
        );
        for a in 0..8 {
            let d = Policy::backoff(a);
            assert!(
                d >= Duration::from_millis(125) && d <= Duration::from_secs(8),
                "{d:?}"
            );
        }
    }

    /// A 503 that asks for no wait: retried at once, so the test does not sleep.
    fn busy() -> Failure {
        Failure::Status {
            status: StatusCode::SERVICE_UNAVAILABLE,
            retry_after: Some(Duration::ZERO),
            text: String::new(),
        }
    }

    /// `retry` with `attempt` answering attempt n with `step(n)`: the result (the give-up error
    /// as `gave up after N: {failure:?}`) and the attempt numbers seen.
    async fn run_retry<T, F: Retryable + std::fmt::Debug>(
        policy: Policy,
        step: impl Fn(u32) -> Result<Step<T, F>>,
    ) -> (Result<T>, Vec<u32>) {
        let seen = std::sync::Mutex::new(Vec::new());
        let (seen_ref, step) = (&seen, &step);
        let out = retry(
            &policy,
            "registry r",
            move |n| async move {
                seen_ref.lock().unwrap().push(n);
                step(n)
            },
            |f, attempts| Error::Usage(format!("gave up after {attempts}: {f:?}")),
        )
        .await;
        (out, seen.into_inner().unwrap())
    }

    #[tokio::test]
    async fn retry_counts_attempts_gives_up_and_never_retries_an_error() {
        let p = Policy {
            retries: 3,
            ..Policy::default()
        };
        // Failures until the third attempt, which is done.
        let (out, seen) = run_retry(p, |n| {
            Ok(if n < 3 {
                Step::Failed(busy())
            } else {
                Step::Done(n * 10)
            })
        })
        .await;
        assert_eq!((out.unwrap(), seen), (30, vec![1, 2, 3]));

        // Always failing: the first attempt and `retries` more, then the give-up error made
        // of the last failure and the count.
        let (out, seen) = run_retry(p, |n| Ok::<Step<(), _>, _>(Step::Failed((busy(), n)))).await;
        assert_eq!(seen, vec![1, 2, 3, 4]);
        let err = out.unwrap_err().to_string();
        assert!(
            err.contains("gave up after 4: ") && err.contains("503"),
            "{err}"
        );

        // An attempt's error ends it at once, not retried.
        let (out, seen) = run_retry(p, |_| -> Result<Step<(), Failure>> {
            Err(Error::Usage("fatal".into()))
        })
        .await;
        assert_eq!(seen, vec![1]);
        assert_eq!(out.unwrap_err().to_string(), "fatal");

        // A failure the policy does not retry (404) is given up on after one attempt.
        let (out, seen) = run_retry(p, |_| {
            Ok::<Step<(), _>, _>(Step::Failed(Failure::Status {
                status: StatusCode::NOT_FOUND,
                retry_after: None,
                text: String::new(),
            }))
        })
        .await;
        assert_eq!(seen, vec![1]);
        assert!(
            out.unwrap_err()
                .to_string()
                .starts_with("gave up after 1: ")
        );

        // A Retry-After over the cap fails at once, naming the server and the wait.
        let (out, seen) = run_retry(p, |_| {
            Ok::<Step<(), _>, _>(Step::Failed(Failure::Status {
                status: StatusCode::TOO_MANY_REQUESTS,
                retry_after: Some(Duration::from_secs(3600)),
                text: String::new(),
            }))
        })
        .await;
        assert_eq!(seen, vec![1]);
        let err = out.unwrap_err().to_string();
        assert!(
            err.contains("registry r") && err.contains("--max-retry-wait"),
            "{err}"
        );

        // No retries at all: one attempt.
        let none = Policy { retries: 0, ..p };
        let (out, seen) = run_retry(none, |_| Ok::<Step<(), _>, _>(Step::Failed(busy()))).await;
        assert_eq!(seen, vec![1]);
        assert!(
            out.unwrap_err()
                .to_string()
                .starts_with("gave up after 1: ")
        );
    }

    #[tokio::test]
    async fn retry_again_is_at_once_and_allows_two_more_attempts() {
        let p = Policy {
            retries: 1,
            // Any policy wait would be seconds: `Again` must not take it.
            max_retry_after: Duration::from_secs(3600),
            ..Policy::default()
        };
        let started = Instant::now();
        let (out, seen) = run_retry(p, |_| {
            Ok::<Step<(), _>, _>(Step::Again(Failure::Transport("reset".into())))
        })
        .await;
        assert_eq!(
            seen,
            vec![1, 2, 3, 4],
            "retries + 2 attempts may switch, then one more"
        );
        assert!(
            out.unwrap_err()
                .to_string()
                .starts_with("gave up after 4: ")
        );
        assert!(started.elapsed() < Duration::from_secs(2));
        // A switch, then a failure the policy judges: still within its retries.
        let (out, seen) = run_retry(p, |n| {
            Ok(match n {
                1 => Step::Again(busy()),
                2 => Step::Failed(busy()),
                _ => Step::Done(n),
            })
        })
        .await;
        assert_eq!(seen, vec![1, 2]);
        assert!(
            out.unwrap_err()
                .to_string()
                .starts_with("gave up after 2: ")
        );
    }

    #[tokio::test]
    async fn a_quiet_transfer_is_stalled_and_a_moving_one_is_not() {
        let idle = Duration::from_millis(200);
        let a = Activity::default();
        let r = watched(tokio::time::sleep(Duration::from_secs(5)), &a, idle).await;
        assert!(matches!(r, Err(Failure::Stalled(_))));
        // Moving for longer than `idle` in all, but never quiet that long.
        let a = Activity::default();
        let mover = a.clone();
        let work = async move {
            for _ in 0..8 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                mover.touch();
            }
            42
        };
        assert_eq!(watched(work, &a, idle).await.unwrap(), 42);
    }
}
