//! Catalogue: the federation port and its peers. Connections that must fail
//! the handshake (an unpinned certificate, none at all, the client ALPN, a
//! classical key exchange; and the federation ALPN on the client port),
//! and requests of a pinned peer that speak for another origin or are meant
//! for another server, push events for a group it does not host (another
//! server's, or ours) or a malformed batch, relay, commit or leave for
//! groups it does not host or users of another domain, refusals of
//! messages for groups it does not host or of users not ours, or that are
//! not federation methods.

use std::sync::Arc;

use quicprochat_core::names::group_id_hosted_by;
use quicprochat_proto::v1;
use quicprochat_proto::{Method, Status};
use quicprochat_rpc::tls::generate_server_identity;
use quicprochat_rpc::transport::{client_endpoint, TransportLimits};
use quicprochat_rpc::{PinnedServer, RpcClient};

use super::{Bench, Connection, Outcome};
use crate::federation::{dial, hello, peer};
use crate::harness::{http_get, TestServer, WAIT};

#[tokio::test]
async fn federation_catalogue() {
    quicprochat_rpc::install_crypto_provider();
    let names = vec!["peer".to_owned()];
    let (evil, b, stranger) = (
        generate_server_identity(&names).expect("certificate"),
        generate_server_identity(&names).expect("certificate"),
        generate_server_identity(&names).expect("certificate"),
    );
    let placeholder = std::net::SocketAddr::from(([127, 0, 0, 1], 9));
    let peers = vec![peer("evil.test", placeholder, &evil), peer("b.test", placeholder, &b)];
    let mut bench = Bench::start_with(|config| {
        config.domain = "a.test".to_owned();
        config.federation.listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        config.federation.peers = peers;
        config.metrics_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        // One claim per minute for the peer: the second is past its budget.
        config.rate_limits.key_package_claim_per_peer.burst = 1;
    })
    .await;
    let server = &bench.harness.server;
    let (port, client_port, ours) =
        (server.federation_addr().expect("federation port"), server.local_addr(), server.fingerprint());
    let metrics = server.metrics_addr().expect("metrics");

    bench
        .handshake_case("an unpinned certificate", async { refused(dial(port, &stranger, "a.test", ours).await).await })
        .await;
    bench.handshake_case("no client certificate", async { refused(dial_without_certificate(port).await).await }).await;
    bench
        .handshake_case("qpc/1 on the federation port", async {
            let limits = TransportLimits::default();
            refused(RpcClient::connect(port, PinnedServer::new(Some(ours)), &limits, WAIT).await).await
        })
        .await;
    bench
        .handshake_case("qpc-fed/1 on the client port", async {
            refused(dial(client_port, &b, "a.test", ours).await).await
        })
        .await;
    bench.handshake_case("a classical key exchange", async { refused(dial_classical(port, &b).await).await }).await;
    // The server counts a refused handshake once its side of it ended,
    // which may be just after the client saw it fail.
    let counted = |text: &str| {
        ["unpinned_certificate", "no_certificate", "handshake"].iter().all(|reason| {
            let series = format!("qpc_fed_auth_failures_total{{reason=\"{reason}\"}}");
            text.lines().any(|line| line.starts_with(&series) && !line.ends_with(" 0"))
        })
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, text) = tokio::task::spawn_blocking(move || http_get(metrics, "/metrics")).await.expect("scrape");
        if counted(&text) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "every refused handshake is counted by reason:\n{text}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let impostor = dial(port, &evil, "a.test", ours).await.expect("the pinned peer evil.test connects");
    let denied = Outcome::Status(Status::PermissionDenied);
    bench
        .case("a peer speaking for another origin", &impostor, denied.clone(), Connection::Survives, async {
            Outcome::of(hello(&impostor, "b.test", "a.test").await)
        })
        .await;
    bench
        .case("a request meant for another server", &impostor, denied.clone(), Connection::Survives, async {
            Outcome::of(hello(&impostor, "evil.test", "c.test").await)
        })
        .await;
    let foreign = push_request("evil.test", "a.test", group_id_hosted_by([1; 16], "b.test"), &[1]);
    bench
        .case("events for a group the peer does not host", &impostor, denied.clone(), Connection::Survives, async {
            Outcome::of(impostor.call::<_, v1::FedPushResponse>(Method::FedPush, &foreign).await)
        })
        .await;
    let ours = push_request("evil.test", "a.test", vec![1; 16], &[1]);
    bench
        .case("events for a group of this server", &impostor, denied.clone(), Connection::Survives, async {
            Outcome::of(impostor.call::<_, v1::FedPushResponse>(Method::FedPush, &ours).await)
        })
        .await;
    let spoofed = push_request("b.test", "a.test", group_id_hosted_by([1; 16], "b.test"), &[1]);
    bench
        .case("a push for another origin", &impostor, denied.clone(), Connection::Survives, async {
            Outcome::of(impostor.call::<_, v1::FedPushResponse>(Method::FedPush, &spoofed).await)
        })
        .await;
    let relay = |group_id: Vec<u8>, sender: &str| v1::FedPushRequest {
        origin: "evil.test".into(),
        destination: "a.test".into(),
        instance: 3,
        first_available_seq: 1,
        entries: vec![v1::FedEntry {
            seq: 1,
            accepted_at_ms: 1,
            event: Some(v1::fed_entry::Event::RelaySend(v1::FedRelaySend {
                group_id: group_id.into(),
                sender: sender.to_owned(),
                sender_device: vec![1; 8].into(),
                message_id: b"m1".to_vec().into(),
                epoch: 0,
                payload: b"ciphertext".to_vec().into(),
            })),
        }],
    };
    let not_ours = relay(group_id_hosted_by([1; 16], "b.test"), "mallory@evil.test");
    bench
        .case("a relay for a group this server does not host", &impostor, denied.clone(), Connection::Survives, async {
            Outcome::of(impostor.call::<_, v1::FedPushResponse>(Method::FedPush, &not_ours).await)
        })
        .await;
    let spoofed_sender = relay(group_id_hosted_by([1; 16], "a.test"), "bob@b.test");
    bench
        .case("a relay for a user of another domain", &impostor, denied.clone(), Connection::Survives, async {
            Outcome::of(impostor.call::<_, v1::FedPushResponse>(Method::FedPush, &spoofed_sender).await)
        })
        .await;
    let refusal = |group_id: Vec<u8>, sender: &str| v1::FedPushRequest {
        origin: "evil.test".into(),
        destination: "a.test".into(),
        instance: 3,
        first_available_seq: 1,
        entries: vec![v1::FedEntry {
            seq: 1,
            accepted_at_ms: 1,
            event: Some(v1::fed_entry::Event::SendRefused(v1::FedSendRefused {
                group_id: group_id.into(),
                sender: sender.to_owned(),
                message_id: b"m1".to_vec().into(),
                reason: "not_a_member".into(),
            })),
        }],
    };
    let refused_elsewhere = refusal(group_id_hosted_by([1; 16], "b.test"), "alice@a.test");
    bench
        .case("a refusal for a group the peer does not host", &impostor, denied.clone(), Connection::Survives, async {
            Outcome::of(impostor.call::<_, v1::FedPushResponse>(Method::FedPush, &refused_elsewhere).await)
        })
        .await;
    let refused_foreigner = refusal(group_id_hosted_by([1; 16], "evil.test"), "bob@b.test");
    bench
        .case("a refusal for a user of another domain", &impostor, denied.clone(), Connection::Survives, async {
            Outcome::of(impostor.call::<_, v1::FedPushResponse>(Method::FedPush, &refused_foreigner).await)
        })
        .await;
    let commit = |group_id: Vec<u8>, sender: &str| v1::FedSubmitCommitRequest {
        origin: "evil.test".into(),
        destination: "a.test".into(),
        sender: sender.to_owned(),
        sender_device: vec![1; 8].into(),
        group_id: group_id.into(),
        epoch: 0,
        commit: b"commit".to_vec().into(),
        welcome: Default::default(),
        message_id: b"c1".to_vec().into(),
    };
    let not_hosted = commit(group_id_hosted_by([1; 16], "b.test"), "mallory@evil.test");
    bench
        .case(
            "a commit for a group this server does not host",
            &impostor,
            denied.clone(),
            Connection::Survives,
            async {
                Outcome::of(impostor.call::<_, v1::FedSubmitCommitResponse>(Method::FedSubmitCommit, &not_hosted).await)
            },
        )
        .await;
    let other_committer = commit(group_id_hosted_by([1; 16], "a.test"), "bob@b.test");
    bench
        .case("a commit by a user of another domain", &impostor, denied.clone(), Connection::Survives, async {
            Outcome::of(
                impostor.call::<_, v1::FedSubmitCommitResponse>(Method::FedSubmitCommit, &other_committer).await,
            )
        })
        .await;
    let other_leaver = v1::FedLeaveGroupRequest {
        origin: "evil.test".into(),
        destination: "a.test".into(),
        sender: "alice@a.test".into(),
        sender_device: vec![1; 8].into(),
        group_id: group_id_hosted_by([1; 16], "a.test").into(),
        proposal: b"proposal".to_vec().into(),
        message_id: b"l1".to_vec().into(),
    };
    bench
        .case("a leave for a user of another domain", &impostor, denied.clone(), Connection::Survives, async {
            Outcome::of(impostor.call::<_, v1::FedLeaveGroupResponse>(Method::FedLeaveGroup, &other_leaver).await)
        })
        .await;
    let claim = |requester: &str, username: &str| v1::FedClaimKeyPackageRequest {
        origin: "evil.test".into(),
        destination: "a.test".into(),
        requester: requester.to_owned(),
        username: username.to_owned(),
        device_id: Default::default(),
    };
    let for_another_domain = claim("mallory@b.test", "alice");
    bench
        .case("a claim for a user of another domain", &impostor, denied.clone(), Connection::Survives, async {
            Outcome::of(
                impostor
                    .call::<_, v1::FedClaimKeyPackageResponse>(Method::FedClaimKeyPackage, &for_another_domain)
                    .await,
            )
        })
        .await;
    let unknown = claim("mallory@evil.test", "nobody");
    bench
        .case("a claim of an unknown user", &impostor, Outcome::Status(Status::NotFound), Connection::Survives, async {
            Outcome::of(impostor.call::<_, v1::FedClaimKeyPackageResponse>(Method::FedClaimKeyPackage, &unknown).await)
        })
        .await;
    bench
        .case(
            "claims past the peer's budget",
            &impostor,
            Outcome::Status(Status::ResourceExhausted),
            Connection::Survives,
            async {
                Outcome::of(
                    impostor.call::<_, v1::FedClaimKeyPackageResponse>(Method::FedClaimKeyPackage, &unknown).await,
                )
            },
        )
        .await;
    let invalid = Outcome::Status(Status::InvalidArgument);
    let gapped = push_request("evil.test", "a.test", group_id_hosted_by([1; 16], "evil.test"), &[1, 3]);
    bench
        .case("a batch whose seqs are not contiguous", &impostor, invalid.clone(), Connection::Survives, async {
            Outcome::of(impostor.call::<_, v1::FedPushResponse>(Method::FedPush, &gapped).await)
        })
        .await;
    bench
        .case("a client method on the federation port", &impostor, invalid.clone(), Connection::Survives, async {
            Outcome::of(impostor.call::<_, v1::FetchResponse>(Method::Fetch, &v1::FetchRequest::default()).await)
        })
        .await;
    let client = bench.harness.connect().await;
    bench
        .case("a federation method on the client port", &client, invalid, Connection::Survives, async {
            Outcome::of(hello(&client, "b.test", "a.test").await)
        })
        .await;
    let greeted = hello(&impostor, "evil.test", "a.test").await.expect("a well-addressed hello is answered");
    assert_eq!(greeted.domain, "a.test");
    assert_eq!(bench.cases(), 23);
    let (_, text) = tokio::task::spawn_blocking(move || http_get(metrics, "/metrics")).await.expect("scrape");
    let series = "qpc_fed_key_package_claims_total{peer=\"evil.test\",outcome=\"refused\"}";
    assert!(text.lines().any(|line| line.starts_with(series) && !line.ends_with(" 0")), "claims are counted:\n{text}");
}

