//! MPEG-2 transport stream segments: PAT, PMT and one H.264 video stream,
//! padded to the rendition's bitrate × duration with null packets whose
//! payload is deterministic. A segment is never stored: the video packets are
//! built per request (a few KiB) and padding packets computed by index.

use crate::h264::{idr_frame, skip_frame, Picture};

pub const PACKET: usize = 188;
const PAT_PID: u16 = 0x0000;
const PMT_PID: u16 = 0x1000;
const VIDEO_PID: u16 = 0x0100;
const NULL_PID: u16 = 0x1FFF;
/// Frames per second of the synthetic video.
pub const FPS: u32 = 10;
/// PTS offset, as muxers commonly start at 1.4 s.
const PTS_OFFSET: u64 = 126_000;

/// What one segment contains.
#[derive(Debug, Clone, Copy)]
pub struct SegmentSpec {
    pub picture: Picture,
    /// Absolute segment number (decides PTS, picture phase and padding bytes).
    pub index: u64,
    /// Start time in the presentation, in 90 kHz ticks.
    pub start_ticks: u64,
    /// Duration in 90 kHz ticks.
    pub duration_ticks: u64,
    /// Size the segment is padded to (rounded up to whole packets).
    pub target_bytes: u64,
    /// Seeds the picture tint and the padding bytes (per title and rendition).
    pub seed: u64,
}

/// A segment: its video packets, then null packets up to its size.
#[derive(Debug, Clone)]
pub struct Segment {
    video: Vec<u8>,
    total_packets: u64,
    seed: u64,
}

impl Segment {
    pub fn build(spec: &SegmentSpec) -> Segment {
        let mut out = Vec::with_capacity(64 * 1024);
        let mut cc_pat = 0u8;
        let mut cc_pmt = 0u8;
        let mut cc_video = 0u8;
        psi_packet(&mut out, PAT_PID, &mut cc_pat, &pat());
        psi_packet(&mut out, PMT_PID, &mut cc_pmt, &pmt());

        let frames = ((spec.duration_ticks * u64::from(FPS)).div_ceil(90_000)).max(1);
        let tint = (
            (spec.seed >> 8) as u8 % 200 + 28,
            (spec.seed >> 16) as u8 % 200 + 28,
        );
        for frame in 0..frames {
            let pts = PTS_OFFSET + spec.start_ticks + frame * 90_000 / u64::from(FPS);
            let es = if frame == 0 {
                idr_frame(
                    spec.picture,
                    (spec.index & 0xFFFF) as u32,
                    (spec.index * 24 % 220) as u32,
                    tint,
                )
            } else {
                skip_frame(spec.picture, frame as u32)
            };
            let pes = pes_packet(&es, pts);
            // PCR slightly behind the PTS of each frame, on its first packet.
            write_pes(
                &mut out,
                VIDEO_PID,
                &mut cc_video,
                &pes,
                pts - 9000,
                frame == 0,
            );
        }
        let video_packets = (out.len() / PACKET) as u64;
        let total_packets = spec.target_bytes.div_ceil(PACKET as u64).max(video_packets);
        Segment {
            video: out,
            total_packets,
            seed: spec.seed ^ spec.index.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        }
    }

    pub fn len(&self) -> u64 {
        self.total_packets * PACKET as u64
    }

    pub fn is_empty(&self) -> bool {
        self.total_packets == 0
    }

    /// Fills `buf` with the segment's bytes starting at `offset`.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) {
        let mut pos = offset;
        let mut filled = 0;
        while filled < buf.len() {
            let o = pos as usize;
            let n = if o < self.video.len() {
                let n = (self.video.len() - o).min(buf.len() - filled);
                buf[filled..filled + n].copy_from_slice(&self.video[o..o + n]);
                n
            } else {
                let packet_index = pos / PACKET as u64;
                let within = (pos % PACKET as u64) as usize;
                let packet = null_packet(self.seed, packet_index);
                let n = (PACKET - within).min(buf.len() - filled);
                buf[filled..filled + n].copy_from_slice(&packet[within..within + n]);
                n
            };
            filled += n;
            pos += n as u64;
        }
    }
}

fn null_packet(seed: u64, index: u64) -> [u8; PACKET] {
    let mut p = [0u8; PACKET];
    p[..4].copy_from_slice(&[0x47, (NULL_PID >> 8) as u8, (NULL_PID & 0xFF) as u8, 0x10]);
    crate::content::fill_random(
        seed ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03),
        &mut p[4..],
    );
    p
}

/// CRC-32/MPEG-2 (polynomial 0x04C11DB7, not reflected, no final xor).
pub(crate) fn crc32_mpeg2(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04C1_1DB7
            } else {
                crc << 1
            };
        }
    }
    crc
}

fn with_crc(mut section: Vec<u8>) -> Vec<u8> {
    let crc = crc32_mpeg2(&section);
    section.extend_from_slice(&crc.to_be_bytes());
    section
}

fn pat() -> Vec<u8> {
    with_crc(vec![
        0x00, // table_id
        0xB0,
        13, // section_syntax_indicator, section_length
        0x00,
        0x01, // transport_stream_id
        0xC1,
        0x00,
        0x00, // version 0, current; section 0 of 0
        0x00,
        0x01, // program_number 1
        0xE0 | (PMT_PID >> 8) as u8,
        (PMT_PID & 0xFF) as u8,
    ])
}

