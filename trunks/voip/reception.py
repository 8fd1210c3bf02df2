"""What one stream received (RFC 3550 A.1, A.3, A.8) and how the call sounds (ITU-T G.107).

`ReceptionStats` counts one source's packets: sequence numbers (appendix A.1), loss
(A.3) and interarrival jitter (A.8), and gives the report block for our next RTCP
report. `estimate_mos` is the ITU-T G.107 E-model reduced to the terms that change
during a G.711 call. Pure: every time is an argument.
"""

from __future__ import annotations

from dataclasses import dataclass

from trunks.voip.rtcp import ReportBlock, ntp_middle

MAX_DROPOUT = 3000
MAX_MISORDER = 100
MIN_SEQUENTIAL = 2
"""RFC 3550 A.1: the largest gap taken as loss, the largest step back taken as
reordering, and the in-order packets needed before a new source is believed."""
CLOCK_RATE_HZ = 8000
"""RTP timestamp units per second for G.711 and telephone-event/8000."""

R_DEFAULT = 93.2
"""ITU-T G.107: the rating R that every parameter at its default value gives (default
loudness, noise, echo, no delay, a codec without impairment); what changes during a
call, delay and loss, comes off it. The advantage factor A is 0 (wired)."""
ID_SLOPE_PER_MS = 0.024
ID_KNEE_MS = 177.3
ID_KNEE_SLOPE_PER_MS = 0.11
"""Delay impairment Id = 0.024 d + 0.11 (d - 177.3) H(d - 177.3), d the one-way
mouth-to-ear delay in ms, H the step function: the two-line fit of G.107's Id to
delay alone by R. G. Cole and J. H. Rosenbluth, "Voice over IP performance
monitoring", ACM SIGCOMM Computer Communication Review 31(2), 2001."""
IE_G711 = 0.0
"""G.113 Appendix I: equipment impairment of G.711 (the E-model's reference codec)."""
BPL_G711_NO_PLC = 4.3
BPL_G711_PLC = 25.1
"""ITU-T G.113 Appendix I: packet-loss robustness Bpl of G.711 under random loss,
without concealment and with the concealment of G.711 Appendix I. Our engine plays a
lost frame as silence (media.py), so what we hear is rated without concealment."""
JITTER_BUFFER_MS = 60.0
"""Playout delay added to the network's one-way delay: media.JITTER_FRAMES x 20 ms."""



@dataclass(frozen=True, slots=True)
class CallQuality:
    """One direction of a call as heard by its receiver, for a log line or a record."""

    packets_expected: int
    packets_lost: int
    loss_percent: float
    jitter_ms: float
    rtt_ms: float | None
    """None until a report answers one of our SRs."""
    mos: float


def r_factor(loss_percent: float, delay_ms: float, *, bpl: float = BPL_G711_NO_PLC) -> float:
    """G.107 rating R = Ro - Is - Id - Ie,eff + A for G.711 under random loss.

    Ie,eff = Ie + (95 - Ie) Ppl / (Ppl / BurstR + Bpl) with BurstR 1 (random loss),
    Ppl the loss in percent; Id from the one-way delay in ms (see ID_SLOPE_PER_MS).
    """
    d = max(0.0, delay_ms)
    delay = ID_SLOPE_PER_MS * d + ID_KNEE_SLOPE_PER_MS * max(0.0, d - ID_KNEE_MS)
    loss = max(0.0, loss_percent)
    equipment = IE_G711 + (95 - IE_G711) * loss / (loss + bpl)
    return R_DEFAULT - delay - equipment


def mos_from_r(r: float) -> float:
    """G.107 Annex B: estimated mean opinion score (1-4.5) for a rating R."""
    if r <= 0:
        return 1.0
    if r >= 100:
        return 4.5
    # the cubic dips just under 1 for R below ~6.5; keep it monotone
    return max(1.0, 1 + 0.035 * r + 7e-6 * r * (r - 60) * (100 - r))


def one_way_delay_ms(rtt_ms: float | None, jitter_buffer_ms: float = JITTER_BUFFER_MS) -> float:
    """Mouth-to-ear delay as the estimate takes it: half the round trip (0 while none is
    measured) plus the receiver's playout buffer."""
    return (rtt_ms or 0.0) / 2 + jitter_buffer_ms


def estimate_mos(loss_percent: float, delay_ms: float, *, bpl: float = BPL_G711_NO_PLC) -> float:
    """Estimated MOS of a G.711 call with random loss and a one-way delay in ms."""
    return mos_from_r(r_factor(loss_percent, delay_ms, bpl=bpl))


