//! A minimal TensorBoard event-file writer.
//!
//! # Why hand-rolled
//!
//! The usual crate (`tensorboard-rs`) is unmaintained (RUSTSEC-2024-0437) and pulls in a protoc
//! build step. We write few kinds of summaries (scalars, histograms, and the plugin summaries of
//! [`hparams`] and [`custom_scalars`]), so the handful of protobuf messages involved are declared
//! here with `prost` derive macros. Field numbers are copied from TensorFlow's
//! `core/util/event.proto` and `core/framework/{summary,tensor,tensor_shape}.proto`; changing
//! one silently breaks every reader, so do not.
//!
//! # File format
//!
//! An event file is a sequence of TFRecord records:
//!
//! ```text
//! u64 LE   length of data
//! u32 LE   masked CRC32C of the 8 length bytes
//! [u8]     data (a serialized `Event`)
//! u32 LE   masked CRC32C of data
//! ```
//!
//! with `mask(crc) = ((crc >> 15) | (crc << 17)) + 0xa282ead8` (wrapping). The first record of a
//! file is an `Event` whose `file_version` is `"brain.Event:2"`; readers use it to recognise the
//! format. The file is named `events.out.tfevents.{secs}.{hostname}.{pid}.{n}`, where `n` is a
//! per-process counter, so two writers opened in the same second never collide.
//!
//! # Histograms
//!
//! [`EventWriter::add_histogram`] uses TensorFlow's default bucket layout (the one
//! `tf.summary.histogram` in TF1 and `tensorboardX` use): bucket limits `±1e-12·1.1^i` up to
//! `1e20`, plus `0` and `±f64::MAX`. Bucket `i` counts values in `[limit(i-1), limit(i))`. Runs of
//! empty buckets are collapsed into one (as TensorFlow's `Histogram::EncodeToProto` does), so a
//! histogram costs a few hundred bytes rather than ~1600 doubles. Non-finite values are counted
//! nowhere: they are dropped, since a histogram of a tensor containing NaN would otherwise have
//! NaN `sum`/`min`/`max` and TensorBoard would refuse to draw it. Log NaN counts as a scalar.
//!
//! # Errors
//!
//! Every write returns `io::Result`; nothing here panics on a full disk. Writes are buffered and
//! pushed to the file at most [`FLUSH_INTERVAL`] after they were made (checked on each write),
//! so a live TensorBoard keeps up without a syscall per scalar; [`EventWriter::flush`] forces
//! it. Dropping the writer flushes too, ignoring errors (there is nobody to report them to).

pub mod custom_scalars;
pub mod hparams;

use prost::Message;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// `tensorflow.Event` (event.proto), reduced to the fields we write.
#[derive(Clone, PartialEq, Message)]
pub struct Event {
    /// Seconds since the Unix epoch.
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    /// Global step of the event.
    #[prost(int64, tag = "2")]
    pub step: i64,
    /// `oneof what`.
    #[prost(oneof = "event::What", tags = "3, 5")]
    pub what: Option<event::What>,
}

/// Nested types of [`Event`].
pub mod event {
    /// `Event.what`: the payload.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum What {
        /// Format version, `"brain.Event:2"`; the first record of a file.
        #[prost(string, tag = "3")]
        FileVersion(String),
        /// A set of named values.
        #[prost(message, tag = "5")]
        Summary(super::Summary),
    }
}

/// `tensorflow.Summary` (summary.proto).
#[derive(Clone, PartialEq, Message)]
pub struct Summary {
    /// The named values.
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<summary::Value>,
}

