//! What leaves the engine besides datagrams: messages for the node's other tasks, routing
//! updates for the demultiplexer, finished setup spans. Queued in order; the shell delivers them.

use std::collections::VecDeque;

use relay_shell::otlp::SpanRecord;

use crate::bridge_link::ToBridge;
use crate::channel_link::ChannelMsg;
use crate::demux::DemuxUpdate;
use crate::track_link::TrackMsg;

/// What leaves the engine besides datagrams.
pub enum EngineOutput {
    /// Along a track.
    Track {
        /// The index of the task it goes to among the node's mailboxes.
        to: usize,
        /// The message.
        msg: TrackMsg,
    },
    /// Along a data channel.
    Channel {
        /// The index of the task it goes to among the node's mailboxes.
        to: usize,
        /// The message.
        msg: ChannelMsg,
    },
    /// To the cluster bridge.
    Bridge(ToBridge),
    /// To the UDP and ICE-TCP demultiplexers.
    Demux(DemuxUpdate),
    /// A session's setup as a span, for the trace exporter.
    Span(SpanRecord),
    /// A replicated session's progress, for the other gateways (`replication`).
    Progress(crate::replica::Progress),
    /// A replicated session ended: no gateway may resume it.
    Ended(crate::ids::SessionId),
    /// A replicated session was dropped because another gateway serves it (no tombstone).
    Released(crate::ids::SessionId),
}

/// A field of its own, so that concept files can queue while they hold a session or a track.
#[derive(Default)]
pub(super) struct Outbox(VecDeque<EngineOutput>);

impl Outbox {
    pub(super) fn track(&mut self, to: usize, msg: impl Into<TrackMsg>) {
        self.0.push_back(EngineOutput::Track {
            to,
            msg: msg.into(),
        });
    }
    pub(super) fn channel(&mut self, to: usize, msg: ChannelMsg) {
        self.0.push_back(EngineOutput::Channel { to, msg });
    }
    pub(super) fn bridge(&mut self, m: ToBridge) {
        self.0.push_back(EngineOutput::Bridge(m));
    }
    pub(super) fn demux(&mut self, u: DemuxUpdate) {
        self.0.push_back(EngineOutput::Demux(u));
    }
    pub(super) fn span(&mut self, s: SpanRecord) {
        self.0.push_back(EngineOutput::Span(s));
    }
    pub(super) fn progress(&mut self, p: crate::replica::Progress) {
        self.0.push_back(EngineOutput::Progress(p));
    }
    pub(super) fn released(&mut self, id: crate::ids::SessionId) {
        self.0.push_back(EngineOutput::Released(id));
    }
    pub(super) fn ended(&mut self, id: crate::ids::SessionId) {
        self.0.push_back(EngineOutput::Ended(id));
    }
    pub(super) fn pop(&mut self) -> Option<EngineOutput> {
        self.0.pop_front()
    }
}
