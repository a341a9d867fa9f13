//! Dependency resolution as apt does it for installing into a fresh runtime image: `Depends`
//! and `Pre-Depends` with alternatives and version constraints, virtual packages through
//! `Provides`, nothing reinstalled that the base already has at a satisfying version, and a
//! deterministic choice (the highest version; among providers, the first by name).

use std::collections::{BTreeMap, VecDeque};

use super::Candidate;
use super::debian::Rules;
use super::index::{self, Dep};
use super::version;
use crate::error::{Error, Result};
use crate::fs::RootFs;

/// What the base's dpkg database has: name → version, and virtual name → provider versions.
#[derive(Clone, Debug, Default)]
pub struct Installed {
    pub real: BTreeMap<String, String>,
    pub provided: BTreeMap<String, Vec<Option<String>>>,
}

pub(crate) fn installed_from(fs: &RootFs) -> Installed {
    let mut out = Installed::default();
    for s in crate::sbom::dpkg_stanzas(fs) {
        out.real.insert(s["Package"].clone(), s["Version"].clone());
        for (p, pv) in index::parse_provides(s.get("Provides").map_or("", String::as_str)) {
            out.provided.entry(p).or_default().push(pv);
        }
    }
    out
}

fn meets(have: &str, c: &Option<(String, String)>) -> bool {
    match c {
        None => true,
        Some((op, want)) => version::satisfies(have, op, want),
    }
}

/// Whether `dep` is met by the base or by what is chosen so far.
fn satisfied(dep: &Dep, installed: &Installed, chosen: &BTreeMap<String, Candidate>) -> bool {
    if installed
        .real
        .get(&dep.name)
        .is_some_and(|v| meets(v, &dep.constraint))
    {
        return true;
    }
    if chosen
        .get(&dep.name)
        .is_some_and(|c| meets(&c.version, &dep.constraint))
    {
        return true;
    }
    // Virtual packages: an unversioned dependency is met by any provider; a versioned one
    // only by a versioned Provides.
    let by_provides = |pv: &Option<String>| match (&dep.constraint, pv) {
        (None, _) => true,
        (Some((op, want)), Some(v)) => version::satisfies(v, op, want),
        (Some(_), None) => false,
    };
    if installed
        .provided
        .get(&dep.name)
        .is_some_and(|ps| ps.iter().any(by_provides))
    {
        return true;
    }
    chosen.values().any(|c| {
        index::parse_provides(c.stanza.get("Provides").map_or("", String::as_str))
            .iter()
            .any(|(p, pv)| *p == dep.name && by_provides(pv))
    })
}

/// The candidate that best answers `dep`: the highest version of the real package, else the
/// first provider by name.
fn pick<'a>(dep: &Dep, by_name: &'a BTreeMap<String, Vec<&'a Candidate>>) -> Option<&'a Candidate> {
    if let Some(cs) = by_name.get(&dep.name)
        && let Some(best) = cs
            .iter()
            .filter(|c| meets(&c.version, &dep.constraint))
            .max_by(|a, b| version::compare(&a.version, &b.version))
    {
        return Some(best);
    }
    let mut providers: Vec<&Candidate> = by_name
        .values()
        .flatten()
        .copied()
        .filter(|c| {
            index::parse_provides(c.stanza.get("Provides").map_or("", String::as_str))
                .iter()
                .any(|(p, pv)| {
                    *p == dep.name
                        && match (&dep.constraint, pv) {
                            (None, _) => true,
                            (Some((op, want)), Some(v)) => version::satisfies(v, op, want),
                            _ => false,
                        }
                })
        })
        .collect();
    providers.sort_by(|a, b| {
        a.name
            .cmp(&b.name)
            .then_with(|| version::compare(&b.version, &a.version))
    });
    providers.into_iter().next()
}

/// Libraries whose old ABI a later Debian release dropped, with the package that took its
/// place (Phoenix 1.6 and 1.7 ask for `libncurses5`, which trixie no longer has).
const SUCCESSORS: &[(&str, &str)] = &[
    ("libncurses5", "libncurses6"),
    ("libtinfo5", "libtinfo6"),
    ("libncursesw5", "libncursesw6"),
    ("libssl1.1", "libssl3"),
    ("libffi7", "libffi8"),
    ("libreadline7", "libreadline8"),
];

