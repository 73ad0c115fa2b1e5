//! Issue 12: a data channel on WHIP/WHEP sessions, publisher → viewers (captions, chat). The
//! WHIP publisher's offer carries an application m-line and opens channels in band ("captions"
//! with the offer, "chat" later); a WHEP viewer that opens a channel with the same label gets
//! the publisher's messages on it, whether its channel opened before or after the publisher's,
//! on the publisher's gateway and on another gateway of the cluster (through the channel's
//! tree). A viewer's channel with a label nobody publishes stays silent; what viewers write
//! goes nowhere.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use str0m::change::SdpAnswer;
use str0m::channel::{ChannelConfig, ChannelId};
use str0m::media::{Direction, MediaKind};
use str0m::{Event, Rtc};
use tokio::sync::watch;
use whip_tests::rtc_loop::RtcLoop;
use whip_tests::signaling::{http_client, post_offer};

mod common;

/// A str0m peer: one WHIP or WHEP session with video and data channels.
struct Peer {
    lp: RtcLoop,
    /// Channel label by id, once open.
    open: HashMap<ChannelId, String>,
    received: HashMap<String, Vec<String>>,
    stop: watch::Receiver<bool>,
}

impl Peer {
    /// Offers one video m-line (`direction`) and the in-band channels `labels`; POSTs it.
    async fn start(
        url: &str,
        direction: Direction,
        labels: &[&str],
        stop: watch::Receiver<bool>,
    ) -> Result<Peer> {
        let rtc = Rtc::builder().build(Instant::now());
        let mut lp = RtcLoop::bind(rtc, "127.0.0.1:0".parse()?).await?;
        let mut api = lp.rtc.sdp_api();
        api.add_media(MediaKind::Video, direction, None, None, None);
        for l in labels {
            api.add_channel(l.to_string());
        }
        let (offer, pending) = api.apply().context("an offer")?;
        let answer = post_offer(&http_client()?, url, None, &offer.to_sdp_string()).await?;
        lp.rtc
            .sdp_api()
            .accept_answer(pending, SdpAnswer::from_sdp_string(&answer.sdp)?)?;
        Ok(Peer {
            lp,
            open: HashMap::new(),
            received: HashMap::new(),
            stop,
        })
    }

    async fn pump(&mut self, ms: u64) -> Result<()> {
        let mut events = Vec::new();
        self.lp.drain(&mut events).await?;
        let deadline = Instant::now() + Duration::from_millis(ms);
        while Instant::now() < deadline {
            self.lp.wait(Some(deadline), &mut self.stop).await?;
            self.lp.drain(&mut events).await?;
        }
        for e in events {
            match e {
                Event::ChannelOpen(id, label) => {
                    self.open.insert(id, label);
                }
                Event::ChannelData(d) => {
                    let label = self.open.get(&d.id).cloned().unwrap_or_default();
                    self.received
                        .entry(label)
                        .or_default()
                        .push(String::from_utf8_lossy(&d.data).into_owned());
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn channel(&self, label: &str) -> Option<ChannelId> {
        self.open
            .iter()
            .find(|(_, l)| l.as_str() == label)
            .map(|(id, _)| *id)
    }

    fn send(&mut self, label: &str, text: &str) -> Result<()> {
        let id = self.channel(label).context("channel not open")?;
        self.lp
            .rtc
            .channel(id)
            .context("channel gone")?
            .write(false, text.as_bytes())?;
        Ok(())
    }

    fn got(&self, label: &str) -> &[String] {
        self.received.get(label).map_or(&[], Vec::as_slice)
    }
}

async fn pump_all(peers: &mut [&mut Peer], ms: u64) -> Result<()> {
    for p in peers.iter_mut() {
        p.pump(ms).await?;
    }
    Ok(())
}

async fn until(
    peers: &mut [&mut Peer],
    secs: u64,
    what: &str,
    done: impl Fn(&[&mut Peer]) -> bool,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done(peers) {
        ensure!(Instant::now() < deadline, "timed out: {what}");
        pump_all(peers, 20).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whip_publishers_channel_reaches_whep_viewers_here_and_across_the_cluster() -> Result<()>
{
    let c = common::cluster(1, 1, 0.0).await?;
    let (origin, edge) = (&c.gateways[0], &c.gateways[1]);
    let (_stop_tx, stop) = watch::channel(false);
    let mut publisher = Peer::start(
        &origin.whip_url("show"),
        Direction::SendOnly,
        &["captions"],
        stop.clone(),
    )
    .await?;
    until(&mut [&mut publisher], 10, "publisher's channel", |p| {
        p[0].channel("captions").is_some()
    })
    .await?;
    let mut here = Peer::start(
        &origin.whep_url("show"),
        Direction::RecvOnly,
        &["captions", "chat", "nothing"],
        stop.clone(),
    )
    .await?;
    let mut far = Peer::start(
        &edge.whep_url("show"),
        Direction::RecvOnly,
        &["captions"],
        stop.clone(),
    )
    .await?;
    until(
        &mut [&mut publisher, &mut here, &mut far],
        10,
        "viewers' channels",
        |p| {
            p[1].channel("captions").is_some()
                && p[1].channel("chat").is_some()
                && p[2].channel("captions").is_some()
        },
    )
    .await?;
    // "chat" opens on the publisher only now, after the viewer's "chat".
    publisher
        .lp
        .rtc
        .direct_api()
        .create_data_channel(ChannelConfig {
            label: "chat".into(),
            ..ChannelConfig::default()
        });
    until(&mut [&mut publisher], 10, "publisher's chat", |p| {
        p[0].channel("chat").is_some()
    })
    .await?;
    // The viewer's waiting channel is matched on the gateway's next housekeeping tick, the
    // edge's subscription travels up the tree.
    pump_all(&mut [&mut publisher, &mut here, &mut far], 1200).await?;

    const N: usize = 50;
    for i in 0..N {
        publisher.send("captions", &format!("caption {i}"))?;
        publisher.send("chat", &format!("chat {i}"))?;
        if i % 10 == 9 {
            pump_all(&mut [&mut publisher, &mut here, &mut far], 5).await?;
        }
    }
    here.send("captions", "a viewer writes")?;
    until(
        &mut [&mut publisher, &mut here, &mut far],
        10,
        "messages",
        |p| {
            p[1].got("captions").len() >= N
                && p[1].got("chat").len() >= N
                && p[2].got("captions").len() >= N
        },
    )
    .await?;
    pump_all(&mut [&mut publisher, &mut here, &mut far], 300).await?;
    let captions: Vec<String> = (0..N).map(|i| format!("caption {i}")).collect();
    let chat: Vec<String> = (0..N).map(|i| format!("chat {i}")).collect();
    ensure!(
        here.got("captions") == captions,
        "origin viewer captions: {:?}",
        here.got("captions")
    );
    ensure!(
        here.got("chat") == chat,
        "origin viewer chat: {:?}",
        here.got("chat")
    );
    ensure!(
        far.got("captions") == captions,
        "edge viewer captions: {:?}",
        far.got("captions")
    );
    ensure!(here.got("nothing").is_empty(), "a label nobody publishes");
    ensure!(
        publisher.received.values().all(Vec::is_empty),
        "a viewer's write reached the publisher: {:?}",
        publisher.received
    );
    Ok(())
}