/// Nested types of [`Summary`].
pub mod summary {
    /// `Summary.Value`, reduced to tag, metadata, scalar, histogram and tensor.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Value {
        /// Tag name, e.g. `train/loss`.
        #[prost(string, tag = "1")]
        pub tag: String,
        /// Which plugin owns a tensor summary (hparams, custom scalars); `None` for scalars and
        /// histograms, whose kind readers know from the value itself.
        #[prost(message, optional, tag = "9")]
        pub metadata: Option<super::SummaryMetadata>,
        /// `oneof value`.
        #[prost(oneof = "value::Value", tags = "2, 5, 8")]
        pub value: Option<value::Value>,
    }

    /// Nested types of [`Value`].
    pub mod value {
        /// `Summary.Value.value`. Being a oneof matters: a proto3 plain `float` field equal to
        /// 0.0 would not be serialized at all, and readers would not see a scalar.
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Value {
            /// A scalar.
            #[prost(float, tag = "2")]
            SimpleValue(f32),
            /// A histogram.
            #[prost(message, tag = "5")]
            Histo(super::super::HistogramProto),
            /// A tensor; plugins keep their payload in the metadata and put a tensor here.
            #[prost(message, tag = "8")]
            Tensor(super::super::TensorProto),
        }
    }
}

/// `tensorflow.SummaryMetadata` (summary.proto): which plugin a summary belongs to.
#[derive(Clone, PartialEq, Message)]
pub struct SummaryMetadata {
    /// The owning plugin and its serialized payload.
    #[prost(message, optional, tag = "1")]
    pub plugin_data: Option<PluginData>,
    /// How the data is stored; plugins' tensor summaries use [`DATA_CLASS_TENSOR`].
    #[prost(int32, tag = "4")]
    pub data_class: i32,
}

/// `SummaryMetadata.PluginData`.
#[derive(Clone, PartialEq, Message)]
pub struct PluginData {
    /// E.g. `"hparams"`, `"custom_scalars"`.
    #[prost(string, tag = "1")]
    pub plugin_name: String,
    /// The plugin's own serialized protobuf message.
    #[prost(bytes = "vec", tag = "2")]
    pub content: Vec<u8>,
}

/// `DataClass.DATA_CLASS_TENSOR` (summary.proto).
pub const DATA_CLASS_TENSOR: i32 = 2;

/// `tensorflow.TensorProto` (tensor.proto), reduced to dtype, shape and string values.
#[derive(Clone, PartialEq, Message)]
pub struct TensorProto {
    /// `tensorflow.DataType`: [`DT_FLOAT`] or [`DT_STRING`].
    #[prost(int32, tag = "1")]
    pub dtype: i32,
    /// Absent or empty dims: a scalar.
    #[prost(message, optional, tag = "2")]
    pub tensor_shape: Option<TensorShapeProto>,
    /// Elements of a string tensor.
    #[prost(bytes = "vec", repeated, tag = "8")]
    pub string_val: Vec<Vec<u8>>,
}

/// `tensorflow.TensorShapeProto` (tensor_shape.proto).
#[derive(Clone, PartialEq, Message)]
pub struct TensorShapeProto {
    /// Dimension sizes, outermost first.
    #[prost(message, repeated, tag = "2")]
    pub dim: Vec<TensorShapeDim>,
}

/// `TensorShapeProto.Dim`.
#[derive(Clone, PartialEq, Message)]
pub struct TensorShapeDim {
    #[prost(int64, tag = "1")]
    pub size: i64,
}

/// `tensorflow.DT_FLOAT`.
pub const DT_FLOAT: i32 = 1;
/// `tensorflow.DT_STRING`.
pub const DT_STRING: i32 = 7;

impl TensorProto {
    /// The empty float tensor of shape `[0]` that the hparams plugin attaches to its summaries.
    pub fn empty_float() -> TensorProto {
        TensorProto {
            dtype: DT_FLOAT,
            tensor_shape: Some(TensorShapeProto {
                dim: vec![TensorShapeDim { size: 0 }],
            }),
            string_val: Vec::new(),
        }
    }

    /// A scalar string tensor holding `bytes`.
    pub fn scalar_string(bytes: Vec<u8>) -> TensorProto {
        TensorProto {
            dtype: DT_STRING,
            tensor_shape: Some(TensorShapeProto::default()),
            string_val: vec![bytes],
        }
    }
}

