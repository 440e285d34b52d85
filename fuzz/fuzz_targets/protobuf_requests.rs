//! The first byte picks a method; the rest is decoded with prost as that
//! method's request (the push stream's `PushEvent` for `Push`). Never panics,
//! and a decoded message survives encode → decode unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use quicprochat_proto::{decode_message, v1, Method};

fn check<M: Message + Default + PartialEq + std::fmt::Debug>(body: &[u8]) {
    let Ok(message) = decode_message::<M>(body) else {
        return;
    };
    let again: M = decode_message(&message.encode_to_vec()).expect("re-encoded message decodes");
    assert_eq!(again, message);
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let method = Method::ALL[usize::from(selector) % Method::ALL.len()];
    match method {
        Method::Challenge => check::<v1::ChallengeRequest>(body),
        Method::Register => check::<v1::RegisterRequest>(body),
        Method::Login => check::<v1::LoginRequest>(body),
        Method::ResolveUser => check::<v1::ResolveUserRequest>(body),
        Method::Ping => check::<v1::PingRequest>(body),
        Method::UploadKeyPackages => check::<v1::UploadKeyPackagesRequest>(body),
        Method::FetchKeyPackage => check::<v1::FetchKeyPackageRequest>(body),
        Method::KeyPackageStock => check::<v1::KeyPackageStockRequest>(body),
        Method::CreateGroup => check::<v1::CreateGroupRequest>(body),
        Method::SubmitCommit => check::<v1::SubmitCommitRequest>(body),
        Method::LeaveGroup => check::<v1::LeaveGroupRequest>(body),
        Method::SendMessage => check::<v1::SendMessageRequest>(body),
        Method::SendMessages => {
            // The wire count the server checks first agrees with the decode.
            let counted = quicprochat_proto::shape::check_send_messages_shape(body);
            if let (Ok(counted), Ok(request)) = (counted, decode_message::<v1::SendMessagesRequest>(body)) {
                assert_eq!(counted, request.messages.len());
            }
            check::<v1::SendMessagesRequest>(body);
            check::<v1::SendMessagesResponse>(body);
        }
        Method::GroupMembers => check::<v1::GroupMembersRequest>(body),
        Method::Fetch => check::<v1::FetchRequest>(body),
        Method::Ack => check::<v1::AckRequest>(body),
        Method::Subscribe => check::<v1::SubscribeRequest>(body),
        Method::Push => check::<v1::PushEvent>(body),
        Method::AddDevice => check::<v1::AddDeviceRequest>(body),
        Method::ListDevices => check::<v1::ListDevicesRequest>(body),
        Method::RemoveDevice => check::<v1::RemoveDeviceRequest>(body),
        Method::LinkStart => check::<v1::LinkStartRequest>(body),
        Method::LinkFetch => check::<v1::LinkFetchRequest>(body),
        Method::LinkApprove => check::<v1::LinkApproveRequest>(body),
        Method::LinkWait => check::<v1::LinkWaitRequest>(body),
        Method::FedHello => {
            check::<v1::FedHelloRequest>(body);
            check::<v1::FedHelloResponse>(body);
        }
        Method::FedSubmitCommit => {
            check::<v1::FedSubmitCommitRequest>(body);
            check::<v1::FedSubmitCommitResponse>(body);
        }
        Method::FedLeaveGroup => {
            check::<v1::FedLeaveGroupRequest>(body);
            check::<v1::FedLeaveGroupResponse>(body);
        }
        Method::FedClaimKeyPackage => {
            check::<v1::FedClaimKeyPackageRequest>(body);
            check::<v1::FedClaimKeyPackageResponse>(body);
        }
        Method::FedResolveUser => {
            check::<v1::FedResolveUserRequest>(body);
            check::<v1::FedResolveUserResponse>(body);
        }
        Method::FedPush => {
            check::<v1::FedPushRequest>(body);
            check::<v1::FedPushResponse>(body);
        }
    }
});
