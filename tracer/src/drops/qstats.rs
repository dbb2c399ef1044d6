//! Per-queue `rx-alloc-fail` from the netdev generic netlink family
//! (`NETDEV_CMD_QSTATS_GET`, Linux 6.9+): how often a driver could not
//! allocate a receive buffer. Only drivers that implement the queue
//! statistics report it (many virtual devices, loopback among them, do not).
//!
//! Two requests over a `NETLINK_GENERIC` socket, built by hand (a few
//! dozen bytes; no netlink crate is in the dependency tree):
//! `CTRL_CMD_GETFAMILY "netdev"` for the family id, then a dump of
//! `QSTATS_GET` with scope "queue". Numbers are the uAPI's
//! (`include/uapi/linux/netdev.h`, `genetlink.h`), which only ever grow.

use std::{collections::BTreeMap, io};

use serde::Serialize;

const NETLINK_GENERIC: i32 = 16;
const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NETDEV_CMD_QSTATS_GET: u8 = 12;
const NETDEV_A_QSTATS_IFINDEX: u16 = 1;
const NETDEV_A_QSTATS_QUEUE_TYPE: u16 = 2;
const NETDEV_A_QSTATS_QUEUE_ID: u16 = 3;
const NETDEV_A_QSTATS_SCOPE: u16 = 4;
const NETDEV_A_QSTATS_RX_ALLOC_FAIL: u16 = 12;
const NETDEV_QSTATS_SCOPE_QUEUE: u32 = 1;
const NETDEV_QUEUE_TYPE_RX: u32 = 0;
const NLA_TYPE_MASK: u16 = 0x3fff;

/// One receive queue's `rx-alloc-fail`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueCount {
    pub ifindex: u32,
    /// Interface name at read time (empty if it is gone).
    pub ifname: String,
    pub queue: u32,
    pub count: u64,
}

/// `rx-alloc-fail` of every receive queue that reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RxAllocFail {
    /// `(ifindex, queue)` -> count.
    pub queues: BTreeMap<(u32, u32), u64>,
}

impl RxAllocFail {
    /// Ask the kernel.
    ///
    /// # Errors
    /// No netdev family (kernel before 6.5) or no `QSTATS_GET` (before 6.9),
    /// or a socket error.
    pub fn read() -> io::Result<Self> {
        let sock = Socket::open()?;
        let family = sock.family_id("netdev").map_err(|e| {
            if e.raw_os_error() == Some(libc::ENOENT) {
                io::Error::other("no netdev netlink family (Linux 6.3+; queue stats 6.9+)")
            } else {
                e
            }
        })?;
        let mut attrs = Vec::new();
        put_attr(
            &mut attrs,
            NETDEV_A_QSTATS_SCOPE,
            &NETDEV_QSTATS_SCOPE_QUEUE.to_ne_bytes(),
        );
        let mut queues = BTreeMap::new();
        let replies = sock
            .request(family, NETDEV_CMD_QSTATS_GET, NLM_F_DUMP, &attrs)
            .map_err(|e| {
                if e.raw_os_error() == Some(libc::EOPNOTSUPP) {
                    io::Error::other("the netdev family has no queue stats (Linux 6.9+)")
                } else {
                    e
                }
            })?;
        for msg in replies {
            if let Some((key, n)) = parse_queue(&msg) {
                queues.insert(key, n);
            }
        }
        Ok(Self { queues })
    }

    /// The change from `earlier` to `self`, per queue, with interface names.
    #[must_use]
    pub fn since(&self, earlier: &Self) -> Vec<QueueCount> {
        self.queues
            .iter()
            .map(|(&(ifindex, queue), &n)| QueueCount {
                ifindex,
                ifname: ifname(ifindex),
                queue,
                count: n
                    .saturating_sub(earlier.queues.get(&(ifindex, queue)).copied().unwrap_or(0)),
            })
            .collect()
    }
}