impl summary::Value {
    /// A scalar value.
    pub fn scalar(tag: &str, value: f32) -> summary::Value {
        summary::Value {
            tag: tag.to_string(),
            metadata: None,
            value: Some(summary::value::Value::SimpleValue(value)),
        }
    }

    /// A plugin's tensor summary: `content` (the plugin's serialized message) in the metadata,
    /// `tensor` as the value.
    pub fn plugin(
        tag: &str,
        plugin: &str,
        content: Vec<u8>,
        tensor: TensorProto,
    ) -> summary::Value {
        summary::Value {
            tag: tag.to_string(),
            metadata: Some(SummaryMetadata {
                plugin_data: Some(PluginData {
                    plugin_name: plugin.to_string(),
                    content,
                }),
                data_class: DATA_CLASS_TENSOR,
            }),
            value: Some(summary::value::Value::Tensor(tensor)),
        }
    }
}

/// `tensorflow.HistogramProto` (summary.proto).
#[derive(Clone, PartialEq, Message)]
pub struct HistogramProto {
    /// Smallest value.
    #[prost(double, tag = "1")]
    pub min: f64,
    /// Largest value.
    #[prost(double, tag = "2")]
    pub max: f64,
    /// Number of values.
    #[prost(double, tag = "3")]
    pub num: f64,
    /// Sum of values.
    #[prost(double, tag = "4")]
    pub sum: f64,
    /// Sum of squared values.
    #[prost(double, tag = "5")]
    pub sum_squares: f64,
    /// Right edges of the buckets (bucket `i` is `[limit(i-1), limit(i))`).
    #[prost(double, repeated, packed = "true", tag = "6")]
    pub bucket_limit: Vec<f64>,
    /// Counts, parallel to `bucket_limit`.
    #[prost(double, repeated, packed = "true", tag = "7")]
    pub bucket: Vec<f64>,
}

/// The format string TensorBoard expects in the first record of an event file.
pub const FILE_VERSION: &str = "brain.Event:2";

const MASK_DELTA: u32 = 0xa282_ead8;

/// Buffered records are flushed by the first write this long after the previous flush.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(5);

/// TFRecord's masked CRC32C. Masking exists because computing the CRC of a string that itself
/// contains CRCs is weak; the rotation and offset make embedded CRCs look random.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    // `rotate_right(15)` is the spec's `(crc >> 15) | (crc << 17)`.
    crc.rotate_right(15).wrapping_add(MASK_DELTA)
}

/// Frame `data` as one TFRecord record (see the module docs).
pub fn encode_record(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 16);
    let len = (data.len() as u64).to_le_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
    out
}

/// Writes scalars and histograms to a new event file in a directory.
pub struct EventWriter {
    out: BufWriter<File>,
    path: PathBuf,
    last_flush: Instant,
}

