//! Parallel gzip within one member, as pigz does it: the input is cut into fixed-size blocks,
//! each block is deflated on a worker with the previous 32 KiB as its dictionary and ends with a
//! sync flush, and the compressed blocks are written in order between one gzip header and one
//! trailer (CRC-32 combined from the blocks' CRCs). Every gzip reader sees one ordinary member.
//!
//! The output depends only on the input, the level and [`BLOCK`], never on the number of
//! threads or their timing, so layers stay reproducible to the byte on any machine.
//!
//! Written here rather than taken from a crate: the parallel gzip crates (gzp, mtpng-style
//! pools) either pull a C zlib, buffer whole members, or let the thread count change the bytes.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use flate2::{Compress, Compression, Crc, FlushCompress, Status};

/// Uncompressed bytes per block. Part of the layer format: changing it changes digests.
pub const BLOCK: usize = 256 * 1024;
/// Deflate's window: how much of the previous block primes the next one.
const DICT: usize = 32 * 1024;

/// Compression workers per layer: one per core, at most 8 (beyond that the writer, not the
/// compressors, is the limit, and memory per layer stays small).
pub(crate) fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
}

struct Job {
    index: u64,
    dict: Option<Arc<Vec<u8>>>,
    data: Vec<u8>,
    last: bool,
}

struct Done {
    index: u64,
    compressed: io::Result<Vec<u8>>,
    crc: Crc,
}

/// A `Write` that gzips what it is given on `threads` workers and writes one gzip member to
/// `out`, in order. Memory is bounded: at most `2 * threads + 1` blocks are in flight.
pub struct ParallelGzWriter<W: Write> {
    out: Option<W>,
    level: u32,
    buf: Vec<u8>,
    /// The tail of the previous block, the next block's dictionary.
    dict: Option<Arc<Vec<u8>>>,
    next_index: u64,
    next_to_write: u64,
    pending: BTreeMap<u64, (Vec<u8>, Crc)>,
    in_flight: usize,
    max_in_flight: usize,
    jobs: Option<SyncSender<Job>>,
    done: Receiver<Done>,
    workers: Vec<JoinHandle<()>>,
    crc: Crc,
    header_written: bool,
}

impl<W: Write> ParallelGzWriter<W> {
    /// `threads` of 0 means one per available core.
    pub(crate) fn new(out: W, level: u32, threads: usize) -> Self {
        let threads = if threads == 0 {
            default_threads()
        } else {
            threads
        };
        let level = level.min(9);
        let max_in_flight = 2 * threads + 1;
        let (job_tx, job_rx) = sync_channel::<Job>(max_in_flight);
        let (done_tx, done_rx) = sync_channel::<Done>(max_in_flight);
        let job_rx = Arc::new(std::sync::Mutex::new(job_rx));
        let workers = (0..threads)
            .map(|_| {
                let jobs = Arc::clone(&job_rx);
                let done = done_tx.clone();
                std::thread::spawn(move || worker(level, &jobs, &done))
            })
            .collect();
        ParallelGzWriter {
            out: Some(out),
            level,
            buf: Vec::with_capacity(BLOCK),
            dict: None,
            next_index: 0,
            next_to_write: 0,
            pending: BTreeMap::new(),
            in_flight: 0,
            max_in_flight,
            jobs: Some(job_tx),
            done: done_rx,
            workers,
            crc: Crc::new(),
            header_written: false,
        }
    }

    fn out(&mut self) -> io::Result<&mut W> {
        self.out
            .as_mut()
            .ok_or_else(|| io::Error::other("gzip stream already finished"))
    }