fn ifname(ifindex: u32) -> String {
    let mut buf = [0u8; libc::IF_NAMESIZE];
    // SAFETY: the buffer holds IF_NAMESIZE bytes, as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr().cast()) };
    if p.is_null() {
        return String::new();
    }
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..len]).into_owned()
}

/// One queue's key and count from a `QSTATS_GET` reply payload (after the
/// generic netlink header); `None` for a transmit queue or a queue without
/// the counter.
fn parse_queue(payload: &[u8]) -> Option<((u32, u32), u64)> {
    let (mut ifindex, mut kind, mut queue, mut fail) = (None, None, None, None);
    for (ty, value) in attrs(payload) {
        match ty {
            NETDEV_A_QSTATS_IFINDEX => ifindex = uint(value).and_then(|v| u32::try_from(v).ok()),
            NETDEV_A_QSTATS_QUEUE_TYPE => kind = uint(value),
            NETDEV_A_QSTATS_QUEUE_ID => queue = uint(value).and_then(|v| u32::try_from(v).ok()),
            NETDEV_A_QSTATS_RX_ALLOC_FAIL => fail = uint(value),
            _ => {}
        }
    }
    (kind? == u64::from(NETDEV_QUEUE_TYPE_RX)).then_some(((ifindex?, queue?), fail?))
}

/// A netlink "uint": 4 or 8 bytes, native endian.
fn uint(v: &[u8]) -> Option<u64> {
    match v.len() {
        4 => Some(u64::from(u32::from_ne_bytes(v.try_into().ok()?))),
        8 => Some(u64::from_ne_bytes(v.try_into().ok()?)),
        _ => None,
    }
}

/// The attributes of a payload: type and value.
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([b[0], b[1]]));
        let ty = u16::from_ne_bytes([b[2], b[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > b.len() {
            return None;
        }
        let value = &b[4..len];
        b = &b[align4(len).min(b.len())..];
        Some((ty, value))
    })
}

const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn put_attr(out: &mut Vec<u8>, ty: u16, value: &[u8]) {
    let len = u16::try_from(4 + value.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_ne_bytes());
    out.extend_from_slice(&ty.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(align4(out.len()), 0);
}

struct Socket(std::os::fd::OwnedFd);

impl Socket {
    fn open() -> io::Result<Self> {
        // SAFETY: socket(2) with constant arguments; the fd is owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_GENERIC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor nothing else owns.
        Ok(Self(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) }))
    }

    fn family_id(&self, name: &str) -> io::Result<u16> {
        let mut attrs = Vec::new();
        let mut z = name.as_bytes().to_vec();
        z.push(0);
        put_attr(&mut attrs, CTRL_ATTR_FAMILY_NAME, &z);
        let replies = self.request(GENL_ID_CTRL, CTRL_CMD_GETFAMILY, 0, &attrs)?;
        replies
            .iter()
            .flat_map(|p| attrs_owned(p))
            .find_map(|(ty, v)| {
                (ty == CTRL_ATTR_FAMILY_ID && v.len() >= 2)
                    .then(|| u16::from_ne_bytes([v[0], v[1]]))
            })
            .ok_or_else(|| io::Error::other(format!("no generic netlink family `{name}`")))
    }

    /// Send one request and collect the payloads (after the generic netlink
    /// header) of its replies, up to the end of a dump.
    fn request(&self, family: u16, cmd: u8, flags: u16, attrs: &[u8]) -> io::Result<Vec<Vec<u8>>> {
        use std::os::fd::AsRawFd as _;
        let len = u32::try_from(16 + 4 + attrs.len()).map_err(io::Error::other)?;
        let mut msg = Vec::with_capacity(len as usize);
        msg.extend_from_slice(&len.to_ne_bytes());
        msg.extend_from_slice(&family.to_ne_bytes());
        msg.extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
        msg.extend_from_slice(&1u32.to_ne_bytes()); // sequence
        msg.extend_from_slice(&0u32.to_ne_bytes()); // port: the kernel assigns
        msg.extend_from_slice(&[cmd, 1, 0, 0]); // genl header: cmd, version
        msg.extend_from_slice(attrs);
        let fd = self.0.as_raw_fd();
        // SAFETY: send(2) from a buffer of msg.len() bytes.
        let sent = unsafe { libc::send(fd, msg.as_ptr().cast(), msg.len(), 0) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let dump = flags & NLM_F_DUMP != 0;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 32 * 1024];
        // A dump ends with NLMSG_DONE; a plain request with its one reply.
        for _ in 0..10_000 {
            // SAFETY: recv(2) into a buffer of buf.len() bytes.
            let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
            let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
            let mut b = &buf[..n];
            while b.len() >= 16 {
                let mlen = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
                let ty = u16::from_ne_bytes([b[4], b[5]]);
                if mlen < 16 || mlen > b.len() {
                    return Err(io::Error::other("truncated netlink message"));
                }
                let body = &b[16..mlen];
                match ty {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        let code = body
                            .get(..4)
                            .map_or(0, |c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]));
                        if code != 0 {
                            return Err(io::Error::from_raw_os_error(-code));
                        }
                    }
                    _ => out.push(body.get(4..).unwrap_or_default().to_vec()),
                }
                b = &b[align4(mlen).min(b.len())..];
            }
            if !dump && !out.is_empty() {
                return Ok(out);
            }
        }
        Err(io::Error::other("netlink dump did not end"))
    }
}