/// A `FedPush` of one application event per seq for `group_id`.
fn push_request(origin: &str, destination: &str, group_id: Vec<u8>, seqs: &[u64]) -> v1::FedPushRequest {
    let entry = |seq: u64| v1::FedEntry {
        seq,
        accepted_at_ms: 1,
        event: Some(v1::fed_entry::Event::GroupEvent(v1::FedGroupEvent {
            group_id: group_id.clone().into(),
            group_name: "team".into(),
            sender: format!("mallory@{origin}"),
            message_id: seq.to_be_bytes().to_vec().into(),
            payload: b"ciphertext".to_vec().into(),
            recipients: vec![v1::FedRecipient { username: "alice".into(), device_id: vec![1; 8].into() }],
            ..v1::FedGroupEvent::default()
        })),
    };
    v1::FedPushRequest {
        origin: origin.to_owned(),
        destination: destination.to_owned(),
        instance: 3,
        first_available_seq: 1,
        entries: seqs.iter().map(|seq| entry(*seq)).collect(),
    }
}

/// `Ok(why)` when the connection was refused: in its handshake, or (as a
/// TLS 1.3 client finishes before the server has checked its certificate)
/// by the server closing it before the first request is answered.
async fn refused(result: Result<RpcClient, quicprochat_rpc::RpcError>) -> Result<String, String> {
    match result {
        Err(error) => Ok(error.to_string()),
        Ok(client) => match client.call::<_, v1::PingResponse>(Method::Ping, &v1::PingRequest {}).await {
            Err(error) => Ok(format!("closed after the handshake: {error}")),
            Ok(_) => Err("the connection was served".to_owned()),
        },
    }
}

