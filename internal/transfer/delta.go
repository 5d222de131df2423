package transfer

import (
	"fmt"
	"math/bits"

	"github.com/klauspost/compress/zstd"
)

// MaxDeltaFile bounds the base and the target of a delta: both are held
// in memory while it is made or applied.
const MaxDeltaFile = 96 << 20

// deltaDictID names the dictionary of a delta frame: always the base.
const deltaDictID = 1

// deltaWindow is the window a delta of target against base needs: the
// base precedes the target in the history, so matches reach back over
// both.
func deltaWindow(base, target int) int {
	n := base + target
	w := zstd.MinWindowSize
	if n > w {
		w = 1 << bits.Len(uint(n-1))
	}
	return min(w, MaxDeltaWindow)
}

// MakeDelta returns a zstd frame of target compressed with base as its raw
// dictionary, the same idea as `zstd --patch-from=base`: unchanged runs
// of the old file cost a few bytes each.
func MakeDelta(base, target []byte) ([]byte, error) {
	var d Differ
	defer d.Close()
	return d.Delta(base, target)
}

// reuseWindow is the window of the encoder a Differ keeps from one delta
// to the next; pairs that need more get an encoder of their own.
const reuseWindow = 8 << 20

// Differ makes deltas like MakeDelta, keeping its encoder's tables from
// one delta to the next: making a delta of each of a thousand small files
// then costs the compression, not a thousand allocations. It is not safe
// for concurrent use; Close releases it.
type Differ struct {
	enc  *zstd.Encoder
	fast *zstd.Encoder // for CompressedSize
}

// CompressedSize returns about what target costs compressed on its own
// (zstd's fastest level): a delta is worth sending only when it is
// clearly smaller.
func (d *Differ) CompressedSize(target []byte) (int, error) {
	if d.fast == nil {
		enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
		if err != nil {
			return 0, fmt.Errorf("compressed size: %w", err)
		}
		d.fast = enc
	}
	return len(d.fast.EncodeAll(target, nil)), nil
}

// Delta returns the delta from base to target.
func (d *Differ) Delta(base, target []byte) ([]byte, error) {
	if len(base) > MaxDeltaFile || len(target) > MaxDeltaFile {
		return nil, fmt.Errorf("delta: files over %d bytes", MaxDeltaFile)
	}
	dst := make([]byte, 0, len(target)/8)
	opts := []zstd.EOption{zstd.WithEncoderLevel(zstd.SpeedBetterCompression), zstd.WithEncoderDictRaw(deltaDictID, base),
		zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(true)}
	if w := deltaWindow(len(base), len(target)); w > reuseWindow || len(target) >= bestDeltaFile {
		// Large files are where the bytes are: the best level, on an
		// encoder of their own.
		opts[0] = zstd.WithEncoderLevel(zstd.SpeedBestCompression)
		enc, err := zstd.NewWriter(nil, append(opts, zstd.WithWindowSize(w))...)
		if err != nil {
			return nil, fmt.Errorf("delta: %w", err)
		}
		defer enc.Close()
		return enc.EncodeAll(target, dst), nil
	}
	if d.enc == nil {
		enc, err := zstd.NewWriter(nil, append(opts, zstd.WithWindowSize(reuseWindow))...)
		if err != nil {
			return nil, fmt.Errorf("delta: %w", err)
		}
		d.enc = enc
	} else if err := d.enc.ResetWithOptions(nil, zstd.WithEncoderDictRaw(deltaDictID, base)); err != nil {
		return nil, fmt.Errorf("delta: %w", err)
	}
	return d.enc.EncodeAll(target, dst), nil
}

// Close releases the encoder.
func (d *Differ) Close() {
	for _, e := range []**zstd.Encoder{&d.enc, &d.fast} {
		if *e != nil {
			(*e).Close()
			*e = nil
		}
	}
}

// ApplyDelta returns the target of delta applied to base. It refuses a
// result over maxSize bytes; the caller checks the result's digest.
func ApplyDelta(base, delta []byte, maxSize int64) ([]byte, error) {
	dec, err := zstd.NewReader(nil, zstd.WithDecoderDictRaw(deltaDictID, base), zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderMaxWindow(MaxDeltaWindow), zstd.WithDecoderMaxMemory(uint64(max(maxSize, 1))))
	if err != nil {
		return nil, fmt.Errorf("apply delta: %w", err)
	}
	defer dec.Close()
	out, err := dec.DecodeAll(delta, nil)
	if err != nil {
		return nil, fmt.Errorf("apply delta: %v: %w", err, ErrMalformed)
	}
	if int64(len(out)) > maxSize {
		return nil, fmt.Errorf("apply delta: result over %d bytes: %w", maxSize, ErrMalformed)
	}
	return out, nil
}

// bestDeltaFile is the size from which a delta is made at zstd's best
// level; smaller files, often many, get the faster "better" level, on
// the Differ's reused encoder.
const bestDeltaFile = 256 << 10
