package protocol

import (
	"time"
)

// HLCTime is a hybrid logical clock reading: Unix milliseconds in the high
// 48 bits and a logical counter in the low 16. Readings from one clock
// strictly increase, even when the wall clock steps back.
type HLCTime uint64

const hlcLogicalBits = 16

// Time returns the physical part of the reading.
func (t HLCTime) Time() time.Time { return time.UnixMilli(int64(t >> hlcLogicalBits)).UTC() }

// Logical returns the counter part of the reading.
func (t HLCTime) Logical() uint16 { return uint16(t) }

// HLCFromTime returns the first reading at wall time w.
func HLCFromTime(w time.Time) HLCTime {
	ms := w.UnixMilli()
	if ms < 0 {
		ms = 0
	}
	return HLCTime(uint64(ms) << hlcLogicalBits)
}

// HLC is a hybrid logical clock. It is not safe for concurrent use; the
// outbox owns one and reads it inside its single commit loop.
type HLC struct {
	Now  func() time.Time // the wall clock; time.Now when nil
	last HLCTime
}

// Observe moves the clock to at least t, so that readings after a restart
// continue past the last stored one.
func (c *HLC) Observe(t HLCTime) {
	if t > c.last {
		c.last = t
	}
}

// Next returns a reading greater than every earlier one: the wall clock when
// it has moved past the last reading, the last reading plus one otherwise.
func (c *HLC) Next() HLCTime {
	now := time.Now
	if c.Now != nil {
		now = c.Now
	}
	w := HLCFromTime(now())
	if w > c.last {
		c.last = w
	} else {
		c.last++
	}
	return c.last
}

// Last returns the latest reading.
func (c *HLC) Last() HLCTime { return c.last }
