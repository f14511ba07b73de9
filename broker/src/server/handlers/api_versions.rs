//! ApiVersions (key 18): exactly the APIs and versions in `SUPPORTED_APIS`. The v3 response
//! carries no feature tagged fields (librdkafka 2.0.2 fails on brokers whose v3 answer has them).

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};
use strata_protocol::api::SUPPORTED_APIS;

use super::{ready, Pending};
use crate::error::BrokerError;

fn supported() -> Vec<ApiVersion> {
    SUPPORTED_APIS
        .iter()
        .map(|a| {
            ApiVersion::default()
                .with_api_key(a.key as i16)
                .with_min_version(a.min_version)
                .with_max_version(a.max_version)
        })
        .collect()
}

/// Kafka's rule for client software names and versions (KIP-511).
fn valid_software_field(s: &str) -> bool {
    let b = s.as_bytes();
    let inner_ok = |c: &u8| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'.';
    match (b.first(), b.last()) {
        (Some(f), Some(l)) => {
            f.is_ascii_alphanumeric() && l.is_ascii_alphanumeric() && b.iter().all(inner_ok)
        }
        _ => false,
    }
}

pub fn handle(request: &ApiVersionsRequest, version: i16) -> ApiVersionsResponse {
    let response = ApiVersionsResponse::default()
        .with_api_keys(supported())
        .with_finalized_features_epoch(-1);
    if version >= 3
        && !(valid_software_field(&request.client_software_name)
            && valid_software_field(&request.client_software_version))
    {
        // v3 has no error message: the code alone tells the client.
        let e =
            BrokerError::InvalidRequest("client software name or version breaks KIP-511".into());
        return response.with_error_code(e.code());
    }
    response
}

/// The answer to an ApiVersions request at a version we do not know: v0, UNSUPPORTED_VERSION,
/// with our ranges so the client can pick one.
pub fn unsupported_version(correlation_id: i32) -> Pending {
    let response = ApiVersionsResponse::default()
        .with_error_code(BrokerError::UnsupportedVersion.code())
        .with_api_keys(supported());
    ready(correlation_id, 0, &response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn software_names_follow_kip_511() {
        for ok in ["librdkafka", "2.0.2", "kafka-python", "a"] {
            assert!(valid_software_field(ok), "{ok}");
        }
        for bad in ["", "-x", "x-", "a b", "x_y"] {
            assert!(!valid_software_field(bad), "{bad}");
        }
    }
}
