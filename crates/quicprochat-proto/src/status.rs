//! RPC status codes carried in every response frame header.

use crate::v1::StatusCode;

/// Outcome of one RPC. `Ok` is success; every other code comes with an
/// `ErrorBody` explaining it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Status {
    /// Success.
    Ok = 0,
    /// The request is malformed or violates a rule; do not retry unchanged.
    InvalidArgument = 1,
    /// No logged-in session, or a bad login proof.
    Unauthenticated = 2,
    /// Logged in, but not allowed (e.g. posting to a group one is not in).
    PermissionDenied = 3,
    /// The named user, group or key package does not exist.
    NotFound = 4,
    /// The username or group already exists.
    AlreadyExists = 5,
    /// A limit was hit; retry after the hinted delay.
    ResourceExhausted = 6,
    /// A commit was made for an epoch that is no longer current; catch up, then retry.
    StaleEpoch = 7,
    /// The server's deadline for this RPC passed.
    DeadlineExceeded = 8,
    /// The server cannot take the request now (shutting down); retry later.
    Unavailable = 9,
    /// A server bug or storage failure.
    Internal = 10,
}

impl Status {
    /// Maps a wire byte to a status; `None` for unknown codes.
    pub fn from_u8(value: u8) -> Option<Status> {
        StatusCode::try_from(i32::from(value)).ok().map(Status::from)
    }

    /// Whether a client may retry the same request later and expect success.
    pub fn is_retryable(self) -> bool {
        matches!(self, Status::ResourceExhausted | Status::DeadlineExceeded | Status::Unavailable | Status::StaleEpoch)
    }

    /// Stable upper-case name, as in the design document.
    pub fn name(self) -> &'static str {
        StatusCode::from(self).as_str_name()
    }
}

impl From<StatusCode> for Status {
    fn from(code: StatusCode) -> Self {
        match code {
            StatusCode::Ok => Status::Ok,
            StatusCode::InvalidArgument => Status::InvalidArgument,
            StatusCode::Unauthenticated => Status::Unauthenticated,
            StatusCode::PermissionDenied => Status::PermissionDenied,
            StatusCode::NotFound => Status::NotFound,
            StatusCode::AlreadyExists => Status::AlreadyExists,
            StatusCode::ResourceExhausted => Status::ResourceExhausted,
            StatusCode::StaleEpoch => Status::StaleEpoch,
            StatusCode::DeadlineExceeded => Status::DeadlineExceeded,
            StatusCode::Unavailable => Status::Unavailable,
            StatusCode::Internal => Status::Internal,
        }
    }
}

impl From<Status> for StatusCode {
    fn from(status: Status) -> Self {
        match status {
            Status::Ok => StatusCode::Ok,
            Status::InvalidArgument => StatusCode::InvalidArgument,
            Status::Unauthenticated => StatusCode::Unauthenticated,
            Status::PermissionDenied => StatusCode::PermissionDenied,
            Status::NotFound => StatusCode::NotFound,
            Status::AlreadyExists => StatusCode::AlreadyExists,
            Status::ResourceExhausted => StatusCode::ResourceExhausted,
            Status::StaleEpoch => StatusCode::StaleEpoch,
            Status::DeadlineExceeded => StatusCode::DeadlineExceeded,
            Status::Unavailable => StatusCode::Unavailable,
            Status::Internal => StatusCode::Internal,
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips() {
        for byte in 0..=10u8 {
            let status = Status::from_u8(byte).expect("codes 0..=10 are defined");
            assert_eq!(status as u8, byte);
        }
        assert_eq!(Status::from_u8(11), None);
        assert_eq!(Status::StaleEpoch.name(), "STALE_EPOCH");
        assert!(Status::Unavailable.is_retryable());
        assert!(!Status::PermissionDenied.is_retryable());
    }
}