impl EventWriter {
    /// Create `dir` if needed and open a new event file in it, writing the version record.
    pub fn create(dir: impl AsRef<Path>) -> io::Result<Self> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| with_path(e, "creating log directory", dir))?;
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let secs = now().floor() as u64;
        let name = format!(
            "events.out.tfevents.{secs}.{}.{}.{n}",
            hostname(),
            std::process::id()
        );
        let path = dir.join(name);
        // `create_new`: never append to or truncate someone else's file.
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| with_path(e, "creating event file", &path))?;
        let mut w = EventWriter {
            out: BufWriter::new(file),
            path,
            last_flush: Instant::now(),
        };
        w.write_event(&Event {
            wall_time: now(),
            step: 0,
            what: Some(event::What::FileVersion(FILE_VERSION.to_string())),
        })?;
        w.flush()?;
        Ok(w)
    }

    /// The event file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Log one scalar under `tag` at `step`.
    pub fn add_scalar(&mut self, tag: &str, value: f32, step: i64) -> io::Result<()> {
        self.write_summary(step, tag, summary::value::Value::SimpleValue(value))
    }

    /// Log a histogram of `values` (non-finite values dropped; see the module docs).
    pub fn add_histogram(&mut self, tag: &str, values: &[f32], step: i64) -> io::Result<()> {
        let histo = histogram(values);
        self.write_summary(step, tag, summary::value::Value::Histo(histo))
    }

    /// Log a summary (several values, plugin summaries) at `step`.
    pub fn add_summary(&mut self, summary: Summary, step: i64) -> io::Result<()> {
        self.write_event(&Event {
            wall_time: now(),
            step,
            what: Some(event::What::Summary(summary)),
        })
    }

    /// Write an arbitrary event (for summaries not covered above).
    pub fn write_event(&mut self, event: &Event) -> io::Result<()> {
        let record = encode_record(&event.encode_to_vec());
        self.out
            .write_all(&record)
            .map_err(|e| with_path(e, "writing", &self.path))?;
        if self.last_flush.elapsed() >= FLUSH_INTERVAL {
            self.flush()?;
        }
        Ok(())
    }

    /// Push buffered records to the file.
    pub fn flush(&mut self) -> io::Result<()> {
        self.last_flush = Instant::now();
        self.out
            .flush()
            .map_err(|e| with_path(e, "flushing", &self.path))
    }

    fn write_summary(
        &mut self,
        step: i64,
        tag: &str,
        value: summary::value::Value,
    ) -> io::Result<()> {
        self.write_event(&Event {
            wall_time: now(),
            step,
            what: Some(event::What::Summary(Summary {
                value: vec![summary::Value {
                    tag: tag.to_string(),
                    metadata: None,
                    value: Some(value),
                }],
            })),
        })
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        let _ = self.out.flush();
    }
}

/// Write a whole event file at `path` (the version record, then one event per `(step,
/// summary)`), replacing any file there atomically: written to a temporary name without
/// `tfevents` in it (so TensorBoard never reads it half-written), then renamed.
///
/// This is for summaries that describe a run rather than follow it (hparams, layouts): a
/// fixed name, rewritten whenever they change, leaves exactly one copy however often a
/// sweep is resumed.
pub fn write_event_file(path: impl AsRef<Path>, summaries: &[(i64, Summary)]) -> io::Result<()> {
    let path = path.as_ref();
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| with_path(e, "creating log directory", dir))?;
    let wall_time = now();
    let mut bytes = encode_record(
        &Event {
            wall_time,
            step: 0,
            what: Some(event::What::FileVersion(FILE_VERSION.to_string())),
        }
        .encode_to_vec(),
    );
    for (step, s) in summaries {
        let e = Event {
            wall_time,
            step: *step,
            what: Some(event::What::Summary(s.clone())),
        };
        bytes.extend_from_slice(&encode_record(&e.encode_to_vec()));
    }
    let tmp = dir.join(format!(".fp8-events.{}.tmp", std::process::id()));
    std::fs::write(&tmp, &bytes).map_err(|e| with_path(e, "writing", &tmp))?;
    std::fs::rename(&tmp, path).map_err(|e| with_path(e, "renaming into", path))
}

/// Read every event of an event file, checking both CRCs of every record. Meant for tests and
/// for reports that read back a run; a truncated final record (a writer killed mid-write) ends
/// the file without error.
pub fn read_events(path: impl AsRef<Path>) -> io::Result<Vec<Event>> {
    let path = path.as_ref();
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| with_path(e, "reading", path))?;
    let bad = |what: &str, at: usize| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {what} in record at byte {at}", path.display()),
        )
    };
    let mut events = Vec::new();
    let mut at = 0;
    while bytes.len() - at >= 12 {
        let len_bytes = &bytes[at..at + 8];
        let crc = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap());
        if crc != masked_crc32c(len_bytes) {
            return Err(bad("length CRC mismatch", at));
        }
        let len = u64::from_le_bytes(len_bytes.try_into().unwrap());
        let start = at + 12;
        let Some(end) = usize::try_from(len).ok().and_then(|l| start.checked_add(l)) else {
            return Err(bad("absurd length", at));
        };
        if end + 4 > bytes.len() {
            break; // truncated tail
        }
        let data = &bytes[start..end];
        let crc = u32::from_le_bytes(bytes[end..end + 4].try_into().unwrap());
        if crc != masked_crc32c(data) {
            return Err(bad("data CRC mismatch", at));
        }
        let event =
            Event::decode(data).map_err(|e| bad(&format!("undecodable event ({e})"), at))?;
        events.push(event);
        at = end + 4;
    }
    Ok(events)
}

