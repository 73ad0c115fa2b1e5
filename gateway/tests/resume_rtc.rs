//! A session resumed on another gateway carries on with the same client, with no new handshake:
//! the gateway's DTLS provider captures what the handshake leaves (`dtls_outcome`), and an `Rtc`
//! built from the same offer, the same ICE credentials and that outcome decrypts the client's
//! SRTP (across a rollover of its sequence numbers, `resume::set_rollover`) and its own SRTCP
//! reaches the client (a PLI, numbered past the first gateway's, `set_srtcp_tx_index`).
//!
//! A str0m client and two gateway-side `Rtc`s in memory with a simulated clock: deterministic.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway::peer::cached_dtls::crypto_provider;
use gateway::peer::dtls_outcome::{self, DtlsOutcome};
use gateway::replica::{ReceivedStream, SRTCP_JUMP};
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid};
use str0m::rtp::{RtpWrite, Ssrc};
use str0m::{IceCreds, Rtc, RtcConfig};

mod mem_peer;

use mem_peer::{Peer, settle};

/// The gateway's side, as `PeerFactory` builds it: RTP mode, ICE-lite, preset credentials, the
/// gateway's DTLS provider.
fn gateway_config(ice: &IceCreds) -> RtcConfig {
    Rtc::builder()
        .set_rtp_mode(true)
        .set_ice_lite(true)
        .clear_codecs()
        .enable_vp8(true)
        .set_crypto_provider(Arc::new(crypto_provider()))
        .set_local_ice_credentials(ice.clone())
}

fn write(client: &mut Peer, mid: Mid, pt: str0m::media::Pt, seq: u64, now: Instant) {
    let mut api = client.rtc.direct_api();
    let tx = api.stream_tx_by_mid(mid, None).expect("a send stream");
    let payload = seq.to_be_bytes().to_vec();
    tx.write_rtp(RtpWrite::new(pt, seq.into(), (seq * 3000) as u32, now, payload).marker(true));
}

#[test]
fn a_session_resumed_from_its_dtls_outcome_carries_on_with_the_same_client() {
    let mut now = Instant::now();
    let ice = IceCreds {
        ufrag: "0123456789abcdef0123456789abcdef".into(),
        pass: "resumed-session-password-0123456".into(),
    };
    let client_rtc = Rtc::builder()
        .set_rtp_mode(true)
        .clear_codecs()
        .enable_vp8(true)
        .build(now);
    let mut client = Peer::new(client_rtc, 1000, now);
    let mut api = client.rtc.sdp_api();
    let mid = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    let (offer, pending) = api.apply().expect("offer");
    let offer_sdp = offer.to_sdp_string();

    // Gateway A answers and connects, as for any publisher.
    let (rtc_a, outcome_a) = dtls_outcome::build(gateway_config(&ice), now, None);
    let mut a = Peer::new(rtc_a, 2000, now);
    let answer = a
        .rtc
        .sdp_api()
        .accept_offer(SdpOffer::from_sdp_string(&offer_sdp).expect("offer"))
        .expect("answer");
    let answer = SdpAnswer::from_sdp_string(&answer.to_sdp_string()).expect("answer");
    client
        .rtc
        .sdp_api()
        .accept_answer(pending, answer)
        .expect("accepted");
    let start = now;
    while !(client.connected && a.connected) {
        assert!(now - start < Duration::from_secs(30), "never connected");
        settle(&mut client, &mut a, &mut now);
    }
    let outcome: DtlsOutcome = outcome_a.get().cloned().expect("the handshake's outcome");
    assert!(!outcome.keying_material.is_empty() && !outcome.peer_cert.is_empty());
    let pt = client
        .rtc
        .media(mid)
        .and_then(|m| m.remote_pts().first().copied())
        .expect("a payload type");

    // Packets up to just below a rollover reach A.
    for seq in 65_500..65_530u64 {
        write(&mut client, mid, pt, seq, now);
    }
    for _ in 0..20 {
        settle(&mut client, &mut a, &mut now);
    }
    let last_at_a = a
        .rtp
        .iter()
        .map(|(_, s, _)| *s)
        .max()
        .expect("A got packets");
    assert_eq!(last_at_a, 65_529);
    let ssrc: Ssrc = client
        .rtc
        .direct_api()
        .stream_tx_by_mid(mid, None)
        .expect("stream")
        .ssrc();
    // A asks for keyframes: SRTCP that numbers A's index up.
    for _ in 0..3 {
        if let Some(rx) = a.rtc.direct_api().stream_rx(&ssrc) {
            rx.request_keyframe(KeyframeRequestKind::Pli);
        }
        settle(&mut client, &mut a, &mut now);
    }
    let srtcp_at_a = a
        .rtc
        .direct_api()
        .srtcp_tx_index()
        .expect("A's SRTCP index");
    assert!(srtcp_at_a > 0);

    // A is gone. B builds the session again from the same offer, credentials and outcome, at
    // the same address (the one address), with no handshake.
    let (rtc_b, outcome_b) = dtls_outcome::build(gateway_config(&ice), now, Some(outcome.clone()));
    assert!(outcome_b.get() == Some(&outcome));
    let mut b = Peer::new(rtc_b, 2000, now);
    assert_eq!(b.addr, a.addr);
    b.rtc
        .sdp_api()
        .accept_offer(SdpOffer::from_sdp_string(&offer_sdp).expect("offer"))
        .expect("answer");
    drop(a);
    // The client writes on across the rollover; B's first packet of the stream picks the
    // rollover counter from A's last report.
    let first = 65_530u64;
    let stream = ReceivedStream {
        ssrc: *ssrc,
        mid: mid.to_string(),
        seq: last_at_a,
    };
    gateway::resume_streams::set_rollover(&mut b.rtc, &stream, first as u16);
    for seq in first..first + 20 {
        write(&mut client, mid, pt, seq, now);
    }
    let start = now;
    while b.rtp.len() < 20 {
        assert!(
            now - start < Duration::from_secs(30),
            "B decrypted {} of 20 packets (connected: {})",
            b.rtp.len(),
            b.connected
        );
        settle(&mut client, &mut b, &mut now);
    }
    assert!(b.connected, "B connected without a handshake");
    // The client's next consent check nominates B (in the gateway, that check is what asked for
    // the resume, and reaches B first).
    let start = now;
    while !b.rtc.is_connected() {
        assert!(now - start < Duration::from_secs(30), "B never nominated");
        settle(&mut client, &mut b, &mut now);
    }
    let got: Vec<u64> = b.rtp.iter().map(|(_, s, _)| *s).collect();
    assert_eq!(
        got,
        (first..first + 20).collect::<Vec<_>>(),
        "every packet, across the rollover"
    );
    assert!(
        b.rtp
            .iter()
            .all(|(_, s, p)| p.as_slice() == s.to_be_bytes()),
        "payloads intact"
    );

    // B's own SRTCP, numbered past A's, reaches the client: a PLI.
    assert!(
        b.rtc
            .direct_api()
            .set_srtcp_tx_index(srtcp_at_a + SRTCP_JUMP)
    );
    let before = client.keyframe_requests;
    if let Some(rx) = b.rtc.direct_api().stream_rx(&ssrc) {
        rx.request_keyframe(KeyframeRequestKind::Pli);
    }
    for _ in 0..10 {
        settle(&mut client, &mut b, &mut now);
    }
    assert!(
        client.keyframe_requests > before,
        "the client took B's PLI ({} before, {} after)",
        before,
        client.keyframe_requests
    );
}
