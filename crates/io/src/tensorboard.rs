//! TensorBoard event files (scalars only), written without protobuf tooling: an `Event` is a
//! few fields hand-encoded in protobuf wire format, framed as TFRecords with masked CRC32C.

use std::io;
use std::path::Path;

/// CRC32C (Castagnoli), table driven.
pub fn crc32c(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0x82F6_3B78 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *e = c;
        }
        t
    });
    let mut crc = !0u32;
    for b in data {
        crc = table[((crc ^ *b as u32) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

fn masked_crc(data: &[u8]) -> u32 {
    crc32c(data).rotate_right(15).wrapping_add(0xa282_ead8)
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn bytes_field(out: &mut Vec<u8>, field: u64, data: &[u8]) {
    varint(out, (field << 3) | 2);
    varint(out, data.len() as u64);
    out.extend_from_slice(data);
}

/// Encodes `Event{wall_time = 1, step = 2, file_version = 3 | summary = 5 {value = 1 {tag = 1,
/// simple_value = 2}}}`.
fn event(
    wall_time: f64,
    step: i64,
    file_version: Option<&str>,
    scalars: &[(&str, f32)],
) -> Vec<u8> {
    let mut e = Vec::new();
    varint(&mut e, (1 << 3) | 1);
    e.extend_from_slice(&wall_time.to_le_bytes());
    varint(&mut e, 2 << 3);
    varint(&mut e, step as u64);
    if let Some(v) = file_version {
        bytes_field(&mut e, 3, v.as_bytes());
    }
    if !scalars.is_empty() {
        let mut summary = Vec::new();
        for (tag, value) in scalars {
            let mut val = Vec::new();
            bytes_field(&mut val, 1, tag.as_bytes());
            varint(&mut val, (2 << 3) | 5);
            val.extend_from_slice(&value.to_le_bytes());
            bytes_field(&mut summary, 1, &val);
        }
        bytes_field(&mut e, 5, &summary);
    }
    e
}

fn now() -> std::time::Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

/// Encodes the events of one `events.out.tfevents.<seconds>.stagewise` file; the caller
/// stores the bytes (appending what [`EventWriter::take`] returns), so that the file can live
/// in any storage.
pub struct EventWriter {
    pending: Vec<u8>,
    /// The event file's name.
    pub name: String,
}

impl Default for EventWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl EventWriter {
    /// A new event file, starting with its version record.
    pub fn new() -> Self {
        let mut w = EventWriter {
            pending: Vec::new(),
            name: format!("events.out.tfevents.{}.stagewise", now().as_secs()),
        };
        w.record(&event(now().as_secs_f64(), 0, Some("brain.Event:2"), &[]));
        w
    }

    fn record(&mut self, data: &[u8]) {
        let len = (data.len() as u64).to_le_bytes();
        self.pending.extend_from_slice(&len);
        self.pending
            .extend_from_slice(&masked_crc(&len).to_le_bytes());
        self.pending.extend_from_slice(data);
        self.pending
            .extend_from_slice(&masked_crc(data).to_le_bytes());
    }

    /// One event holding all `scalars` at `step`.
    pub fn scalars(&mut self, step: u64, scalars: &[(&str, f32)]) {
        self.record(&event(now().as_secs_f64(), step as i64, None, scalars))
    }

    /// The bytes encoded since the last call, to append to the file.
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.pending)
    }
}

/// Reads back the records of an event file, checking both CRCs of each; returns the payloads.
pub fn read_records(path: &Path) -> io::Result<Vec<Vec<u8>>> {
    let data = std::fs::read(path)?;
    let mut out = Vec::new();
    let mut i = 0;
    while i + 12 <= data.len() {
        let len_bytes = &data[i..i + 8];
        let len = u64::from_le_bytes(len_bytes.try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(data[i + 8..i + 12].try_into().unwrap());
        if crc != masked_crc(len_bytes) || i + 16 + len > data.len() {
            return Err(io::Error::other(format!(
                "{}: bad record at byte {i}",
                path.display()
            )));
        }
        let payload = &data[i + 12..i + 12 + len];
        let pcrc = u32::from_le_bytes(data[i + 12 + len..i + 16 + len].try_into().unwrap());
        if pcrc != masked_crc(payload) {
            return Err(io::Error::other(format!(
                "{}: bad payload CRC at byte {i}",
                path.display()
            )));
        }
        out.push(payload.to_vec());
        i += 16 + len;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_known_answer() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn records_round_trip_and_hold_the_tag_and_value() {
        let dir = std::env::temp_dir().join(format!("sw-tb-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut w = EventWriter::new();
        w.scalars(7, &[("train/loss", 0.25)]);
        let path = dir.join(&w.name);
        std::fs::write(&path, w.take()).unwrap();
        assert!(w.take().is_empty());
        let recs = read_records(&path).unwrap();
        assert_eq!(recs.len(), 2);
        assert!(recs[0].windows(13).any(|s| s == b"brain.Event:2"));
        let r = &recs[1];
        assert!(r.windows(10).any(|s| s == b"train/loss"));
        assert!(r.windows(4).any(|s| s == 0.25f32.to_le_bytes()));
        assert!(
            r.windows(2).any(|s| s == [0x10, 7]),
            "step field (tag 0x10, varint 7)"
        );
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 6;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(
            read_records(&path).is_err(),
            "a flipped byte must fail the CRC"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