/// Dials the federation port with the federation ALPN but no certificate.
async fn dial_without_certificate(addr: std::net::SocketAddr) -> Result<RpcClient, quicprochat_rpc::RpcError> {
    let provider = Arc::new(quicprochat_rpc::tls::crypto_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer))
        .with_no_client_auth();
    connect_with_tls(addr, tls).await
}

/// Dials with a pinned certificate and the federation ALPN, but offering
/// only the classical X25519 key exchange.
async fn dial_classical(
    addr: std::net::SocketAddr,
    identity: &quicprochat_rpc::tls::ServerIdentity,
) -> Result<RpcClient, quicprochat_rpc::RpcError> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.kx_groups = vec![rustls::crypto::aws_lc_rs::kx_group::X25519];
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(identity.key.clone_key());
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer))
        .with_client_auth_cert(vec![identity.cert.clone()], key)
        .expect("client certificate");
    connect_with_tls(addr, tls).await
}

async fn connect_with_tls(
    addr: std::net::SocketAddr,
    mut tls: rustls::ClientConfig,
) -> Result<RpcClient, quicprochat_rpc::RpcError> {
    tls.alpn_protocols = vec![quicprochat_proto::FED_ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|error| quicprochat_rpc::RpcError::Tls(error.to_string()))?;
    let endpoint = client_endpoint(addr)?;
    let connecting = endpoint.connect_with(quinn::ClientConfig::new(Arc::new(quic)), addr, "a.test")?;
    let connection = tokio::time::timeout(WAIT, connecting)
        .await
        .map_err(|_| quicprochat_rpc::RpcError::Unexpected("handshake timed out".into()))??;
    let fingerprint = quicprochat_rpc::CertFingerprint::of(b"unchecked");
    Ok(RpcClient::from_connection(endpoint, connection, WAIT, fingerprint))
}

/// Accepts any server certificate (the cases here are about the client's side).
#[derive(Debug)]
struct AnyServer;

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &rustls::pki_types::CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &rustls::pki_types::CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        quicprochat_rpc::tls::crypto_provider().signature_verification_algorithms.supported_schemes()
    }
}
