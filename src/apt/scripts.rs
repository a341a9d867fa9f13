//! What not running the packages' install-time maintainer scripts means for the image.

/// What not running the install-time maintainer scripts of `packages` means in an image whose
/// environment is `env` (`KEY=VALUE`): (notes, warnings). A warning says what was not done and
/// what to do instead; a script whose work does not matter in a runtime image, or that imgbuild
/// does itself, is passed over.
pub fn scripts_not_run(packages: &[String], env: &[String]) -> (Vec<String>, Vec<String>) {
    let var = |key: &str| {
        env.iter()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            .filter(|v| !v.is_empty())
    };
    let builtin_locale = |v: &str| matches!(v, "C" | "POSIX" | "C.UTF-8" | "C.utf8");
    let (mut notes, mut warnings) = (Vec::new(), Vec::new());
    for name in packages {
        match name.as_str() {
            "locales" => {
                let named: Vec<String> = ["LC_ALL", "LANG"]
                    .iter()
                    .filter_map(|k| var(k).map(|v| (k, v)))
                    .filter(|(_, v)| !builtin_locale(v))
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                if named.is_empty() {
                    notes.push("locales: locale-gen was not run, and needs not be: the image's locale is C.UTF-8, built into glibc (the locales package can be left out)".into());
                } else {
                    warnings.push(format!(
                        "locales: its postinst (locale-gen) was not run, so no locale of /etc/locale.gen is generated and {} falls back to C: set LANG=C.UTF-8 (built into glibc, no package needed), or install locales-all (every locale, ready-made) instead of locales",
                        named.join(" and ")
                    ));
                }
            }
            "tzdata" if var("TZ").is_none() => warnings.push(
                "tzdata: its postinst was not run, so /etc/localtime is not set and the time zone is UTC: set TZ (for example TZ=Europe/Berlin) in the image's environment; the zone files are in /usr/share/zoneinfo".into(),
            ),
            // imgbuild builds the CA bundle itself; openssl's script links /usr/lib/ssl, which
            // the package ships; libc-bin's writes ld.so.cache, which ld.so does without; tzdata
            // with TZ set needs nothing else.
            "ca-certificates" | "openssl" | "libc-bin" | "tzdata" => {}
            // Libraries' scripts run ldconfig or ask debconf about restarting services.
            lib if lib.starts_with("lib") => {}
            other => warnings.push(format!(
                "{other}: its maintainer script (postinst/preinst) was not run (imgbuild runs none); if {other} needs set-up at install time (see `dpkg-deb -e` of its .deb), do it another way: a file in the release, the image's environment, or runtime.exs"
            )),
        }
    }
    (notes, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maintainer_scripts_not_run_are_explained() {
        let pkgs = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let env = |vars: &[&str]| vars.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        // Phoenix 1.7's runner list, with the image's default locale: nothing to warn about.
        let list = pkgs(&[
            "libstdc++6",
            "openssl",
            "libncurses5",
            "locales",
            "ca-certificates",
        ]);
        let (notes, warnings) = scripts_not_run(&list, &env(&["LANG=C.UTF-8"]));
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(notes.iter().any(|n| n.starts_with("locales:")), "{notes:?}");
        // The generator's LANG=en_US.UTF-8 would silently fall back to C: say so, and the fix.
        let (_, warnings) = scripts_not_run(&list, &env(&["LANG=en_US.UTF-8", "PATH=/bin"]));
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("locale-gen") && warnings[0].contains("LANG=en_US.UTF-8"));
        assert!(warnings[0].contains("LANG=C.UTF-8") && warnings[0].contains("locales-all"));
        // tzdata without TZ; an unknown package's script is named.
        let (_, warnings) = scripts_not_run(&pkgs(&["tzdata", "nginx"]), &env(&[]));
        assert!(warnings[0].starts_with("tzdata:") && warnings[0].contains("TZ"));
        assert!(warnings[1].starts_with("nginx:") && warnings[1].contains("postinst"));
        let (_, warnings) = scripts_not_run(&pkgs(&["tzdata"]), &env(&["TZ=Europe/Berlin"]));
        assert!(warnings.is_empty());
    }
}
