//! The inboxes of a node's tasks, and one typed sender per kind of task (`Mailbox`), so that each
//! inbox holds only what its task handles and every match over one is exhaustive. Tasks address
//! each other by index (a track's `origin_worker`, a subscriber's `worker`): workers first, then
//! the cluster bridge, the recorder and the adapters' hub when there are any.

use tokio::sync::mpsc::UnboundedSender;

use crate::bridge_link::ToBridge;
use crate::channel_link::ChannelMsg;
use crate::command::Command;
use crate::datagram::Datagram;
use crate::track_link::{FromOrigin, TrackMsg};

/// A media worker's inbox.
pub enum WorkerMsg {
    /// What one read from a socket brought for this worker's sessions, in arrival order.
    Datagrams(Vec<Datagram>),
    /// From the control plane.
    Command(Command),
    /// From another task along a track.
    Track(TrackMsg),
    /// From another task along a data channel.
    Channel(ChannelMsg),
}

/// The cluster bridge's inbox (from the workers).
pub enum BridgeMsg {
    /// Along a track.
    Track(TrackMsg),
    /// Along a data channel.
    Channel(ChannelMsg),
    /// What only a worker tells the bridge.
    Notice(ToBridge),
}

/// A sender to one task of the node, typed by what the task takes.
#[derive(Clone)]
pub enum Mailbox {
    /// A media worker.
    Worker(UnboundedSender<WorkerMsg>),
    /// The cluster bridge.
    Bridge(UnboundedSender<BridgeMsg>),
    /// The recorder only subscribes: it takes packets, never requests.
    Recorder(UnboundedSender<FromOrigin>),
    /// The adapters' hub is an origin (ingest) and a subscriber (egress).
    Adapters(UnboundedSender<TrackMsg>),
}

impl Mailbox {
    /// Along a track. False when the task is gone or does not take this direction (logged: a
    /// misaddressed message is a bug, not something a peer can cause).
    pub fn track(&self, m: impl Into<TrackMsg>) -> bool {
        let m = m.into();
        match self {
            Mailbox::Worker(tx) => tx.send(WorkerMsg::Track(m)).is_ok(),
            Mailbox::Bridge(tx) => tx.send(BridgeMsg::Track(m)).is_ok(),
            Mailbox::Adapters(tx) => tx.send(m).is_ok(),
            Mailbox::Recorder(tx) => match m {
                TrackMsg::FromOrigin(m) => tx.send(m).is_ok(),
                TrackMsg::ToOrigin(_) => {
                    tracing::warn!("a track request addressed to the recorder, which is no origin");
                    false
                }
            },
        }
    }

    /// Along a data channel: only workers and the bridge hold channels.
    pub fn channel(&self, m: ChannelMsg) -> bool {
        match self {
            Mailbox::Worker(tx) => tx.send(WorkerMsg::Channel(m)).is_ok(),
            Mailbox::Bridge(tx) => tx.send(BridgeMsg::Channel(m)).is_ok(),
            Mailbox::Recorder(_) | Mailbox::Adapters(_) => {
                tracing::warn!("a data channel message addressed to a task without channels");
                false
            }
        }
    }

    /// To the bridge.
    pub fn notice(&self, m: ToBridge) -> bool {
        match self {
            Mailbox::Bridge(tx) => tx.send(BridgeMsg::Notice(m)).is_ok(),
            _ => {
                tracing::warn!("a bridge notice addressed to another task");
                false
            }
        }
    }
}
