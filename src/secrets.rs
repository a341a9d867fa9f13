//! Keep secrets out of images: environment variables and labels whose names (or values) look
//! like credentials are refused at build time, since anyone who can pull the image can read them.
//! They belong in the container's environment (`docker run -e`, a Kubernetes Secret).

use crate::error::{Error, Result};

/// Why `key=value` looks like a secret, or `None`.
pub(crate) fn looks_secret(key: &str, value: &str) -> Option<&'static str> {
    let k = key.to_ascii_uppercase();
    const EXACT: &[&str] = &[
        "SECRET_KEY_BASE",
        "RELEASE_COOKIE",
        "GUARDIAN_SECRET_KEY",
        "LIVE_VIEW_SIGNING_SALT",
        "AWS_SECRET_ACCESS_KEY",
    ];
    const SUFFIXES: &[&str] = &[
        "_PASSWORD",
        "_PASSWD",
        "_TOKEN",
        "_SECRET",
        "_SECRET_KEY",
        "_API_KEY",
        "_PRIVATE_KEY",
        "_CREDENTIALS",
    ];
    if EXACT.contains(&k.as_str()) {
        return Some("its name marks it as a secret");
    }
    if k == "PASSWORD" || k == "TOKEN" || k == "SECRET" {
        return Some("its name marks it as a secret");
    }
    if SUFFIXES.iter().any(|s| k.ends_with(s)) {
        return Some("its name marks it as a secret");
    }
    if url_has_password(value) {
        return Some("its value is a URL with a password in it");
    }
    None
}

/// `scheme://user:password@host...` (as in DATABASE_URL=ecto://postgres:pw@db/app).
fn url_has_password(value: &str) -> bool {
    let Some((_, rest)) = value.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    match authority.rsplit_once('@') {
        Some((userinfo, _)) => userinfo
            .split_once(':')
            .is_some_and(|(_, password)| !password.is_empty()),
        None => false,
    }
}

/// Refuse secret-looking `--env` and `--label` entries unless their key is in `allowed`.
pub fn refuse_secrets<'a>(
    flag: &str,
    entries: impl IntoIterator<Item = (&'a String, &'a String)>,
    allowed: &[String],
) -> Result<()> {
    for (key, value) in entries {
        if allowed.iter().any(|a| a == key) {
            continue;
        }
        if let Some(why) = looks_secret(key, value) {
            return Err(Error::Usage(format!(
                "{flag} {key}: refusing to bake what looks like a secret into the image ({why}); anyone who can pull the image could read it. Pass it when the container starts instead (docker run -e {key}=..., or a Kubernetes Secret), or, if it is not secret, allow it with --allow-secret {key}"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names_and_values() {
        for k in [
            "SECRET_KEY_BASE",
            "RELEASE_COOKIE",
            "DB_PASSWORD",
            "GITHUB_TOKEN",
            "stripe_secret",
            "AWS_SECRET_ACCESS_KEY",
            "SENDGRID_API_KEY",
        ] {
            assert!(looks_secret(k, "x").is_some(), "{k}");
        }
        for k in [
            "PORT",
            "PHX_HOST",
            "MIX_ENV",
            "POOL_SIZE",
            "TOKEN_TTL_SECONDS",
        ] {
            assert!(looks_secret(k, "4000").is_none(), "{k}");
        }
        assert!(looks_secret("DATABASE_URL", "ecto://postgres:pw@db/app").is_some());
        assert!(looks_secret("DATABASE_URL", "ecto://postgres@db/app").is_none());
        assert!(looks_secret("DATABASE_URL", "ecto://db:5432/app").is_none());
        assert!(looks_secret("REDIS_URL", "redis://:pw@cache:6379").is_some());
        assert!(looks_secret("HOMEPAGE", "https://example.com/a:b@c").is_none());
    }

    #[test]
    fn allowed_keys_pass() {
        let env = [("DB_PASSWORD".to_string(), "x".to_string())];
        let err = refuse_secrets("--env", env.iter().map(|(a, b)| (a, b)), &[]).unwrap_err();
        assert!(
            err.to_string().contains("docker run -e DB_PASSWORD"),
            "{err}"
        );
        assert_eq!(err.exit_code(), 2);
        refuse_secrets(
            "--env",
            env.iter().map(|(a, b)| (a, b)),
            &["DB_PASSWORD".into()],
        )
        .unwrap();
    }
}