/// The chain of packages that led to `name` (`libfoo → bar → name`), by who chose whom.
fn chain(name: &str, chosen_by: &BTreeMap<String, String>) -> String {
    let mut out = vec![name.to_string()];
    let mut at = name;
    while let Some(parent) = chosen_by.get(at) {
        if out.contains(parent) {
            break;
        }
        out.push(parent.clone());
        at = parent;
    }
    out.reverse();
    out.join(" → ")
}

/// Resolve `requested` (`name` or `name=version`) into the packages to install, sorted by name.
/// With `rules` (a `deb:` base), the data-only packages' dependencies are left out (with a
/// note) and a refused package (a shell, a package manager) is an error naming the chain that
/// asked for it.
pub(crate) fn resolve(
    requested: &[String],
    cands: &[Candidate],
    installed: &Installed,
    notes: &mut Vec<String>,
    rules: Option<&Rules>,
) -> Result<Vec<Candidate>> {
    let refused = |name: &str| rules.is_some_and(|r| r.refused.contains(&name));
    let refusal = |what: String| {
        Error::Input(format!(
            "{what}: a deb: base has no shell and no package manager, so it cannot install that; leave the package out, or build on a Debian image with a shell (--from debian:SUITE-slim)"
        ))
    };
    let mut chosen_by: BTreeMap<String, String> = BTreeMap::new();
    let mut by_name: BTreeMap<String, Vec<&Candidate>> = BTreeMap::new();
    for c in cands {
        by_name.entry(c.name.clone()).or_default().push(c);
    }
    let mut chosen: BTreeMap<String, Candidate> = BTreeMap::new();
    let mut queue: VecDeque<(Vec<Dep>, String)> = VecDeque::new();
    for r in requested {
        let (name, constraint) = match r.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(("=".to_string(), v.to_string()))),
            None => (r.clone(), None),
        };
        if installed
            .real
            .get(&name)
            .is_some_and(|v| meets(v, &constraint))
        {
            notes.push(format!(
                "{name} is already in the base image ({}): not installed again",
                installed.real[&name]
            ));
            continue;
        }
        let dep = Dep { name, constraint };
        let Some(c) = pick(&dep, &by_name) else {
            let known: Vec<&String> = by_name
                .get(&dep.name)
                .map(|cs| cs.iter().map(|c| &c.version).collect())
                .unwrap_or_default();
            let successor = SUCCESSORS
                .iter()
                .find(|(old, _)| *old == dep.name)
                .map(|(_, new)| *new)
                .filter(|new| by_name.contains_key(*new));
            return Err(Error::Input(if let Some(new) = successor {
                format!(
                    "package {r} is not in the apt sources' indexes: this Debian release has {new} in its place; ask for {new} instead (in imgbuild.toml's packages, or --package)"
                )
            } else if known.is_empty() {
                format!(
                    "package {r} is not in the apt sources' indexes: check the name and the sources (--apt-source)"
                )
            } else {
                format!("package {r}: the sources have only versions {known:?}")
            }));
        };
        if refused(&c.name) {
            return Err(refusal(format!(
                "package {} is a shell, a package manager or a tool of scripts",
                c.name
            )));
        }
        chosen.insert(c.name.clone(), c.clone());
        queue.push_back((vec![], c.name.clone()));
    }
    // Breadth first over the chosen packages' Pre-Depends and Depends.
    while let Some((_, name)) = queue.pop_front() {
        let Some(c) = chosen.get(&name).cloned() else {
            continue;
        };
        let fields = ["Pre-Depends", "Depends"]
            .iter()
            .filter_map(|f| c.stanza.get(*f))
            .flat_map(|v| index::parse_depends(v))
            .collect::<Vec<_>>();
        if rules.is_some_and(|r| r.data_only.contains(&c.name.as_str())) {
            let left: Vec<String> = fields
                .iter()
                .filter(|alts| !alts.iter().any(|d| satisfied(d, installed, &chosen)))
                .filter_map(|alts| alts.first().map(|d| d.name.clone()))
                .collect();
            if !left.is_empty() {
                notes.push(format!(
                    "{}: unpacked for its data only; its dependencies {} are not installed (they serve its maintainer scripts, which a base without a shell does not run)",
                    c.name,
                    left.join(", ")
                ));
            }
            continue;
        }
        for alts in fields {
            if alts.iter().any(|d| satisfied(d, installed, &chosen)) {
                continue;
            }
            // A shell-less base takes an alternative it may install before one it may not.
            let picks: Vec<&Candidate> = alts.iter().filter_map(|d| pick(d, &by_name)).collect();
            if let Some(no) = picks
                .first()
                .filter(|_| picks.iter().all(|p| refused(&p.name)))
            {
                return Err(refusal(format!(
                    "{} needs {} ({} → {})",
                    c.name,
                    no.name,
                    chain(&c.name, &chosen_by),
                    no.name
                )));
            }
            let Some(best) = picks.into_iter().find(|p| !refused(&p.name)) else {
                let text: Vec<String> = alts
                    .iter()
                    .map(|d| match &d.constraint {
                        Some((op, v)) => format!("{} ({op} {v})", d.name),
                        None => d.name.clone(),
                    })
                    .collect();
                return Err(Error::Input(format!(
                    "package {} {} depends on {}, which neither the base image nor the apt sources provide",
                    c.name,
                    c.version,
                    text.join(" | ")
                )));
            };
            if !chosen.contains_key(&best.name) {
                chosen_by.insert(best.name.clone(), c.name.clone());
                chosen.insert(best.name.clone(), best.clone());
                queue.push_back((vec![], best.name.clone()));
            }
        }
    }
    Ok(chosen.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(name: &str, version: &str, extra: &str) -> Candidate {
        let text = format!("Package: {name}\nVersion: {version}\n{extra}");
        Candidate {
            name: name.into(),
            version: version.into(),
            architecture: "amd64".into(),
            url: format!("http://x/{name}.deb"),
            filename: format!("pool/{name}.deb"),
            sha256: "00".into(),
            size: 1,
            stanza: index::stanzas(&text).remove(0),
        }
    }

    #[test]
    fn resolves_alternatives_versions_and_virtuals() {
        let cands = vec![
            cand(
                "openssl",
                "3.0.15-1",
                "Depends: libc6 (>= 2.34), libssl3 (>= 3.0.9), awk\n",
            ),
            cand("libssl3", "3.0.11-1", ""),
            cand("libssl3", "3.0.15-1", "Depends: libc6 (>= 2.34)\n"),
            cand("mawk", "1.3.4", "Provides: awk\n"),
            cand("gawk", "5.2", "Provides: awk\n"),
        ];
        let mut installed = Installed::default();
        installed.real.insert("libc6".into(), "2.36-9".into());
        let mut notes = vec![];
        let got = resolve(&["openssl".into()], &cands, &installed, &mut notes, None).unwrap();
        let names: Vec<(&str, &str)> = got
            .iter()
            .map(|c| (c.name.as_str(), c.version.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("gawk", "5.2"),
                ("libssl3", "3.0.15-1"),
                ("openssl", "3.0.15-1")
            ]
        );

        // Already in the base: not installed again; a dependency the base cannot meet fails.
        installed.real.insert("libssl3".into(), "3.0.15-1".into());
        let got = resolve(&["libssl3".into()], &cands, &installed, &mut notes, None).unwrap();
        assert!(got.is_empty() && notes.iter().any(|n| n.contains("already in the base")));
        installed.real.insert("libc6".into(), "2.31-13".into());
        let err = resolve(&["openssl".into()], &cands, &installed, &mut notes, None).unwrap_err();
        assert!(err.to_string().contains("libc6 (>= 2.34)"), "{err}");
        let err = resolve(&["nosuch".into()], &cands, &installed, &mut notes, None).unwrap_err();
        assert!(err.to_string().contains("not in the apt sources"), "{err}");
        // A pinned version.
        installed.real.remove("libssl3");
        installed.real.insert("libc6".into(), "2.36".into());
        let got = resolve(
            &["libssl3=3.0.11-1".into()],
            &cands,
            &installed,
            &mut notes,
            None,
        )
        .unwrap();
        assert_eq!(got[0].version, "3.0.11-1");
    }

    #[test]
    fn a_dropped_library_names_its_successor() {
        // trixie: Phoenix 1.6/1.7's libncurses5 is gone, libncurses6 is there.
        let cands = vec![cand("libncurses6", "6.5-2", "")];
        let err = resolve(
            &["libncurses5".into()],
            &cands,
            &Installed::default(),
            &mut vec![],
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("libncurses5") && err.contains("ask for libncurses6 instead"),
            "{err}"
        );
    }

    #[test]
    fn a_shell_less_base_drops_data_packages_deps_and_refuses_shells() {
        use super::super::debian::SHELL_LESS;
        let cands = vec![
            cand("libc6", "2.36-9", "Depends: libgcc-s1\n"),
            cand("libgcc-s1", "12.2.0-14", "Depends: libc6 (>= 2.35)\n"),
            cand(
                "ca-certificates",
                "20230311",
                "Depends: openssl (>= 1.1.1), debconf (>= 0.5) | debconf-2.0\n",
            ),
            cand("openssl", "3.0.15-1", "Depends: libc6\n"),
            cand(
                "debconf",
                "1.5.82",
                "Pre-Depends: perl-base (>= 5.20.1-3~)\n",
            ),
            cand(
                "perl-base",
                "5.36",
                "Pre-Depends: libc6 (>= 2.35), dpkg (>= 1.17.17)\n",
            ),
            cand("dpkg", "1.21", "Pre-Depends: libc6\n"),
            cand("dash", "0.5.12", "Pre-Depends: libc6\n"),
            cand("tool", "1", "Depends: helper\n"),
            cand("helper", "1", "Depends: dash | bash\n"),
            cand("either", "1", "Depends: dash | mawk\n"),
            cand("mawk", "1.3.4", ""),
        ];
        let installed = Installed::default();
        let names = |got: Vec<Candidate>| got.into_iter().map(|c| c.name).collect::<Vec<_>>();
        // Without rules, ca-certificates drags debconf, perl-base and dpkg along.
        let got = resolve(
            &["ca-certificates".into(), "libc6".into()],
            &cands,
            &installed,
            &mut vec![],
            None,
        )
        .unwrap();
        assert!(names(got).contains(&"dpkg".to_string()));
        // With them: its data only, the dependencies left out by name.
        let mut notes = vec![];
        let got = resolve(
            &["ca-certificates".into(), "libc6".into()],
            &cands,
            &installed,
            &mut notes,
            Some(&SHELL_LESS),
        )
        .unwrap();
        assert_eq!(names(got), ["ca-certificates", "libc6", "libgcc-s1"]);
        assert!(
            notes
                .iter()
                .any(|n| n.contains("ca-certificates") && n.contains("openssl, debconf")),
            "{notes:?}"
        );
        // A package that needs a shell is refused with the chain that asked for it.
        let err = resolve(
            &["tool".into()],
            &cands,
            &installed,
            &mut vec![],
            Some(&SHELL_LESS),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("helper needs dash (tool → helper → dash)"),
            "{err}"
        );
        assert!(err.contains("no shell"), "{err}");
        // An alternative that is no shell is taken instead of the shell.
        let got = resolve(
            &["either".into()],
            &cands,
            &installed,
            &mut vec![],
            Some(&SHELL_LESS),
        )
        .unwrap();
        assert_eq!(names(got), ["either", "mawk"]);
        // Asked for by name: refused too.
        let err = resolve(
            &["dash".into()],
            &cands,
            &installed,
            &mut vec![],
            Some(&SHELL_LESS),
        )
        .unwrap_err();
        assert!(err.to_string().contains("package dash is a shell"), "{err}");
    }
}
