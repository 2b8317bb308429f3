//! The ordered queue of events waiting for the broker: in memory up to a
//! bound, then on disk under a size cap, delivered in order, removed only
//! once the broker acknowledged them.
//!
//! # Order
//!
//! Every message gets a sequence number when it is queued. The memory
//! queue holds the oldest messages; once it is full, or as long as
//! anything is on disk, new messages are appended to the disk spool, so
//! every message in memory is older than every message on disk. When
//! acknowledgements have made room in memory, the oldest spool segment is
//! read back into memory.
//!
//! # The spool
//!
//! A folder of segment files named by the sequence number of their first
//! message (`00000000000000001234.jsonl`, so that sorting by name sorts
//! by age), each a series of lines, one message payload per line (event
//! JSON never contains a newline). A segment is deleted once every
//! message read from it was acknowledged. Past the size cap the oldest
//! segment that is not in memory is deleted and its messages counted as
//! dropped. A line cut short by a crash (no final newline) is skipped
//! when the segment is read. When the queue is closed, the messages that
//! exist in memory only are written to a segment of their own, named so
//! that it sorts before the spool's newer segments: a restart delivers
//! them first. Messages are delivered at least once: a message sent but
//! not yet acknowledged when the connection or the process ends is sent
//! again.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Longest message the spool keeps, in bytes; longer ones stay in memory
/// only (events are a few kB).
pub const MAX_SPOOL_LINE: usize = 256 * 1024;
/// Size at which a spool segment is closed and a new one started.
pub const SEGMENT_BYTES: u64 = 256 * 1024;
/// File name suffix of spool segments.
const SUFFIX: &str = ".jsonl";

/// One queued message.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    seq: u64,
    payload: Vec<u8>,
    /// The segment this message was read from (deleted once every message
    /// read from it is acknowledged).
    segment: Option<u64>,
}

/// The disk part of an [`Outbox`].
#[derive(Debug)]
struct Spool {
    dir: PathBuf,
    cap_bytes: u64,
    /// Segments on disk not read into memory, oldest first: first
    /// sequence number, bytes, messages.
    segments: VecDeque<(u64, u64, u64)>,
    /// The segment being appended to (the last of `segments`).
    tail: Option<File>,
}

impl Spool {
    fn path(&self, first: u64) -> PathBuf {
        self.dir.join(format!("{first:020}{SUFFIX}"))
    }

    fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.1).sum()
    }
}

/// How many messages an [`Outbox`] holds and has lost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxCounts {
    /// Messages in memory.
    pub memory: u64,
    /// Messages on disk, not in memory.
    pub disk: u64,
    /// Messages dropped (oldest first) because memory and the spool's cap
    /// were full, or a spool write failed.
    pub dropped: u64,
}

/// The queue (see the module docs).
#[derive(Debug)]
pub struct Outbox {
    memory: VecDeque<Entry>,
    /// Messages at the front of `memory` handed to the connection and not
    /// acknowledged yet.
    sent: usize,
    memory_cap: usize,
    spool: Option<Spool>,
    next_seq: u64,
    dropped: u64,
    /// The last spool error, for the log (cleared when read).
    error: Option<String>,
}

/// Parses a segment file name into its first sequence number.
fn segment_seq(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(SUFFIX)?;
    (stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()))
        .then(|| stem.parse().ok())
        .flatten()
}

/// Reads the messages of one segment file, at most `limit` bytes of it;
/// a last line without its newline (a write cut short) is left out.
fn read_segment(path: &Path, limit: u64) -> Result<Vec<Vec<u8>>> {
    let mut bytes = vec![];
    File::open(path)
        .with_context(|| format!("cannot open the spool segment {}", path.display()))?
        .take(limit)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read the spool segment {}", path.display()))?;
    let mut lines: Vec<Vec<u8>> = bytes
        .split_inclusive(|&b| b == b'\n')
        .filter(|l| l.ends_with(b"\n") && l.len() > 1)
        .map(|l| l[..l.len() - 1].to_vec())
        .collect();
    lines.retain(|l| l.len() <= MAX_SPOOL_LINE);
    Ok(lines)
}

