//! Names of services and hosts, and versions.
//!
//! Services and hosts: `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`.
//! Versions: `[A-Za-z0-9][A-Za-z0-9._+-]{0,63}`.
//! Names become path segments, so anything else is refused before anything is written.

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("{kind} must not be empty")]
    Empty { kind: &'static str },
    /// The name is longer than 64 characters.
    #[error("{kind} {value:?} is {len} characters long; at most 64 are allowed")]
    TooLong { kind: &'static str, value: String, len: usize },
    /// The first character is not an ASCII letter or digit.
    #[error("{kind} {value:?} must start with an ASCII letter or digit")]
    BadStart { kind: &'static str, value: String },
    /// A character outside the allowed set.
    #[error("{kind} {value:?} contains {ch:?}; allowed are ASCII letters, digits and {allowed}")]
    BadChar { kind: &'static str, value: String, ch: char, allowed: &'static str },
}

const MAX_LEN: usize = 64;

fn validate(kind: &'static str, value: &str, extra: &'static str) -> Result<(), NameError> {
    let Some(first) = value.chars().next() else {
        return Err(NameError::Empty { kind });
    };
    let len = value.chars().count();
    if len > MAX_LEN {
        return Err(NameError::TooLong { kind, value: value.into(), len });
    }
    if !first.is_ascii_alphanumeric() {
        return Err(NameError::BadStart { kind, value: value.into() });
    }
    if let Some(ch) = value.chars().find(|c| !c.is_ascii_alphanumeric() && !extra.contains(*c)) {
        let allowed = if extra.contains('+') { "'.', '_', '+', '-'" } else { "'.', '_', '-'" };
        return Err(NameError::BadChar { kind, value: value.into(), ch, allowed });
    }
    Ok(())
}

/// The built-in service every sidecar runs: the sidecar itself (SPEC, "Upgrading the
/// sidecar itself"). No `[[service]]` table may use the name.
pub const SIDECAR_SERVICE: &str = "baton-sidecar";

/// Checks a service name.
pub fn validate_service(name: &str) -> Result<(), NameError> {
    validate("service name", name, "._-")
}

/// Checks a host id.
pub fn validate_host(id: &str) -> Result<(), NameError> {
    validate("host id", id, "._-")
}

/// Checks a version.
pub fn validate_version(version: &str) -> Result<(), NameError> {
    validate("version", version, "._+-")
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    #[test_case("api" => true; "plain")]
    #[test_case("web-01" => true; "dash")]
    #[test_case("a.b_c-d" => true; "punctuation")]
    #[test_case("0abc" => true; "leading digit")]
    #[test_case("" => false; "empty")]
    #[test_case("." => false; "dot")]
    #[test_case(".." => false; "dot dot")]
    #[test_case("/" => false; "slash")]
    #[test_case("a/b" => false; "inner slash")]
    #[test_case("-a" => false; "leading dash")]
    #[test_case("_a" => false; "leading underscore")]
    #[test_case("a b" => false; "space")]
    #[test_case("héllo" => false; "unicode")]
    #[test_case("日本" => false; "unicode start")]
    #[test_case("a+b" => false; "plus in service")]
    #[test_case(&"a".repeat(64) => true; "64 chars")]
    #[test_case(&"a".repeat(65) => false; "65 chars")]
    fn service_names(name: &str) -> bool {
        assert_eq!(validate_service(name).is_ok(), validate_host(name).is_ok());
        validate_service(name).is_ok()
    }

    #[test_case("1.4.0" => true; "semver")]
    #[test_case("1.4.0+build.7" => true; "build metadata")]
    #[test_case("2026-11-22_rc1" => true; "date")]
    #[test_case("" => false; "empty")]
    #[test_case("." => false; "dot")]
    #[test_case(".." => false; "dot dot")]
    #[test_case("+1" => false; "leading plus")]
    #[test_case("1/2" => false; "slash")]
    #[test_case("v1 " => false; "trailing space")]
    #[test_case("v\u{e9}" => false; "unicode")]
    #[test_case(&"1".repeat(64) => true; "64 chars")]
    #[test_case(&"1".repeat(65) => false; "65 chars")]
    fn versions(v: &str) -> bool {
        validate_version(v).is_ok()
    }

    #[test]
    fn messages_name_the_problem() {
        let err = validate_host("web/01").unwrap_err();
        assert_eq!(
            err.to_string(),
            "host id \"web/01\" contains '/'; allowed are ASCII letters, digits and '.', '_', '-'"
        );
        assert_eq!(validate_service("").unwrap_err(), NameError::Empty { kind: "service name" });
        assert!(validate_version(&"9".repeat(65)).unwrap_err().to_string().contains("65 characters"));
    }
}
