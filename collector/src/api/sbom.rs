//! `GET /api/v1/cis/{id}/sbom`: a computer's installed software as a CycloneDX 1.5 JSON BOM
//! (`application/vnd.cyclonedx+json; version=1.5`).
//!
//! The document: `bomFormat` `CycloneDX`, `specVersion` `1.5`, a random `urn:uuid:` serial
//! number per answer, `version` 1; `metadata` with the time of the answer, the collector as the
//! tool (`tools.components`) and the computer as a `device` component (its CI name; bom-ref
//! `census-ci-<id>`); one component per installed package: `library` when its name starts
//! with `lib`, `application` otherwise, with its name, version, a package URL where the
//! source has a purl type (below), `publisher` and `supplier` from the package's vendor when
//! the agent reported one, the source and architecture as `census:` properties, and the
//! bom-ref `census-software-<catalog id>`, the same in every BOM this collector makes.
//!
//! Package URLs (purl spec: type, namespace, name, version, qualifiers sorted by key, every
//! character but `A-Z a-z 0-9 . - _ ~ :` percent-encoded as UTF-8):
//! - `dpkg`: `pkg:deb/<distro>/<name>@<version>?arch=<arch>`, the epoch kept in the version
//!   (`pkg:deb/debian/attr@1:2.4.47-2%2Bb1?arch=amd64`);
//! - `rpm`: `pkg:rpm/<distro>/<name>@<version-release>?arch=<arch>&epoch=<epoch>`, the epoch
//!   moved from the version to its qualifier;
//! - `apk`: `pkg:apk/<distro>/<name>@<version>?arch=<arch>`, the distro `alpine` when the
//!   computer's OS is not known.
//!
//! `<distro>` is the os-release `ID` of the computer's `os_name` attribute (the os-release
//! `NAME`): a table for the names whose first word is not their ID (`Red Hat Enterprise Linux`
//! is `rhel`, `Linux Mint` is `linuxmint`, ...), else the first word, lowercased
//! (`Debian GNU/Linux` is `debian`). A dpkg or rpm package of a computer whose OS is not known
//! gets no purl (both types require a namespace), and neither does a package of another
//! source (Homebrew, Windows, a hand-written import).
//!
//! A CI that is not a computer answers `409 conflict`: it exists, but has no installed
//! software to describe. An unknown CI answers `404 not_found`.

use axum::extract::rejection::PathRejection;

use super::cis::ci_id;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use census_common::{ErrorBody, ErrorCode};
use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::{ApiError, AppState, query_params, rfc3339_utc};
use crate::store::{CiInventory, InstalledSoftware};

/// The media type of the answer.
pub const CYCLONEDX_JSON: &str = "application/vnd.cyclonedx+json; version=1.5";

/// A CycloneDX 1.5 BOM, the fields this collector fills; the whole format is
/// <https://cyclonedx.org/docs/1.5/json/>.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = CycloneDxBom)]
pub struct Bom {
    /// `CycloneDX`.
    pub bom_format: &'static str,
    /// `1.5`.
    pub spec_version: &'static str,
    /// `urn:uuid:` and a random UUID, new in every answer.
    pub serial_number: String,
    /// 1.
    pub version: u32,
    pub metadata: Metadata,
    pub components: Vec<Component>,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = SbomMetadata)]
pub struct Metadata {
    /// When the BOM was made.
    #[serde(with = "rfc3339_utc")]
    #[schema(value_type = String, format = DateTime)]
    pub timestamp: OffsetDateTime,
    /// `census-collector` and its version.
    pub tools: Tools,
    /// The computer, a `device`.
    pub component: Component,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = SbomTools)]
pub struct Tools {
    pub components: Vec<Component>,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = SbomComponent)]
pub struct Component {
    /// `device` (the computer), `application` or `library`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(rename = "bom-ref", skip_serializing_if = "Option::is_none")]
    pub bom_ref: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub supplier: Option<Organization>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publisher: Option<String>,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purl: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub properties: Vec<Property>,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = SbomOrganization)]
pub struct Organization {
    pub name: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = SbomProperty)]
pub struct Property {
    pub name: &'static str,
    pub value: String,
}

