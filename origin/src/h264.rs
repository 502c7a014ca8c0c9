//! A minimal H.264 (baseline, CAVLC) bitstream writer: SPS, PPS, an IDR frame
//! of I_PCM macroblocks (raw samples, so no transform coding is needed) and P
//! frames whose macroblocks are all skipped. Enough for any decoder to show a
//! picture that changes from segment to segment.

/// Writes bits most-significant first.
#[derive(Default)]
pub(crate) struct BitWriter {
    bytes: Vec<u8>,
    current: u8,
    used: u8,
}

impl BitWriter {
    pub(crate) fn bits(&mut self, count: u32, value: u64) {
        for i in (0..count).rev() {
            self.bit(((value >> i) & 1) as u8);
        }
    }

    fn bit(&mut self, b: u8) {
        self.current = (self.current << 1) | b;
        self.used += 1;
        if self.used == 8 {
            self.bytes.push(self.current);
            self.current = 0;
            self.used = 0;
        }
    }

    /// Unsigned Exp-Golomb.
    pub(crate) fn ue(&mut self, value: u32) {
        let x = u64::from(value) + 1;
        let len = 64 - x.leading_zeros();
        self.bits(len - 1, 0);
        self.bits(len, x);
    }

    /// Signed Exp-Golomb.
    pub(crate) fn se(&mut self, value: i32) {
        let mapped = if value <= 0 {
            (-2 * i64::from(value)) as u32
        } else {
            (2 * i64::from(value) - 1) as u32
        };
        self.ue(mapped);
    }

    pub(crate) fn align_zero(&mut self) {
        while self.used != 0 {
            self.bit(0);
        }
    }

    pub(crate) fn aligned_bytes(&mut self, data: &[u8]) {
        debug_assert_eq!(self.used, 0);
        self.bytes.extend_from_slice(data);
    }

    /// rbsp_trailing_bits: a stop bit, then zeros to the byte boundary.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        self.bit(1);
        self.align_zero();
        self.bytes
    }
}

/// A NAL unit with a 4-byte start code, emulation prevention applied.
fn nal(out: &mut Vec<u8>, ref_idc: u8, nal_type: u8, rbsp: &[u8]) {
    out.extend_from_slice(&[0, 0, 0, 1, (ref_idc << 5) | nal_type]);
    let mut zeros = 0;
    for &b in rbsp {
        if zeros >= 2 && b <= 3 {
            out.push(3);
            zeros = 0;
        }
        out.push(b);
        zeros = if b == 0 { zeros + 1 } else { 0 };
    }
}

const LOG2_MAX_FRAME_NUM: u32 = 8;

/// Picture size in macroblocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Picture {
    pub width_mbs: u32,
    pub height_mbs: u32,
}

impl Picture {
    pub fn width(&self) -> u32 {
        self.width_mbs * 16
    }

    pub fn height(&self) -> u32 {
        self.height_mbs * 16
    }

    fn mbs(&self) -> u32 {
        self.width_mbs * self.height_mbs
    }
}

/// `avc1` codec string of the stream (baseline, constraints 0 and 1, level 3.0).
pub const CODECS: &str = "avc1.42c01e";

fn sps(pic: Picture) -> Vec<u8> {
    let mut w = BitWriter::default();
    w.bits(8, 66); // profile_idc: baseline
    w.bits(8, 0xC0); // constraint_set0 and set1
    w.bits(8, 30); // level 3.0
    w.ue(0); // seq_parameter_set_id
    w.ue(LOG2_MAX_FRAME_NUM - 4);
    w.ue(2); // pic_order_cnt_type: from frame_num, no reordering
    w.ue(1); // max_num_ref_frames
    w.bits(1, 0); // gaps_in_frame_num_value_allowed_flag
    w.ue(pic.width_mbs - 1);
    w.ue(pic.height_mbs - 1);
    w.bits(1, 1); // frame_mbs_only_flag
    w.bits(1, 1); // direct_8x8_inference_flag
    w.bits(1, 0); // frame_cropping_flag
    w.bits(1, 0); // vui_parameters_present_flag
    w.finish()
}

fn pps() -> Vec<u8> {
    let mut w = BitWriter::default();
    w.ue(0); // pic_parameter_set_id
    w.ue(0); // seq_parameter_set_id
    w.bits(1, 0); // entropy_coding_mode_flag: CAVLC
    w.bits(1, 0); // bottom_field_pic_order_in_frame_present_flag
    w.ue(0); // num_slice_groups_minus1
    w.ue(0); // num_ref_idx_l0_default_active_minus1
    w.ue(0); // num_ref_idx_l1_default_active_minus1
    w.bits(1, 0); // weighted_pred_flag
    w.bits(2, 0); // weighted_bipred_idc
    w.se(0); // pic_init_qp_minus26
    w.se(0); // pic_init_qs_minus26
    w.se(0); // chroma_qp_index_offset
    w.bits(1, 0); // deblocking_filter_control_present_flag
    w.bits(1, 0); // constrained_intra_pred_flag
    w.bits(1, 0); // redundant_pic_cnt_present_flag
    w.finish()
}