/// TensorFlow's default bucket limits: `-f64::MAX, …, -1e-12, 0, 1e-12, …, 1e20-ish, f64::MAX`.
pub fn default_bucket_limits() -> &'static [f64] {
    static LIMITS: OnceLock<Vec<f64>> = OnceLock::new();
    LIMITS.get_or_init(|| {
        let mut pos = Vec::new();
        let mut v = 1e-12;
        while v < 1e20 {
            pos.push(v);
            v *= 1.1;
        }
        pos.push(f64::MAX);
        let mut all: Vec<f64> = pos.iter().rev().map(|v| -v).collect();
        all.push(0.0);
        all.extend_from_slice(&pos);
        all
    })
}

/// Build the histogram of `values` with [`default_bucket_limits`], collapsing empty runs.
pub fn histogram(values: &[f32]) -> HistogramProto {
    let limits = default_bucket_limits();
    let mut counts = vec![0.0f64; limits.len()];
    let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
    let (mut num, mut sum, mut sum_squares) = (0.0, 0.0, 0.0);
    for &v in values.iter().filter(|v| v.is_finite()) {
        let v = v as f64;
        // First limit strictly greater than v: bucket i holds [limit(i-1), limit(i)).
        let i = limits.partition_point(|&l| l <= v).min(limits.len() - 1);
        counts[i] += 1.0;
        min = min.min(v);
        max = max.max(v);
        num += 1.0;
        sum += v;
        sum_squares += v * v;
    }
    if num == 0.0 {
        (min, max) = (0.0, 0.0);
    }
    let mut h = HistogramProto {
        min,
        max,
        num,
        sum,
        sum_squares,
        bucket_limit: Vec::new(),
        bucket: Vec::new(),
    };
    let mut i = 0;
    while i < counts.len() {
        let (mut end, mut count) = (limits[i], counts[i]);
        i += 1;
        if count == 0.0 {
            while i < counts.len() && counts[i] == 0.0 {
                end = limits[i];
                count = counts[i];
                i += 1;
            }
        }
        h.bucket_limit.push(end);
        h.bucket.push(count);
    }
    h
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The host name for the file name, reduced to characters that are safe in a file name.
fn hostname() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .unwrap_or_default();
    let clean: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.is_empty() {
        "localhost".to_string()
    } else {
        clean
    }
}