/// The BOM of a computer's inventory, made at `now` with serial number `serial`.
pub fn bom(inventory: &CiInventory, now: OffsetDateTime, serial: uuid::Uuid) -> Bom {
    let distro = inventory.os_name.as_deref().and_then(distro_id);
    let mut device_properties = vec![Property {
        name: "census:ci_id",
        value: inventory.ci_id.to_string(),
    }];
    for (name, value) in [
        ("census:hostname", &inventory.hostname),
        ("census:os_name", &inventory.os_name),
        ("census:os_version", &inventory.os_version),
    ] {
        if let Some(value) = value {
            device_properties.push(Property {
                name,
                value: value.clone(),
            });
        }
    }
    let components = inventory
        .packages
        .iter()
        .map(|(id, package)| {
            let mut properties = vec![Property {
                name: "census:source",
                value: package.source.clone(),
            }];
            if let Some(arch) = &package.arch {
                properties.push(Property {
                    name: "census:arch",
                    value: arch.clone(),
                });
            }
            Component {
                kind: if package.name.starts_with("lib") {
                    "library"
                } else {
                    "application"
                },
                bom_ref: Some(format!("census-software-{id}")),
                supplier: package.vendor.clone().map(|name| Organization { name }),
                publisher: package.vendor.clone(),
                name: package.name.clone(),
                version: package.version.clone(),
                purl: package_purl(distro.as_deref(), package),
                properties,
            }
        })
        .collect();
    Bom {
        bom_format: "CycloneDX",
        spec_version: "1.5",
        serial_number: format!("urn:uuid:{}", serial.hyphenated()),
        version: 1,
        metadata: Metadata {
            timestamp: now,
            tools: Tools {
                components: vec![Component {
                    kind: "application",
                    bom_ref: None,
                    supplier: None,
                    publisher: None,
                    name: "census-collector".to_owned(),
                    version: Some(env!("CARGO_PKG_VERSION").to_owned()),
                    purl: None,
                    properties: Vec::new(),
                }],
            },
            component: Component {
                kind: "device",
                bom_ref: Some(format!("census-ci-{}", inventory.ci_id)),
                supplier: None,
                publisher: None,
                name: inventory.name.clone(),
                version: None,
                purl: None,
                properties: device_properties,
            },
        },
        components,
    }
}

/// os-release `NAME`s whose `ID` is not their first word, lowercased.
const DISTRO_IDS: &[(&str, &str)] = &[
    ("Red Hat Enterprise Linux", "rhel"),
    ("Linux Mint", "linuxmint"),
    ("Pop!_OS", "pop"),
    ("Oracle Linux", "ol"),
    ("Amazon Linux", "amzn"),
    ("openSUSE Leap", "opensuse-leap"),
    ("openSUSE Tumbleweed", "opensuse-tumbleweed"),
    ("SUSE Linux Enterprise", "sles"),
    ("SLES", "sles"),
    ("Elementary OS", "elementary"),
];

/// The os-release `ID` of a distribution from its `NAME`; `None` when no ID can be told.
pub fn distro_id(os_name: &str) -> Option<String> {
    let os_name = os_name.trim();
    if let Some((_, id)) = DISTRO_IDS
        .iter()
        .find(|(name, _)| os_name.to_lowercase().starts_with(&name.to_lowercase()))
    {
        return Some((*id).to_owned());
    }
    let first = os_name.split_whitespace().next()?.to_lowercase();
    first
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_'))
        .then_some(first)
}

/// The package URL of a package of a computer running `distro`, if its source has a purl type.
pub fn package_purl(distro: Option<&str>, package: &InstalledSoftware) -> Option<String> {
    let arch = package.arch.as_deref();
    match package.source.as_str() {
        "dpkg" => Some(purl(
            "deb",
            Some(distro?),
            &package.name.to_lowercase(),
            package.version.as_deref(),
            &[("arch", arch)],
        )),
        "rpm" => {
            let (epoch, version) = match package.version.as_deref().map(|v| v.split_once(':')) {
                Some(Some((epoch, rest)))
                    if !epoch.is_empty() && epoch.bytes().all(|c| c.is_ascii_digit()) =>
                {
                    (Some(epoch), Some(rest))
                }
                _ => (None, package.version.as_deref()),
            };
            Some(purl(
                "rpm",
                Some(distro?),
                &package.name,
                version,
                &[("arch", arch), ("epoch", epoch)],
            ))
        }
        "apk" => Some(purl(
            "apk",
            Some(distro.unwrap_or("alpine")),
            &package.name.to_lowercase(),
            package.version.as_deref(),
            &[("arch", arch)],
        )),
        _ => None,
    }
}

/// A canonical package URL: `pkg:type/namespace/name@version?qualifiers`, the qualifiers
/// sorted by key, those without a value (or an empty one) left out.
pub fn purl(
    kind: &str,
    namespace: Option<&str>,
    name: &str,
    version: Option<&str>,
    qualifiers: &[(&str, Option<&str>)],
) -> String {
    let mut text = format!("pkg:{}/", kind.to_lowercase());
    if let Some(namespace) = namespace {
        for segment in namespace.split('/').filter(|s| !s.is_empty()) {
            text.push_str(&percent_encode(segment));
            text.push('/');
        }
    }
    text.push_str(&percent_encode(name));
    if let Some(version) = version.filter(|v| !v.is_empty()) {
        text.push('@');
        text.push_str(&percent_encode(version));
    }
    let mut present: Vec<(&str, &str)> = qualifiers
        .iter()
        .filter_map(|(key, value)| Some((*key, value.filter(|v| !v.is_empty())?)))
        .collect();
    present.sort_unstable();
    for (i, (key, value)) in present.iter().enumerate() {
        text.push(if i == 0 { '?' } else { '&' });
        text.push_str(key);
        text.push('=');
        text.push_str(&percent_encode(value));
    }
    text
}

