//! The S3 provider profiles (`micelio_storage_core::s3::provider`), for the
//! Elixir side: the default region, the choice of browser upload, the
//! doctor's advice. Pure computation: it runs inline.

use micelio_storage_core::s3::provider::Provider;

/// A profile as Elixir receives it: a map with these keys.
#[derive(rustler::NifMap)]
struct ProfileTerm {
    provider: String,
    checksum_headers: bool,
    delete_batch: usize,
    delete_objects: bool,
    post_uploads: bool,
    equal_parts: bool,
    copy_if_absent: String,
    default_region: String,
    virtual_hosts: bool,
}

/// The profile of `provider` (a name), else of the endpoint's host.
#[rustler::nif]
fn s3_profile(
    provider: Option<String>,
    endpoint: Option<String>,
) -> Result<ProfileTerm, rustler::Error> {
    let p = Provider::of(provider.as_deref(), endpoint.as_deref())
        .map_err(|e| rustler::Error::Term(Box::new(e.to_string())))?;
    let s = p.switches();
    Ok(ProfileTerm {
        provider: format!("{p:?}").to_ascii_lowercase(),
        checksum_headers: s.checksum_headers,
        delete_batch: s.delete_batch,
        delete_objects: s.delete_objects,
        post_uploads: s.post_uploads,
        equal_parts: s.equal_parts,
        copy_if_absent: s.copy_if_absent.name().to_string(),
        default_region: s.default_region.to_string(),
        virtual_hosts: s.virtual_hosts,
    })
}