class ReceptionStats:
    """What we received from one source (SSRC), for our report blocks and a quality summary.

    `receive` follows RFC 3550 A.1: a new source is believed after `probation`
    packets in sequence, a jump of more than MAX_DROPOUT is believed (the sender
    restarted) only when the next packet follows it, and sequence numbers are
    extended across wrap-around. `report_block` gives A.3 loss figures since the
    previous report and the A.8 jitter.
    """

    def __init__(self, ssrc: int, clock_rate: int = CLOCK_RATE_HZ, *,
                 probation: int = MIN_SEQUENTIAL) -> None:
        self.ssrc = ssrc
        self.clock_rate = clock_rate
        self.received = 0
        """Packets counted since the source was believed, duplicates included."""
        self.jitter = 0.0
        """Interarrival jitter in RTP timestamp units."""
        self._min_sequential = probation
        self._probation = probation
        self._started = False
        self._max_seq = 0
        self._cycles = 0
        self._base_seq = 0
        self._bad_seq = -1
        self._expected_prior = 0
        self._received_prior = 0
        self._transit: float | None = None
        self._last_sr = 0
        self._last_sr_at = 0.0

    @property
    def highest_sequence(self) -> int:
        """The extended highest sequence number received (cycles and 16 bits)."""
        return self._cycles + self._max_seq

    @property
    def expected(self) -> int:
        """Packets from the first believed one to the highest so far (A.3)."""
        return self.highest_sequence - self._base_seq + 1 if self.received else 0

    @property
    def lost(self) -> int:
        """Cumulative packets lost; negative when duplicates outnumber losses."""
        return self.expected - self.received

    def receive(self, sequence: int, timestamp: int, arrival_s: float) -> bool:
        """Count an RTP packet from this source; False while it is not (yet) believed."""
        if not self._update_sequence(sequence & 0xFFFF):
            return False
        self._update_jitter(timestamp, arrival_s)
        return True

    def note_sender_report(self, ntp_timestamp: int, arrival_s: float) -> None:
        """Remember an SR from this source, for LSR and DLSR in our next report."""
        self._last_sr = ntp_middle(ntp_timestamp)
        self._last_sr_at = arrival_s

    def report_block(self, now_s: float) -> ReportBlock:
        """The report block for our next SR or RR; starts the next loss interval."""
        expected = self.expected
        expected_interval = expected - self._expected_prior
        lost_interval = expected_interval - (self.received - self._received_prior)
        self._expected_prior, self._received_prior = expected, self.received
        fraction = 0
        if expected_interval > 0 and lost_interval > 0:
            fraction = min(255, (lost_interval << 8) // expected_interval)
        delay = 0
        if self._last_sr:
            delay = min(0xFFFF_FFFF, max(0, int((now_s - self._last_sr_at) * 65536)))
        return ReportBlock(self.ssrc, fraction, max(-0x80_0000, min(0x7F_FFFF, self.lost)),
                           self.highest_sequence & 0xFFFF_FFFF,
                           min(0xFFFF_FFFF, int(self.jitter)), self._last_sr, delay)

    def quality(self, rtt_s: float | None = None, *, jitter_buffer_ms: float = JITTER_BUFFER_MS,
                bpl: float = BPL_G711_NO_PLC) -> CallQuality:
        """The call so far as heard here; one-way delay taken as RTT/2 plus playout."""
        expected, lost = self.expected, max(0, self.lost)
        loss_percent = 100 * lost / expected if expected else 0.0
        rtt_ms = None if rtt_s is None else rtt_s * 1000
        delay_ms = one_way_delay_ms(rtt_ms, jitter_buffer_ms)
        return CallQuality(expected, lost, loss_percent, self.jitter * 1000 / self.clock_rate,
                           rtt_ms, estimate_mos(loss_percent, delay_ms, bpl=bpl))

    def _update_sequence(self, seq: int) -> bool:
        if not self._started:  # A.1: a new source, on probation
            self._started = True
            if self._probation == 0:
                self._restart(seq)
                return True
            self._max_seq = (seq - 1) & 0xFFFF
        delta = (seq - self._max_seq) & 0xFFFF
        if self._probation:
            if seq == (self._max_seq + 1) & 0xFFFF:
                self._probation -= 1
                self._max_seq = seq
                if self._probation == 0:
                    self._restart(seq)
                    return True
            else:
                self._probation = self._min_sequential - 1
                self._max_seq = seq
            return False
        if delta < MAX_DROPOUT:  # in order, perhaps after a gap
            if seq < self._max_seq:
                self._cycles += 1 << 16
            self._max_seq = seq
        elif delta <= (1 << 16) - MAX_MISORDER:  # a big jump: believed if the next follows
            if seq != self._bad_seq:
                self._bad_seq = (seq + 1) & 0xFFFF
                return False
            self._restart(seq)
            return True
        # in order, or a duplicate or late packet: A.1 counts them all, so duplicates
        # can outweigh losses
        self.received += 1
        return True

    def _restart(self, seq: int) -> None:
        """A.1 init_seq, counting the packet that (re)started the source."""
        self._base_seq = self._max_seq = seq
        self._bad_seq = -1
        self._cycles = 0
        self.received = 1
        self._expected_prior = self._received_prior = 0
        self._transit = None  # a restarted sender's timestamps start afresh too

    def _update_jitter(self, timestamp: int, arrival_s: float) -> None:
        transit = arrival_s * self.clock_rate - timestamp
        if self._transit is not None:
            # the difference modulo 2**32, centred on 0: RTP timestamps wrap
            d = (transit - self._transit + 0x8000_0000) % 0x1_0000_0000 - 0x8000_0000
            self.jitter += (abs(d) - self.jitter) / 16
        self._transit = transit