    fn write_header(&mut self) -> io::Result<()> {
        if !self.header_written {
            // ID1 ID2 CM=deflate FLG=0 MTIME=0 XFL OS=255 (unknown): nothing host-specific.
            let xfl = match self.level {
                9 => 2,
                1 => 4,
                _ => 0,
            };
            self.out()?
                .write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 255])?;
            self.header_written = true;
        }
        Ok(())
    }

    /// Hand the buffered block to the workers.
    fn submit(&mut self, last: bool) -> io::Result<()> {
        while self.in_flight >= self.max_in_flight {
            self.collect_one()?;
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(BLOCK));
        let next_dict = (!last).then(|| Arc::new(data[data.len().saturating_sub(DICT)..].to_vec()));
        let job = Job {
            index: self.next_index,
            dict: std::mem::replace(&mut self.dict, next_dict),
            data,
            last,
        };
        self.next_index += 1;
        self.jobs
            .as_ref()
            .ok_or_else(|| io::Error::other("gzip stream already finished"))?
            .send(job)
            .map_err(|_| io::Error::other("gzip workers stopped"))?;
        self.in_flight += 1;
        Ok(())
    }

    /// Wait for one finished block and write every block that is now next in order.
    fn collect_one(&mut self) -> io::Result<()> {
        let done = self
            .done
            .recv()
            .map_err(|_| io::Error::other("gzip workers stopped"))?;
        self.in_flight -= 1;
        self.pending
            .insert(done.index, (done.compressed?, done.crc));
        self.write_ready()
    }

    fn write_ready(&mut self) -> io::Result<()> {
        self.write_header()?;
        while let Some((bytes, crc)) = self.pending.remove(&self.next_to_write) {
            self.out()?.write_all(&bytes)?;
            self.crc.combine(&crc);
            self.next_to_write += 1;
        }
        Ok(())
    }

    /// Compress what is left, write the trailer and return the inner writer.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.submit(true)?;
        while self.in_flight > 0 {
            self.collect_one()?;
        }
        let (crc, len) = (self.crc.sum(), self.crc.amount());
        let mut out = self
            .out
            .take()
            .ok_or_else(|| io::Error::other("gzip stream already finished"))?;
        out.write_all(&crc.to_le_bytes())?;
        out.write_all(&len.to_le_bytes())?;
        Ok(out)
    }
}