fn with_path(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::manual_rotate)] // spelled as in the TFRecord spec on purpose
    fn crc32c_known_value() {
        // The CRC32C check value from the Castagnoli paper / RFC 3720.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
        let c: u32 = 0xE306_9283;
        let expected = ((c >> 15) | (c << 17)).wrapping_add(0xa282_ead8);
        assert_eq!(masked_crc32c(b"123456789"), expected);
        // By hand: rotr(0xE3069283, 15) = 0x2507C60D; + 0xA282EAD8 = 0xC78AB0E5.
        assert_eq!(expected, 0xC78A_B0E5);
    }

    #[test]
    fn record_framing_matches_hand_computed_bytes() {
        let data = b"123456789";
        let rec = encode_record(data);
        assert_eq!(rec.len(), 8 + 4 + 9 + 4);
        assert_eq!(&rec[..8], &[9, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            &rec[8..12],
            &masked_crc32c(&9u64.to_le_bytes()).to_le_bytes()
        );
        assert_eq!(&rec[12..21], data);
        assert_eq!(&rec[21..], &[0xE5, 0xB0, 0x8A, 0xC7]);
    }

    #[test]
    fn event_encoding_is_canonical_protobuf() {
        // file_version event: field 1 (double, wire type 1) = 0x09, field 2 (varint) = 0x10,
        // field 3 (length-delimited) = 0x1a.
        let e = Event {
            wall_time: 1.0,
            step: 3,
            what: Some(event::What::FileVersion("ab".into())),
        };
        let mut expected = vec![0x09];
        expected.extend_from_slice(&1.0f64.to_le_bytes());
        expected.extend_from_slice(&[0x10, 3, 0x1a, 2, b'a', b'b']);
        assert_eq!(e.encode_to_vec(), expected);

        // A zero scalar must still be serialized (tag 2, wire type 5 = 0x15).
        let v = summary::Value {
            tag: "t".into(),
            metadata: None,
            value: Some(summary::value::Value::SimpleValue(0.0)),
        };
        assert_eq!(v.encode_to_vec(), vec![0x0a, 1, b't', 0x15, 0, 0, 0, 0]);
    }

    #[test]
    fn histogram_buckets() {
        let h = histogram(&[1.0, 1.0, -2.0, 0.0, f32::NAN, 1e30]);
        assert_eq!(h.num, 5.0);
        assert_eq!(h.min, -2.0);
        assert_eq!(h.max, 1e30f32 as f64);
        assert_eq!(h.bucket.iter().sum::<f64>(), 5.0);
        assert_eq!(h.bucket_limit.len(), h.bucket.len());
        // Limits strictly increasing; every non-empty bucket's range contains its values.
        assert!(h.bucket_limit.windows(2).all(|w| w[0] < w[1]));
        let find = |x: f64| h.bucket_limit.iter().position(|&l| l > x).unwrap();
        assert_eq!(h.bucket[find(1.0)], 2.0);
        assert_eq!(h.bucket[find(-2.0)], 1.0);
        assert_eq!(h.bucket[find(0.0)], 1.0);
        assert_eq!(*h.bucket.last().unwrap(), 1.0); // 1e30 lands in [~1e20, f64::MAX)
                                                    // Empty runs collapsed: no two consecutive empty buckets.
        assert!(h.bucket.windows(2).all(|w| w[0] > 0.0 || w[1] > 0.0));
        let empty = histogram(&[]);
        assert_eq!((empty.num, empty.min, empty.max), (0.0, 0.0, 0.0));
    }

    #[test]
    fn write_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = {
            let mut w = EventWriter::create(dir.path().join("run")).unwrap();
            w.add_scalar("train/loss", 2.5, 1).unwrap();
            w.add_scalar("train/loss", 0.0, 2).unwrap();
            w.add_histogram("h", &[1.0, 2.0], 2).unwrap();
            w.path().to_path_buf()
        }; // dropped: flushed
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with("events.out.tfevents."), "{name}");
        let ev = read_events(&path).unwrap();
        assert_eq!(ev.len(), 4);
        assert_eq!(
            ev[0].what,
            Some(event::What::FileVersion(FILE_VERSION.into()))
        );
        let Some(event::What::Summary(s)) = &ev[2].what else {
            panic!("not a summary")
        };
        assert_eq!(ev[2].step, 2);
        assert_eq!(s.value[0].tag, "train/loss");
        assert_eq!(
            s.value[0].value,
            Some(summary::value::Value::SimpleValue(0.0))
        );
        // Two writers in the same directory and second get different files.
        let a = EventWriter::create(dir.path()).unwrap();
        let b = EventWriter::create(dir.path()).unwrap();
        assert_ne!(a.path(), b.path());
    }

    #[test]
    fn corrupt_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad");
        let mut rec = encode_record(b"xyz");
        rec[13] ^= 1;
        std::fs::write(&p, &rec).unwrap();
        let err = read_events(&p).unwrap_err();
        assert!(err.to_string().contains("data CRC mismatch"), "{err}");
        assert!(EventWriter::create("/proc/definitely/not/writable").is_err());
    }
}