impl Outbox {
    /// A queue of at most `memory_cap` messages in memory (at least 1) and
    /// no disk spool: past the cap, the oldest unsent messages are dropped.
    pub fn memory(memory_cap: usize) -> Outbox {
        Outbox {
            memory: VecDeque::new(),
            sent: 0,
            memory_cap: memory_cap.max(1),
            spool: None,
            next_seq: 0,
            dropped: 0,
            error: None,
        }
    }

    /// A queue that spools to `dir` (created if missing) beyond
    /// `memory_cap` messages in memory, up to `cap_bytes` on disk. The
    /// messages a previous run left in `dir` come first.
    pub fn with_spool(memory_cap: usize, dir: &Path, cap_bytes: u64) -> Result<Outbox> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the MQTT spool folder {}", dir.display()))?;
        let mut found = vec![];
        for entry in std::fs::read_dir(dir)
            .with_context(|| format!("cannot list the MQTT spool folder {}", dir.display()))?
        {
            let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
            let Some(seq) = entry.file_name().to_str().and_then(segment_seq) else {
                continue;
            };
            let meta = entry
                .metadata()
                .with_context(|| format!("cannot read {}", entry.path().display()))?;
            if meta.is_file() {
                found.push((seq, meta.len()));
            }
        }
        found.sort_unstable();
        let mut out = Outbox::memory(memory_cap);
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            cap_bytes: cap_bytes.max(SEGMENT_BYTES),
            segments: VecDeque::new(),
            tail: None,
        };
        for (seq, bytes) in found {
            // Counting the messages of each segment reads it once; a
            // segment larger than a segment can be is read up to the cap.
            let n = read_segment(&spool.path(seq), spool.cap_bytes)?.len() as u64;
            out.next_seq = out.next_seq.max(seq + n);
            spool.segments.push_back((seq, bytes, n));
        }
        out.spool = Some(spool);
        out.refill()?;
        Ok(out)
    }

    /// Messages held and dropped.
    pub fn counts(&self) -> OutboxCounts {
        OutboxCounts {
            memory: self.memory.len() as u64,
            disk: self
                .spool
                .as_ref()
                .map_or(0, |s| s.segments.iter().map(|x| x.2).sum()),
            dropped: self.dropped,
        }
    }

    /// Whether nothing is waiting (in memory or on disk).
    pub fn is_empty(&self) -> bool {
        self.memory.is_empty() && self.spool.as_ref().is_none_or(|s| s.segments.is_empty())
    }

    /// The last spool error since the previous call.
    pub fn take_error(&mut self) -> Option<String> {
        self.error.take()
    }

    /// Queues a message at the end.
    pub fn push(&mut self, payload: Vec<u8>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let on_disk = self.spool.as_ref().is_some_and(|s| !s.segments.is_empty());
        if !on_disk && self.memory.len() < self.memory_cap {
            self.memory.push_back(Entry {
                seq,
                payload,
                segment: None,
            });
            return;
        }
        if self.spool.is_some() && payload.len() <= MAX_SPOOL_LINE {
            match self.append(seq, &payload) {
                Ok(()) => return,
                Err(e) => self.error = Some(format!("{e:#}")),
            }
        }
        if on_disk {
            // the spool cannot take it and older messages wait there: it
            // cannot be queued in order
            self.dropped += 1;
            return;
        }
        // memory only: the oldest message not yet sent makes room
        if self.sent < self.memory.len() {
            self.memory.remove(self.sent);
            self.dropped += 1;
        } else {
            self.dropped += 1;
            return;
        }
        self.memory.push_back(Entry {
            seq,
            payload,
            segment: None,
        });
    }

    /// Appends one message to the spool, starting a segment when needed
    /// and deleting the oldest ones beyond the cap.
    fn append(&mut self, seq: u64, payload: &[u8]) -> Result<()> {
        let Some(spool) = self.spool.as_mut() else {
            return Ok(());
        };
        let line = payload.len() as u64 + 1;
        let full = spool
            .segments
            .back()
            .is_none_or(|s| s.1 + line > SEGMENT_BYTES);
        if spool.tail.is_none() || full {
            if let Some(f) = spool.tail.take() {
                let _ = f.sync_data();
            }
            let path = spool.path(seq);
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .with_context(|| format!("cannot create the spool segment {}", path.display()))?;
            spool.tail = Some(f);
            spool.segments.push_back((seq, 0, 0));
        }
        // beyond the cap, the oldest segments go (never the tail)
        while spool.bytes() + line > spool.cap_bytes && spool.segments.len() > 1 {
            if let Some((first, _, n)) = spool.segments.pop_front() {
                let _ = std::fs::remove_file(spool.path(first));
                self.dropped += n;
            }
        }
        let f = spool.tail.as_mut().context("no spool segment")?;
        let mut buf = Vec::with_capacity(payload.len() + 1);
        buf.extend_from_slice(payload);
        buf.push(b'\n');
        f.write_all(&buf).context("writing to the MQTT spool")?;
        if let Some(last) = spool.segments.back_mut() {
            last.1 += line;
            last.2 += 1;
        }
        Ok(())
    }

    /// Reads the oldest spool segment into memory when memory has room for
    /// it (at most half full).
    fn refill(&mut self) -> Result<()> {
        let Some(spool) = self.spool.as_mut() else {
            return Ok(());
        };
        while self.memory.len() <= self.memory_cap / 2 {
            let Some(&(first, _, _)) = spool.segments.front() else {
                break;
            };
            if spool.segments.len() == 1 && spool.tail.is_some() {
                // the segment being written: close it first
                if let Some(f) = spool.tail.take() {
                    let _ = f.sync_data();
                }
            }
            let lines = read_segment(&spool.path(first), spool.cap_bytes)?;
            spool.segments.pop_front();
            if lines.is_empty() {
                let _ = std::fs::remove_file(spool.path(first));
                continue;
            }
            for (i, payload) in lines.into_iter().enumerate() {
                self.memory.push_back(Entry {
                    seq: first + i as u64,
                    payload,
                    segment: Some(first),
                });
            }
        }
        Ok(())
    }

    /// The next message to send, if any is waiting that was not sent yet.
    pub fn next_unsent(&self) -> Option<&[u8]> {
        self.memory.get(self.sent).map(|e| e.payload.as_slice())
    }

    /// Marks the message [`Outbox::next_unsent`] returned as sent.
    pub fn mark_sent(&mut self) {
        if self.sent < self.memory.len() {
            self.sent += 1;
        }
    }

    /// Messages sent and not acknowledged.
    pub fn in_flight(&self) -> usize {
        self.sent
    }

    /// The oldest message in flight was acknowledged: it leaves the queue
    /// (and its segment, once none of its messages is left).
    pub fn ack(&mut self) {
        if self.sent == 0 {
            return;
        }
        self.sent -= 1;
        let Some(e) = self.memory.pop_front() else {
            return;
        };
        if let (Some(seg), Some(spool)) = (e.segment, self.spool.as_ref())
            && self.memory.front().is_none_or(|n| n.segment != Some(seg))
        {
            let _ = std::fs::remove_file(spool.path(seg));
        }
        if let Err(e) = self.refill() {
            self.error = Some(format!("{e:#}"));
        }
    }

    /// The connection ended: every message in flight is to be sent again.
    pub fn rewind(&mut self) {
        self.sent = 0;
    }

    /// Writes the messages that exist in memory only to the spool (on the
    /// way out), so that a restart delivers them first. Without a spool
    /// they are lost, and counted as dropped; the count is returned.
    pub fn close(&mut self) -> Result<u64> {
        self.sent = 0;
        let fresh: Vec<&Entry> = self.memory.iter().filter(|e| e.segment.is_none()).collect();
        let Some(spool) = self.spool.as_mut() else {
            let n = fresh.len() as u64;
            self.dropped += n;
            self.memory.clear();
            return Ok(n);
        };
        if let Some(f) = spool.tail.take() {
            f.sync_data().context("flushing the MQTT spool")?;
        }
        if let Some(first) = fresh.first() {
            let path = spool.path(first.seq);
            let mut buf = vec![];
            for e in &fresh {
                buf.extend_from_slice(&e.payload);
                buf.push(b'\n');
            }
            let tmp = path.with_extension("tmp");
            let mut f = File::create(&tmp)
                .with_context(|| format!("cannot write the MQTT spool {}", tmp.display()))?;
            f.write_all(&buf)
                .and_then(|_| f.sync_data())
                .with_context(|| format!("cannot write the MQTT spool {}", tmp.display()))?;
            std::fs::rename(&tmp, &path)
                .with_context(|| format!("cannot write the MQTT spool {}", path.display()))?;
        }
        self.memory.clear();
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(i: u32) -> Vec<u8> {
        format!("{{\"n\":{i}}}").into_bytes()
    }

    /// Sends and acknowledges everything, returning the payloads in order.
    fn drain(o: &mut Outbox) -> Vec<Vec<u8>> {
        let mut got = vec![];
        while let Some(p) = o.next_unsent() {
            got.push(p.to_vec());
            o.mark_sent();
            o.ack();
        }
        got
    }

    #[test]
    fn memory_keeps_order_and_drops_the_oldest_unsent_past_its_cap() {
        let mut o = Outbox::memory(3);
        for i in 0..5 {
            o.push(msg(i));
        }
        assert_eq!(o.counts().dropped, 2);
        assert_eq!(drain(&mut o), vec![msg(2), msg(3), msg(4)]);
        assert!(o.is_empty());
    }

    #[test]
    fn messages_in_flight_are_sent_again_after_a_rewind() {
        let mut o = Outbox::memory(10);
        for i in 0..4 {
            o.push(msg(i));
        }
        o.mark_sent();
        o.mark_sent();
        o.ack();
        assert_eq!(o.in_flight(), 1);
        o.rewind();
        assert_eq!(drain(&mut o), vec![msg(1), msg(2), msg(3)]);
    }

    #[test]
    fn a_spool_keeps_order_across_memory_and_disk() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = Outbox::with_spool(4, dir.path(), 1 << 20).unwrap();
        for i in 0..1000 {
            o.push(msg(i));
        }
        let c = o.counts();
        assert_eq!((c.memory, c.disk, c.dropped), (4, 996, 0));
        // interleave sends, acks and new messages
        let mut got = vec![];
        for i in 1000..1100 {
            for _ in 0..3 {
                if let Some(p) = o.next_unsent() {
                    got.push(p.to_vec());
                    o.mark_sent();
                    o.ack();
                }
            }
            o.push(msg(i));
        }
        got.extend(drain(&mut o));
        assert_eq!(got, (0..1100).map(msg).collect::<Vec<_>>());
        assert!(o.is_empty());
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "segments left behind: {left:?}");
    }

    #[test]
    fn a_restart_delivers_what_the_last_run_left_first() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut o = Outbox::with_spool(8, dir.path(), 1 << 20).unwrap();
            for i in 0..50 {
                o.push(msg(i));
            }
            // two delivered, one in flight when the run ends
            for _ in 0..2 {
                o.mark_sent();
                o.ack();
            }
            o.mark_sent();
            assert_eq!(o.close().unwrap(), 0);
        }
        let mut o = Outbox::with_spool(8, dir.path(), 1 << 20).unwrap();
        o.push(msg(50));
        assert_eq!(drain(&mut o), (2..51).map(msg).collect::<Vec<_>>());
    }

    #[test]
    fn past_the_disk_cap_the_oldest_segments_are_dropped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        // every message is 1 kB; the cap is 2 segments' worth
        let big = |i: u32| {
            let mut v = format!("{i:08}").into_bytes();
            v.resize(1023, b'x');
            v
        };
        let mut o = Outbox::with_spool(2, dir.path(), 2 * SEGMENT_BYTES).unwrap();
        let n = 2000;
        for i in 0..n {
            o.push(big(i));
        }
        let c = o.counts();
        assert!(c.dropped > 0, "{c:?}");
        assert_eq!(c.memory + c.disk + c.dropped, n as u64);
        let bytes: u64 = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert!(bytes <= 2 * SEGMENT_BYTES, "{bytes}");
        // what is left is the newest, in order, after the two in memory
        let got = drain(&mut o);
        assert_eq!(got[..2], [big(0), big(1)]);
        let first_kept = n as usize - (got.len() - 2);
        assert_eq!(
            got[2..],
            (first_kept as u32..n).map(big).collect::<Vec<_>>()[..]
        );
    }

    #[test]
    fn a_torn_last_line_and_foreign_files_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(format!("{:020}{SUFFIX}", 7)),
            b"{\"n\":7}\n{\"n\":8}\n{\"n\":9",
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"hello\n").unwrap();
        let mut o = Outbox::with_spool(8, dir.path(), 1 << 20).unwrap();
        o.push(msg(10));
        assert_eq!(drain(&mut o), vec![msg(7), msg(8), msg(10)]);
        assert!(dir.path().join("notes.txt").exists());
    }
}
