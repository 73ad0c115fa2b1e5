//! One `sendmmsg(2)` for many messages of a worker's output, each message a GSO run gathered
//! straight from the datagrams' own buffers.
//!
//! quinn-udp sends one message per syscall (it dropped `sendmmsg` when it gained GSO), which
//! suits QUIC: one connection, long runs to one peer. A broadcast worker's flush is the opposite
//! shape: hundreds of short runs to as many viewers (a frame's packets each) plus single audio and
//! RTCP datagrams. Here every run becomes one `mmsghdr` whose iovecs point into the str0m
//! datagrams themselves, so a flush costs a few syscalls and no copy into a GSO buffer.
//!
//! Linux only (UDP_SEGMENT, IP_PKTINFO); `UdpShell` keeps quinn-udp's path elsewhere. The
//! pointers built here live only for one synchronous call.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::os::fd::RawFd;

use socket2::SockAddr;

/// Messages per syscall; the kernel caps `vlen` at UIO_MAXIOV (1024).
pub const MAX_MESSAGES: usize = 256;

/// Room for one UDP_SEGMENT (u16) and one IPv6 packet-info cmsg, 8-byte aligned as cmsgs must be.
type Control = [u64; 8];

/// Send `runs` (ranges of datagram indices, each one message: GSO-segmented at its first datagram's
/// size when longer than one) in order, as far as one `sendmmsg` takes them. `source` gives the
/// address to send each run from, or `None` to let the kernel choose (a socket bound to one
/// address). Returns how many runs the kernel accepted; an error belongs to the first run not
/// accepted (`runs[0]` when nothing was), as `sendmmsg` reports a failure only when no message
/// before it went.
pub fn send<'a>(
    fd: RawFd,
    runs: &[Range<usize>],
    contents: impl Fn(usize) -> &'a [u8],
    source: impl Fn(usize) -> Option<IpAddr>,
    destination: impl Fn(usize) -> SocketAddr,
) -> io::Result<usize> {
    let runs = &runs[..runs.len().min(MAX_MESSAGES)];
    if runs.is_empty() {
        return Ok(0);
    }
    // Every vector is filled before any pointer into it is taken, so none moves afterwards.
    let iovecs: Vec<libc::iovec> = runs
        .iter()
        .flat_map(|r| r.clone())
        .map(|i| {
            let d = contents(i);
            libc::iovec {
                iov_base: d.as_ptr() as *mut libc::c_void,
                iov_len: d.len(),
            }
        })
        .collect();
    let names: Vec<SockAddr> = runs
        .iter()
        .map(|r| SockAddr::from(destination(r.start)))
        .collect();
    let mut controls: Vec<Control> = vec![[0; 8]; runs.len()];
    let mut control_lens = Vec::with_capacity(runs.len());
    for (r, control) in runs.iter().zip(controls.iter_mut()) {
        let segment = (r.len() > 1).then(|| contents(r.start).len());
        control_lens.push(encode_control(control, segment, source(r.start)));
    }
    let mut headers: Vec<libc::mmsghdr> = Vec::with_capacity(runs.len());
    let mut first_iov = 0;
    for (i, r) in runs.iter().enumerate() {
        // SAFETY: msghdr is plain data; all-zero is its empty value.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = names[i].as_ptr() as *mut libc::c_void;
        msg.msg_namelen = names[i].len();
        msg.msg_iov = iovecs[first_iov..].as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = r.len() as _;
        if control_lens[i] > 0 {
            msg.msg_control = controls[i].as_mut_ptr() as *mut libc::c_void;
            msg.msg_controllen = control_lens[i] as _;
        }
        first_iov += r.len();
        headers.push(libc::mmsghdr {
            msg_hdr: msg,
            msg_len: 0,
        });
    }
    // SAFETY: every pointer in `headers` points into `iovecs`, `names`, `controls` or the
    // datagrams, all borrowed and unmoved until this call returns; the kernel only reads them.
    let n = unsafe { libc::sendmmsg(fd, headers.as_mut_ptr(), headers.len() as libc::c_uint, 0) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Write the cmsgs a run needs into `control`; returns their length (0: none).
fn encode_control(control: &mut Control, segment: Option<usize>, source: Option<IpAddr>) -> usize {
    let bytes = control.as_mut_ptr() as *mut u8;
    let mut at = 0usize;
    let mut push = |level: libc::c_int, kind: libc::c_int, data: &[u8]| {
        // SAFETY: CMSG_* are pure arithmetic; `control` (64 bytes) holds a 2-byte and a 20-byte
        // cmsg (16 + 8 and 16 + 24 bytes with alignment), written within its bounds.
        unsafe {
            let header = libc::cmsghdr {
                cmsg_len: libc::CMSG_LEN(data.len() as u32) as _,
                cmsg_level: level,
                cmsg_type: kind,
            };
            let space = libc::CMSG_SPACE(data.len() as u32) as usize;
            debug_assert!(at + space <= std::mem::size_of::<Control>());
            std::ptr::write_unaligned(bytes.add(at) as *mut libc::cmsghdr, header);
            let data_at = libc::CMSG_LEN(0) as usize;
            std::ptr::copy_nonoverlapping(data.as_ptr(), bytes.add(at + data_at), data.len());
            at += space;
        }
    };
    if let Some(size) = segment {
        push(
            libc::SOL_UDP,
            libc::UDP_SEGMENT,
            &(size as u16).to_ne_bytes(),
        );
    }
    match source {
        Some(IpAddr::V4(v4)) => {
            let info = libc::in_pktinfo {
                ipi_ifindex: 0,
                ipi_spec_dst: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.octets()),
                },
                ipi_addr: libc::in_addr { s_addr: 0 },
            };
            push(libc::IPPROTO_IP, libc::IP_PKTINFO, as_bytes(&info));
        }
        Some(IpAddr::V6(v6)) => {
            let info = libc::in6_pktinfo {
                ipi6_addr: libc::in6_addr {
                    s6_addr: v6.octets(),
                },
                ipi6_ifindex: 0,
            };
            push(libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, as_bytes(&info));
        }
        None => {}
    }
    at
}

fn as_bytes<T: Copy>(value: &T) -> &[u8] {
    // SAFETY: only used for libc's padding-free pktinfo structs, read as bytes.
    unsafe { std::slice::from_raw_parts(value as *const T as *const u8, std::mem::size_of::<T>()) }
}
