//! `imgbuild login` and `imgbuild logout`: stored registry credentials.

use std::sync::Arc;

use clap::Args;

use imgbuild::error::{Error, Result};
use imgbuild::registry::credentials::{self};
use imgbuild::registry::{Credential, RegistryClient, Secret};

use super::args::RegistryArgs;
use super::project::ProjectFile;

#[derive(Args, Debug)]
pub struct LoginArgs {
    /// The registry host[:port] (docker.io for Docker Hub).
    pub registry: String,
    #[arg(short, long)]
    pub username: String,
    /// Read the password (or token) from standard input.
    #[arg(long)]
    pub password_stdin: bool,
    #[command(flatten)]
    pub registry_args: RegistryArgs,
}

#[derive(Args, Debug)]
pub struct LogoutArgs {
    /// The registry host[:port].
    pub registry: String,
}

/// The registry host a user typed for login: a reference's registry part, Docker Hub aliases
/// included (`docker.io`, `https://index.docker.io/v1/`).
fn login_host(given: &str) -> Result<String> {
    let host = credentials::normalize_host(given);
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(Error::Usage(format!(
            "invalid registry {given:?}: give a host[:port] such as ghcr.io"
        )));
    }
    Ok(host)
}

pub(crate) async fn run_login(args: LoginArgs) -> Result<()> {
    let host = login_host(&args.registry)?;
    if !args.password_stdin {
        return Err(Error::Usage(
            "pass the password on standard input with --password-stdin (it stays out of the shell history and process list)".into(),
        ));
    }
    let mut password = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut password)
        .map_err(|e| Error::Input(format!("cannot read the password from standard input: {e}")))?;
    let password = password.trim_end_matches(['\n', '\r']).to_string();
    if password.is_empty() {
        return Err(Error::Usage(
            "the password on standard input is empty".into(),
        ));
    }
    let api_host = if host == "docker.io" {
        "registry-1.docker.io".to_string()
    } else {
        host.clone()
    };
    let cred = Credential {
        secret: Secret::Basic {
            username: args.username.clone(),
            password: password.clone(),
        },
        source: format!(
            "the password given to `imgbuild login` for {}",
            args.username
        ),
    };
    let cwd = std::env::current_dir().map_err(|e| Error::io("read", ".", e))?;
    let project = ProjectFile::load(&cwd)?;
    let client = RegistryClient::new(
        args.registry_args.merge(&project),
        Arc::new(credentials::Given(cred)),
    )?;
    if !client.check_login(&api_host).await? {
        eprintln!("imgbuild: note: {host} asks for no authentication; storing the login anyway");
    }
    let place = credentials::store_login(&host, &args.username, &password)?;
    eprintln!("imgbuild: login to {host} succeeded; credentials stored in {place}");
    Ok(())
}

pub fn run_logout(args: LogoutArgs) -> Result<()> {
    let host = login_host(&args.registry)?;
    if credentials::remove_login(&host)? {
        eprintln!("imgbuild: removed the login for {host}");
    } else {
        eprintln!("imgbuild: no stored login for {host}");
    }
    Ok(())
}
