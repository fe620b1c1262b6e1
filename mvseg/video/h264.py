"""H.264 bitstream facts mvseg reads itself (ITU-T H.264): the SPS's `max_num_ref_frames` (how
many reference frames an MV may point into) and whether an access unit holds an IDR slice (where
decoding can restart: `mvseg.video.gop` cuts a stream there)."""

from __future__ import annotations


class _BitReader:
    """Exp-Golomb bit reader over an RBSP (emulation-prevention bytes removed)."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def u(self, n: int) -> int:
        v = 0
        for _ in range(n):
            byte = self.data[self.pos >> 3]
            v = (v << 1) | ((byte >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return v

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise ValueError("invalid exp-Golomb code")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


def _rbsp(nal: bytes) -> bytes:
    out = bytearray()
    zeros = 0
    for b in nal:
        if zeros >= 2 and b == 3:
            zeros = 0
            continue
        out.append(b)
        zeros = zeros + 1 if b == 0 else 0
    return bytes(out)


def _sps_nals(extradata: bytes) -> list[bytes]:
    """SPS NAL units from avcC (MP4) or Annex-B extradata."""
    if not extradata:
        return []
    if extradata[0] == 1 and len(extradata) > 7:  # avcC
        n_sps = extradata[5] & 0x1F
        pos, out = 6, []
        for _ in range(n_sps):
            size = int.from_bytes(extradata[pos : pos + 2], "big")
            out.append(extradata[pos + 2 : pos + 2 + size])
            pos += 2 + size
        return out
    parts = extradata.replace(b"\x00\x00\x00\x01", b"\x00\x00\x01").split(b"\x00\x00\x01")
    return [p for p in parts if p and (p[0] & 0x1F) == 7]


def h264_max_ref_frames(extradata: bytes | None) -> int | None:
    """Parse `max_num_ref_frames` from the first H.264 SPS (ITU-T H.264 7.3.2.1.1)."""
    for nal in _sps_nals(extradata or b""):
        try:
            r = _BitReader(_rbsp(nal[1:]))
            profile_idc = r.u(8)
            r.u(16)  # constraint flags + level_idc
            r.ue()  # seq_parameter_set_id
            if profile_idc in (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135):
                chroma_format_idc = r.ue()
                if chroma_format_idc == 3:
                    r.u(1)
                r.ue(), r.ue()  # bit depths
                r.u(1)  # qpprime_y_zero_transform_bypass_flag
                if r.u(1):  # seq_scaling_matrix_present_flag
                    for i in range(8 if chroma_format_idc != 3 else 12):
                        if r.u(1):
                            last, nxt = 8, 8
                            for _ in range(16 if i < 6 else 64):
                                if nxt != 0:
                                    nxt = (last + r.se() + 256) % 256
                                last = nxt or last
            r.ue()  # log2_max_frame_num_minus4
            poc_type = r.ue()
            if poc_type == 0:
                r.ue()
            elif poc_type == 1:
                r.u(1), r.se(), r.se()
                for _ in range(r.ue()):
                    r.se()
            return r.ue()
        except (IndexError, ValueError):
            continue
    return None


def has_idr(data: bytes, length_size: int) -> bool:
    """Whether an H.264 access unit (AVCC: NALs with `length_size`-byte sizes; 0: Annex B start
    codes) holds an IDR slice (nal_unit_type 5): a point where decoding restarts from nothing."""
    if length_size == 0:
        return any(part and part[0] & 0x1F == 5 for part in data.split(b"\x00\x00\x01")[1:])
    pos = 0
    while pos + length_size < len(data):
        size = int.from_bytes(data[pos : pos + length_size], "big")
        if data[pos + length_size] & 0x1F == 5:
            return True
        pos += length_size + size
    return False
