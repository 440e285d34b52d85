//! RPC method numbers and their per-method frame size limits.
//!
//! Limits are small for most methods and large only where MLS commits,
//! Welcomes or GroupInfos travel (a commit for 1000 members with the
//! post-quantum suite is about 1.2 MB, its Welcome 1.4 MB).

const KIB: u32 = 1024;
const MIB: u32 = 1024 * 1024;

/// Largest frame body any method accepts.
pub const MAX_FRAME_LEN: u32 = 16 * MIB;

macro_rules! methods {
    ($( $(#[$doc:meta])* $name:ident = $num:literal, req $req:expr, resp $resp:expr; )*) => {
        /// An RPC method (or the push event kind), as carried in the frame header.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u16)]
        pub enum Method {
            $( $(#[$doc])* $name = $num, )*
        }

        impl Method {
            /// Every method, in number order.
            pub const ALL: &'static [Method] = &[$(Method::$name,)*];

            /// Maps a wire number to a method; `None` for unknown numbers.
            pub fn from_u16(value: u16) -> Option<Method> {
                match value {
                    $( $num => Some(Method::$name), )*
                    _ => None,
                }
            }

            /// Largest request body accepted for this method.
            pub fn max_request_len(self) -> u32 {
                match self { $( Method::$name => $req, )* }
            }

            /// Largest response body accepted for this method.
            pub fn max_response_len(self) -> u32 {
                match self { $( Method::$name => $resp, )* }
            }

            /// Stable lower-case name, used in logs and metrics.
            pub fn name(self) -> &'static str {
                match self { $( Method::$name => stringify!($name), )* }
            }
        }
    };
}

methods! {
    /// `ChallengeRequest` → `ChallengeResponse`.
    Challenge = 1, req KIB, resp KIB;
    /// `RegisterRequest` → `RegisterResponse`.
    Register = 2, req 4 * KIB, resp KIB;
    /// `LoginRequest` → `LoginResponse`.
    Login = 3, req 4 * KIB, resp KIB;
    /// `ResolveUserRequest` → `ResolveUserResponse`.
    ResolveUser = 4, req KIB, resp 4 * KIB;
    /// `PingRequest` → `PingResponse` (heartbeat; no session needed).
    Ping = 5, req KIB, resp KIB;
    /// `UploadKeyPackagesRequest` → `UploadKeyPackagesResponse`.
    UploadKeyPackages = 10, req 2 * MIB, resp KIB;
    /// `FetchKeyPackageRequest` → `FetchKeyPackageResponse`.
    FetchKeyPackage = 11, req KIB, resp 64 * KIB;
    /// `KeyPackageStockRequest` → `KeyPackageStockResponse`.
    KeyPackageStock = 12, req KIB, resp KIB;
    /// `CreateGroupRequest` → `CreateGroupResponse`.
    CreateGroup = 20, req MAX_FRAME_LEN, resp KIB;
    /// `SubmitCommitRequest` → `SubmitCommitResponse`.
    SubmitCommit = 21, req MAX_FRAME_LEN, resp KIB;
    /// `LeaveGroupRequest` → `LeaveGroupResponse`.
    LeaveGroup = 22, req 256 * KIB, resp KIB;
    /// `SendMessageRequest` → `SendMessageResponse`.
    SendMessage = 23, req MIB, resp KIB;
    /// `GroupMembersRequest` → `GroupMembersResponse`.
    GroupMembers = 24, req KIB, resp MIB;
    /// `SendMessagesRequest` → `SendMessagesResponse`: at most
    /// [`MAX_SEND_MESSAGES`] messages in one body of at most 2 MiB; one
    /// answer per message, each error message at most 512 bytes.
    SendMessages = 25, req 2 * MIB, resp 64 * KIB;
    /// `FetchRequest` → `FetchResponse`.
    Fetch = 30, req KIB, resp MAX_FRAME_LEN;
    /// `AckRequest` → `AckResponse`.
    Ack = 31, req KIB, resp KIB;
    /// `SubscribeRequest` → `SubscribeResponse`.
    Subscribe = 32, req KIB, resp KIB;
    /// A `PushEvent` on the server-opened push stream (no response).
    Push = 40, req MAX_FRAME_LEN, resp 0;
    /// `AddDeviceRequest` → `AddDeviceResponse`.
    AddDevice = 50, req KIB, resp KIB;
    /// `ListDevicesRequest` → `ListDevicesResponse` (the current devices,
    /// at most `devices.max_per_account`, each about 200 bytes).
    ListDevices = 51, req KIB, resp 64 * KIB;
    /// `RemoveDeviceRequest` → `RemoveDeviceResponse`.
    RemoveDevice = 52, req KIB, resp KIB;
    /// `LinkStartRequest` → `LinkStartResponse` (no session; an X-Wing link key is 1216 bytes).
    LinkStart = 53, req 4 * KIB, resp KIB;
    /// `LinkFetchRequest` → `LinkFetchResponse`.
    LinkFetch = 54, req KIB, resp 4 * KIB;
    /// `LinkApproveRequest` → `LinkApproveResponse` (a sealed bundle is at most 16 KiB).
    LinkApprove = 55, req 20 * KIB, resp KIB;
    /// `LinkWaitRequest` → `LinkWaitResponse` (no session).
    LinkWait = 56, req KIB, resp 20 * KIB;
    /// `FedHelloRequest` → `FedHelloResponse` (federation port only).
    FedHello = 100, req KIB, resp KIB;
    /// `FedPushRequest` → `FedPushResponse` (a batch of stream entries, at
    /// most 8 MiB unless one entry alone is larger).
    FedPush = 101, req MAX_FRAME_LEN, resp KIB;
    /// `FedSubmitCommitRequest` → `FedSubmitCommitResponse` (a follower's
    /// user's commit, proxied to the group's hub).
    FedSubmitCommit = 110, req MAX_FRAME_LEN, resp KIB;
    /// `FedLeaveGroupRequest` → `FedLeaveGroupResponse`.
    FedLeaveGroup = 111, req 256 * KIB, resp KIB;
    /// `FedClaimKeyPackageRequest` → `FedClaimKeyPackageResponse` (one
    /// package per device, at most `devices.max_per_account`).
    FedClaimKeyPackage = 120, req KIB, resp MIB;
    /// `FedResolveUserRequest` → `FedResolveUserResponse`.
    FedResolveUser = 121, req KIB, resp KIB;
}

/// Most messages one `SendMessages` request carries.
pub const MAX_SEND_MESSAGES: usize = 64;

/// Method numbers served on the federation port (ALPN `qpc-fed/1`) only.
pub const FEDERATION_METHODS: std::ops::RangeInclusive<u16> = 100..=199;

impl Method {
    /// Whether this is a server-to-server method, served on the
    /// federation port only (and refused on the client port).
    pub fn is_federation(self) -> bool {
        FEDERATION_METHODS.contains(&(self as u16))
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip_and_limits_are_bounded() {
        for method in Method::ALL {
            assert_eq!(Method::from_u16(*method as u16), Some(*method));
            assert!(method.max_request_len() <= MAX_FRAME_LEN);
            assert!(method.max_response_len() <= MAX_FRAME_LEN);
        }
        assert_eq!(Method::from_u16(0), None);
        assert_eq!(Method::from_u16(u16::MAX), None);
        assert!(Method::FedHello.is_federation());
        assert!(!Method::Ping.is_federation() && !Method::SendMessage.is_federation());
    }
}
