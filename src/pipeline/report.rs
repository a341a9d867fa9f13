//! What a build reports: the image's digest and layers, its base, its SBOM, the check's
//! findings, and the materials its provenance names.

use std::collections::HashMap;

use oci_spec::image::Digest;
use serde::Serialize;

use super::examine::Seen;
use super::layers::Origin;
use super::{BuildRequest, transplant};
use crate::check::CheckReport;
use crate::oci::reference::Reference;
use crate::oci::{Artifact, Image, Layer};
use crate::release::{LayerKind, Release};
use crate::sbom;
use crate::sign::provenance::Materials;
use crate::source::Source;

#[derive(Clone, Debug, Serialize)]
pub struct SbomReport {
    /// Digest of the SPDX document.
    pub digest: String,
    /// Where it is inside the image.
    pub path: String,
    pub applications: usize,
    pub debian_packages: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct BaseReport {
    pub name: String,
    pub digest: Option<String>,
    /// Where the base's summary (its files, for the check and the SBOM) came from: `read`
    /// (its layers were read), `cache` (the local cache) or `cache-repo`.
    pub summary: &'static str,
}

/// A layer as the report shows it.
#[derive(Clone, Debug, Serialize)]
pub struct LayerRecord {
    pub digest: String,
    pub diff_id: String,
    pub size: u64,
    pub media_type: String,
    pub kind: LayerKind,
    /// For the layers of this build: `written`, `cache` (the local layer cache) or
    /// `cache-repo`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<&'static str>,
}

impl LayerRecord {
    pub(crate) fn of(l: &Layer, origin: Option<&'static str>) -> LayerRecord {
        LayerRecord {
            digest: l.blob.digest.to_string(),
            diff_id: l.diff_id.to_string(),
            size: l.blob.size,
            media_type: l.blob.media_type.clone(),
            kind: l.kind,
            origin,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct BuildReport {
    /// Digest of the image manifest.
    pub digest: String,
    /// Digest of the image config.
    pub config: String,
    pub tags: Vec<String>,
    pub platform: String,
    pub base: BaseReport,
    pub layers: Vec<LayerRecord>,
    pub warnings: Vec<String>,
    /// How many of the new layers were found unchanged in the layer cache (not compressed).
    pub reused_layers: usize,
    pub sbom: SbomReport,
    /// The start-up check's findings (absent with --no-check).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<CheckReport>,
    /// Which native files came from another image (a transplant), and from which.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transplant: Option<transplant::TransplantReport>,
    /// What the user should know to run the image (Phoenix's PHX_SERVER, runtime.exs's
    /// variables).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// What went into the image, for its provenance.
    #[serde(skip)]
    pub materials: crate::sign::provenance::Materials,
}

/// What a build gives: an image (one platform) or an index, and what happened on the way.
pub struct Built {
    pub artifact: Artifact,
    pub report: Report,
    /// `--debug`: the debug image (or index) beside it.
    pub debug: Option<DebugBuilt>,
}

/// The report of one image, or of an index and each of its platforms.
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum Report {
    Image(Box<BuildReport>),
    Index(IndexReport),
}

impl Report {
    pub fn digest(&self) -> &str {
        match self {
            Report::Image(r) => &r.digest,
            Report::Index(r) => &r.digest,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct IndexReport {
    /// Digest of the image index (what the tags point at).
    pub digest: String,
    pub index: String,
    pub media_type: String,
    pub tags: Vec<String>,
    /// Each platform's image, as a single-platform build reports it.
    pub platforms: Vec<BuildReport>,
    pub warnings: Vec<String>,
}

/// The options that shaped the image, for the provenance (environment values stay out: only
/// their names).
fn parameters(req: &BuildRequest) -> serde_json::Value {
    let s = &req.settings;
    serde_json::json!({
        "from": req.from.describe(),
        "platform": req.platform.as_ref().map(ToString::to_string),
        "platforms": req.platforms.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "otp_from": req.otp_from.as_ref().map(Source::describe),
        "env": s.env.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
        "labels": s.labels,
        "annotations": s.annotations,
        "exposed_ports": s.exposed_ports,
        "user": s.user,
        "workdir": s.workdir,
        "cmd": s.cmd,
        "entrypoint": s.entrypoint,
        "apps": req.own_apps,
        "drop_cookie": req.drop_cookie,
        "compression": format!("{}:{}", req.compression.0.name(), req.compression.1),
        "packages": req.packages.packages,
        "check": req.check,
    })
}

/// What a platform's build knows once its image is made, for its report.
pub(super) struct ImageFacts<'a> {
    pub(super) req: &'a BuildRequest,
    pub(super) image: &'a Image,
    pub(super) base: &'a Image,
    pub(super) release: &'a Release,
    pub(super) seen: Seen,
    /// The build's own layers and where each came from.
    pub(super) made: &'a [(Layer, Origin)],
    pub(super) sbom_digest: &'a Digest,
    pub(super) mix_lock: Vec<crate::release::mix_lock::Dep>,
    pub(super) warnings: Vec<String>,
}

/// The report of one platform's image (its transplant and notes are the caller's to add).
pub(super) fn image_report(f: ImageFacts<'_>) -> BuildReport {
    let ImageFacts {
        req,
        image,
        base,
        release,
        seen,
        made,
        sbom_digest,
        mix_lock,
        warnings,
    } = f;
    let origins: HashMap<String, &'static str> = made
        .iter()
        .map(|(l, o)| (l.blob.digest.to_string(), o.as_str()))
        .collect();
    BuildReport {
        digest: image.digest.to_string(),
        config: image.config_digest.to_string(),
        tags: req.tags.iter().map(Reference::canonical).collect(),
        platform: format!("{}/{}", image.config.os(), image.config.architecture()),
        base: BaseReport {
            name: base.origin.name.clone(),
            digest: base.origin.digest.as_ref().map(ToString::to_string),
            summary: seen.summary,
        },
        layers: image
            .layers
            .iter()
            .map(|l| {
                let origin = (l.kind != LayerKind::Base)
                    .then(|| origins.get(&l.blob.digest.to_string()).copied())
                    .flatten();
                LayerRecord::of(l, origin)
            })
            .collect(),
        warnings,
        reused_layers: made.iter().filter(|(_, o)| *o != Origin::Written).count(),
        sbom: SbomReport {
            digest: sbom_digest.to_string(),
            path: format!("/{}", sbom::path_in_image(release)),
            applications: release.applications.len(),
            debian_packages: seen.debs.len(),
        },
        check: seen.check,
        transplant: None,
        notes: Vec::new(),
        materials: Materials {
            base_name: base.origin.name.clone(),
            base_digest: base.origin.digest.as_ref().map(ToString::to_string),
            packages: seen.locked,
            release: release.name.clone(),
            release_version: release.version.clone(),
            erts_version: release.erts_version.clone(),
            applications: release
                .applications
                .iter()
                .map(|a| (a.name.clone(), a.version.clone()))
                .collect(),
            mix_lock,
            parameters: parameters(req),
            epoch: req.settings.epoch,
        },
    }
}

/// What `--debug` made: the debug image (or index) and what it reports.
pub struct DebugBuilt {
    pub artifact: Artifact,
    pub report: DebugReport,
}

/// The debug image as `--json` names it: its digest (the index's for several platforms), its
/// tags (each `-t` with `-debug` after the tag), and each platform's debug image.
#[derive(Clone, Debug, Serialize)]
pub struct DebugReport {
    pub digest: String,
    pub tags: Vec<String>,
    pub platforms: Vec<DebugImageReport>,
}

/// One platform's debug image: its digest, the layer it adds, the package it came from.
#[derive(Clone, Debug, Serialize)]
pub struct DebugImageReport {
    pub digest: String,
    pub platform: String,
    pub layer: LayerRecord,
    pub package: String,
    pub version: String,
    pub sha256: String,
    /// Where busybox is (`/busybox/busybox`) and how many applet links are beside it.
    pub path: String,
    pub applets: usize,
}
