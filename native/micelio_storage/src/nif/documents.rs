//! The maps bucket and browser-upload requests carry across the boundary:
//! CORS rules, POST policy conditions and signed POST policies, each a
//! rustler `NifMap` converted to or from its engine type.

use micelio_storage_core::bucket::CorsRule;
use micelio_storage_core::store::{PostPolicyOptions, PresignedPost};

/// A CORS rule as Elixir sends and receives it: a map with these keys.
#[derive(rustler::NifMap)]
pub(super) struct CorsRuleTerm {
    allowed_origins: Vec<String>,
    allowed_methods: Vec<String>,
    allowed_headers: Vec<String>,
    expose_headers: Vec<String>,
    max_age_seconds: Option<u64>,
}

impl From<CorsRuleTerm> for CorsRule {
    fn from(t: CorsRuleTerm) -> Self {
        CorsRule {
            allowed_origins: t.allowed_origins,
            allowed_methods: t.allowed_methods,
            allowed_headers: t.allowed_headers,
            expose_headers: t.expose_headers,
            max_age_seconds: t.max_age_seconds,
        }
    }
}

impl From<CorsRule> for CorsRuleTerm {
    fn from(r: CorsRule) -> Self {
        CorsRuleTerm {
            allowed_origins: r.allowed_origins,
            allowed_methods: r.allowed_methods,
            allowed_headers: r.allowed_headers,
            expose_headers: r.expose_headers,
            max_age_seconds: r.max_age_seconds,
        }
    }
}

/// The conditions of a POST policy as Elixir sends them: a map whose keys
/// are these fields (rustler decodes it field by field).
#[derive(rustler::NifMap)]
pub(super) struct PostPolicyTerm {
    key_starts_with: bool,
    content_length_range: Option<(u64, u64)>,
    content_type: Option<String>,
    content_type_starts_with: Option<String>,
    success_action_status: Option<u16>,
    metadata: Vec<(String, String)>,
    cache_control: Option<String>,
    expires_in: u64,
    unix_time: Option<i64>,
}

impl From<PostPolicyTerm> for PostPolicyOptions {
    fn from(t: PostPolicyTerm) -> Self {
        PostPolicyOptions {
            key_starts_with: t.key_starts_with,
            content_length_range: t.content_length_range,
            content_type: t.content_type,
            content_type_starts_with: t.content_type_starts_with,
            success_action_status: t.success_action_status,
            metadata: t.metadata,
            cache_control: t.cache_control,
            expires_in: t.expires_in,
            unix_time: t.unix_time,
        }
    }
}

/// A signed POST policy as Elixir receives it: `%{url: url, fields: %{...}}`.
#[derive(rustler::NifMap)]
pub(super) struct PresignedPostTerm {
    url: String,
    fields: std::collections::HashMap<String, String>,
}

impl From<PresignedPost> for PresignedPostTerm {
    fn from(post: PresignedPost) -> Self {
        PresignedPostTerm {
            url: post.url,
            fields: post.fields.into_iter().collect(),
        }
    }
}
