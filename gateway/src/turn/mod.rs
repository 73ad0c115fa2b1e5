//! The gateway's own TURN service (RFC 8656) over UDP, TCP and TLS: `message` (STUN/TURN
//! framing), `server` (the sans-IO allocation state machine) and `shell` (the sockets). Credentials
//! are the short-lived ones of Calls' TURN API (`turn_credentials`); relaying goes only to the
//! networks configured.

pub mod message;
pub mod server;
pub mod shell;