fn attrs_owned(p: &[u8]) -> Vec<(u16, Vec<u8>)> {
    attrs(p).map(|(t, v)| (t, v.to_vec())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(kind: u32, fail: Option<&[u8]>) -> Vec<u8> {
        let mut p = Vec::new();
        put_attr(&mut p, NETDEV_A_QSTATS_IFINDEX, &3u32.to_ne_bytes());
        put_attr(&mut p, NETDEV_A_QSTATS_QUEUE_TYPE, &kind.to_ne_bytes());
        put_attr(&mut p, NETDEV_A_QSTATS_QUEUE_ID, &1u32.to_ne_bytes());
        put_attr(&mut p, 8, &[1, 2, 3]); // rx-packets, odd length: padded
        if let Some(f) = fail {
            put_attr(&mut p, NETDEV_A_QSTATS_RX_ALLOC_FAIL, f);
        }
        p
    }

    #[test]
    fn receive_queues_with_the_counter_are_read() {
        assert_eq!(
            parse_queue(&reply(0, Some(&7u32.to_ne_bytes()))),
            Some(((3, 1), 7))
        );
        assert_eq!(
            parse_queue(&reply(0, Some(&(1u64 << 40).to_ne_bytes()))),
            Some(((3, 1), 1 << 40))
        );
        assert_eq!(parse_queue(&reply(1, Some(&7u32.to_ne_bytes()))), None);
        assert_eq!(parse_queue(&reply(0, None)), None);
        // A truncated attribute ends the walk instead of reading past it.
        let mut cut = reply(0, Some(&7u32.to_ne_bytes()));
        cut.truncate(cut.len() - 2);
        assert_eq!(parse_queue(&cut), None);
    }

    #[test]
    fn deltas_are_per_queue() {
        let a = RxAllocFail {
            queues: [((1, 0), 5), ((1, 1), 2)].into_iter().collect(),
        };
        let b = RxAllocFail {
            queues: [((1, 0), 9), ((1, 1), 2), ((2, 0), 4)]
                .into_iter()
                .collect(),
        };
        let d: Vec<(u32, u32, u64)> = b
            .since(&a)
            .iter()
            .map(|q| (q.ifindex, q.queue, q.count))
            .collect();
        assert_eq!(d, [(1, 0, 4), (1, 1, 0), (2, 0, 4)]);
    }
}