fn access_unit_delimiter(out: &mut Vec<u8>, intra: bool) {
    let mut w = BitWriter::default();
    w.bits(3, if intra { 0 } else { 1 }); // primary_pic_type
    nal(out, 0, 9, &w.finish());
}

/// An IDR access unit (AUD, SPS, PPS, slice) whose picture is a diagonal
/// gradient shifted by `phase`, tinted by `tint`; samples stay in 16..=235.
pub(crate) fn idr_frame(pic: Picture, idr_pic_id: u32, phase: u32, tint: (u8, u8)) -> Vec<u8> {
    let mut out = Vec::new();
    access_unit_delimiter(&mut out, true);
    nal(&mut out, 3, 7, &sps(pic));
    nal(&mut out, 3, 8, &pps());

    let mut w = BitWriter::default();
    w.ue(0); // first_mb_in_slice
    w.ue(7); // slice_type: I (all slices of the picture)
    w.ue(0); // pic_parameter_set_id
    w.bits(LOG2_MAX_FRAME_NUM, 0); // frame_num
    w.ue(idr_pic_id & 0xFFFF);
    w.bits(1, 0); // no_output_of_prior_pics_flag
    w.bits(1, 0); // long_term_reference_flag
    w.se(0); // slice_qp_delta
    let mut luma = [0u8; 256];
    for mb in 0..pic.mbs() {
        let (mbx, mby) = (mb % pic.width_mbs, mb / pic.width_mbs);
        w.ue(25); // mb_type: I_PCM
        w.align_zero();
        for (i, sample) in luma.iter_mut().enumerate() {
            let x = mbx * 16 + (i as u32 % 16);
            let y = mby * 16 + (i as u32 / 16);
            *sample = 16 + ((x + y + phase) % 220) as u8;
        }
        w.aligned_bytes(&luma);
        w.aligned_bytes(&[tint.0; 64]);
        w.aligned_bytes(&[tint.1; 64]);
    }
    nal(&mut out, 3, 5, &w.finish());
    out
}

/// A P access unit repeating the reference picture (every macroblock skipped).
pub(crate) fn skip_frame(pic: Picture, frame_num: u32) -> Vec<u8> {
    let mut out = Vec::new();
    access_unit_delimiter(&mut out, false);
    let mut w = BitWriter::default();
    w.ue(0); // first_mb_in_slice
    w.ue(5); // slice_type: P (all slices)
    w.ue(0); // pic_parameter_set_id
    w.bits(
        LOG2_MAX_FRAME_NUM,
        u64::from(frame_num % (1 << LOG2_MAX_FRAME_NUM)),
    );
    w.bits(1, 0); // num_ref_idx_active_override_flag
    w.bits(1, 0); // ref_pic_list_modification_flag_l0
    w.bits(1, 0); // adaptive_ref_pic_marking_mode_flag
    w.se(0); // slice_qp_delta
    w.ue(pic.mbs()); // mb_skip_run: the whole picture
    nal(&mut out, 2, 1, &w.finish());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_golomb() {
        let mut w = BitWriter::default();
        w.ue(0); // 1
        w.ue(1); // 010
        w.ue(2); // 011
        w.ue(3); // 00100
        w.se(-1); // ue(2) = 011
                  // 15 bits, then the stop bit: exactly two bytes.
        assert_eq!(w.finish(), vec![0b1010_0110, 0b0100_0111]);
    }

    #[test]
    fn emulation_prevention_breaks_start_code_patterns() {
        let mut out = Vec::new();
        nal(&mut out, 3, 5, &[0, 0, 1, 0, 0, 0, 0, 0, 3]);
        // 00 00 01 → 00 00 03 01; five zeros → 00 00 03 00 00 03 00; a 03 after one zero stays.
        assert_eq!(&out[5..], &[0, 0, 3, 1, 0, 0, 3, 0, 0, 3, 0, 3]);
    }

    #[test]
    fn frames_start_with_delimiter_and_keep_samples_in_video_range() {
        let pic = Picture {
            width_mbs: 2,
            height_mbs: 2,
        };
        let idr = idr_frame(pic, 7, 3, (128, 128));
        assert_eq!(&idr[..5], &[0, 0, 0, 1, 9]);
        // Four macroblocks of 384 raw samples each, plus headers.
        assert!(idr.len() > 4 * 384);
        let p = skip_frame(pic, 1);
        assert!(p.len() < 32);
    }
}