impl<W: Write> Write for ParallelGzWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(BLOCK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == BLOCK {
            self.submit(false)?;
        }
        Ok(n)
    }

    /// Blocks are cut at fixed sizes only, so a flush passes nothing on: cutting a block here
    /// would make the bytes depend on when callers flush.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for ParallelGzWriter<W> {
    fn drop(&mut self) {
        // Closing the job queue ends the workers; drain results so none blocks on sending.
        self.jobs = None;
        while self.in_flight > 0 && self.done.recv().is_ok() {
            self.in_flight -= 1;
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn worker(level: u32, jobs: &std::sync::Mutex<Receiver<Job>>, done: &SyncSender<Done>) {
    loop {
        let job = match jobs.lock() {
            Ok(rx) => match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
            Err(_) => return,
        };
        let mut crc = Crc::new();
        crc.update(&job.data);
        // A fresh compressor per block: a reset one keeps state from the blocks it did
        // before (seen with zlib-rs), which would make the bytes depend on the scheduling.
        let mut deflate = Compress::new(Compression::new(level), false);
        let compressed = deflate_block(&mut deflate, job.dict.as_deref(), &job.data, job.last);
        if done
            .send(Done {
                index: job.index,
                compressed,
                crc,
            })
            .is_err()
        {
            return;
        }
    }
}

/// Deflate one block: primed with `dict`, ended by a sync flush (byte-aligned, not final) or,
/// for the last block, by the final block marker.
fn deflate_block(
    deflate: &mut Compress,
    dict: Option<&Vec<u8>>,
    data: &[u8],
    last: bool,
) -> io::Result<Vec<u8>> {
    if let Some(d) = dict {
        deflate.set_dictionary(d).map_err(io::Error::other)?;
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut out = Vec::with_capacity(data.len() / 2 + 1024);
    loop {
        let consumed = usize::try_from(deflate.total_in()).map_err(io::Error::other)?;
        if out.capacity() - out.len() < 1024 {
            out.reserve(out.capacity().max(64 * 1024));
        }
        let status = deflate
            .compress_vec(&data[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let all_in = deflate.total_in() == data.len() as u64;
        // A flush is complete when input is consumed and the output did not fill up.
        let flushed = if last {
            status == Status::StreamEnd
        } else {
            all_in && out.len() < out.capacity()
        };
        if flushed {
            return Ok(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sample(len: usize) -> Vec<u8> {
        let mut state: u32 = 0x1234_5678;
        (0..len)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                if (i / 4096) % 3 == 0 {
                    (state >> 24) as u8
                } else {
                    b"defmodule Hello do\n  def hi, do: :ok\nend\n"[i % 40]
                }
            })
            .collect()
    }

    fn gzip(data: &[u8], level: u32, threads: usize, chunk: usize) -> Vec<u8> {
        let mut w = ParallelGzWriter::new(Vec::new(), level, threads);
        for c in data.chunks(chunk.max(1)) {
            w.write_all(c).unwrap();
        }
        w.finish().unwrap()
    }

    fn gunzip(gz: &[u8]) -> Vec<u8> {
        // MultiGzDecoder would hide a second member; one member must hold everything.
        let mut d = flate2::read::GzDecoder::new(gz);
        let mut out = Vec::new();
        d.read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn round_trips_at_every_size_around_block_edges() {
        for len in [0, 1, 100, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK + 17] {
            let data = sample(len);
            let gz = gzip(&data, 6, 3, 7919);
            assert_eq!(gunzip(&gz), data, "length {len}");
            // One member: the trailer holds the CRC and length of everything.
            let n = gz.len();
            let isize = u32::from_le_bytes(gz[n - 4..].try_into().unwrap());
            assert_eq!(isize as usize, len);
            let mut crc = Crc::new();
            crc.update(&data);
            assert_eq!(
                u32::from_le_bytes(gz[n - 8..n - 4].try_into().unwrap()),
                crc.sum()
            );
        }
    }

    #[test]
    fn bytes_do_not_depend_on_threads_or_write_sizes() {
        let data = sample(5 * BLOCK + 1234);
        let one = gzip(&data, 6, 1, 1 << 20);
        assert_eq!(one, gzip(&data, 6, 2, 333));
        assert_eq!(one, gzip(&data, 6, 7, 65536));
        assert_ne!(one, gzip(&data, 1, 2, 65536), "the level must matter");
    }

    /// Real binary data (the system's programs) through different worker counts: the
    /// output must not depend on which worker compressed which block, or in what order.
    #[test]
    fn bytes_do_not_depend_on_scheduling_for_real_data() {
        let mut names: Vec<_> = std::fs::read_dir("/usr/bin")
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        names.sort();
        let mut data = Vec::new();
        for n in names {
            if data.len() > 12 << 20 {
                break;
            }
            data.extend(std::fs::read(n).unwrap_or_default());
        }
        let data = &data[..];
        let first = gzip(data, 6, 1, 1 << 20);
        for threads in [2, 3, 4, 1] {
            assert!(
                gzip(data, 6, threads, 1 << 20) == first,
                "{threads} workers"
            );
        }
        assert_eq!(gunzip(&first), data);
    }

    #[test]
    fn the_system_gzip_reads_it() {
        let data = sample(2 * BLOCK + 5);
        let gz = gzip(&data, 6, 2, 4096);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.gz");
        std::fs::write(&p, &gz).unwrap();
        let out = std::process::Command::new("gzip")
            .arg("-dc")
            .arg(&p)
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, data);
    }

    #[test]
    fn dictionary_keeps_the_ratio_close_to_one_stream() {
        let data = sample(8 * BLOCK);
        let parallel = gzip(&data, 6, 2, 1 << 16).len() as f64;
        let mut serial = flate2::write::GzEncoder::new(Vec::new(), Compression::new(6));
        serial.write_all(&data).unwrap();
        let serial = serial.finish().unwrap().len() as f64;
        assert!(parallel / serial < 1.01, "{parallel} vs {serial}");
    }
}