fn pmt() -> Vec<u8> {
    with_crc(vec![
        0x02, // table_id
        0xB0,
        18, // section_length
        0x00,
        0x01, // program_number
        0xC1,
        0x00,
        0x00,
        0xE0 | (VIDEO_PID >> 8) as u8,
        (VIDEO_PID & 0xFF) as u8, // PCR_PID
        0xF0,
        0x00, // program_info_length 0
        0x1B, // stream_type: H.264
        0xE0 | (VIDEO_PID >> 8) as u8,
        (VIDEO_PID & 0xFF) as u8,
        0xF0,
        0x00, // ES_info_length 0
    ])
}

fn psi_packet(out: &mut Vec<u8>, pid: u16, cc: &mut u8, section: &[u8]) {
    let start = out.len();
    out.extend_from_slice(&[
        0x47,
        0x40 | (pid >> 8) as u8,
        (pid & 0xFF) as u8,
        0x10 | *cc,
    ]);
    *cc = (*cc + 1) & 0x0F;
    out.push(0); // pointer_field
    out.extend_from_slice(section);
    out.resize(start + PACKET, 0xFF);
}

fn pes_packet(es: &[u8], pts: u64) -> Vec<u8> {
    let mut p = Vec::with_capacity(es.len() + 14);
    p.extend_from_slice(&[0, 0, 1, 0xE0]);
    let len = es.len() + 8;
    let len = if len > 0xFFFF { 0 } else { len as u16 };
    p.extend_from_slice(&len.to_be_bytes());
    p.extend_from_slice(&[0x84, 0x80, 5]); // data_alignment; PTS only; header length
    p.extend_from_slice(&[
        0x21 | ((pts >> 29) & 0x0E) as u8,
        (pts >> 22) as u8,
        (((pts >> 14) & 0xFE) | 1) as u8,
        (pts >> 7) as u8,
        (((pts << 1) & 0xFE) | 1) as u8,
    ]);
    p.extend_from_slice(es);
    p
}

fn write_pes(out: &mut Vec<u8>, pid: u16, cc: &mut u8, pes: &[u8], pcr: u64, keyframe: bool) {
    let mut rest = pes;
    let mut first = true;
    while !rest.is_empty() {
        let with_pcr = first;
        let af_min = if with_pcr { 8 } else { 0 };
        let take = rest.len().min(184 - af_min);
        let af_total = 184 - take;
        let afc = if af_total > 0 { 0x30 } else { 0x10 };
        out.extend_from_slice(&[
            0x47,
            (if first { 0x40 } else { 0 }) | (pid >> 8) as u8,
            (pid & 0xFF) as u8,
            afc | *cc,
        ]);
        *cc = (*cc + 1) & 0x0F;
        if af_total > 0 {
            out.push((af_total - 1) as u8);
            if af_total > 1 {
                let mut flags = 0u8;
                if with_pcr {
                    flags |= 0x10;
                    if keyframe {
                        flags |= 0x40; // random_access_indicator
                    }
                }
                out.push(flags);
                let mut used = 2;
                if with_pcr {
                    out.extend_from_slice(&[
                        (pcr >> 25) as u8,
                        (pcr >> 17) as u8,
                        (pcr >> 9) as u8,
                        (pcr >> 1) as u8,
                        (((pcr & 1) << 7) as u8) | 0x7E,
                        0,
                    ]);
                    used += 6;
                }
                out.extend(std::iter::repeat_n(0xFF, af_total - used));
            }
        }
        out.extend_from_slice(&rest[..take]);
        rest = &rest[take..];
        first = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(index: u64) -> SegmentSpec {
        SegmentSpec {
            picture: Picture {
                width_mbs: 10,
                height_mbs: 6,
            },
            index,
            start_ticks: index * 4 * 90_000,
            duration_ticks: 4 * 90_000,
            target_bytes: 200_000,
            seed: 42,
        }
    }

    fn bytes(seg: &Segment) -> Vec<u8> {
        let mut b = vec![0; seg.len() as usize];
        seg.read_at(0, &mut b);
        b
    }

    #[test]
    fn crc_matches_the_mpeg2_check_value() {
        assert_eq!(crc32_mpeg2(b"123456789"), 0x0376_E6E7);
    }

    #[test]
    fn segments_are_whole_packets_with_continuous_counters() {
        let seg = Segment::build(&spec(3));
        assert!(seg.len() >= 200_000 && seg.len().is_multiple_of(188));
        let b = bytes(&seg);
        let mut last_cc: std::collections::HashMap<u16, u8> = Default::default();
        for p in b.chunks(188) {
            assert_eq!(p[0], 0x47);
            let pid = (u16::from(p[1] & 0x1F) << 8) | u16::from(p[2]);
            if pid == NULL_PID {
                continue;
            }
            let cc = p[3] & 0x0F;
            if let Some(prev) = last_cc.insert(pid, cc) {
                assert_eq!(cc, (prev + 1) & 0x0F, "pid {pid:#x}");
            }
        }
        assert!(last_cc.contains_key(&VIDEO_PID));
    }

    #[test]
    fn bytes_are_deterministic_and_random_access() {
        let a = Segment::build(&spec(5));
        let b = Segment::build(&spec(5));
        let all = bytes(&a);
        assert_eq!(all, bytes(&b));
        let mut part = vec![0; 1000];
        a.read_at(150_000, &mut part);
        assert_eq!(part, all[150_000..151_000]);
        assert_ne!(all, bytes(&Segment::build(&spec(6))));
    }

    #[test]
    fn psi_sections_carry_valid_crcs() {
        let b = bytes(&Segment::build(&spec(0)));
        for packet in [&b[..188], &b[188..376]] {
            let section_len = (usize::from(packet[6] & 0x0F) << 8) | usize::from(packet[7]);
            let section = &packet[5..5 + 3 + section_len];
            assert_eq!(
                crc32_mpeg2(section),
                0,
                "CRC over a section with its CRC is 0"
            );
        }
    }
}