/// Percent-encodes every UTF-8 byte but the purl spec's unencoded characters: ASCII letters
/// and digits, `.`, `-`, `_`, `~` and `:`.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'-' | b'_' | b'~' | b':') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A computer's installed software as a CycloneDX 1.5 SBOM.
#[utoipa::path(
    get,
    path = "/api/v1/cis/{id}/sbom",
    operation_id = "get_ci_sbom",
    tag = "cis",
    params(("id" = i64, Path, minimum = 1, description = "The computer's CI id.")),
    responses(
        (status = 200, description = "A CycloneDX 1.5 JSON BOM (see \
            https://cyclonedx.org/docs/1.5/json/): the computer as `metadata.component` (a \
            `device`), one `library` or `application` component per installed package with \
            its name, version and package URL (`pkg:deb/...`, `pkg:rpm/...`, `pkg:apk/...`).",
            body = Bom,
            content_type = "application/vnd.cyclonedx+json; version=1.5"),
        (status = 400, body = ErrorBody, description = "`bad_request`: the id is not a positive \
            integer; `invalid_filter`: a query parameter (this route takes none)."),
        (status = 404, body = ErrorBody, description = "`not_found`: no CI has this id."),
        (status = 409, body = ErrorBody, description = "`conflict`: the CI is not a computer \
            (a filesystem, a business service, ...), so it has no installed software."),
        (status = 500, body = ErrorBody, description = "`internal`."),
        (status = 503, body = ErrorBody, description = "`unavailable`: shutting down."),
    ),
    security(("admin_token" = [])),
)]
pub async fn get(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
) -> Result<Response, ApiError> {
    let id = ci_id(path)?;
    query_params(&uri, &[])?;
    let inventory = state
        .store
        .ci_inventory(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("there is no CI with id {id}")))?;
    if inventory.class != "computer" {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::Conflict,
            format!(
                "CI {id} is a {}, not a computer: only a computer has installed software to \
                 put in an SBOM",
                inventory.class
            ),
        ));
    }
    let document = bom(&inventory, state.clock.now(), uuid::Uuid::new_v4());
    let body = serde_json::to_vec(&document).map_err(|e| {
        tracing::error!(error = %e, "an SBOM did not serialise");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            "the SBOM could not be written",
        )
    })?;
    Ok(([(header::CONTENT_TYPE, CYCLONEDX_JSON)], body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The purl spec's own build examples for the types this module writes
    /// (`tests/types/{deb,rpm,apk}-test.json` and a percent-encoding case of
    /// `tests/spec/specification-test.json` in package-url/purl-spec).
    #[test]
    fn purls_match_the_purl_spec_examples() {
        type Case<'a> = (
            &'a str,
            Option<&'a str>,
            &'a str,
            &'a str,
            &'a [(&'a str, Option<&'a str>)],
            &'a str,
        );
        let cases: &[Case] = &[
            (
                "deb",
                Some("debian"),
                "curl",
                "7.50.3-1",
                &[("arch", Some("i386")), ("distro", Some("jessie"))],
                "pkg:deb/debian/curl@7.50.3-1?arch=i386&distro=jessie",
            ),
            (
                "deb",
                Some("ubuntu"),
                "dpkg",
                "1.19.0.4",
                &[("arch", Some("amd64"))],
                "pkg:deb/ubuntu/dpkg@1.19.0.4?arch=amd64",
            ),
            (
                "deb",
                Some("debian"),
                "attr",
                "1:2.4.47-2",
                &[("arch", Some("source"))],
                "pkg:deb/debian/attr@1:2.4.47-2?arch=source",
            ),
            (
                "deb",
                Some("debian"),
                "attr",
                "1:2.4.47-2+b1",
                &[("arch", Some("amd64"))],
                "pkg:deb/debian/attr@1:2.4.47-2%2Bb1?arch=amd64",
            ),
            (
                "rpm",
                Some("fedora"),
                "curl",
                "7.50.3-1.fc25",
                &[("distro", Some("fedora-25")), ("arch", Some("i386"))],
                "pkg:rpm/fedora/curl@7.50.3-1.fc25?arch=i386&distro=fedora-25",
            ),
            (
                "rpm",
                None,
                "centerim",
                "4.22.10-1.el6",
                &[
                    ("arch", Some("i686")),
                    ("epoch", Some("1")),
                    ("distro", Some("fedora-25")),
                ],
                "pkg:rpm/centerim@4.22.10-1.el6?arch=i686&distro=fedora-25&epoch=1",
            ),
            (
                "apk",
                Some("alpine"),
                "curl",
                "7.83.0-r0",
                &[("arch", Some("x86"))],
                "pkg:apk/alpine/curl@7.83.0-r0?arch=x86",
            ),
            (
                "apk",
                Some("alpine"),
                "libcrypto3",
                "3.5.5-r0",
                &[
                    ("upstream", Some("openssl")),
                    ("distro", Some("alpine-edge")),
                    ("arch", Some("x86_64")),
                ],
                "pkg:apk/alpine/libcrypto3@3.5.5-r0?arch=x86_64&distro=alpine-edge&upstream=openssl",
            ),
            (
                "generic",
                None,
                "openssl",
                "1.1.10g",
                &[(
                    "checksum",
                    Some("sha1:ad9503c3e994a4f,sha256:41bf9088b3a1e6c1ef1d"),
                )],
                "pkg:generic/openssl@1.1.10g?checksum=sha1:ad9503c3e994a4f%2Csha256:41bf9088b3a1e6c1ef1d",
            ),
        ];
        for (kind, namespace, name, version, qualifiers, want) in cases {
            assert_eq!(
                purl(kind, *namespace, name, Some(version), qualifiers),
                *want
            );
        }
        // Spaces, `@`, `/`, `?`, `#` and non-ASCII are encoded; an empty qualifier is left out.
        assert_eq!(
            purl(
                "generic",
                Some("a b"),
                "x/y@z",
                Some("1?#é"),
                &[("k", Some("")), ("arch", None)]
            ),
            "pkg:generic/a%20b/x%2Fy%40z@1%3F%23%C3%A9"
        );
    }

    fn package(name: &str, version: Option<&str>, source: &str) -> InstalledSoftware {
        InstalledSoftware {
            name: name.into(),
            version: version.map(Into::into),
            arch: Some("x86_64".into()),
            vendor: None,
            source: source.into(),
        }
    }

    #[test]
    fn package_purls_by_source() {
        let cases = [
            (
                Some("debian"),
                package("openssl", Some("1:1.1.1w-0+deb11u1"), "dpkg"),
                Some("pkg:deb/debian/openssl@1:1.1.1w-0%2Bdeb11u1?arch=x86_64"),
            ),
            (
                Some("rhel"),
                package("openssl-libs", Some("1:3.0.7-28.el9_4"), "rpm"),
                Some("pkg:rpm/rhel/openssl-libs@3.0.7-28.el9_4?arch=x86_64&epoch=1"),
            ),
            (
                Some("fedora"),
                package("bash", Some("5.2.26-3.fc40"), "rpm"),
                Some("pkg:rpm/fedora/bash@5.2.26-3.fc40?arch=x86_64"),
            ),
            (
                None,
                package("musl", Some("1.2.5-r0"), "apk"),
                Some("pkg:apk/alpine/musl@1.2.5-r0?arch=x86_64"),
            ),
            (
                Some("debian"),
                package("tzdata", None, "dpkg"),
                Some("pkg:deb/debian/tzdata?arch=x86_64"),
            ),
            // deb and rpm need a namespace: no distro, no purl.
            (None, package("bash", Some("5.2"), "dpkg"), None),
            (None, package("bash", Some("5.2"), "rpm"), None),
            (
                Some("debian"),
                package("Firefox", Some("128"), "brew"),
                None,
            ),
        ];
        for (distro, package, want) in cases {
            assert_eq!(
                package_purl(distro, &package).as_deref(),
                want,
                "{package:?}"
            );
        }
    }

    #[test]
    fn distro_ids_from_os_release_names() {
        for (name, want) in [
            ("Debian GNU/Linux", Some("debian")),
            ("Ubuntu", Some("ubuntu")),
            ("Fedora Linux", Some("fedora")),
            ("Red Hat Enterprise Linux", Some("rhel")),
            ("Rocky Linux", Some("rocky")),
            ("AlmaLinux", Some("almalinux")),
            ("CentOS Stream", Some("centos")),
            ("Alpine Linux", Some("alpine")),
            ("Linux Mint", Some("linuxmint")),
            ("Amazon Linux", Some("amzn")),
            ("openSUSE Leap", Some("opensuse-leap")),
            ("Oracle Linux Server", Some("ol")),
            ("", None),
            ("Ünïcode OS", None),
        ] {
            assert_eq!(distro_id(name).as_deref(), want, "{name}");
        }
    }
}
